"""Coverage runs against the database (layers/services_coverage.py, manage.py coverage).

Runs on SpatiaLite and PostGIS. The demo city (tests/conftest.py) supplies the raster, grids, shelters,
fire stations and roads; the figures are checked against an independent brute force: the raster read
with rasterio, cell centres from the geotransform in numpy, straight-line distances from shapely, the
capacity LP against a networkx maximum flow on the same reach sets.
"""
import io
import json
from functools import lru_cache

import networkx as nx
import numpy as np
import pytest
import rasterio
import shapely
from django.core.management import call_command
from django.core.management.base import CommandError

from layers import models, services, services_coverage

pytestmark = pytest.mark.django_db

RADIUS = 500.0


@pytest.fixture
def demo():
    if not models.PopulationSurface.objects.filter(active=True, is_sample=True).exists() or \
            not models.Shelter.objects.filter(is_sample=True).exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("coverage", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


def run_json(*args):
    code, out, err = run(*args, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one document: json.loads refuses trailing data


def _geoms(values):
    return shapely.from_wkb([bytes(g.wkb) for g in values])


# ------------------------------------------------------------------ brute force (cached per session)
@lru_cache(maxsize=1)
def brute_cells():
    """(xy, pop) of the raster cells holding people: rasterio + numpy, not the engine."""
    surface = models.PopulationSurface.objects.get(active=True)
    with rasterio.open(surface.file.path) as src:
        band = src.read(1).astype(np.float64)
        t, nodata = src.transform, src.nodata
    assert t.b == 0 and t.d == 0, "north-up raster expected"
    rows, cols = np.indices(band.shape)
    valid = np.isfinite(band) & (band > 0)
    if nodata is not None:
        valid &= band != nodata
    x = t.c + (cols[valid] + 0.5) * t.a
    y = t.f + (rows[valid] + 0.5) * t.e
    return np.column_stack([x, y]), band[valid]


@lru_cache(maxsize=1)
def brute_shelter_reach():
    """Per shelter (ordered by code): indices of the cells within RADIUS of its polygon."""
    xy, _ = brute_cells()
    rows = list(models.Shelter.objects.order_by("code").values_list("code", "geom"))
    polys = _geoms([r[1] for r in rows])
    pts = shapely.points(xy)
    reach = []
    for poly in polys:
        x0, y0, x1, y1 = poly.bounds
        near = np.flatnonzero((xy[:, 0] >= x0 - RADIUS) & (xy[:, 0] <= x1 + RADIUS)
                              & (xy[:, 1] >= y0 - RADIUS) & (xy[:, 1] <= y1 + RADIUS))
        d = shapely.distance(poly, pts[near])
        reach.append(near[d <= RADIUS])
    return [r[0] for r in rows], reach


def brute_grid_of_cells():
    xy, _ = brute_cells()
    rows = list(models.Grid.objects.order_by("code").values_list("code", "geom"))
    geoms = _geoms([r[1] for r in rows])
    out = np.full(len(xy), -1)
    for k, g in enumerate(geoms):
        x0, y0, x1, y1 = g.bounds
        cand = np.flatnonzero((out < 0) & (xy[:, 0] >= x0) & (xy[:, 0] <= x1)
                              & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))
        inside = shapely.intersects_xy(g, xy[cand, 0], xy[cand, 1])
        out[cand[inside]] = k
    return [r[0] for r in rows], out


# ------------------------------------------------------------------ the demo city
def test_shelters_euclidean_equals_brute_force(demo):
    doc = run_json("shelters", "--radius-m", "500")
    xy, pop = brute_cells()
    codes, reach = brute_shelter_reach()
    covered = np.zeros(len(xy), dtype=bool)
    for idx in reach:
        covered[idx] = True
    total, cov_brute = pop.sum(), pop[covered].sum()

    assert doc["kind"] == "shelters" and doc["method"] == "euclidean" and doc["demand"] == "raster"
    assert doc["radius_m"] == 500.0
    assert doc["population_total"] == pytest.approx(total, rel=1e-9)
    assert 0 < cov_brute < total
    assert abs(doc["population_covered"] - cov_brute) <= 0.005 * cov_brute
    assert doc["share_covered"] == pytest.approx(doc["population_covered"] / doc["population_total"], abs=1e-6)

    # per facility: people within reach of each shelter
    fac = {f["code"]: f for f in doc["facilities"]}
    assert set(fac) == set(codes)
    brute_reach = np.array([pop[idx].sum() for idx in reach])
    engine_reach = np.array([fac[c]["served"] for c in codes])
    assert np.abs(engine_reach - brute_reach).sum() <= 0.005 * brute_reach.sum()
    caps = {s.code: s.capacity for s in models.Shelter.objects.all()}
    for c, f in fac.items():
        assert f["capacity"] == caps[c]
        assert f["load"] == pytest.approx(f["served"] / f["capacity"], rel=1e-4, abs=1e-6)

    # per grid: the cells whose centres fall in it
    grid_codes, cell_grid = brute_grid_of_cells()
    grids = {g["code"]: g for g in doc["grids"]}
    assert set(grids) == set(grid_codes)
    pg = np.bincount(cell_grid[cell_grid >= 0], weights=pop[cell_grid >= 0], minlength=len(grid_codes))
    m = (cell_grid >= 0) & covered
    cg = np.bincount(cell_grid[m], weights=pop[m], minlength=len(grid_codes))
    ep = np.array([grids[c]["population"] for c in grid_codes])
    ec = np.array([grids[c]["covered"] for c in grid_codes])
    assert np.abs(ep - pg).sum() <= 0.005 * total
    assert np.abs(ec - cg).sum() <= 0.005 * cov_brute
    assert (ec <= ep + 1e-6).all()


def test_grid_sums_equal_the_totals(demo):
    for args in (("shelters", "--radius-m", "500"), ("fire_stations", "--radius-m", "500"),
                 ("shelters", "--radius-m", "800", "--demand", "grids")):
        doc = run_json(*args)
        pop = sum(g["population"] for g in doc["grids"])
        cov = sum(g["covered"] for g in doc["grids"])
        assert pop + doc["population_outside_grids"] == pytest.approx(doc["population_total"], abs=1.0)
        assert cov <= doc["population_covered"] + 1.0
        if doc["population_outside_grids"] == 0:
            assert cov == pytest.approx(doc["population_covered"], abs=1.0)
        for level in ("districts", "streets", "communities"):
            assert sum(a["population"] for a in doc["areas"][level]) == pytest.approx(pop, abs=1.0)
            assert sum(a["covered"] for a in doc["areas"][level]) == pytest.approx(cov, abs=1.0)


def test_grid_demand_equals_area_shares(demo):
    """Without a raster: covered = population x share of the grid's area within reach."""
    doc = run_json("shelters", "--radius-m", "500", "--demand", "grids")
    assert doc["demand"] == "grids"
    rows = list(models.Grid.objects.order_by("code").values_list("code", "population", "geom"))
    grids = _geoms([r[2] for r in rows])
    reach = shapely.union_all(shapely.buffer(_geoms(models.Shelter.objects.values_list("geom", flat=True)),
                                             RADIUS, quad_segs=32))
    share = shapely.area(shapely.intersection(grids, reach)) / shapely.area(grids)
    expect = np.array([r[1] for r in rows]) * share
    got = {g["code"]: g["covered"] for g in doc["grids"]}
    got = np.array([got[r[0]] for r in rows])
    assert np.abs(got - expect).sum() <= 0.005 * expect.sum()
    assert doc["population_total"] == pytest.approx(sum(r[1] for r in rows))


def test_capacity_equals_max_flow(demo):
    doc = run_json("shelters", "--radius-m", "500", "--capacity")
    xy, pop = brute_cells()
    codes, reach = brute_shelter_reach()
    caps = {s.code: float(s.capacity) for s in models.Shelter.objects.all()}

    # the same data as a flow network: cells merged by their set of reachable shelters
    sets: dict[int, list[int]] = {}
    for j, idx in enumerate(reach):
        for i in idx.tolist():
            sets.setdefault(i, []).append(j)
    groups: dict[tuple, float] = {}
    for i, js in sets.items():
        groups[tuple(js)] = groups.get(tuple(js), 0.0) + pop[i]
    g = nx.DiGraph()
    for k, (js, p) in enumerate(groups.items()):
        g.add_edge("s", ("d", k), capacity=p)
        for j in js:
            g.add_edge(("d", k), ("f", j))  # no capacity attribute: unlimited
    for j, c in enumerate(codes):
        g.add_edge(("f", j), "t", capacity=caps[c])
    flow = nx.maximum_flow_value(g, "s", "t")

    in_reach = sum(groups.values())
    served = doc["population_served"]
    assert served <= min(in_reach, sum(caps.values())) + 1e-6 * in_reach
    assert served == pytest.approx(flow, rel=1e-6, abs=1.0)
    assert served + doc["population_short"] + doc["population_unreachable"] == pytest.approx(
        doc["population_total"], abs=1.0)
    assert doc["population_unreachable"] == pytest.approx(doc["population_total"] - in_reach, abs=1.0)
    for f in doc["facilities"]:
        assert f["served"] <= f["capacity"] + 1e-3
        assert f["served"] <= f["population_in_reach"] + 1e-3
        assert 0 <= f["load"] <= 1 + 1e-6
    assert sum(f["served"] for f in doc["facilities"]) == pytest.approx(served, abs=1.0)
    assert sum(gr["served"] for gr in doc["grids"]) == pytest.approx(served, abs=1.0)
    assert doc["lp_status"] == "optimal"


def test_capacity_with_grid_demand_is_bounded(demo):
    doc = run_json("shelters", "--radius-m", "500", "--capacity", "--demand", "grids")
    cap = sum(f["capacity"] for f in doc["facilities"])
    assert doc["population_served"] <= min(cap, doc["population_total"] - doc["population_unreachable"]) + 1
    for f in doc["facilities"]:
        assert f["served"] <= min(f["capacity"], f["population_in_reach"]) + 1e-3


def test_network_covers_no_more_than_straight_line(demo):
    eu = run_json("shelters", "--radius-m", "500")
    nw = run_json("shelters", "--radius-m", "500", "--method", "network")
    assert nw["method"] == "network" and nw["network"]["version"]
    assert 0 < nw["population_covered"] <= eu["population_covered"]
    eg = {g["code"]: g["covered"] for g in eu["grids"]}
    assert all(g["covered"] <= eg[g["code"]] + 1e-6 for g in nw["grids"])
    ef = {f["code"]: f["population_in_reach"] for f in eu["facilities"]}
    assert all(f["population_in_reach"] <= ef[f["code"]] + 1e-6 for f in nw["facilities"])
    # the same for points (fire stations), and a second run reuses the cached network
    fe = run_json("fire_stations", "--radius-m", "500")
    fn = run_json("fire_stations", "--radius-m", "500", "--method", "network")
    assert 0 < fn["population_covered"] <= fe["population_covered"]
    assert fn["network"]["version"] == nw["network"]["version"]


def test_rule_set_radii_and_filters(demo):
    doc = run_json("shelters")  # per level from GISPORTAL_RULES
    from django.conf import settings
    levels = set(models.Shelter.objects.values_list("level", flat=True))
    assert doc["radius_m"] == {lv: settings.GISPORTAL_RULES["shelter_service_distance_m"][lv] for lv in levels}
    for f in doc["facilities"]:
        assert f["radius_m"] == settings.GISPORTAL_RULES["shelter_service_distance_m"][f["level"]]
    one = run_json("shelters", "--level", "emergency", "--radius-m", "500")
    assert len(one["facilities"]) == models.Shelter.objects.filter(level="emergency").count()
    assert one["population_covered"] <= run_json("shelters", "--radius-m", "500")["population_covered"]
    micro = run_json("fire_stations", "--facility-kind", "community_micro")
    assert micro["radius_m"] == settings.GISPORTAL_RULES["fire_response_distance_m"]
    assert len(micro["facilities"]) == models.FireStation.objects.filter(kind="community_micro").count()
    assert all(f["capacity"] is None and f["load"] is None for f in micro["facilities"])


def test_job_is_recorded(demo):
    before = models.Job.objects.count()
    doc = run_json("fire_stations", "--radius-m", "500")
    assert models.Job.objects.count() == before + 1
    job = models.Job.objects.get(pk=doc["job_id"])
    assert job.kind == "coverage" and job.status == "done" and job.progress == 1.0
    assert job.params["kind"] == "fire_stations" and job.params["radius_m"] == 500.0
    assert job.params["method"] == "euclidean" and job.params["capacity"] is False
    assert job.params["data"]["population_surface"]
    assert job.data_version == doc["data_version"] and len(job.data_version) == 16
    assert job.result["population_covered"] == doc["population_covered"]
    assert len(job.result["grids"]) == models.Grid.objects.count()
    assert job.started_at and job.finished_at
    # same data, same version; a changed population changes it
    again = run_json("fire_stations", "--radius-m", "500")
    assert again["data_version"] == doc["data_version"]
    grid = models.Grid.objects.order_by("code").first()
    models.Grid.objects.filter(pk=grid.pk).update(population=grid.population + 1)
    assert run_json("fire_stations", "--radius-m", "500")["data_version"] != doc["data_version"]


def test_cancel_marks_the_job(demo):
    def cancel(fraction, message):
        models.Job.objects.filter(kind="coverage", status="running").update(cancel_requested=True)

    with pytest.raises(services.JobCancelled):
        services_coverage.coverage_compute(kind="fire_stations", radius_m=500, progress=cancel)
    assert models.Job.objects.latest("pk").status == "cancelled"


def test_without_raster_falls_back_to_grids(demo):
    models.PopulationSurface.objects.update(active=False)
    doc = run_json("fire_stations", "--radius-m", "500")
    assert doc["demand"] == "grids" and "demand_note" in doc
    assert doc["population_total"] == pytest.approx(
        sum(models.Grid.objects.values_list("population", flat=True)))


def test_summary_table(demo):
    code, out, err = run("shelters", "--radius-m", "500", "--capacity")
    assert code == 0, err
    assert "covered" in out and "served" in out and "districts:" in out and "streets:" in out
    assert models.District.objects.filter(code="130702").first().name in out


@pytest.mark.parametrize("args", [
    ("bogus",),
    ("shelters", "--level", "bogus"),
    ("shelters", "--radius-m", "-5"),
    ("shelters", "--radius-m", "abc"),
    ("shelters", "--radius-m", "nan"),
    ("shelters", "--method", "crow"),
    ("shelters", "--demand", "census"),
    ("shelters", "--facility-kind", "community_micro"),
    ("fire_stations", "--facility-kind", "bogus"),
    ("fire_stations", "--level", "emergency"),
    ("fire_stations", "--capacity"),
    ("facilities", "--facility-kind", "other"),  # none in the demo, and no rule distance for "other"
])
def test_bad_input_exits_2(args):
    before = models.Job.objects.count()
    code, out, err = run(*args)
    assert code == 2 and err.strip() and not out
    assert models.Job.objects.count() == before  # nothing recorded


def test_no_facilities_and_no_demand_exit_2(demo):
    models.FireStation.objects.all().delete()
    code, _, err = run("fire_stations", "--radius-m", "500")
    assert code == 2 and err
    models.PopulationSurface.objects.update(active=False)
    models.Grid.objects.all().delete()
    code, _, err = run("shelters", "--radius-m", "500")
    assert code == 2 and err


def test_hand_made_city_without_demo_rows():
    """A 1 km square city of four grids and one point station: exact figures by hand."""
    from django.contrib.gis.geos import MultiPolygon, Point, Polygon

    for m in (models.FireStation, models.Shelter, models.ServiceFacility, models.Road):
        m.objects.all().delete()
    models.PopulationSurface.objects.update(active=False)
    models.Grid.objects.all().delete()
    d = models.District.objects.create(code="999001", name="测试区", geom=MultiPolygon(
        Polygon.from_bbox((0, 0, 1000, 1000)), srid=4547))
    s = models.Street.objects.create(code="999001001", name="测试街道", district=d, geom=d.geom)
    c = models.Community.objects.create(code="999001001001", name="测试社区", street=s, geom=d.geom)
    # four 500 m grids of 100 people; a station at the city's south-west corner with r = 500 m
    # covers a quarter disc of the south-west grid: pi/4 * 500**2 / 500**2 = 0.785
    for k, (x, y) in enumerate([(0, 0), (500, 0), (0, 500), (500, 500)]):
        models.Grid.objects.create(code=f"999001001001{k + 1:03d}", community=c, population=100, geom=MultiPolygon(
            Polygon.from_bbox((x + 500000, y + 4500000, x + 500500, y + 4500500)), srid=4547))
    models.FireStation.objects.create(code="999F1", name="站", geom=Point(500000, 4500000, srid=4547))
    doc = run_json("fire_stations", "--radius-m", "500")
    assert doc["demand"] == "grids" and doc["population_total"] == 400
    assert doc["grids"][0]["share"] == pytest.approx(np.pi / 4, rel=0.003)
    assert [g["covered"] for g in doc["grids"][1:]] == [0, 0, 0]
    assert doc["share_covered"] == pytest.approx(np.pi / 16, rel=0.003)
