"""Siting runs against the database (layers/services_siting.py, manage.py site, the siting page).

Runs on SpatiaLite and PostGIS on the Zhangjiakou demo (tests/conftest.py). Every optimum is checked
independently: demand read from the raster with rasterio, distances with numpy/shapely, and brute force
over every subset of the candidates. The page's routes come from ``views_siting.urlpatterns`` (this
module is the URLconf of its tests), so they are tested whether or not gisportal/urls.py includes them.
"""
import csv
import io
import itertools
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import scipy.sparse as sp
import shapely
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from pyproj import Transformer

from gisportal import urls as portal_urls
from gisportal import views_siting
from layers import models, services
from layers import services_siting as svc
from layers.analysis import coverage as cov
from layers.analysis import raster as ras

urlpatterns = list(views_siting.urlpatterns) + list(portal_urls.urlpatterns)
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
ROOT = Path(__file__).resolve().parents[2]
R = 500.0


@pytest.fixture
def demo():
    if not models.FireStation.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


# ------------------------------------------------------------------ independent helpers
def shp(geoms):
    return shapely.from_wkb([bytes(g.wkb) for g in geoms])


def raster_demand():
    """(xy, pop) of the active population raster's cells, read directly."""
    surface = models.PopulationSurface.objects.get(active=True)
    with rasterio.open(surface.file.path) as src:
        return ras.cells_to_points(src.read(1).astype(float), src.transform, src.nodata)


def community_mask(xy, code):
    grids = shp(models.Grid.objects.filter(community__code=code).values_list("geom", flat=True))
    return ras.points_in_polygons(xy, grids) >= 0, shapely.union_all(grids)


def min_dist(xy, sites_xy):
    if len(sites_xy) == 0:
        return np.full(len(xy), np.inf)
    d = np.hypot(xy[:, None, 0] - sites_xy[None, :, 0], xy[:, None, 1] - sites_xy[None, :, 1])
    return d.min(axis=1)


def within(xy, sites_xy, r=R):
    """(n_demand, n_sites) boolean: straight-line distance <= r (numpy)."""
    return np.hypot(xy[:, None, 0] - sites_xy[None, :, 0], xy[:, None, 1] - sites_xy[None, :, 1]) <= r


def near_shelters(xy, r=R, level=None):
    """Mask of demand within r of any shelter site polygon (shapely distances)."""
    qs = models.Shelter.objects.all() if level is None else models.Shelter.objects.filter(level=level)
    polys = shp(qs.values_list("geom", flat=True))
    out = np.zeros(len(xy), dtype=bool)
    idx, _ = shapely.STRtree(polys).query(shapely.points(xy), predicate="dwithin", distance=r)
    out[idx] = True
    return out


def excluded(xy):
    """Candidates on existing shelter land or at an existing fire station (independent check)."""
    polys = shp(models.Shelter.objects.values_list("geom", flat=True))
    pts = shapely.points(xy)
    on_shelter = np.array([bool(shapely.intersects(polys, p).any()) for p in pts])
    st = np.array([g.coords[:2] for g in models.FireStation.objects.values_list("geom", flat=True)])
    return on_shelter | (min_dist(xy, st) <= svc.EXCLUDE_NEAR_M)


def to_lonlat(xy):
    t = Transformer.from_crs(settings.GIS_SRID, 4326, always_xy=True)
    return np.column_stack(t.transform(xy[:, 0], xy[:, 1]))


