"""The review pages (gisportal/views_review.py): submit -> check -> save -> decide -> resubmit -> PDF.

This module is the URLconf of its tests (``views_review.urlpatterns`` plus the portal's own), so the pages
are tested whether or not gisportal/urls.py includes them yet.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from gisportal import urls as portal_urls
from gisportal import views_review
from layers import models, services, services_review
from layers.models_review import ReviewDecision, ReviewReport

urlpatterns = list(views_review.urlpatterns) + list(portal_urls.urlpatterns)
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
FIX = Path(__file__).resolve().parents[2] / "fixtures" / "review"
GOOD = (FIX / "good_qiaodong.geojson").read_text(encoding="utf-8")
FAIL = (FIX / "fail_facility.geojson").read_text(encoding="utf-8")


@pytest.fixture
def demo():
    if not models.District.objects.filter(code="130702").exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


def _user(django_user_model, name, role=None):
    user = django_user_model.objects.create_user(name, password="x")
    if role:
        user.groups.add(services.roles_ensure()[role])
    return user


@pytest.fixture
def planner(client, django_user_model):
    user = _user(django_user_model, "999_planner", "planner")
    client.force_login(user)
    return user


def counts():
    return (models.HousingProject.objects.count(), models.ServiceFacility.objects.count(),
            ReviewReport.objects.count(), ReviewDecision.objects.count())


def _save(client, text=GOOD):
    resp = client.post("/review/", {"text": text, "action": "save"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    return models.HousingProject.objects.get(pk=int(resp["Location"].rstrip("/").split("/")[-1]))


def _decide(client, project, action, **data):
    project.refresh_from_db()
    return client.post(f"/review/projects/{project.pk}/decide/",
                       {"action": action, "version": project.version, **data})


# ------------------------------------------------------------------ access
def test_login_and_permissions(client, django_user_model):
    assert client.get("/review/").status_code == 302  # to the login page
    client.force_login(_user(django_user_model, "999_field", "field_staff"))
    for url in ("/review/", "/review/projects/1/", "/review/projects/1/map/", "/review/reports/1.pdf"):
        assert client.get(url).status_code == 403, url
    assert client.post("/review/", {"text": GOOD, "action": "save"}).status_code == 403
    assert client.post("/review/projects/1/decide/", {"action": "approved"}).status_code == 403
    client.force_login(_user(django_user_model, "999_official", "emergency_official"))
    assert client.get("/review/").status_code == 403


# ------------------------------------------------------------------ check, save
def test_check_shows_verdict_table_and_map_and_saves_nothing(client, planner, demo):
    before = counts()
    resp = client.post("/review/", {"text": GOOD, "action": "check"})
    assert resp.status_code == 200
    html = resp.content.decode()
    expected = services_review.review_submission(services_review.parse_submission(GOOD))
    assert 'data-verdict="pass"' in html and expected.verdict == "pass"
    for c in expected.checks:  # every rule in the table, with the engine's status
        assert f'data-code="{c.code}" data-status="{c.status}"' in html
    assert 'id="review-map"' in html and "srcdoc=" in html
    map_html = resp.context["map_html"]
    assert "leaflet" in map_html and "cdn.jsdelivr" not in map_html and "unpkg.com" not in map_html
    assert views_review.SITE_COLOR in map_html and views_review.SHELTER_COLOR in map_html
    assert counts() == before


def test_failing_submission_draws_the_failure_in_red(client, planner, demo):
    resp = client.post("/review/", {"text": FAIL, "action": "check"})
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'data-verdict="fail"' in html
    assert 'data-code="FAC-IN-SITE" data-status="fail"' in html and 'data-code="FAC-AREA" data-status="fail"' in html
    assert "#d7191c" in resp.context["map_html"]  # the facility outside the site, in red


@pytest.mark.parametrize("name", sorted(p.name for p in FIX.glob("bad_*.geojson")))
def test_bad_submission_shows_the_reason_and_saves_nothing(client, planner, name, request):
    if name == "bad_outside_city.geojson":
        request.getfixturevalue("demo")
    before = counts()
    with open(FIX / name, "rb") as fh:
        resp = client.post("/review/", {"file": fh, "action": "save"})
    assert resp.status_code == 400
    try:
        services_review.parse_path(FIX / name)
        services_review.review_submission(services_review.parse_path(FIX / name))
    except services_review.SubmissionError as exc:
        expected = exc
    else:
        pytest.fail("the fixture is not refused by the service")
    html = resp.content.decode()
    assert 'id="review-error"' in html and expected.message_zh in html
    assert f'data-code="{expected.code}"' in html
    assert counts() == before


def test_empty_form_and_unsupported_format(client, planner, tmp_path):
    before = counts()
    assert client.post("/review/", {"action": "check"}).status_code == 400
    p = tmp_path / "x.dxf"
    p.write_bytes(b"0\nSECTION\n")
    with open(p, "rb") as fh:
        resp = client.post("/review/", {"file": fh, "action": "check"})
    assert resp.status_code == 400 and "DXF".lower() in resp.content.decode().lower()
    assert counts() == before


def test_save_workflow_and_append_only_history(client, planner, demo, django_user_model):
    before = counts()
    project = _save(client)
    assert counts() == (before[0] + 1, before[1] + 2, before[2] + 1, before[3] + 1)
    assert project.status == "submitted" and project.submitted_by == planner
    page = client.get(f"/review/projects/{project.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-verdict="pass"' in html and 'data-code="SHELTER-REACH" data-status="pass"' in html
    assert f"/review/projects/{project.pk}/map/" in html
    m = client.get(f"/review/projects/{project.pk}/map/")
    assert m.status_code == 200 and "leaflet" in m.content.decode()

    # approve before the review started: refused, nothing recorded
    n = ReviewDecision.objects.count()
    assert _decide(client, project, "approved", comment="ok").status_code == 409
    assert ReviewDecision.objects.count() == n
    assert _decide(client, project, "in_review").status_code == 302
    # reject needs a comment; per-check comments count
    assert _decide(client, project, "rejected").status_code == 409
    assert _decide(client, project, "rejected", **{"comment_FAC-AREA": "请补充面积计算书"}).status_code == 302
    project.refresh_from_db()
    assert project.status == "rejected"
    rows = list(project.decisions.order_by("pk"))
    assert [d.action for d in rows] == ["submitted", "in_review", "rejected"]
    assert rows[-1].check_comments == {"FAC-AREA": "请补充面积计算书"} and rows[-1].user == planner
    assert "请补充面积计算书" in client.get(f"/review/projects/{project.pk}/").content.decode()
    # a stale version is refused (someone else acted meanwhile)
    stale = client.post(f"/review/projects/{project.pk}/decide/", {"action": "comment", "comment": "x",
                                                                    "version": project.version - 1})
    assert stale.status_code == 409
    # the history cannot be changed or deleted
    d = rows[-1]
    d.comment = "changed"
    with pytest.raises(ValidationError):
        d.save()
    with pytest.raises(ValidationError):
        d.delete()
    assert ReviewDecision.objects.get(pk=d.pk).comment == ""

    # another planner sees neither the project nor its map; an admin sees it
    client.force_login(_user(django_user_model, "999_planner2", "planner"))
    assert client.get(f"/review/projects/{project.pk}/").status_code == 404
    assert client.get(f"/review/projects/{project.pk}/map/").status_code == 404
    assert project.name not in client.get("/review/").content.decode()
    admin = _user(django_user_model, "999_admin", "admin")
    client.force_login(admin)
    assert client.get(f"/review/projects/{project.pk}/").status_code == 200
    assert project.name in client.get("/review/").content.decode()


def test_resubmission_shows_what_changed_and_stores_a_new_version(client, planner, demo):
    project = _save(client, GOOD)
    old_fac = project.facilities.get(kind="community_service_centre")
    resp = client.post(f"/review/projects/{project.pk}/resubmit/", {"text": FAIL, "action": "check"})
    assert resp.status_code == 200
    ch = resp.context["changes"]
    assert ch["households"] == (500, 500)
    assert ch["site_area_m2"][0] == pytest.approx(ch["site_area_m2"][1], abs=0.5)
    fac = next(r for r in ch["facilities"] if r["kind"] == "community_service_centre")
    new_pt = next(f.geom for f in services_review.parse_submission(FAIL).project.facilities
                  if f.kind == "community_service")
    import shapely
    assert fac["change"] == "moved"
    assert fac["moved_m"] == pytest.approx(shapely.from_wkb(bytes(old_fac.geom.wkb)).distance(new_pt), abs=0.1)
    assert fac["moved_m"] > 50 and (fac["area_old"], fac["area_new"]) == (150.0, 140.0)
    assert ("FAC-IN-SITE", "pass", "fail") in ch["flipped"] and ("FAC-AREA", "pass", "fail") in ch["flipped"]
    html = resp.content.decode()
    assert 'data-code="FAC-IN-SITE"' in html and 'id="changes"' in html
    n_reports = project.reports.count()
    assert models.HousingProject.objects.get(pk=project.pk).reports.count() == n_reports  # check stores nothing

    project.refresh_from_db()
    save = client.post(f"/review/projects/{project.pk}/resubmit/",
                       {"text": FAIL, "action": "save", "version": project.version})
    assert save.status_code == 302
    project.refresh_from_db()
    assert project.status == "submitted" and project.reports.count() == n_reports + 1
    assert project.reports.first().verdict == "fail"
    assert sorted(project.facilities.values_list("floor_area_m2", flat=True)) == [140.0, 2400.0]
    last = project.decisions.order_by("pk").last()
    assert last.action == "submitted" and "FAC-AREA" in last.comment and "移动" in last.comment
    # while in review, no resubmission
    _decide(client, project, "in_review")
    assert client.post(f"/review/projects/{project.pk}/resubmit/", {"text": GOOD, "action": "save",
                                                                    "version": project.version}).status_code == 409


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_pdf_report_has_verdict_and_rule_codes(client, planner, demo, tmp_path):
    project = _save(client, FAIL)
    _decide(client, project, "in_review")
    report = project.reports.first()
    resp = client.get(f"/review/reports/{report.pk}.pdf")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/pdf"
    assert resp.content[:5] == b"%PDF-"
    p = tmp_path / "r.pdf"
    p.write_bytes(resp.content)
    text = subprocess.run(["pdftotext", "-layout", str(p), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "不通过" in text and "verdict=fail" in text
    for code in json.loads(json.dumps(report.checks))["checks"]:
        assert code["code"] in text
    assert project.name in text and report.rule_set in text and planner.username in text
    # pages: A4
    info = subprocess.run(["pdfinfo", str(p)], capture_output=True, text=True).stdout
    assert re.search(r"^Pages:\s+2$", info, re.M) and "(A4)" in info


# ------------------------------------------------------------------ drawn on the map, other file formats
def _as_drawn(text):
    """What review_draw.js writes for the same project: the features in lon/lat, properties as typed."""
    fc = json.loads(text)
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": f["properties"], "geometry": f["geometry"]} for f in fc["features"]]},
        ensure_ascii=False)


def test_list_page_offers_drawing_without_inline_script(client, planner):
    resp = client.get("/review/")
    assert resp.status_code == 200
    html = resp.content.decode()
    for needle in ('id="draw-panel"', 'id="draw-map"', 'name="drawn"', 'id="draw-tiles"', 'id="draw-districts"',
                   "vendor/leaflet/leaflet.js", "vendor/leaflet-draw/leaflet.draw.js", "gisportal/review_draw.js",
                   'data-msg-site-start="绘制用地'):
        assert needle in html, needle
    # every <script> either loads a static file or is a JSON data block (CSP script-src 'self')
    for tag in re.findall(r"<script[^>]*>", html):
        assert " src=" in tag or 'type="application/json"' in tag, tag
    assert "'unsafe-inline'" not in resp["Content-Security-Policy"].split("script-src", 1)[1].split(";")[0]
    # no CDN host (not a bare "cdn": the page's random CSRF tokens may contain those letters)
    assert not re.search(r"cdn[.\-/]|unpkg\.com|//[^\"'\s]*cdn", html, re.I)
    # the district outlines, in lon/lat
    districts = resp.context["draw"]["districts"]["features"]
    assert len(districts) == models.District.objects.count()
    if districts:
        import shapely
        from shapely.geometry import shape
        xy = shapely.get_coordinates(shape(districts[0]["geometry"]))
        assert ((113 < xy[:, 0]) & (xy[:, 0] < 117) & (39 < xy[:, 1]) & (xy[:, 1] < 43)).all()


def test_drawn_submission_gives_the_same_report_as_the_upload(client, planner, demo):
    for fixture in (GOOD, FAIL):
        upload = client.post("/review/", {"file": _upload("p.geojson", fixture.encode()), "action": "check"})
        drawn = client.post("/review/", {"drawn": _as_drawn(fixture), "action": "check"})
        assert upload.status_code == drawn.status_code == 200
        assert drawn.context["doc"] == upload.context["doc"]
        assert drawn.context["doc"]["verdict"] == ("pass" if fixture is GOOD else "fail")
        # the save step carries the drawn GeoJSON itself, and no srid (drawn is lon/lat)
        assert json.loads(drawn.context["submission_text"]) == json.loads(_as_drawn(fixture))
        assert drawn.context["srid"] is None
    # a srid typed in the form does not apply to what was drawn
    drawn = client.post("/review/", {"drawn": _as_drawn(GOOD), "srid": "4547", "action": "check"})
    assert drawn.status_code == 200 and drawn.context["doc"]["verdict"] == "pass"
    # and saving stores the same project as the upload would
    before = counts()
    resp = client.post("/review/", {"drawn": _as_drawn(GOOD), "action": "save"})
    assert resp.status_code == 302
    assert counts() == (before[0] + 1, before[1] + 2, before[2] + 1, before[3] + 1)
    project = models.HousingProject.objects.latest("pk")
    assert project.households == 500 and project.status == "submitted"


def _upload(name, data):
    from django.core.files.uploadedfile import SimpleUploadedFile
    return SimpleUploadedFile(name, data)


def _bad_drawn():
    fc = json.loads(_as_drawn(GOOD))
    out = {}
    for key, change in {
        "households_text": lambda f: f[0]["properties"].update(households="五百"),
        "households_empty": lambda f: f[0]["properties"].update(households=None),
        "area_missing": lambda f: f[1]["properties"].update(floor_area_m2=None),
        "no_site": lambda f: f.pop(0),
        "bowtie": lambda f: f[0]["geometry"].update(coordinates=[[[114.888, 40.800], [114.891, 40.802],
                                                                  [114.891, 40.800], [114.888, 40.802],
                                                                  [114.888, 40.800]]]),
        "outside_city": lambda f: [g["geometry"].update(coordinates=[[[120.0, 30.0], [120.01, 30.0],
                                                                      [120.01, 30.01], [120.0, 30.0]]])
                                   for g in f[:1]],
    }.items():
        c = json.loads(json.dumps(fc))
        change(c["features"])
        out[key] = json.dumps(c, ensure_ascii=False)
    out["not_json"] = '{"type": "FeatureCollection", "features": ['
    return out


@pytest.mark.parametrize("case", sorted(_bad_drawn()))
def test_bad_drawing_is_refused_with_the_reason_and_nothing_saved(client, planner, demo, case):
    text = _bad_drawn()[case]
    try:
        services_review.review_submission(services_review.parse_submission(text))
    except services_review.SubmissionError as exc:
        expected = exc
    else:
        pytest.fail("the case is not refused by the service")
    before = counts()
    resp = client.post("/review/", {"drawn": text, "action": "save"})
    assert resp.status_code == 400
    html = resp.content.decode()
    assert 'id="review-error"' in html and f'data-code="{expected.code}"' in html
    assert expected.message_zh.replace("'", "&#x27;").replace('"', "&quot;") in html
    assert counts() == before
    # the drawing comes back in the form, for the page to restore it
    assert resp.context["form"]["drawn"].value() == text


def test_one_source_only_and_srid_allow_list(client, planner):
    before = counts()
    resp = client.post("/review/", {"text": GOOD, "drawn": _as_drawn(GOOD), "action": "save"})
    assert resp.status_code == 400 and "只用一种方式" in resp.content.decode()
    resp = client.post("/review/", {"text": GOOD, "srid": "32650", "action": "check"})
    assert resp.status_code == 400 and "32650" in resp.content.decode()
    assert counts() == before


def test_uploads_in_other_formats_go_through_a_private_temp_dir(client, planner, monkeypatch, tmp_path):
    import tempfile
    seen = []

    def fake_parse_path(path, *, srid=None, **kw):
        path = Path(path)
        seen.append((path, path.read_bytes(), srid, kw, oct(path.parent.stat().st_mode & 0o777)))
        raise services_review.SubmissionError("format", "测试：无法读取", "test: unreadable")

    monkeypatch.setattr(services_review, "parse_path", fake_parse_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = counts()
    for name in ("site.ZIP", "p.gpkg", "plan.dxf"):
        resp = client.post("/review/", {"file": _upload(name, b"PK\x03\x04 data"), "srid": "4547",
                                        "site_households": "300", "action": "check"})
        assert resp.status_code == 400 and "测试：无法读取" in resp.content.decode()
    assert [(p.name, data, srid, kw) for p, data, srid, kw, _m in seen] == [
        ("submission.zip", b"PK\x03\x04 data", 4547, {"attrs": {"households": "300"}}),
        ("submission.gpkg", b"PK\x03\x04 data", 4547, {"attrs": {"households": "300"}}),
        ("submission.dxf", b"PK\x03\x04 data", 4547, {"attrs": {"households": "300"}})]
    assert all(m == "0o700" for *_x, m in seen)
    assert all(not p.parent.exists() for p, *_x in seen)  # removed, error or not
    assert list(tmp_path.iterdir()) == []
    # a format we do not read is refused before anything is written
    resp = client.post("/review/", {"file": _upload("x.exe", b"MZ"), "action": "check"})
    assert resp.status_code == 400 and 'data-code="format"' in resp.content.decode()
    assert len(seen) == 3 and counts() == before


def test_file_submission_is_carried_to_the_save_step_exactly(client, planner, demo, monkeypatch):
    """A .zip/.gpkg/.dxf has no GeoJSON text: the result page carries the parsed project in the storage
    CRS, which parses back to the same coordinates and the same report."""
    good = services_review.parse_submission(GOOD)
    monkeypatch.setattr(services_review, "parse_path", lambda path, **kw: good)
    resp = client.post("/review/", {"file": _upload("p.gpkg", b"x"), "action": "check"})
    assert resp.status_code == 200 and resp.context["srid"] is None
    text = resp.context["submission_text"]
    again = services_review.parse_submission(text)
    import shapely
    assert shapely.equals_exact(again.project.site, good.project.site, tolerance=0)
    assert [(f.kind, f.floor_area_m2, f.name) for f in again.project.facilities] == \
        [(f.kind, f.floor_area_m2, f.name) for f in good.project.facilities]
    assert all(shapely.equals_exact(a.geom, b.geom, tolerance=0)
               for a, b in zip(again.project.facilities, good.project.facilities))
    saved = client.post("/review/", {"text": text, "action": "check"})
    assert saved.context["doc"] == resp.context["doc"]


def test_stale_resubmission_is_refused_by_the_service(client, planner, demo):
    from layers.services_resubmit import ResubmitProblem, save_resubmission
    project = _save(client, GOOD)
    sub = services_review.parse_submission(FAIL)
    review = services_review.review_submission(sub)
    before = counts()
    with pytest.raises(ResubmitProblem) as e:
        save_resubmission(project, project.version - 1, sub, review, user=planner, comment="x")
    assert e.value.code == "version" and counts() == before
    report = save_resubmission(project, project.version, sub, review, user=planner, comment="新版本",
                               changes={"households": [500, 500]})
    project.refresh_from_db()
    assert report.verdict == "fail" and project.status == "submitted"
    last = project.decisions.order_by("pk").last()
    assert (last.action, last.comment, last.check_comments, last.report) == (
        "submitted", "新版本", {"_changes": {"households": [500, 500]}}, report)
