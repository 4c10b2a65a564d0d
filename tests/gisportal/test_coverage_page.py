"""The coverage page (gisportal/views_coverage.py): form -> queued Job -> status page -> result, map and exports.

Tests run tasks inside ``enqueue`` (ImmediateBackend), so the job is done by the time of the redirect.

The routes are taken from ``views_coverage.urlpatterns`` plus the portal's own (this module is the URLconf
of its tests), so the page is tested whether or not gisportal/urls.py includes it yet.
"""
import csv
import io
import json
import shutil
import subprocess

import numpy as np
import pyogrio
import pytest
from django.core.management import call_command

from gisportal import urls as portal_urls
from gisportal import views_coverage
from layers import models, services

urlpatterns = list(views_coverage.urlpatterns) + list(portal_urls.urlpatterns)
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def demo():
    if not models.Shelter.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


@pytest.fixture
def official(client, django_user_model):
    user = django_user_model.objects.create_user("999_official", password="x")
    user.groups.add(services.roles_ensure()["emergency_official"])
    client.force_login(user)
    return user


def _run(client, **data):
    form = {"kind": "shelters", "method": "euclidean", "demand": "raster", **data}
    return client.post("/coverage/", {k: v for k, v in form.items() if v is not None})


def test_login_and_permission_required(client, django_user_model):
    assert client.get("/coverage/").status_code == 302  # to the login page
    client.force_login(django_user_model.objects.create_user("999_field", password="x"))
    assert client.get("/coverage/").status_code == 403


def test_page_run_agrees_with_the_command(client, official, demo):
    assert client.get("/coverage/").status_code == 200
    before = models.Job.objects.count()
    resp = _run(client, radius_m="500", capacity="on")
    assert resp.status_code == 302
    job = models.Job.objects.latest("pk")
    assert models.Job.objects.count() == before + 1  # the queued Job is the recorded run (adopted)
    assert resp["Location"] == f"/jobs/{job.pk}/?follow=1"  # the status page, following on to the result
    assert job.user == official and job.status == "done" and job.params["capacity"] is True
    assert job.params["request"]["radius_m"] == 500.0  # what the form asked for
    follow = client.get(resp["Location"])
    assert follow.status_code == 302 and follow["Location"] == f"/coverage/jobs/{job.pk}/"
    resp = follow

    out = io.StringIO()
    call_command("coverage", "shelters", "--radius-m", "500", "--capacity", "--json", stdout=out)
    cmd = json.loads(out.getvalue())
    for key in ("population_total", "population_covered", "share_covered", "population_served",
                "population_short", "population_unreachable"):
        assert job.result[key] == cmd[key], key
    assert job.result["grids"] == cmd["grids"]

    page = client.get(resp["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert f"/coverage/jobs/{job.pk}/map/" in html and 'data-key="population_served"' in html
    assert f"{job.result['share_covered']:.1%}" in html
    assert f"{job.result['population_served']:,.0f}" in html

    m = client.get(f"/coverage/jobs/{job.pk}/map/")
    assert m.status_code == 200
    body = m.content.decode()
    assert "leaflet" in body and "#d7191c" in body  # uncovered in red
    assert "cdn.jsdelivr" not in body and "unpkg.com" not in body  # every asset local


def test_exports(client, official, demo):
    _run(client, kind="fire_stations", radius_m="500")
    job = models.Job.objects.latest("pk")
    doc = job.result
    gj = client.get(f"/coverage/jobs/{job.pk}.geojson")
    assert gj.status_code == 200 and gj["Content-Type"] == "application/geo+json"
    fc = json.loads(gj.content)
    assert len(fc["features"]) == len(doc["grids"]) == models.Grid.objects.count()
    f0 = fc["features"][0]
    assert f0["properties"] == doc["grids"][0] and f0["geometry"]["type"] in ("Polygon", "MultiPolygon")
    lon, lat = f0["geometry"]["coordinates"][0][0][0][:2] if f0["geometry"]["type"] == "MultiPolygon" \
        else f0["geometry"]["coordinates"][0][0][:2]
    assert 114 < lon < 116 and 40 < lat < 42  # RFC 7946 lon/lat
    fac = json.loads(client.get(f"/coverage/jobs/{job.pk}.geojson?layer=facilities").content)
    assert {f["properties"]["code"] for f in fac["features"]} == {f["code"] for f in doc["facilities"]}

    text = client.get(f"/coverage/jobs/{job.pk}.csv").content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(doc["grids"])
    assert sum(float(r["covered"]) for r in rows) == pytest.approx(doc["population_covered"], abs=1.0)
    streets = list(csv.DictReader(io.StringIO(
        client.get(f"/coverage/jobs/{job.pk}.csv?layer=streets").content.decode("utf-8-sig"))))
    assert len(streets) == len(doc["areas"]["streets"])
    full = json.loads(client.get(f"/coverage/jobs/{job.pk}.json").content)
    assert full["result"]["population_covered"] == doc["population_covered"]
    assert client.get(f"/coverage/jobs/{job.pk}.xls").status_code == 404
    assert client.get(f"/coverage/jobs/{job.pk}.csv?layer=bogus").status_code == 404


def test_gpkg_and_pdf_exports(client, official, demo, tmp_path):
    _run(client, kind="shelters", capacity="on")
    job = models.Job.objects.latest("pk")
    doc = job.result
    page = client.get(f"/coverage/jobs/{job.pk}/").content.decode()
    assert f"/coverage/jobs/{job.pk}.gpkg" in page and f"/coverage/jobs/{job.pk}.pdf" in page

    resp = client.get(f"/coverage/jobs/{job.pk}.gpkg")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/geopackage+sqlite3"
    assert f'coverage-{job.pk}.gpkg' in resp["Content-Disposition"]
    path = tmp_path / "c.gpkg"
    path.write_bytes(resp.content)
    layers = dict(pyogrio.list_layers(path))
    assert set(layers) == {"grids", "facilities"}
    meta, _fids, geoms, fields = pyogrio.raw.read(path, layer="grids")
    cols = dict(zip(meta["fields"], fields))
    assert len(geoms) == len(doc["grids"]) == models.Grid.objects.count()
    assert meta["crs"] == "EPSG:4326"
    assert list(cols["code"]) == [g["code"] for g in doc["grids"]]
    assert cols["covered"].sum() == pytest.approx(sum(g["covered"] for g in doc["grids"]), abs=0.01)
    assert np.allclose(cols["served"], [g["served"] for g in doc["grids"]])
    meta, _fids, geoms, fields = pyogrio.raw.read(path, layer="facilities")
    cols = dict(zip(meta["fields"], fields))
    assert len(geoms) == len(doc["facilities"]) == models.Shelter.objects.count()
    assert np.allclose(cols["population_in_reach"], [f["population_in_reach"] for f in doc["facilities"]])
    assert np.allclose(cols["served"], [f["served"] for f in doc["facilities"]])

    resp = client.get(f"/coverage/jobs/{job.pk}.pdf")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/pdf"
    assert resp.content[:5] == b"%PDF-"
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils not installed")
    (tmp_path / "c.pdf").write_bytes(resp.content)
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "c.pdf"), "-"], capture_output=True,
                          check=True, text=True).stdout
    for key in ("population_total", "population_covered", "population_served"):
        assert f"{doc[key]:,.0f}" in text, key
    assert f"{doc['share_covered']:.1%}" in text and job.data_version in text and "999_official" in text
    assert doc["areas"]["districts"][0]["name"] in text