def write_candidates(path, xy, caps=None):
    ll = to_lonlat(np.asarray(xy, dtype=float))
    feats = [{"type": "Feature", "properties": {"code": f"T{i:02d}", "name": f"候选{i}",
                                                 **({"capacity_persons": caps[i]} if caps is not None else {})},
              "geometry": {"type": "Point", "coordinates": [float(lo), float(la)]}}
             for i, (lo, la) in enumerate(ll)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}), encoding="utf-8")
    # what the service will see, after the lon/lat round trip
    t = Transformer.from_crs(4326, settings.GIS_SRID, always_xy=True)
    return np.column_stack(t.transform(ll[:, 0], ll[:, 1]))


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("site", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code, _ = exc.returncode, err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


def busiest_community():
    """The most populous compact community (<= 1.5 km²: a few dozen candidates, brute force stays small)."""
    for com in models.Community.objects.filter(grids__isnull=False).distinct().order_by("-population", "code"):
        if com.geom.area <= 1.5e6:
            return com


@pytest.fixture
def hot(demo):
    """(xy, community code) of the most populous raster cell beyond 500 m of every shelter."""
    from django.contrib.gis.geos import Point

    xy, pop = raster_demand()
    i = int(np.argmax(np.where(near_shelters(xy), 0.0, pop)))
    grid = models.Grid.objects.filter(geom__intersects=Point(*xy[i], srid=settings.GIS_SRID)).first()
    return xy[i], grid.community.code


@pytest.fixture
def mclp_case(hot, tmp_path):
    """11 candidates around the hot spot: a 3 x 3 lattice 450 m apart, one on an existing shelter's site
    and one at an existing fire station (both must be dropped, never chosen)."""
    c = hot[0]
    lattice = c + 450.0 * np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=float) + [7.3, -3.1]
    shelter = models.Shelter.objects.order_by("code").first()
    on_shelter = np.array(shelter.geom.point_on_surface.coords)
    station = np.array(models.FireStation.objects.order_by("code").first().geom.coords[:2])
    xy = write_candidates(tmp_path / "cands.geojson", np.vstack([lattice, on_shelter, station]))
    return tmp_path / "cands.geojson", xy


def brute_mclp(xy_dem, pop, cand_xy, eligible, p, base_mask):
    """Best covered population over every p-subset of the eligible candidates (numpy distances)."""
    near = within(xy_dem, cand_xy)
    best, best_set = -1.0, None
    for sub in itertools.combinations(np.flatnonzero(eligible).tolist(), p):
        v = float(pop[base_mask | near[:, list(sub)].any(axis=1)].sum())
        if v > best + 1e-9:
            best, best_set = v, set(sub)
    return best, best_set


# ------------------------------------------------------------------ LSCP
def test_lscp_fire_stations_one_community_covers_every_coverable_point(demo):
    com = busiest_community()
    doc = svc.siting_compute(kind="fire_stations", objective="lscp", radius_m=R, area=com.code, curve_k=3)
    xy, pop = raster_demand()
    mask, region = community_mask(xy, com.code)
    dxy, dpop = xy[mask], pop[mask]
    assert doc["demand"]["points"] == len(dxy)
    assert doc["population_total"] == pytest.approx(dpop.sum(), abs=1e-3)

    # the generated candidates: the 200 m lattice inside the community, minus existing sites
    lattice = svc.candidates_lattice(region, 200.0)
    assert len(lattice) > 1 and shapely.contains_xy(region, lattice[:, 0], lattice[:, 1]).all()
    d = np.hypot(lattice[:, None, 0] - lattice[None, :, 0], lattice[:, None, 1] - lattice[None, :, 1])
    np.fill_diagonal(d, np.inf)
    assert np.isclose(d.min(), 200.0) and np.allclose(np.mod(lattice, 200.0), 100.0)
    drop = excluded(lattice)
    cands = lattice[~drop]
    assert doc["candidates"] == {"source": "generated", "count": len(cands), "excluded": int(drop.sum()),
                                 "spacing_m": 200.0, "excluded_zone": 0}

    stations = np.array([g.coords[:2] for g in models.FireStation.objects.values_list("geom", flat=True)])
    sel = np.array([[s["x"], s["y"]] for s in doc["selected"]]).reshape(-1, 2)
    eps = 1e-6
    before = min_dist(dxy, stations) <= R + eps
    coverable = before | (min_dist(dxy, cands) <= R - eps)
    after = min_dist(dxy, np.vstack([stations, sel])) <= R + eps
    assert doc["status"] == "optimal" and doc["count"] >= 1
    assert after[coverable].all(), "a coverable demand point is left uncovered"
    assert doc["uncoverable_population"] == pytest.approx(dpop[~(min_dist(dxy, np.vstack([stations, cands]))
                                                                   <= R + eps)].sum(), abs=1e-3)
    assert doc["population_existing"] == pytest.approx(dpop[before].sum(), abs=1e-3)
    assert doc["population_covered"] == pytest.approx(dpop[after].sum(), abs=1e-3)
    # never an existing site; each chosen site is a lattice point
    assert not excluded(sel).any()
    assert all(min_dist(sel[i:i + 1], cands)[0] < 0.01 for i in range(len(sel)))
    # fewest: no smaller subset of the candidates covers the coverable points (brute force)
    need = coverable & ~before
    assert len(cands) <= 40 and doc["count"] <= 4
    reach = within(dxy[need], cands)
    smallest = next(k for k in range(0, len(cands) + 1)
                    if any(reach[:, list(s)].any(axis=1).all() for s in itertools.combinations(range(len(cands)), k)))
    assert doc["count"] == smallest
    assert [c["population_covered"] for c in doc["curve"]] == sorted(c["population_covered"] for c in doc["curve"])
    assert sum(s["added_population"] for s in doc["selected"]) == pytest.approx(
        doc["population_covered"] - doc["population_existing"], abs=0.01)

    job = models.Job.objects.get(pk=doc["job_id"])
    assert job.kind == "siting" and job.status == "done" and job.progress == 1.0
    assert job.params["objective"] == "lscp" and job.params["area"] == [com.code]
    assert job.result["selected"] == doc["selected"] and job.data_version == doc["data_version"]


