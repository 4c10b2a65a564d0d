"""The siting page (gisportal/views_siting.py): form -> queued Job -> status page -> result page.

Tests run tasks inside ``enqueue`` (ImmediateBackend), so the job is done by the time of the redirect.
An uploaded candidate file is still run in the request (tests/layers/test_siting_service.py covers it).
"""
import pytest
import shapely

from gisportal import urls as portal_urls
from gisportal import views_siting
from layers import models, services
from layers import services_siting as svc

urlpatterns = list(views_siting.urlpatterns) + list(portal_urls.urlpatterns)
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def community():
    c = models.Community.objects.filter(grids__population__gt=0).order_by("code").first()
    if c is None:
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")
    return c


@pytest.fixture
def official(client, django_user_model):
    user = django_user_model.objects.create_user("999_siting_page", password="x")
    user.groups.add(services.roles_ensure()["emergency_official"])
    client.force_login(user)
    return user


def test_generated_candidates_are_queued_and_followed_to_the_result(client, official, community):
    form = {"kind": "fire_stations", "objective": "mclp", "radius_m": "500", "p": "2", "candidates": "generated",
            "spacing_m": "200", "area": community.code, "method": "euclidean", "time_limit_s": "20",
            "curve_k": "2"}
    before = models.Job.objects.count()
    resp = client.post("/siting/", form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    job = models.Job.objects.latest("pk")
    assert models.Job.objects.count() == before + 1  # the queued Job is the recorded run (adopted)
    assert resp["Location"] == f"/jobs/{job.pk}/?follow=1"
    assert job.kind == "siting" and job.user == official and job.status == "done", job.error
    # the status page follows on to the result page once the job is done
    follow = client.get(resp["Location"])
    assert follow.status_code == 302 and follow["Location"] == f"/siting/jobs/{job.pk}/"
    assert client.get(follow["Location"]).status_code == 200
    # the same run as the service called directly
    direct = svc.siting_compute(kind="fire_stations", objective="mclp", radius_m=500.0, p=2,
                                candidates=None, spacing_m=200.0, area=community.code, existing=False,
                                method="euclidean", time_limit_s=20.0, curve_k=2)
    for key in ("count", "population_total", "population_covered"):
        assert job.result[key] == pytest.approx(direct[key]), key


def test_invalid_form_queues_nothing(client, official):
    before = models.Job.objects.count()
    resp = client.post("/siting/", {"kind": "fire_stations", "objective": "mclp", "radius_m": "-5"})
    assert resp.status_code == 200 and models.Job.objects.count() == before


def test_result_map_draws_the_exclusion_zones_and_shows_the_study_area(client, official, community, tmp_path):
    """The map of a run with exclusion zones draws them (a layer of their own), and opens on the
    whole study area (the demand points' extent) with every new site, not on the new sites alone."""
    import json
    import re

    grid = community.grids.filter(population__gt=0).order_by("code").first()
    ring = grid.geom.transform(4326, clone=True)
    zone = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": json.loads(ring.json)}]}
    path = tmp_path / "zone.geojson"
    path.write_text(json.dumps(zone), encoding="utf-8")
    doc = svc.siting_compute(kind="fire_stations", objective="mclp", radius_m=500.0, p=1, area=community.code,
                             exclude=str(path), time_limit_s=20.0, user=official)
    west, south, east, north = doc["extent_lonlat"]
    assert west < east and south < north
    assert doc["exclude_zones"]["type"] in ("Polygon", "MultiPolygon")
    html = client.get(f"/siting/jobs/{doc['job_id']}/map/").content.decode()
    layer = json.dumps("排除区域")[1:-1]  # folium's layer control writes names JSON-escaped
    assert layer in html
    assert json.dumps("分析范围")[1:-1] in html  # the community the run was limited to, outlined
    outline = shapely.from_geojson(json.dumps(svc.area_outline([community.code])))
    boundary = shapely.from_wkb(bytes(community.geom.transform(4326, clone=True).wkb))
    assert outline.hausdorff_distance(boundary) < 1e-4  # within ~10 m of the community's own boundary
    first = doc["exclude_zones"]["coordinates"]
    while isinstance(first[0], list):
        first = first[0]
    assert f"[{first[0]!r}, {first[1]!r}]" in html  # the zone's outline itself is on the map
    fit = re.search(r"fitBounds\(\s*\[\[([-\d.]+),\s*([-\d.]+)\],\s*\[([-\d.]+),\s*([-\d.]+)\]\]", html)
    assert fit, "the map fits no bounds"
    s, w, n, e = (float(v) for v in fit.groups())
    assert s <= south and w <= west and n >= north and e >= east
    for site in doc["selected"]:
        assert s <= site["lat"] <= n and w <= site["lon"] <= e
    # a run without zones has no such layer, and its document no such key
    plain = svc.siting_compute(kind="fire_stations", objective="mclp", radius_m=500.0, p=1, area=community.code,
                               time_limit_s=20.0, user=official)
    assert "exclude_zones" not in plain
    assert svc.area_outline([]) is None  # the whole city: no outline
    assert layer not in client.get(f"/siting/jobs/{plain['job_id']}/map/").content.decode()


def test_result_map_shows_the_existing_sites_the_run_counted(client, official, community):
    """A run restricted to one kind of existing station (``facility_kind``) draws only those on its map."""
    stations = models.FireStation.objects.order_by("code")
    kinds = sorted(set(stations.values_list("kind", flat=True)))
    if len(kinds) < 2:
        pytest.skip("the demo has one kind of fire station")
    kind = min(kinds, key=lambda k: stations.filter(kind=k).count())
    doc = svc.siting_compute(kind="fire_stations", objective="mclp", radius_m=500.0, p=1, area=community.code,
                             facility_kind=kind, time_limit_s=20.0, user=official)
    assert doc["existing_sites"] == stations.filter(kind=kind).count()
    html = client.get(f"/siting/jobs/{doc['job_id']}/map/").content.decode()
    for s in stations:  # each drawn station's tooltip ends with its code in brackets
        assert (f"({s.code})" in html) == (s.kind == kind), (s.code, s.kind)
