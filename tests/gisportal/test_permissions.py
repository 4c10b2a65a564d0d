"""The permission matrix (issue 8): every URL pattern of the site × every role, with the expected status.

The routes come from the resolver itself (``django.urls.get_resolver``, walked recursively), so a route
added without an entry in ``MATRIX`` fails :func:`test_every_route_has_a_matrix_entry`. The admin site
is checked as a whole: every admin page without arguments redirects an anonymous visitor to its login.

Each entry sends one request (valid, so that an allowed role really gets through) as anonymous, planner,
emergency official, field staff and admin, and compares the status. An *unexpected allow* is a success
(< 400, other than a redirect to a login page) where the matrix expects a refusal; their count is printed
and must be 0, as must the count of any other mismatch.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.gis.geos import Point
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from gisportal import tasks
from layers import models, services_review
from tests.gisportal.api_helpers import make_users

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
ROLES = ("anonymous", "planner", "emergency_official", "field_staff", "admin")
API = "/api/v1"


def routes() -> list[tuple[str, str | None, str | None]]:
    """(route, name, namespace) of every URL pattern, walking included URLconfs."""
    out = []

    def walk(patterns, prefix, namespace):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern), p.namespace or namespace)
            elif isinstance(p, URLPattern):
                out.append((prefix + str(p.pattern), p.name, namespace))
    walk(get_resolver().url_patterns, "", None)
    return out


def E(anonymous, planner, emergency_official, field_staff, admin):  # noqa: N802
    return dict(zip(ROLES, (anonymous, planner, emergency_official, field_staff, admin)))


LOGIN = 302  # a page's redirect to the login page
PAGE_ANALYSIS = E(LOGIN, 200, 200, 403, 200)  # login + layers.view_shelter (coverage, siting pages)
FEATURE = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [114.88, 40.77]},
           "properties": {"code": "999MX", "name": "矩阵测试", "kind": "community_micro", "staff": 4, "on_duty": 1}}

# name -> list of (method, path template, body, body format, expected per role). Templates use the
# sample objects: {coverage}, {siting}, {export}, {queued}, {shelter}, {grid_mine}, {grid_other},
# {candidate}, {project}, {report}.
MATRIX: dict[str, list[tuple]] = {
    # --- pages
    "home": [("get", "/", None, None, E(200, 200, 200, 200, 200))],
    "map_frame": [("get", "/map/frame/", None, None, E(200, 200, 200, 200, 200))],
    # public overview map data (the home page's map): see the report, issue 8
    "layer_geojson": [("get", "/layers/shelters.geojson", None, None, E(200, 200, 200, 200, 200))],
    "login": [("get", "/accounts/login/", None, None, E(200, 200, 200, 200, 200))],
    "logout": [("post", "/accounts/logout/", {}, None, E(302, 302, 302, 302, 302))],
    "set_language": [("post", "/i18n/setlang/", {"language": "en", "next": "/"}, None, E(302, 302, 302, 302, 302))],
    # grid export page: anyone who can see grids (field staff: their own); jobs: one's own, admins all
    "grid_export": [("get", "/exports/grids/", None, None, E(LOGIN, 200, 200, 200, 200))],
    "job_list": [("get", "/jobs/", None, None, E(LOGIN, 200, 200, 200, 200))],
    "job_detail": [("get", "/jobs/{export}/", None, None, E(LOGIN, 404, 200, 404, 200))],
    "job_cancel": [("post", "/jobs/{queued}/cancel/", None, None, E(LOGIN, 404, 302, 404, 302))],
    "job_download": [("get", "/jobs/{export}/download/", None, None, E(LOGIN, 404, 200, 404, 200))],
    "coverage": [("get", "/coverage/", None, None, PAGE_ANALYSIS),
                 # running an analysis: emergency officials and admins only (302 = to the recorded result)
                 ("post", "/coverage/", "coverage_form", "form", E(LOGIN, 403, 302, 403, 302))],
    "coverage_result": [("get", "/coverage/jobs/{coverage}/", None, None, PAGE_ANALYSIS)],
    "coverage_map": [("get", "/coverage/jobs/{coverage}/map/", None, None, PAGE_ANALYSIS)],
    "coverage_export": [("get", "/coverage/jobs/{coverage}.csv", None, None, PAGE_ANALYSIS)],
    "siting": [("get", "/siting/", None, None, PAGE_ANALYSIS),
               ("post", "/siting/", "siting_form", "form", E(LOGIN, 403, 302, 403, 302))],
    "siting_result": [("get", "/siting/jobs/{siting}/", None, None, PAGE_ANALYSIS)],
    "siting_map": [("get", "/siting/jobs/{siting}/map/", None, None, PAGE_ANALYSIS)],
    "siting_export": [("get", "/siting/jobs/{siting}.csv", None, None, PAGE_ANALYSIS)],
    "dashboard": [("get", "/dashboard/", None, None, E(LOGIN, 200, 200, 200, 200))],
    # the import page: admins, and whoever may add rows of a kind (emergency officials: candidate sites)
    "import": [("get", "/import/", None, None, E(LOGIN, 403, 200, 403, 200))],
    "review": [("get", "/review/", None, None, E(LOGIN, 200, 403, 403, 200))],
    "review_project": [("get", "/review/projects/{project}/", None, None, E(LOGIN, 200, 403, 403, 200))],
    "review_map": [("get", "/review/projects/{project}/map/", None, None, E(LOGIN, 200, 403, 403, 200))],
    "review_decide": [("post", "/review/projects/{project}/decide/", "decide", None, E(LOGIN, 302, 403, 403, 302))],
    # allowed through, then 409: an in-review project cannot be resubmitted (the state rule, not the role)
    "review_resubmit": [("post", "/review/projects/{project}/resubmit/", {"action": "check"}, None,
                         E(LOGIN, 409, 403, 403, 409))],
    "review_report_pdf": [("get", "/review/reports/{report}.pdf", None, None, E(LOGIN, 200, 403, 403, 200))],
    # layer browser: public layers for everyone (as on the overview map), the others with the view
    # permission (field staff: their own grids); exports follow the API's rule (view permission)
    "layer_browser": [("get", "/layers/", None, None, E(200, 200, 200, 200, 200))],
    "layer_browser_kind": [
        ("get", "/layers/shelters/", None, None, E(200, 200, 200, 200, 200)),
        ("get", "/layers/grids/?q=0&order_by=-code", None, None, E(LOGIN, 200, 200, 200, 200)),
        ("get", "/layers/candidates/", None, None, E(LOGIN, 403, 200, 403, 200)),
        ("get", "/layers/shelters/?order_by=geom", None, None, E(400, 400, 400, 400, 400)),
    ],
    "layer_browser_features": [
        ("get", "/layers/shelters/features/?bbox=114,40,116,42", None, None, E(200, 200, 200, 200, 200)),
        ("get", "/layers/grids/features/?id={grid_other}", None, None, E(LOGIN, 200, 200, 200, 200)),
        ("get", "/layers/candidates/features/", None, None, E(LOGIN, 403, 200, 403, 200)),
    ],
    "layer_browser_export": [
        ("get", "/layers/shelters/export/?format=csv", None, None, E(LOGIN, 200, 200, 403, 200)),
        ("get", "/layers/grids/export/?format=geojson&q=0", None, None, E(LOGIN, 200, 200, 200, 200)),
        ("get", "/layers/candidates/export/?format=kml", None, None, E(LOGIN, 403, 200, 403, 200)),
    ],
    # the audit log (issue 9): admins only, read-only
    "audit_log": [("get", "/audit/", None, None, E(LOGIN, 403, 403, 403, 200)),
                  ("get", "/audit/?action=export&status=ok&date_from=2020-01-01", None, None,
                   E(LOGIN, 403, 403, 403, 200))],
    # --- API
    "api-index": [("get", f"{API}/", None, None, E(401, 200, 200, 200, 200))],
    "api-token": [("post", f"{API}/auth/token/", "credentials", "json", E(400, 200, 200, 200, 200))],
    "api-layers": [("get", f"{API}/layers/", None, None, E(401, 200, 200, 200, 200))],
    "api-layer": [
        ("get", f"{API}/layers/shelters/", None, None, E(401, 200, 200, 403, 200)),
        ("get", f"{API}/layers/grids/", None, None, E(401, 200, 200, 200, 200)),
        ("get", f"{API}/layers/districts/", None, None, E(401, 200, 200, 403, 200)),
        ("post", f"{API}/layers/fire_stations/", FEATURE, "json", E(401, 403, 403, 403, 201)),
    ],
    "api-feature": [
        ("get", f"{API}/layers/shelters/{{shelter}}/", None, None, E(401, 200, 200, 403, 200)),
        ("get", f"{API}/layers/grids/{{grid_mine}}/", None, None, E(401, 200, 200, 200, 200)),
        ("get", f"{API}/layers/grids/{{grid_other}}/", None, None, E(401, 200, 200, 404, 200)),
        ("patch", f"{API}/layers/candidates/{{candidate}}/", {"properties": {"name": "改名"}}, "json",
         E(401, 403, 403, 403, 200)),
        ("put", f"{API}/layers/candidates/{{candidate}}/", {
            "type": "Feature", "geometry": {"type": "Point", "coordinates": [114.9, 40.8]},
            "properties": {"code": "999C1", "name": "整体替换"}}, "json", E(401, 403, 403, 403, 200)),
        ("delete", f"{API}/layers/candidates/{{candidate}}/", None, None, E(401, 403, 403, 403, 204)),
    ],
    "api-projects": [("get", f"{API}/projects/", None, None, E(401, 200, 403, 403, 200))],
    "api-project": [("get", f"{API}/projects/{{project}}/", None, None, E(401, 200, 403, 403, 200))],
    "api-project-decide": [("post", f"{API}/projects/{{project}}/decisions/", {"action": "comment", "comment": "m"},
                            "json", E(401, 201, 403, 403, 201))],
    "api-reviews": [
        ("get", f"{API}/reviews/", None, None, E(401, 200, 403, 403, 200)),
        ("post", f"{API}/reviews/", "submission", "json", E(401, 200, 403, 403, 200)),
    ],
    "api-review": [("get", f"{API}/reviews/{{report}}/", None, None, E(401, 200, 403, 403, 200))],
    "api-coverage": [("post", f"{API}/coverage/", {"kind": "fire_stations", "demand": "grids", "radius_m": 500},
                      "json", E(401, 403, 202, 403, 202))],
    "api-siting": [("post", f"{API}/siting/", "siting", "json", E(401, 403, 202, 403, 202))],
    "api-exports": [
        ("post", f"{API}/exports/", {"layer": "communities", "format": "csv"}, "json", E(401, 202, 202, 202, 202)),
        ("post", f"{API}/exports/", {"layer": "shelters", "format": "csv"}, "json", E(401, 202, 202, 403, 202)),
        ("post", f"{API}/exports/", {"layer": "grids", "format": "csv"}, "json", E(401, 202, 202, 202, 202)),
    ],
    "api-imports": [("post", f"{API}/imports/", "upload", "multipart", E(401, 403, 403, 403, 202)),
                    ("post", f"{API}/imports/", "upload_candidates", "multipart", E(401, 403, 202, 403, 202))],
    "api-jobs": [("get", f"{API}/jobs/", None, None, E(401, 200, 200, 200, 200))],
    "api-job": [("get", f"{API}/jobs/{{coverage}}/", None, None, E(401, 404, 200, 404, 200)),
                ("get", f"{API}/jobs/{{export}}/", None, None, E(401, 404, 200, 404, 200))],
    "api-job-cancel": [("post", f"{API}/jobs/{{queued}}/cancel/", None, None, E(401, 404, 202, 404, 202))],
    "api-job-file": [("get", f"{API}/jobs/{{export}}/file/", None, None, E(401, 404, 200, 404, 200))],
    "api-schema": [("get", f"{API}/schema/", None, None, E(401, 200, 200, 200, 200))],
    "api-docs": [("get", f"{API}/docs/", None, None, E(401, 200, 200, 200, 200))],
    "api-redoc": [("get", f"{API}/redoc/", None, None, E(401, 200, 200, 200, 200))],
}
#: Routes that only exist with some settings (served media in DEBUG).
OPTIONAL = {r"^\^media/", r"^media/"}


def _key(route: str, name: str | None) -> str:
    return name or route


def test_every_route_has_a_matrix_entry():
    missing, admin = [], 0
    for route, name, namespace in routes():
        if namespace == "admin":
            admin += 1
            continue
        if any(re.match(p, route) for p in OPTIONAL):
            continue
        if _key(route, name) not in MATRIX:
            missing.append(f"{route} (name={name})")
    assert admin > 0
    assert not missing, "routes without a permission matrix entry: " + ", ".join(missing)


def test_admin_redirects_anonymous_to_its_login():
    client = Client()
    checked = 0
    for route, name, namespace in routes():
        if namespace != "admin" or "<" in route or "(?P" in route or name in ("login", "logout"):
            continue
        path = "/" + route.replace("^", "").replace("$", "").replace("\\Z", "")
        resp = client.get(path)
        assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/"), (path, resp.status_code)
        checked += 1
    assert checked >= 10
    print(f"\nadmin: {checked} pages redirect an anonymous visitor to the admin login")


# ------------------------------------------------------------------ the matrix run
def _samples(users) -> dict:
    """Objects the matrix's paths refer to (created in the test's transaction)."""
    emergency = users["emergency_official"]
    cov = tasks.job_queue(models.Job.Kind.COVERAGE, {"kind": "fire_stations", "demand": "grids", "radius_m": 500.0},
                          user=emergency)
    assert tasks.coverage_job.call(cov.pk) == "done"
    exp = tasks.job_queue(models.Job.Kind.EXPORT, {"layer": "communities", "format": "csv"}, user=emergency)
    assert tasks.export_job.call(exp.pk) == "done"
    sub = services_review.parse_submission((ROOT / "fixtures/review/good_qiaodong.geojson").read_bytes())
    project = services_review.save_review(sub, services_review.review_submission(sub), user=users["planner"])
    community = models.Community.objects.filter(grids__population__gt=0).order_by("code").first()
    sample = {
        "coverage": cov.pk, "export": exp.pk, "project": project.pk,
        "report": project.reports.first().pk,
        "shelter": models.Shelter.objects.order_by("pk").first().pk,
        "grid_mine": models.Grid.objects.filter(worker=users["field_staff"]).first().pk,
        "grid_other": models.Grid.objects.exclude(worker=users["field_staff"]).first().pk,
        "community": community.code,
        "siting": 0,
    }
    if any(name == "siting_result" for _r, name, _n in routes()):
        sit = tasks.job_queue(models.Job.Kind.SITING, {"kind": "fire_stations", "objective": "mclp", "p": 1,
                                                       "radius_m": 500.0, "area": community.code},
                              user=emergency)
        assert tasks.siting_job.call(sit.pk) == "done"
        sample["siting"] = sit.pk
    return sample


def _fresh(sample, users):
    """Per-request objects: a queued job to cancel, a candidate site to change or delete."""
    queued = tasks.job_queue(models.Job.Kind.COVERAGE, {"kind": "fire_stations"}, user=users["emergency_official"])
    models.CandidateSite.objects.filter(code="999C1").delete()
    candidate = models.CandidateSite.objects.create(code="999C1", name="候选",
                                                    geom=Point(114.9, 40.8, srid=4326).transform(
                                                        settings.GIS_SRID, clone=True))
    models.FireStation.objects.filter(code="999MX").delete()
    return {**sample, "queued": queued.pk, "candidate": candidate.pk}


def _body(body, role, sample):
    if body == "credentials":
        return {"username": f"999_{role}", "password": f"pw-999-{role}"} if role != "anonymous" else {}
    if body == "decide":
        version = models.HousingProject.objects.get(pk=sample["project"]).version
        return {"action": "comment", "comment": "矩阵", "version": version}
    if body == "submission":
        return {"submission": json.loads((ROOT / "fixtures/review/good_qiaodong.geojson").read_text("utf-8")),
                "save": False}
    if body == "siting":
        return {"kind": "fire_stations", "objective": "mclp", "p": 1, "radius_m": 500, "area": sample["community"]}
    if body == "coverage_form":
        return {"kind": "fire_stations", "radius_m": "500", "method": "euclidean", "demand": "grids"}
    if body == "siting_form":
        return {"kind": "fire_stations", "objective": "mclp", "radius_m": "500", "p": "1",
                "candidates": "generated", "spacing_m": "200", "area": sample["community"], "existing": "on",
                "method": "euclidean", "time_limit_s": "20"}
    if body == "upload":
        path = ROOT / "fixtures/formats/districts_wgs84.geojson"
        return {"file": SimpleUploadedFile(path.name, path.read_bytes()), "kind": "districts", "dry_run": "true"}
    if body == "upload_candidates":
        path = ROOT / "fixtures/formats/sites.dxf"
        return {"file": SimpleUploadedFile(path.name, path.read_bytes()), "kind": "candidates", "srid": "4547",
                "layer": "候选点", "mapping": "code=handle", "dry_run": "true"}
    return body


def _allowed(status: int, resp) -> bool:
    if status in (301, 302):
        where = resp.get("Location", "")
        return "/login/" not in where
    return status < 400


@pytest.mark.slow
def test_permission_matrix():
    if not models.Shelter.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")
    users = make_users()
    sample = _samples(users)
    present = {name for _r, name, _n in routes()}
    rows, mismatches, unexpected_allows, checked = [], [], 0, 0
    for name, entries in MATRIX.items():
        if name not in present:
            continue  # e.g. the siting pages before gisportal/urls.py includes them
        for method, template, body, fmt, expect in entries:
            for role in ROLES:
                values = _fresh(sample, users)
                path = template.format(**values)
                client = Client()
                if role != "anonymous":
                    client.force_login(users[role])
                data = _body(body, role, values)
                kwargs = {}
                if data is not None:
                    if fmt == "json":
                        kwargs = {"data": json.dumps(data), "content_type": "application/json"}
                    else:
                        kwargs = {"data": data}
                resp = getattr(client, method)(path, **kwargs)
                checked += 1
                want, got = expect[role], resp.status_code
                if got != want:
                    mismatches.append(f"{method.upper()} {path} as {role}: expected {want}, got {got}")
                    if want >= 400 or (want == LOGIN and role == "anonymous"):
                        if _allowed(got, resp):
                            unexpected_allows += 1
                rows.append((name, method, path, role, want, got))
    print(f"\npermission matrix: {checked} requests over {sum(1 for n in MATRIX if n in present)} routes × "
          f"{len(ROLES)} roles; unexpected allows: {unexpected_allows}; mismatches: {len(mismatches)}")
    for m in mismatches:
        print("  " + m)
    assert unexpected_allows == 0
    assert not mismatches