# ------------------------------------------------------------------ MCLP
def test_mclp_shelters_equals_brute_force_and_never_rechooses(mclp_case):
    path, cxy = mclp_case
    doc = svc.siting_compute(kind="shelters", objective="mclp", radius_m=R, p=3, candidates=str(path), curve_k=5)
    xy, pop = raster_demand()
    drop = excluded(cxy)
    assert drop[9] and drop[10]  # the two planted at existing sites
    assert doc["candidates"]["count"] == int((~drop).sum()) and doc["candidates"]["excluded"] == int(drop.sum())
    codes = [f"T{i:02d}" for i in range(len(cxy))]
    chosen = {s["code"] for s in doc["selected"]}
    assert not chosen & {codes[i] for i in np.flatnonzero(drop)}

    base = near_shelters(xy)
    assert doc["population_existing"] == pytest.approx(pop[base].sum(), abs=1e-3)
    best, best_set = brute_mclp(xy, pop, cxy, ~drop, 3, base)
    assert best > pop[base].sum() + 100 and doc["count"] == 3  # the new sites matter
    assert doc["status"] == "optimal"
    assert doc["population_covered"] == pytest.approx(best, abs=0.01)
    own = [codes.index(c) for c in chosen]
    assert float(pop[base | within(xy, cxy[own]).any(axis=1)].sum()) == pytest.approx(best, abs=0.01)
    assert doc["population_total"] == pytest.approx(pop.sum(), abs=1e-3)

    curve = [c["population_covered"] for c in doc["curve"]]
    assert [c["k"] for c in doc["curve"]] == [1, 2, 3, 4, 5]
    assert all(a <= b + 1e-9 for a, b in zip(curve, curve[1:])) and curve[0] >= doc["population_existing"]
    assert curve[2] == pytest.approx(doc["population_covered"], abs=0.01)
    assert curve[0] == pytest.approx(brute_mclp(xy, pop, cxy, ~drop, 1, base)[0], abs=0.01)

    # without existing facilities: nothing is covered before, and brute force again
    bare = svc.siting_compute(kind="shelters", objective="mclp", radius_m=R, p=3, candidates=str(path),
                              existing=False)
    assert bare["existing"] is False and bare["population_existing"] == 0 and bare["existing_sites"] == 0
    assert bare["candidates"]["excluded"] == doc["candidates"]["excluded"]
    assert bare["population_covered"] == pytest.approx(
        brute_mclp(xy, pop, cxy, ~drop, 3, np.zeros(len(xy), bool))[0], abs=0.01)