def test_input_the_service_refuses_is_shown_on_the_form(client, official):
    models.FireStation.objects.filter(kind="standard").delete()
    before = models.Job.objects.count()
    resp = _run(client, kind="fire_stations", facility_kind="standard")
    assert resp.status_code == 200 and resp.context["form"].non_field_errors()
    assert models.Job.objects.count() == before


def test_status_page_refreshes_until_done_then_follows(client, official):
    job = models.Job.objects.create(kind="coverage", status="queued", params={"kind": "shelters"}, user=official)
    page = client.get(f"/jobs/{job.pk}/?follow=1")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'http-equiv="refresh"' in html and 'id="job-progress"' in html and "job-result" not in html
    models.Job.objects.filter(pk=job.pk).update(status="failed", error="没有符合条件的避难场所")
    html = client.get(f"/jobs/{job.pk}/?follow=1").content.decode()
    assert 'http-equiv="refresh"' not in html and "没有符合条件的避难场所" in html and 'href="/coverage/"' in html
    models.Job.objects.filter(pk=job.pk).update(status="done", error="", result={"population_total": 1})
    assert client.get(f"/jobs/{job.pk}/?follow=1")["Location"] == f"/coverage/jobs/{job.pk}/"
    html = client.get(f"/jobs/{job.pk}/").content.decode()  # without follow: the status page, with a link
    assert f'href="/coverage/jobs/{job.pk}/"' in html


def test_network_map_draws_service_areas(client, official, demo):
    _run(client, kind="fire_stations", facility_kind="community_micro", radius_m="500", method="network")
    job = models.Job.objects.latest("pk")
    assert job.params["method"] == "network"
    body = client.get(f"/coverage/jobs/{job.pk}/map/").content.decode()
    assert "#2c7fb8" in body  # the service areas layer


@pytest.mark.parametrize("data", [
    {"radius_m": "-5"},
    {"kind": "fire_stations", "capacity": "on"},
    {"kind": "fire_stations", "level": "emergency"},
    {"kind": "shelters", "facility_kind": "community_micro"},
    {"kind": "facilities", "facility_kind": "community_micro"},
    {"method": "crow"},
])
def test_bad_form_input_records_nothing(client, official, data):
    before = models.Job.objects.count()
    resp = _run(client, **data)
    assert resp.status_code == 200 and b"coverage-form" in resp.content
    assert resp.context["form"].errors
    assert models.Job.objects.count() == before


def test_unknown_job_is_404(client, official):
    assert client.get("/coverage/jobs/999999/").status_code == 404
    assert client.get("/coverage/jobs/999999/map/").status_code == 404
