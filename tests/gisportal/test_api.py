"""The REST API v1 (gisportal/api): layers as GeoJSON, reviews, jobs, auth, schema and docs.

Tasks run
inside the request (ImmediateBackend), so a 202's Job is already finished when the test reads it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import shapely
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from layers import models, selectors
from layers.registry import LAYERS
from tests.gisportal.api_helpers import client_for, demo, users  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

FIX = Path(__file__).resolve().parents[2] / "fixtures"
API = "/api/v1"


def feats(resp):
    assert resp.status_code == 200, resp.content[:500]
    data = resp.json()
    assert data["type"] == "FeatureCollection"
    return data


# ------------------------------------------------------------------ layers
@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_layer_reads_as_geojson_for_an_admin(users, kind):
    data = feats(client_for(users["admin"]).get(f"{API}/layers/{kind}/", {"page_size": 5}))
    assert data["count"] == LAYERS[kind].model.objects.count()
    assert len(data["features"]) == min(5, data["count"])
    for f in data["features"]:
        assert set(LAYERS[kind].fields) <= set(f["properties"])
        lon, lat = np.array(shapely.get_coordinates(shapely.from_geojson(json.dumps(f["geometry"])))).mean(0)
        assert 113 < lon < 117 and 39 < lat < 43  # Zhangjiakou, lon/lat order (RFC 7946)


def test_bbox_matches_the_selector_and_a_brute_force_check(users, demo):
    west, south, east, north = 114.85, 40.75, 114.92, 40.80
    data = feats(client_for(users["admin"]).get(f"{API}/layers/shelters/",
                                                {"bbox": f"{west},{south},{east},{north}", "page_size": 5000}))
    ids = sorted(f["id"] for f in data["features"])
    assert ids == sorted(f["id"] for f in selectors.layer_geojson("shelters", bbox=(west, south, east, north))
                         ["features"])
    # brute force: every shelter's lon/lat geometry against the box, in shapely
    every = selectors.layer_geojson("shelters")["features"]
    box = shapely.box(west, south, east, north)
    brute = sorted(f["id"] for f in every if shapely.from_geojson(json.dumps(f["geometry"])).intersects(box))
    assert ids == brute and 0 < len(ids) < len(every)


def test_attribute_filters_ordering_and_pagination(users, demo):
    c = client_for(users["admin"])
    level = models.Shelter.objects.values_list("level", flat=True).first()
    data = feats(c.get(f"{API}/layers/shelters/", {"level": level, "page_size": 5000}))
    assert data["count"] == models.Shelter.objects.filter(level=level).count()
    assert {f["properties"]["level"] for f in data["features"]} == {level}

    big = feats(c.get(f"{API}/layers/shelters/", {"effective_area_m2__gte": 5000, "ordering": "-effective_area_m2",
                                                 "page_size": 5000}))
    areas = [f["properties"]["effective_area_m2"] for f in big["features"]]
    assert areas == sorted(areas, reverse=True) and min(areas) >= 5000
    assert big["count"] == models.Shelter.objects.filter(effective_area_m2__gte=5000).count()

    one = models.Shelter.objects.order_by("code").first()
    hit = feats(c.get(f"{API}/layers/shelters/", {"search": one.code}))
    assert one.pk in [f["id"] for f in hit["features"]]

    total = models.Community.objects.count()
    seen, url = [], f"{API}/layers/communities/?page_size=7&ordering=code"
    while url:
        page = feats(c.get(url))
        seen += [f["properties"]["code"] for f in page["features"]]
        url = page["next"]
        if len(seen) > 30:
            break
    assert seen == list(models.Community.objects.order_by("code").values_list("code", flat=True)[:len(seen)])
    assert page["count"] == total


@pytest.mark.parametrize("params", [{"colour": "red"}, {"ordering": "geom"}, {"ordering": "password"},
                                    {"bbox": "1,2,3"}, {"bbox": "120,50,110,40"}, {"staff__gte": "x"},
                                    {"level__gte": "1"}])
def test_unknown_filters_and_bad_values_are_400(users, params):
    kind = "fire_stations" if "staff__gte" in params else "shelters"
    resp = client_for(users["admin"]).get(f"{API}/layers/{kind}/", params)
    assert resp.status_code == 400, resp.content


def test_unknown_layer_is_404(users):
    assert client_for(users["admin"]).get(f"{API}/layers/unicorns/").status_code == 404


def test_field_worker_sees_only_their_grids(users, demo):
    c = client_for(users["field_staff"])
    data = feats(c.get(f"{API}/layers/grids/", {"page_size": 5000}))
    mine = set(models.Grid.objects.filter(worker=users["field_staff"]).values_list("pk", flat=True))
    assert {f["id"] for f in data["features"]} == mine and len(mine) == 2
    other = models.Grid.objects.exclude(worker=users["field_staff"]).first()
    assert c.get(f"{API}/layers/grids/{other.pk}/").status_code == 404
    assert c.get(f"{API}/layers/grids/{min(mine)}/").status_code == 200
    assert c.get(f"{API}/layers/shelters/").status_code == 403
    # a planner sees every grid
    assert feats(client_for(users["planner"]).get(f"{API}/layers/grids/", {"page_size": 1}))["count"] == \
        models.Grid.objects.count()


def test_only_admins_edit_base_layers(users):
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [114.88, 40.77]},
               "properties": {"code": "999FS1", "name": "测试微型站", "kind": "community_micro", "staff": 6,
                              "on_duty": 2, "is_sample": False}}
    for role in ("planner", "emergency_official", "field_staff"):
        assert client_for(users[role]).post(f"{API}/layers/fire_stations/", feature, format="json").status_code == 403
    c = client_for(users["admin"])
    resp = c.post(f"{API}/layers/fire_stations/", feature, format="json")
    assert resp.status_code == 201, resp.content
    obj = models.FireStation.objects.get(code="999FS1")
    assert obj.geom.srid == settings.GIS_SRID
    lon, lat = resp.json()["geometry"]["coordinates"]
    assert abs(lon - 114.88) < 1e-7 and abs(lat - 40.77) < 1e-7
    # stored in GIS_SRID metres: back to lon/lat agrees
    back = obj.geom.transform(4326, clone=True)
    assert abs(back.x - 114.88) < 1e-7 and abs(back.y - 40.77) < 1e-7
    bad = c.patch(f"{API}/layers/fire_stations/{obj.pk}/", {"properties": {"on_duty": 9}}, format="json")
    assert bad.status_code == 400  # on duty > staff: the model's own rule
    ok = c.patch(f"{API}/layers/fire_stations/{obj.pk}/", {"properties": {"on_duty": 3}}, format="json")
    assert ok.status_code == 200 and models.FireStation.objects.get(pk=obj.pk).on_duty == 3
    assert client_for(users["emergency_official"]).delete(f"{API}/layers/fire_stations/{obj.pk}/").status_code == 403
    assert c.delete(f"{API}/layers/fire_stations/{obj.pk}/").status_code == 204
    assert not models.FireStation.objects.filter(pk=obj.pk).exists()


# ------------------------------------------------------------------ auth
def test_anonymous_is_refused_and_token_auth_works(users):
    anon = APIClient()
    resp = anon.get(f"{API}/layers/shelters/")
    assert resp.status_code == 401 and resp["WWW-Authenticate"] == "Token"
    resp = anon.post(f"{API}/auth/token/", {"username": "999_planner", "password": "pw-999-planner"}, format="json")
    assert resp.status_code == 200
    token = resp.json()["token"]
    assert Token.objects.get(key=token).user == users["planner"]
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get(f"{API}/layers/").status_code == 200
    wrong = APIClient()
    assert wrong.post(f"{API}/auth/token/", {"username": "999_planner", "password": "no"},
                      format="json").status_code == 400
    wrong.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert wrong.get(f"{API}/layers/").status_code == 401


def test_session_auth_enforces_csrf(users):
    c = client_for(users["emergency_official"], csrf=True)
    assert c.get(f"{API}/layers/").status_code == 200  # safe methods need no token
    resp = c.post(f"{API}/coverage/", {"kind": "fire_stations"}, format="json")
    assert resp.status_code == 403 and "CSRF" in resp.json()["detail"]
    assert not models.Job.objects.exists()
    # with the cookie's token it goes through
    c.get("/accounts/login/")
    token = c.cookies["csrftoken"].value
    resp = c.post(f"{API}/coverage/", {"kind": "fire_stations", "demand": "grids"}, format="json",
                  HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 202, resp.content


# ------------------------------------------------------------------ reviews
def test_planner_submits_reviews_decides_and_sees_only_their_own(users, demo):
    c = client_for(users["planner"])
    sub = json.loads((FIX / "review" / "fail_facility.geojson").read_text(encoding="utf-8"))
    resp = c.post(f"{API}/reviews/", {"submission": sub}, format="json")
    assert resp.status_code == 201, resp.content
    doc = resp.json()
    assert doc["review"]["verdict"] == "fail"
    failed = [ch for ch in doc["review"]["checks"] if ch["status"] == "fail"]
    assert failed
    project = models.HousingProject.objects.get(pk=doc["project"])
    assert project.submitted_by == users["planner"] and project.status == "in_review"
    report = models.ReviewReport.objects.get(pk=doc["report"])
    assert report.reviewer == users["planner"]

    # dry run: nothing saved
    n = models.HousingProject.objects.count()
    assert c.post(f"{API}/reviews/", {"submission": sub, "save": False}, format="json").status_code == 200
    assert models.HousingProject.objects.count() == n

    # a refused submission is 422 with the reason
    bad = json.loads((FIX / "review" / "bad_outside_city.geojson").read_text(encoding="utf-8"))
    resp = c.post(f"{API}/reviews/", {"submission": bad}, format="json")
    assert resp.status_code == 422 and resp.json()["code"]

    assert [p["id"] for p in c.get(f"{API}/projects/").json()["results"]] == [project.pk]
    detail = c.get(f"{API}/projects/{project.pk}/").json()
    assert detail["reports"][0]["verdict"] == "fail"
    assert c.get(f"{API}/reviews/{report.pk}/").json()["checks"]["verdict"] == "fail"

    # another planner sees nothing of it
    other = type(users["planner"]).objects.create_user("999_planner2", password="x")
    other.groups.add(*users["planner"].groups.all())
    c2 = client_for(other)
    assert c2.get(f"{API}/projects/").json()["results"] == []
    assert c2.get(f"{API}/projects/{project.pk}/").status_code == 404
    assert c2.get(f"{API}/reviews/{report.pk}/").status_code == 404
    assert c2.post(f"{API}/projects/{project.pk}/decisions/", {"action": "approved"}, format="json").status_code == 404

    # approve/reject only from "in review"; reject needs a comment; stale version -> 409
    code = failed[0]["code"]
    assert c.post(f"{API}/projects/{project.pk}/decisions/", {"action": "rejected"},
                  format="json").status_code == 400
    resp = c.post(f"{API}/projects/{project.pk}/decisions/",
                  {"action": "rejected", "comment": "设施面积不足", "check_comments": {code: "请补足"},
                   "version": project.version}, format="json")
    assert resp.status_code == 201, resp.content
    project.refresh_from_db()
    assert project.status == "rejected" and project.version == 2
    d = models.ReviewDecision.objects.get(project=project)
    assert d.user == users["planner"] and d.check_comments == {code: "请补足"} and d.report_id == report.pk
    assert c.post(f"{API}/projects/{project.pk}/decisions/", {"action": "comment", "comment": "x", "version": 1},
                  format="json").status_code == 409
    assert c.post(f"{API}/projects/{project.pk}/decisions/", {"action": "approved", "comment": "y"},
                  format="json").status_code == 409
    assert c.post(f"{API}/projects/{project.pk}/decisions/", {"action": "comment", "comment": "已通知"},
                  format="json").status_code == 201
    project.refresh_from_db()
    assert project.version == 3 and project.decisions.count() == 2
    # the admin sees it all
    assert project.pk in [p["id"] for p in client_for(users["admin"]).get(f"{API}/projects/").json()["results"]]


# ------------------------------------------------------------------ exports, imports
def test_layer_export_job_and_download(users, demo):
    c = client_for(users["planner"])
    resp = c.post(f"{API}/exports/", {"layer": "shelters", "format": "geojson"}, format="json")
    assert resp.status_code == 202, resp.content
    job = resp.json()
    assert job["status"] == "done", job
    assert resp["Location"].endswith(f"/api/v1/jobs/{job['id']}/")
    assert job["result"]["count"] == models.Shelter.objects.count()
    f = c.get(job["file_url"])
    assert f.status_code == 200 and "attachment" in f["Content-Disposition"]
    data = json.loads(b"".join(f.streaming_content))
    assert len(data["features"]) == models.Shelter.objects.count()
    # somebody else cannot see or download it
    assert client_for(users["emergency_official"]).get(job["file_url"]).status_code == 404
    # a field worker may not export shelters (no view permission)
    assert client_for(users["field_staff"]).post(f"{API}/exports/", {"layer": "shelters", "format": "csv"},
                                                 format="json").status_code == 403


def test_field_worker_exports_only_their_grids(users, demo):
    c = client_for(users["field_staff"])
    job = c.post(f"{API}/exports/", {"layer": "grids", "format": "geojson"}, format="json").json()
    assert job["status"] == "done", job
    data = json.loads(b"".join(c.get(job["file_url"]).streaming_content))
    mine = set(models.Grid.objects.filter(worker=users["field_staff"]).values_list("code", flat=True))
    assert {f["properties"]["code"] for f in data["features"]} == mine
    other = models.Grid.objects.exclude(worker=users["field_staff"]).first()
    job = c.post(f"{API}/exports/", {"layer": "grids", "format": "geojson", "grid": other.code},
                 format="json").json()
    assert job["status"] == "failed" and job["result"]["error"]["code"] == "denied"
    assert c.get(f"{API}/jobs/{job['id']}/file/").status_code == 404


def test_import_upload_admin_only_size_limited(users, settings):
    path = FIX / "formats" / "districts_wgs84.geojson"
    upload = lambda: SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/geo+json")  # noqa: E731
    for role in ("planner", "emergency_official", "field_staff"):  # base layers: admins only
        assert client_for(users[role]).post(f"{API}/imports/", {"file": upload(), "kind": "districts"},
                                            format="multipart").status_code == 403
    c = client_for(users["admin"])
    resp = c.post(f"{API}/imports/", {"file": upload(), "kind": "districts", "dry_run": "true"}, format="multipart")
    assert resp.status_code == 202, resp.content
    job = resp.json()
    assert job["status"] in ("done", "failed") and job["result"]["dry_run"] is True
    assert job["result"]["features_read"] > 0
    assert not (Path(settings.MEDIA_ROOT) / job["params"]["upload"]).exists()  # the upload is removed
    settings.GISPORTAL_MAX_UPLOAD_BYTES = 100
    resp = c.post(f"{API}/imports/", {"file": upload(), "kind": "districts"}, format="multipart")
    assert resp.status_code == 413
    resp = c.post(f"{API}/imports/", {"kind": "districts"}, format="multipart")
    assert resp.status_code == 400


# ------------------------------------------------------------------ schema and docs
def test_schema_and_docs_served_from_our_static_files(users):
    c = client_for(users["planner"])
    resp = c.get(f"{API}/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    schema = json.loads(resp.content)
    paths = set(schema["paths"])
    for p in ("/api/v1/layers/{kind}/", "/api/v1/coverage/", "/api/v1/siting/", "/api/v1/jobs/{id}/cancel/",
              "/api/v1/exports/", "/api/v1/imports/", "/api/v1/reviews/"):
        assert p in paths, p
    docs = c.get(f"{API}/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    # no CDN host (not a bare "cdn": a random CSRF token on the page may contain those letters)
    assert "swagger-ui" in html and not re.search(r"cdn[.\-/]|unpkg\.com", html, re.I) and "https://" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    from django.contrib.staticfiles import finders
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