def test_command_service_and_page_agree(mclp_case, client, django_user_model):
    path, _ = mclp_case
    args = ["shelters", "--objective", "mclp", "--radius-m", "500", "--p", "3", "--candidates", str(path),
            "--curve", "3"]
    code, out, err = run(*args, "--json")
    assert code == 0, err
    cmd = json.loads(out)  # exactly one document
    for key in ("objective", "radius_m", "p", "existing", "selected", "count", "population_total",
                "population_covered", "share_covered", "uncoverable_population", "status", "gap", "seconds",
                "curve", "method", "bound"):
        assert key in cmd, key
    assert set(cmd["selected"][0]) >= {"code", "x", "y", "lon", "lat", "added_population"}
    doc = svc.siting_compute(kind="shelters", objective="mclp", radius_m=500, p=3, candidates=str(path), curve_k=3)
    same = ("selected", "count", "population_total", "population_covered", "population_existing", "curve")
    assert {k: cmd[k] for k in same} == {k: doc[k] for k in same}
    code, out, _ = run(*args)
    assert code == 0 and cmd["selected"][0]["code"] in out

    # the page (an emergency official), with the same file uploaded
    user = django_user_model.objects.create_user("999_siting", password="x")
    user.groups.add(services.roles_ensure()["emergency_official"])
    client.force_login(user)
    assert client.get("/siting/").status_code == 200
    with open(path, "rb") as fh:
        resp = client.post("/siting/", {"kind": "shelters", "objective": "mclp", "radius_m": "500", "p": "3",
                                        "candidates": "file", "candidates_file": fh, "curve_k": "3",
                                        "existing": "on", "method": "euclidean", "spacing_m": "200",
                                        "time_limit_s": "60"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    job = models.Job.objects.latest("pk")
    assert resp["Location"] == f"/siting/jobs/{job.pk}/" and job.user == user
    assert {k: job.result[k] for k in same} == {k: doc[k] for k in same}
    page = client.get(resp["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    # no CDN host (not a bare "cdn": a random CSRF token on the page may contain those letters)
    assert "<svg" in html and cmd["selected"][0]["code"] in html and not re.search(r"cdn[.\-/]|unpkg\.com", html, re.I)
    mp = client.get(f"/siting/jobs/{job.pk}/map/")
    assert mp.status_code == 200
    html_map = mp.content.decode()
    # the existing shelters' reach (before) is drawn as one GeoJSON outline beside the new sites' circles
    assert ("现有服务范围" in html_map or "\\u73b0\\u6709" in html_map) and "L.geoJson" in html_map
    gj = json.loads(client.get(f"/siting/jobs/{job.pk}.geojson").content)
    assert [f["properties"]["code"] for f in gj["features"]] == [s["code"] for s in doc["selected"]]
    assert gj["features"][0]["geometry"]["coordinates"] == [doc["selected"][0]["lon"], doc["selected"][0]["lat"]]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/siting/jobs/{job.pk}.csv").content.decode("utf-8-sig"))))
    assert [r["code"] for r in rows] == [s["code"] for s in doc["selected"]]
    kml = client.get(f"/siting/jobs/{job.pk}.kml").content.decode()
    assert kml.count("<Placemark>") == doc["count"]
    # GeoPackage: read back with GDAL (pyogrio), a layer of points in lon/lat with the CSV's fields
    import pyogrio

    resp = client.get(f"/siting/jobs/{job.pk}.gpkg")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/geopackage+sqlite3"
    out = Path(path).parent / "sites.gpkg"
    out.write_bytes(resp.content)
    assert [name for name, _ in pyogrio.list_layers(out)] == ["sites"]
    meta, _, geoms, fields = pyogrio.raw.read(out, layer="sites")
    assert meta["crs"] == "EPSG:4326" and meta["geometry_type"] == "Point"
    cols = dict(zip(meta["fields"], fields))
    assert cols["code"].tolist() == [s["code"] for s in doc["selected"]]
    assert cols["added_population"].tolist() == pytest.approx([s["added_population"] for s in doc["selected"]])
    pts = shapely.from_wkb(geoms)
    assert np.allclose(shapely.get_coordinates(pts), [[s["lon"], s["lat"]] for s in doc["selected"]], atol=1e-9)


def test_page_needs_login_and_permission(client, django_user_model):
    assert client.get("/siting/").status_code == 302
    client.force_login(django_user_model.objects.create_user("999_field", password="x"))
    assert client.get("/siting/").status_code == 403


# ------------------------------------------------------------------ capacitated MCLP
def test_cmclp_equals_brute_force_with_the_capacity_lp(hot, tmp_path):
    c, code = hot
    pts = c + np.array([(-400, -300), (0, 0), (400, 300), (-300, 400), (350, -350), (0, 600)], dtype=float)
    caps = [800, 1500, 600, 1200, 400, 1000]
    cxy = write_candidates(tmp_path / "c.geojson", pts, caps)
    doc = svc.siting_compute(kind="shelters", objective="cmclp", radius_m=R, p=2,
                             candidates=str(tmp_path / "c.geojson"), area=code, curve_k=3)
    xy, pop = raster_demand()
    mask, _ = community_mask(xy, code)
    dxy, dpop = xy[mask], pop[mask]
    shelters = list(models.Shelter.objects.order_by("code"))
    polys = shp([s.geom for s in shelters])
    scap = np.array([float(s.capacity) for s in shelters])
    E = np.array([shapely.dwithin(polys, shapely.points(p), R) for p in dxy], dtype=np.uint8).reshape(len(dxy), -1)
    elig = np.flatnonzero(~excluded(cxy))
    Ac = within(dxy, cxy).astype(np.uint8)
    served_base = cov.capacitated_coverage(dpop, sp.csr_array(E), scap).population_served
    best_k = {}
    for k in (1, 2, 3):
        best_k[k] = -1.0
        for sub in itertools.combinations(elig.tolist(), k):
            cover = sp.csr_array(np.hstack([E, Ac[:, list(sub)]]))
            served = cov.capacitated_coverage(dpop, cover, np.concatenate([scap, np.asarray(caps, float)[list(sub)]]))
            best_k[k] = max(best_k[k], served.population_served)
    best = best_k[2]
    assert best > served_base + 100  # the new sites matter
    # the k-curve is served population too (capacities applied), each k by brute force
    assert doc["curve_measure"] == "served" and doc["curve_base"] == pytest.approx(served_base, abs=0.01)
    assert doc["population_served_before"] == pytest.approx(served_base, abs=0.01)
    again = svc.siting_compute(kind="shelters", objective="cmclp", radius_m=R, p=2,
                               candidates=str(tmp_path / "c.geojson"), area=code)  # no curve: its own p = 0 run
    assert again["population_served_before"] == pytest.approx(served_base, abs=0.01)
    assert again["selected"] == doc["selected"]
    assert [c["k"] for c in doc["curve"]] == [1, 2, 3] and all(c["status"] == "optimal" for c in doc["curve"])
    assert [c["population_covered"] for c in doc["curve"]] == pytest.approx([best_k[k] for k in (1, 2, 3)], abs=0.01)
    assert doc["status"] == "optimal"
    assert doc["objective_value"] == pytest.approx(best, abs=0.01)
    assert doc["population_covered"] == pytest.approx(best, abs=0.01)
    assert [s["capacity"] for s in doc["selected"]] == [caps[int(s["code"][1:])] for s in doc["selected"]]
    assert all(s["added_population"] <= s["capacity"] + 1e-6 for s in doc["selected"])


def test_network_distance_never_covers_more_than_straight_line(mclp_case, hot):
    path, _ = mclp_case
    kw = dict(kind="shelters", objective="mclp", radius_m=R, p=2, candidates=str(path), area=hot[1])
    euc = svc.siting_compute(**kw)
    net = svc.siting_compute(**kw, method="network")
    assert net["method"] == "network" and net["status"] == "optimal"
    assert net["population_existing"] <= euc["population_existing"] + 1e-6
    assert net["population_covered"] <= euc["population_covered"] + 1e-6
    assert net["data_version"] != euc["data_version"]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, needle", [
    (["shelters", "--objective", "mclp", "--radius-m", "500"], "--p"),
    (["shelters", "--objective", "mclp", "--radius-m", "500", "--p", "0"], "p"),
    (["shelters", "--objective", "mclp", "--radius-m", "500", "--p", "2.5"], "p"),
    (["schools", "--objective", "lscp", "--radius-m", "500"], "schools"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "0"], "0"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "-5"], "-5"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "abc"], "abc"),
    (["fire_stations", "--objective", "lscp"], "--radius-m"),
    (["fire_stations", "--radius-m", "500"], "--objective"),
    (["fire_stations", "--objective", "cmclp", "--radius-m", "500", "--p", "2"], "shelters"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "500", "--p", "2"], "--p"),
    (["fire_stations", "--objective", "pmedian", "--radius-m", "500"], "pmedian"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "500", "--method", "flying"], "flying"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "500", "--candidates", "/nonexistent/c.geojson"],
     "c.geojson"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "500", "--area", "999999"], "999999"),
    (["fire_stations", "--objective", "lscp", "--radius-m", "500", "--spacing-m", "0"], "0"),
])
def test_bad_input_exits_2_and_records_no_job(args, needle):
    jobs = models.Job.objects.count()
    code, out, err = run(*args)
    assert code == 2 and needle in err and out == ""
    assert models.Job.objects.count() == jobs


