"""A facility's own service distance (``service_radius_m``) in coverage runs, imports and validation.

Order of precedence: the run's ``--radius-m`` > the facility's own ``service_radius_m`` > the rule set.
The covered cells are checked against a brute force (rasterio + numpy distances, not the engine).
"""
import io
import json

import numpy as np
import pytest
import rasterio
import shapely
from django.core.exceptions import ValidationError
from django.core.management import call_command

from importers.services import import_file
from layers import models, services_coverage as svc

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo():
    if not models.PopulationSurface.objects.filter(active=True, is_sample=True).exists() or \
            models.FireStation.objects.count() < 3:
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


def run_json(*args):
    out = io.StringIO()
    call_command("coverage", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def cells():
    """(xy, pop) of the raster cells holding people, from rasterio and numpy."""
    surface = models.PopulationSurface.objects.get(active=True)
    with rasterio.open(surface.file.path) as src:
        band = src.read(1).astype(np.float64)
        t, nodata = src.transform, src.nodata
    rows, cols = np.indices(band.shape)
    valid = np.isfinite(band) & (band > 0)
    if nodata is not None:
        valid &= band != nodata
    return np.column_stack([t.c + (cols[valid] + 0.5) * t.a, t.f + (rows[valid] + 0.5) * t.e]), band[valid]


def stations():
    rows = list(models.FireStation.objects.order_by("code").values_list("code", "geom"))
    return [r[0] for r in rows], np.array([[r[1].x, r[1].y] for r in rows])


def brute_mask(xy, site_xy, radius_m):
    """Cells within each site's own radius of at least one site (plain numpy distances)."""
    mask = np.zeros(len(xy), dtype=bool)
    for (sx, sy), r in zip(site_xy, radius_m):
        mask |= np.hypot(xy[:, 0] - sx, xy[:, 1] - sy) <= r
    return mask


def engine_mask(sites):
    grids = svc.grids_load()
    dem = svc.demand_from_raster(models.PopulationSurface.objects.get(active=True), grids)
    cover = svc.cover_euclidean(dem, sites)
    return dem.xy, np.asarray(cover.sum(axis=1)).ravel() > 0


def test_one_station_with_1000_m_among_500_m_ones(demo):
    codes, site_xy = stations()
    target = codes[len(codes) // 2]
    before = run_json("fire_stations")
    models.FireStation.objects.filter(code=target).update(service_radius_m=1000.0)
    doc = run_json("fire_stations")

    radius = np.where(np.array(codes) == target, 1000.0, 500.0)
    sites = svc.sites_load("fire_stations", None, None, None, False, svc.rules_current())
    assert sites.codes == codes and sites.radius_m.tolist() == radius.tolist()
    xy, pop = cells()
    brute = brute_mask(xy, site_xy, radius)
    exy, emask = engine_mask(sites)
    order_b, order_e = np.lexsort(xy.T), np.lexsort(exy.T)
    assert np.array_equal(xy[order_b], exy[order_e])
    assert np.array_equal(brute[order_b], emask[order_e])  # exactly the same cells
    assert doc["population_covered"] == pytest.approx(pop[brute].sum(), abs=0.01)
    # the larger circle covers more than the 500 m run, and the run records why
    assert doc["population_covered"] > before["population_covered"]
    assert doc["data_version"] != before["data_version"]
    fac = {f["code"]: f for f in doc["facilities"]}
    assert fac[target]["radius_m"] == 1000.0 and fac[target]["radius_source"] == "facility"
    assert all(f["radius_m"] == 500.0 and f["radius_source"] == "rules" for c, f in fac.items() if c != target)
    assert doc["radius_m"] == 500.0  # the run-level (rule) distance is unchanged
    assert doc["facility_radius_overrides"] == 1
    d = np.hypot(xy[:, 0] - site_xy[codes.index(target)][0], xy[:, 1] - site_xy[codes.index(target)][1])
    assert fac[target]["population_in_reach"] == pytest.approx(pop[d <= 1000.0].sum(), abs=0.01)


def test_run_radius_beats_the_facility_override(demo):
    codes, site_xy = stations()
    models.FireStation.objects.filter(code=codes[0]).update(service_radius_m=2000.0)
    doc = run_json("fire_stations", "--radius-m", "300")
    assert all(f["radius_m"] == 300.0 and f["radius_source"] == "run" for f in doc["facilities"])
    assert doc["radius_m"] == 300.0 and doc["facility_radius_overrides"] == 0
    xy, pop = cells()
    brute = brute_mask(xy, site_xy, np.full(len(codes), 300.0))
    assert doc["population_covered"] == pytest.approx(pop[brute].sum(), abs=0.01)
    models.FireStation.objects.filter(code=codes[0]).update(service_radius_m=None)
    assert run_json("fire_stations", "--radius-m", "300")["population_covered"] == doc["population_covered"]


def test_shelter_override_replaces_the_level_distance(demo):
    rs = svc.rules_current()
    sh = list(models.Shelter.objects.order_by("code"))
    models.Shelter.objects.filter(pk=sh[0].pk).update(service_radius_m=123.0)
    sites = svc.sites_load("shelters", None, None, None, False, rs)
    assert sites.radius_m[0] == 123.0 and sites.radius_source[0] == "facility"
    assert sites.radius_m[1:].tolist() == [rs.shelter_service_distance_m[s.level] for s in sh[1:]]
    # covered = within 123 m of the first polygon, or the level distance of another (shapely distances)
    xy, pop = cells()
    pts = shapely.points(xy)
    polys = shapely.from_wkb([bytes(s.geom.wkb) for s in sh])
    brute = np.zeros(len(xy), dtype=bool)
    for poly, r in zip(polys, sites.radius_m):
        brute |= shapely.dwithin(pts, poly, r)
    exy, emask = engine_mask(sites)
    ob, oe = np.lexsort(xy.T), np.lexsort(exy.T)
    mismatch = int((brute[ob] != emask[oe]).sum())
    assert mismatch <= 0.001 * len(xy)  # polygon buffers: a cell on the arc may differ


def test_rules_without_a_distance_are_fine_when_each_site_has_its_own(db):
    rs = svc.rules_current()
    kind = next((k for k in models.ServiceFacility.Kind.values if k not in rs.life_circle_m), None)
    if kind is None:
        pytest.skip("every facility kind has a rule distance")
    models.ServiceFacility.objects.filter(kind=kind).delete()
    from django.contrib.gis.geos import Point
    f = models.ServiceFacility.objects.create(code="999RAD1", name="测试", kind=kind,
                                              geom=Point(500000, 4500000, srid=4547))
    with pytest.raises(svc.CoverageInputError):
        svc.sites_load("facilities", None, kind, None, False, rs)
    models.ServiceFacility.objects.filter(pk=f.pk).update(service_radius_m=400.0)
    sites = svc.sites_load("facilities", None, kind, None, False, rs)
    assert sites.radius_m.tolist() == [400.0]


def test_version_follows_the_override(db):
    from django.contrib.gis.geos import Point
    rs = svc.rules_current()
    models.FireStation.objects.create(code="999FS1", name="测试站", geom=Point(500000, 4500000, srid=4547))
    v1 = svc.sites_load("fire_stations", None, None, None, False, rs).version
    models.FireStation.objects.filter(code="999FS1").update(service_radius_m=800.0)
    v2 = svc.sites_load("fire_stations", None, None, None, False, rs).version
    assert v1 != v2


@pytest.mark.parametrize("value", [0.0, -5.0])
def test_model_refuses_a_radius_not_above_zero(db, value):
    from django.contrib.gis.geos import Point
    st = models.FireStation(code="999FS2", name="测试站", geom=Point(500000, 4500000, srid=4547),
                            service_radius_m=value)
    with pytest.raises(ValidationError) as exc:
        st.full_clean()
    assert "service_radius_m" in exc.value.message_dict
    st.service_radius_m = None
    st.full_clean()  # empty: the rule set's


def test_import_reads_the_service_radius_column(db, tmp_path):
    path = tmp_path / "fire.csv"
    path.write_text("编码,名称,服务半径,经度,纬度\n999FS3,甲站,800,115.05,40.60\n999FS4,乙站,,115.06,40.61\n",
                    encoding="utf-8")
    report = import_file("fire_stations", path)
    assert report.ok, [str(e) for e in report.errors]
    assert report.mapping["service_radius_m"] == "服务半径"
    got = dict(models.FireStation.objects.filter(code__startswith="999FS").values_list("code", "service_radius_m"))
    assert got == {"999FS3": 800.0, "999FS4": None}
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name,service_radius_m,lon,lat\n999FS5,丙站,0,115.05,40.60\n", encoding="utf-8")
    report = import_file("fire_stations", bad)
    assert not report.ok and not models.FireStation.objects.filter(code="999FS5").exists()