@pytest.mark.parametrize("content, needle", [
    (b"not json", "cannot read"),
    (b'{"type": "FeatureCollection", "features": []}', "FeatureCollection"),
    (json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                 "geometry": {"type": "LineString", "coordinates": [[114.9, 40.8], [114.91, 40.8]]}}]}).encode(),
     "not a Point"),
    (json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                 "geometry": {"type": "Point", "coordinates": [40.8, 114.9]}}]}).encode(), "(lat, lon)"),
    (json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                 "geometry": {"type": "Point", "coordinates": [573900.0, 4517100.0]}}]}).encode(), "lon/lat"),
    (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": "A"}, "geometry": {"type": "Point", "coordinates": [114.9, 40.8]}},
        {"type": "Feature", "properties": {"code": "A"}, "geometry": {"type": "Point", "coordinates": [114.91, 40.8]}},
    ]}).encode(), "duplicate"),
])
def test_bad_candidates_files(tmp_path, content, needle):
    f = tmp_path / "bad.geojson"
    f.write_bytes(content)
    with pytest.raises(svc.SitingInputError) as exc:
        svc.candidates_read(f)
    assert needle in exc.value.en and exc.value.zh
    code, _, err = run("shelters", "--objective", "mclp", "--radius-m", "500", "--p", "1", "--candidates", str(f))
    assert code == 2 and err


def test_empty_candidates_layer_is_bad_input(demo):
    assert not models.CandidateSite.objects.exists()
    code, _, err = run("shelters", "--objective", "mclp", "--radius-m", "500", "--p", "1", "--candidates", "layer")
    assert code == 2 and err


def test_candidates_layer(hot):
    c, code = hot
    from django.contrib.gis.geos import Point
    for i, (dx, dy) in enumerate([(-300, 0), (300, 0), (0, 450)]):
        models.CandidateSite.objects.create(code=f"999{i}", name=f"场地{i}", geom=Point(*(c + (dx, dy)),
                                                                                      srid=settings.GIS_SRID))
    doc = svc.siting_compute(kind="shelters", objective="mclp", radius_m=R, p=1, candidates="layer", area=code)
    assert doc["candidates"]["source"] == "layer" and doc["count"] == 1
    assert doc["selected"][0]["code"] in {"9990", "9991", "9992"}


def test_process_exit_status_and_stderr():
    """The real process: exit 2 and the reason on stderr, nothing on stdout (validated before the database)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gisportal.settings_test", "GISPORTAL_DEV_KEY": "1"}
    proc = subprocess.run([sys.executable, "manage.py", "site", "schools", "--objective", "lscp", "--radius-m",
                           "500", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "schools" in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------ the whole demo city, grid demand
def test_demo_city_exact_lscp_for_micro_fire_stations_on_grid_points(demo):
    """Issue 6's "done when": every grid of the demo city within 500 m of a micro fire station with the
    fewest new ones, proven optimal, the same from the service, the command and the API, and equal to an
    independent optimum (demand, candidates and distances rebuilt here, the unreduced set-cover MILP
    solved by scipy's own HiGHS, no reductions or heuristics of ours)."""
    from rest_framework.test import APIClient
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.spatial import cKDTree

    doc = svc.siting_compute(kind="fire_stations", objective="lscp", radius_m=R, demand="grid_points")
    assert doc["demand"] == {"mode": "grid_points", "requested": "grid_points", "points": doc["demand"]["points"]}
    assert doc["status"] == "optimal" and doc["gap"] == 0.0 and doc["bound"] == doc["count"]

    # demand: each populated grid's representative point with the grid's population
    rows = list(models.Grid.objects.filter(population__gt=0).order_by("code").values_list("geom", "population"))
    dxy = shapely.get_coordinates(shapely.point_on_surface(shp([g for g, _ in rows])))
    dpop = np.array([p for _, p in rows], dtype=float)
    assert doc["demand"]["points"] == len(dxy) > 500
    assert doc["population_total"] == pytest.approx(dpop.sum(), abs=1e-3)
    # candidates: the 200 m lattice (multiples of 200 m + 100) inside the grids, minus existing sites
    region = shapely.union_all(shp(models.Grid.objects.values_list("geom", flat=True)))
    x0, y0, x1, y1 = region.bounds
    gx, gy = np.meshgrid(np.arange(np.floor(x0 / 200) * 200 + 100, x1 + 200, 200.0),
                         np.arange(np.floor(y0 / 200) * 200 + 100, y1 + 200, 200.0))
    lat = np.column_stack([gx.ravel(), gy.ravel()])
    lat = lat[shapely.contains_xy(region, lat[:, 0], lat[:, 1])]
    drop = excluded(lat)
    cands = lat[~drop]
    assert doc["candidates"]["count"] == len(cands) and doc["candidates"]["excluded"] == int(drop.sum())

    stations = np.array([g.coords[:2] for g in models.FireStation.objects.values_list("geom", flat=True)])
    eps = 1e-6
    before = min_dist(dxy, stations) <= R + eps
    reach = cKDTree(cands).query_ball_point(dxy, R - eps)
    need = np.flatnonzero(~before & np.array([len(r) > 0 for r in reach]))
    assert doc["uncoverable_population"] == pytest.approx(
        dpop[~before & np.array([len(r) == 0 for r in reach])].sum(), abs=1e-3)
    # the independent optimum: min sum x  s.t.  every point in need has a chosen candidate within R
    cols = np.concatenate([reach[i] for i in need]).astype(int)
    rws = np.repeat(np.arange(need.size), [len(reach[i]) for i in need])
    A = sp.csr_array((np.ones(cols.size), (rws, cols)), shape=(need.size, len(cands)))
    res = milp(np.ones(len(cands)), constraints=LinearConstraint(A, lb=1, ub=np.inf),
               integrality=np.ones(len(cands)), bounds=Bounds(0, 1), options={"time_limit": 300})
    assert res.status == 0
    assert doc["count"] == round(res.fun) > 100

    sel = np.array([[s["x"], s["y"]] for s in doc["selected"]])
    assert len(sel) == doc["count"] and not excluded(sel).any()
    assert (min_dist(dxy[need], sel) <= R + eps).all(), "a coverable grid is left uncovered"
    after = before | (min_dist(dxy, sel) <= R + eps)
    assert doc["population_covered"] == pytest.approx(dpop[after].sum(), abs=1e-3)

    # the command and the API give the same answer
    same = ("selected", "count", "population_total", "population_covered", "population_existing", "status",
            "demand", "candidates")
    code, out, err = run("fire_stations", "--objective", "lscp", "--radius-m", "500", "--demand", "grid_points",
                         "--json")
    assert code == 0, err
    cmd = json.loads(out)
    assert {k: cmd[k] for k in same} == {k: doc[k] for k in same}
    user = django_user_model_create("999_siting_api")
    api = APIClient()
    api.force_authenticate(user=user)
    resp = api.post("/api/v1/siting/", {"kind": "fire_stations", "objective": "lscp", "radius_m": 500,
                                        "demand": "grid_points"}, format="json")
    assert resp.status_code == 202, resp.content
    job = resp.json()
    assert job["status"] == "done", job.get("error")
    assert {k: job["result"][k] for k in same} == {k: doc[k] for k in same}
    assert job["params"]["request"]["demand"] == "grid_points"


def django_user_model_create(name):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(name, password="x")
    user.groups.add(services.roles_ensure()["emergency_official"])
    return user


def test_grid_points_demand_in_an_area_and_bad_demand(demo):
    com = busiest_community()
    doc = svc.siting_compute(kind="shelters", objective="mclp", radius_m=R, p=2, area=com.code,
                             demand="grid_points", curve_k=3)
    grids = models.Grid.objects.filter(community__code=com.code, population__gt=0)
    assert doc["demand"]["mode"] == "grid_points" and doc["demand"]["points"] == grids.count()
    assert doc["population_total"] == pytest.approx(sum(grids.values_list("population", flat=True)), abs=1e-3)
    assert doc["status"] == "optimal"
    code, out, err = run("fire_stations", "--objective", "lscp", "--radius-m", "500", "--demand", "buildings")
    assert code == 2 and "buildings" in err and out == ""


# ------------------------------------------------------------------ exclusion zones
def write_zone(path, polys_xy):
    """A GeoJSON FeatureCollection of lon/lat polygons from rings in GIS_SRID."""
    feats = [{"type": "Feature", "properties": {"name": f"禁建区{i}"},
              "geometry": {"type": "Polygon", "coordinates": [to_lonlat(np.asarray(ring, float)).tolist()]}}
             for i, ring in enumerate(polys_xy)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False), encoding="utf-8")
    t = Transformer.from_crs(4326, settings.GIS_SRID, always_xy=True)
    return [shapely.Polygon(np.column_stack(t.transform(*to_lonlat(np.asarray(r, float)).T))) for r in polys_xy]


def test_exclusion_zone_drops_the_candidates_inside(demo, tmp_path, client, django_user_model):
    com = busiest_community()
    _, region = community_mask(np.zeros((0, 2)), com.code)
    x0, y0, x1, y1 = region.bounds
    xm = (x0 + x1) / 2
    ring = [(x0 - 10, y0 - 10), (xm, y0 - 10), (xm, y1 + 10), (x0 - 10, y1 + 10), (x0 - 10, y0 - 10)]
    zone = write_zone(tmp_path / "zone.geojson", [ring])[0]
    kw = dict(kind="fire_stations", objective="lscp", radius_m=R, area=com.code)
    plain = svc.siting_compute(**kw)
    doc = svc.siting_compute(**kw, exclude=str(tmp_path / "zone.geojson"))
    lattice = svc.candidates_lattice(region, 200.0)
    drop = excluded(lattice)
    inside = np.array([zone.intersects(shapely.Point(p)) for p in lattice]) & ~drop
    assert inside.sum() >= 3 and (~inside & ~drop).sum() >= 1
    assert doc["candidates"]["excluded_zone"] == int(inside.sum())
    assert doc["candidates"]["count"] == plain["candidates"]["count"] - int(inside.sum())
    assert doc["candidates"]["excluded"] == plain["candidates"]["excluded"] + int(inside.sum())
    sel = [shapely.Point(s["x"], s["y"]) for s in doc["selected"]]
    assert not any(zone.intersects(p) for p in sel)
    assert doc["status"] == "optimal" and doc["count"] >= plain["count"]  # fewer choices never need fewer sites
    assert doc["data_version"] != plain["data_version"]
    job = models.Job.objects.get(pk=doc["job_id"])
    assert job.params["exclude"] == "file:zone.geojson" and job.params["data"]["exclude"]

    code, out, err = run("fire_stations", "--objective", "lscp", "--radius-m", "500", "--area", com.code,
                         "--exclude", str(tmp_path / "zone.geojson"), "--json")
    assert code == 0, err
    cmd = json.loads(out)
    assert cmd["candidates"] == doc["candidates"] and cmd["selected"] == doc["selected"]

    # the page: an uploaded exclusion file runs in the request
    user = django_user_model.objects.create_user("999_siting_zone", password="x")
    user.groups.add(services.roles_ensure()["emergency_official"])
    client.force_login(user)
    with open(tmp_path / "zone.geojson", "rb") as fh:
        resp = client.post("/siting/", {"kind": "fire_stations", "objective": "lscp", "radius_m": "500",
                                        "candidates": "generated", "exclude_file": fh, "area": com.code,
                                        "existing": "on", "method": "euclidean", "spacing_m": "200",
                                        "time_limit_s": "60", "demand": "raster"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    job = models.Job.objects.latest("pk")
    assert job.result["candidates"] == doc["candidates"] and job.result["selected"] == doc["selected"]
    html = client.get(resp["Location"]).content.decode()
    assert f'<span id="excluded-zone">{inside.sum()}</span>' in html


@pytest.mark.parametrize("geometry, needle", [
    ({"type": "Point", "coordinates": [114.9, 40.8]}, "feature 1 is not a Polygon"),
    ({"type": "Polygon", "coordinates": [[[40.80, 114.90], [40.80, 114.91], [40.81, 114.91], [40.80, 114.90]]]},
     "(lat, lon)"),
    ({"type": "Polygon", "coordinates": [[[573900.0, 4517100.0], [574000.0, 4517100.0], [574000.0, 4517200.0],
                                          [573900.0, 4517100.0]]]}, "not lon/lat"),
    ({"type": "Polygon", "coordinates": [[[114.90, 40.80], [114.91, 40.81], [114.91, 40.80], [114.90, 40.81],
                                          [114.90, 40.80]]]}, "Self-intersection"),
])
def test_bad_exclusion_files_exit_2_with_the_feature_and_reason(tmp_path, geometry, needle):
    f = tmp_path / "zone.geojson"
    ok = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
        [114.90, 40.80], [114.91, 40.80], [114.91, 40.81], [114.90, 40.80]]]}}
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": geometry}, ok]}), encoding="utf-8")
    with pytest.raises(svc.SitingInputError) as exc:
        svc.exclusion_read(f)
    assert needle in exc.value.en and "1" in exc.value.zh
    jobs = models.Job.objects.count()
    code, out, err = run("fire_stations", "--objective", "lscp", "--radius-m", "500", "--exclude", str(f))
    assert code == 2 and exc.value.zh in err and out == ""  # the command speaks Chinese by default
    assert models.Job.objects.count() == jobs
    f.write_bytes(b"\xff\xfe not json")
    with pytest.raises(svc.SitingInputError) as exc:
        svc.exclusion_read(f)
    assert "cannot read exclusion file" in exc.value.en


def test_gpkg_of_an_empty_selection_still_has_the_layer(tmp_path):
    import pyogrio

    assert svc.result_gpkg({"selected": []}, tmp_path / "e.gpkg") == 0
    assert [name for name, _ in pyogrio.list_layers(tmp_path / "e.gpkg")] == ["sites"]
    assert pyogrio.read_info(tmp_path / "e.gpkg", layer="sites")["features"] == 0
