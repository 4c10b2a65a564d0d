"""Housing project rules (layers/analysis/rules.py) and the submission parser (layers/analysis/submission.py).

Hand-made geometry with known answers at the edges, plus brute-force cross-checks of the farthest
distance and the area shares against dense point sampling.
"""
import json
import math

import numpy as np
import pyproj
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.analysis import rules as R
from layers.analysis.submission import SubmissionError, parse_submission

SETTINGS = {  # a copy of gisportal/settings.py GISPORTAL_RULES
    "version": "zjk-test.1",
    "persons_per_household": 2.62,
    "shelter_per_capita_m2": {"emergency": 1.0, "fixed_short": 2.0, "fixed_medium": 3.0,
                              "fixed_long": 4.5, "central": 4.5},
    "shelter_service_distance_m": {"emergency": 500.0, "fixed_short": 1000.0, "fixed_medium": 1500.0,
                                   "fixed_long": 2500.0, "central": 2500.0},
    "fire_response_distance_m": 500.0,
    "facility_area_m2_per_100_households": 30.0,
}
RS = R.RuleSet.from_settings(SETTINGS)
SITE = shapely.MultiPolygon([shapely.box(0, 0, 100, 100)])


def project(site=SITE, households=100, facilities=(), population=None):
    return R.Project("t", "dev", households, site, tuple(facilities), population)


def fac(geom, area=30.0, kind="community_service"):
    return R.ProjectFacility(kind, area, geom)


# ------------------------------------------------------------------ rule set
def test_rule_set_from_settings():
    assert RS.version == "zjk-test.1"
    assert RS.shelter_reach_m == 500.0  # the emergency service distance
    assert [r.code for r in RS.rules] == list(R.RULE_CODES)
    assert RS.rule("FAC-AREA").threshold == 30.0 and "NDRC" in RS.rule("FAC-AREA").basis
    assert RS.rule("SHELTER-REACH").basis.startswith("GB 50413-2007 §8.2.10")
    rs2 = R.RuleSet.from_settings({**SETTINGS, "facility_area_m2_per_100_households": 40})
    assert rs2.rule("FAC-AREA").threshold == 40.0
    with pytest.raises(ValueError):
        R.RuleSet.from_settings({**SETTINGS, "version": ""})
    with pytest.raises(ValueError):
        R.RuleSet.from_settings({**SETTINGS, "fire_response_distance_m": -1})
    with pytest.raises(ValueError):
        R.RuleSet.from_settings({**SETTINGS, "distance_method": "network"})
    with pytest.raises(TypeError):
        RS.shelter_per_capita_m2["emergency"] = 2.0  # frozen mapping


# ------------------------------------------------------------------ facilities
def test_facility_one_metre_outside_fails():
    c = R.check_fac_in_site(project(facilities=[fac(shapely.Point(101, 50))]), RS)
    assert (c.status, c.value) == ("fail", 1.0)
    assert c.evidence.equals(shapely.Point(101, 50))
    assert R.check_fac_in_site(project(facilities=[fac(shapely.Point(100, 50))]), RS).status == "pass"
    assert R.check_fac_in_site(project(facilities=[fac(shapely.Point(50, 50))]), RS).value == 0.0


def test_facility_footprint_outside():
    # footprint sticking 1 m out of the east edge, and 3-4-5 out of the north-east corner
    c = R.check_fac_in_site(project(facilities=[fac(shapely.box(90, 40, 101, 60))]), RS)
    assert c.status == "fail" and c.value == pytest.approx(1.0, abs=1e-6)
    assert c.evidence.area == pytest.approx(20.0)
    c = R.check_fac_in_site(project(facilities=[fac(shapely.box(90, 90, 103, 104))]), RS)
    assert c.value == pytest.approx(5.0, abs=1e-6)
    assert R.check_fac_in_site(project(facilities=[fac(shapely.box(10, 10, 20, 20))]), RS).status == "pass"


def test_fac_declared_and_not_applicable():
    none = project(facilities=[fac(shapely.Point(5, 5), kind="kindergarten")])
    assert R.check_fac_declared(none, RS).status == "fail"
    assert R.check_fac_in_site(none, RS).status == "n/a"
    assert R.check_fac_area(none, RS).status == "fail"
    two = project(facilities=[fac(shapely.Point(5, 5)), fac(shapely.Point(6, 6), kind="community_service_centre")])
    c = R.check_fac_declared(two, RS)
    assert (c.status, c.value) == ("pass", 2)


@pytest.mark.parametrize("households, area, status", [
    (100, 29.99, "fail"), (100, 30.00, "pass"), (1000, 299.99, "fail"), (1000, 300.0, "pass"),
    (333, 99.9, "pass"), (333, 99.89, "fail"), (7, 2.1, "pass"), (7, 2.09, "fail")])
def test_facility_area_edge(households, area, status):
    c = R.check_fac_area(project(households=households, facilities=[fac(shapely.Point(1, 1), area)]), RS)
    assert c.status == status
    assert c.required == pytest.approx(30.0 * households / 100)


def test_facility_area_sums_service_facilities_only():
    p = project(households=200, facilities=[fac(shapely.Point(1, 1), 40.0), fac(shapely.Point(2, 2), 20.0),
                                            fac(shapely.Point(3, 3), 500.0, kind="kindergarten")])
    c = R.check_fac_area(p, RS)
    assert (c.status, c.value, c.required) == ("pass", 60.0, 60.0)


# ------------------------------------------------------------------ reach
SHELTER_SW = shapely.box(-50, -50, 0, 0)  # its north-east corner at the origin


@pytest.mark.parametrize("scale, status", [(499 / 500, "pass"), (501 / 500, "fail"), (1.0, "pass")])
def test_shelter_reach_farthest_corner(scale, status):
    site = shapely.box(0, 0, 300 * scale, 400 * scale)  # farthest corner at 500 * scale from (0, 0)
    c = R.check_shelter_reach(site, [SHELTER_SW], RS)
    assert c.status == status
    assert c.value == pytest.approx(500 * scale, abs=0.01)
    if status == "fail":
        assert c.evidence is not None and c.evidence.area > 0
        assert c.evidence.contains(shapely.Point(300 * scale - 0.01, 400 * scale - 0.01))
    else:
        assert c.evidence is None


@pytest.mark.parametrize("d, status", [(499.0, "pass"), (501.0, "fail")])
def test_fire_reach_point_station(d, status):
    site = shapely.box(0, 0, 0.6 * d, 0.8 * d)
    c = R.check_fire_reach(site, [shapely.Point(0, 0), shapely.Point(-1, -1)],
                           ["community_micro", "standard"], RS)
    assert (c.status, c.value) == (status, pytest.approx(d, abs=1e-6))
    # a standard station next to the far corner does not count
    c2 = R.check_fire_reach(site, [shapely.Point(0, 0), shapely.Point(0.6 * d, 0.8 * d)],
                            ["community_micro", "standard"], RS)
    assert c2.status == status


def test_reach_maximum_inside_the_site():
    # shelters at both ends of a 1002 m strip: the farthest points are on the middle line, not corners
    site = shapely.box(0, 0, 1002, 10)
    shelters = [shapely.box(-100, 0, 0, 10), shapely.box(1002, 0, 1100, 10)]
    c = R.check_shelter_reach(site, shelters, RS)
    assert c.status == "fail" and c.value == pytest.approx(501.0, abs=0.01)
    assert R.check_shelter_reach(shapely.box(0, 0, 998, 10), [shelters[0], shapely.box(998, 0, 1100, 10)],
                                 RS).status == "pass"


def test_reach_no_target():
    c = R.check_shelter_reach(SITE, [], RS)
    assert c.status == "fail" and c.value is None


# ------------------------------------------------------------------ farthest distance: brute force
def brute_max(region, targets, step):
    x0, y0, x1, y1 = region.bounds
    xs, ys = np.meshgrid(np.arange(x0, x1 + step, step), np.arange(y0, y1 + step, step))
    pts = shapely.points(xs.ravel(), ys.ravel())
    pts = pts[shapely.contains(region, pts)]
    edge = shapely.get_coordinates(shapely.segmentize(region.boundary, step))
    pts = np.concatenate([pts, shapely.points(edge)])
    return float(shapely.distance(shapely.union_all(targets), pts).max())


@st.composite
def reach_case(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 300, (draw(st.integers(3, 8)), 2))
    region = shapely.convex_hull(shapely.multipoints(pts))
    if draw(st.booleans()):  # a notch: non-convex region
        region = region.difference(shapely.box(*rng.uniform(100, 200, 2), 400, *rng.uniform(200, 260, 1)))
    region = shapely.union_all([p for p in shapely.get_parts(region) if p.geom_type == "Polygon"])
    n = draw(st.integers(1, 5))
    centres = rng.uniform(-200, 500, (n, 2))
    if draw(st.booleans()):
        targets = list(shapely.points(centres))
    else:
        targets = [shapely.box(x, y, x + w, y + h) for (x, y), (w, h)
                   in zip(centres, rng.uniform(5, 120, (n, 2)))]
    return region, targets


@settings(max_examples=25, deadline=None)
@given(reach_case())
def test_farthest_distance_matches_brute_force(case):
    region, targets = case
    if region.is_empty or region.area < 1:
        return
    tol, step = 0.5, 2.0
    fr = R.farthest_distance(region, targets, tol_m=tol)
    b = brute_max(region, targets, step)
    assert fr.upper_m - fr.distance_m <= tol + 1e-6
    assert b <= fr.upper_m + 1e-6           # the upper bound holds on every sampled point
    assert fr.distance_m >= b - tol - 1e-6  # nothing sampled is farther than the answer (+ tol)
    assert fr.distance_m <= b + 2 * step    # and the answer is a real distance (Lipschitz bound)
    d_at = float(shapely.distance(shapely.union_all(targets), shapely.Point(fr.point_xy)))
    assert d_at == pytest.approx(fr.distance_m, abs=1e-6)
    assert region.buffer(1e-6).contains(shapely.Point(fr.point_xy))


def test_farthest_distance_region_inside_targets():
    assert R.farthest_distance(shapely.box(0, 0, 1, 1), [shapely.box(-1, -1, 2, 2)]).distance_m == 0.0
    assert math.isinf(R.farthest_distance(shapely.box(0, 0, 1, 1), []).distance_m)


# ------------------------------------------------------------------ location
DISTRICTS = R.Areas(("999001", "999002"), ("甲区", "乙区"),
                    [shapely.box(-1000, -1000, 40, 1000), shapely.box(40, -1000, 1000, 1000)])


def test_site_straddling_two_districts_warns_with_shares():
    site = shapely.box(0, 0, 100, 50)
    c = R.check_district(site, DISTRICTS, RS)
    assert c.status == "warn"
    assert [(d["code"], d["share"]) for d in c.value] == [("999002", 0.6), ("999001", 0.4)]
    assert R.check_district(shapely.box(50, 0, 100, 50), DISTRICTS, RS).status == "pass"
    assert R.check_inside_city(site, DISTRICTS.geoms, RS).status == "pass"


def test_overlapping_districts_do_not_straddle():
    zone = R.Areas(("999001", "999071"), ("甲区", "开发区"), [shapely.box(0, 0, 1000, 1000), shapely.box(0, 0, 500, 500)])
    c = R.check_district(shapely.box(10, 10, 20, 20), zone, RS)
    assert c.status == "pass" and {d["share"] for d in c.value} == {1.0}


def test_partly_outside_the_city_fails():
    site = shapely.box(900, 0, 1100, 100)  # half beyond x = 1000
    c = R.check_inside_city(site, DISTRICTS.geoms, RS)
    assert (c.status, c.value) == ("fail", 0.5)
    assert c.evidence.area == pytest.approx(10000.0)


@settings(max_examples=20, deadline=None)
@given(st.floats(-900, 690), st.floats(-900, 690), st.floats(5, 300), st.floats(5, 300))
def test_shares_match_point_sampling(x, y, w, h):
    site = shapely.box(x, y, x + w, y + h)
    shares = R.area_shares(site, DISTRICTS.geoms)
    rng = np.random.default_rng(1)
    p = rng.uniform((x, y), (x + w, y + h), (20000, 2))
    sampled = [shapely.contains_xy(g, p[:, 0], p[:, 1]).mean() for g in DISTRICTS.geoms]
    np.testing.assert_allclose(shares, sampled, atol=0.02)
    assert shares.sum() == pytest.approx(1.0)


# ------------------------------------------------------------------ shelters
def test_site_no_shelter_overlap():
    c = R.check_site_no_shelter(SITE, [shapely.box(90, 90, 150, 150), shapely.box(500, 500, 600, 600)], RS)
    assert (c.status, c.value) == ("fail", 100.0)
    assert R.check_site_no_shelter(SITE, [shapely.box(100, 0, 150, 50)], RS).status == "pass"


def brute_spare(site, shelters, radius, cap, demand_xy, pop):
    """Small max-flow by networkx for the spare capacity (independent of the LP)."""
    import networkx as nx
    g = nx.DiGraph()
    for i, (xy, p) in enumerate(zip(demand_xy, pop)):
        g.add_edge("s", f"d{i}", capacity=p)
        for j, sh in enumerate(shelters):
            if shapely.distance(shapely.Point(xy), sh) <= radius[j]:
                g.add_edge(f"d{i}", f"h{j}", capacity=math.inf)
    for j, sh in enumerate(shelters):
        g.add_edge(f"h{j}", "t", capacity=cap[j])
        if shapely.distance(site, sh) <= radius[j]:
            g.add_edge("p", f"h{j}", capacity=math.inf)
    base = nx.maximum_flow_value(g, "s", "t") if g.has_node("s") else 0.0
    g.add_edge("s", "p", capacity=sum(cap))
    return nx.maximum_flow_value(g, "s", "t") - base


@pytest.mark.parametrize("seed", range(6))
def test_spare_capacity_matches_max_flow(seed):
    rng = np.random.default_rng(seed)
    shelters = [shapely.Point(xy).buffer(20) for xy in rng.uniform(0, 2000, (8, 2))]
    radius = rng.choice([500.0, 1000.0], 8)
    cap = rng.integers(50, 400, 8).astype(float)
    dxy = rng.uniform(0, 2000, (40, 2))
    pop = rng.integers(0, 120, 40).astype(float)
    site = shapely.box(900, 900, 1100, 1050)
    res = R.shelter_spare_capacity(site, shelters, radius, cap, dxy, pop)
    assert res.spare_persons == pytest.approx(brute_spare(site, shelters, radius, cap, dxy, pop), abs=1e-6)


def test_shelter_capacity_check():
    sh = np.array([shapely.box(200, 0, 300, 100)], dtype=object)
    ctx = R.ReviewContext(shelter_geoms=sh, shelter_levels=("emergency",), shelter_capacity=[1000.0],
                          demand_xy=[[250.0, 300.0]], demand_pop=[700.0])
    c = R.check_shelter_capacity(project(households=114), ctx, RS)  # 114 * 2.62 = 298.68 -> 299
    assert (c.status, c.value, c.required) == ("pass", 300, 299)
    c = R.check_shelter_capacity(project(households=115), ctx, RS)  # 301.3 -> 301 persons > 300
    assert (c.status, c.value, c.required) == ("fail", 300, 301)
    c = R.check_shelter_capacity(project(households=115, population=300), ctx, RS)
    assert c.status == "pass"


# ------------------------------------------------------------------ life circle and the whole review
def test_life_circle_warns_never_fails():
    f = [shapely.Point(50, 50), shapely.Point(2000, 0)]
    c = R.check_life_circle(SITE, f, ["kindergarten", "culture_sport"], RS)
    assert c.status == "warn"
    assert c.value["kindergarten"] == pytest.approx(math.hypot(50, 50), abs=0.1)
    assert c.value["elderly_care"] is None


def good_context():
    return R.ReviewContext(
        districts=R.Areas(("999001",), ("甲区",), [shapely.box(-5000, -5000, 5000, 5000)]),
        grids=R.Areas(("999001001001001",), ("",), [shapely.box(-5000, -5000, 5000, 5000)]),
        shelter_geoms=[shapely.box(120, 0, 220, 100)], shelter_levels=("emergency",),
        shelter_capacity=[5000.0],
        fire_geoms=[shapely.Point(150, 150)], fire_kinds=("community_micro",),
        facility_geoms=[shapely.Point(x, 50) for x in (110, 120, 130, 140)],
        facility_kinds=("kindergarten", "elderly_care", "health_station", "culture_sport"),
        demand_xy=[[400.0, 400.0]], demand_pop=[1000.0])


def test_review_verdict():
    p = project(households=100, facilities=[fac(shapely.Point(50, 50), 30.0)])
    rv = R.review(p, good_context(), RS)
    assert rv.statuses == {c: "pass" for c in R.RULE_CODES}
    assert rv.verdict == "pass" and rv.population == 262
    doc = rv.as_dict()
    json.dumps(doc)
    assert doc["location"]["districts"] == [{"code": "999001", "name": "甲区", "share": 1.0}]
    assert doc["location"]["grids"] == [{"code": "999001001001001", "share": 1.0}]
    assert set(doc["checks"][0]) == {"code", "status", "value", "required", "unit", "message", "basis"}
    # advisory warn keeps the verdict; one failure flips it
    ctx = good_context()
    far = R.ReviewContext(**{**ctx.__dict__, "facility_kinds": ("kindergarten",) * 4})
    rv = R.review(p, far, RS)
    assert rv.check("LIFE-CIRCLE").status == "warn" and rv.verdict == "pass"
    rv = R.review(project(households=101, facilities=[fac(shapely.Point(50, 50), 30.0)]), ctx, RS)
    assert rv.check("FAC-AREA").status == "fail" and rv.verdict == "fail"


# ------------------------------------------------------------------ the submission parser
def fc(site_coords=None, site_props=None, facilities=(), crs=None):
    site_coords = site_coords or [[[114.90, 40.80], [114.902, 40.80], [114.902, 40.802], [114.90, 40.802],
                                   [114.90, 40.80]]]
    props = {"role": "site", "name": "示例小区", "developer": "某公司", "households": 300}
    props.update(site_props or {})
    feats = [{"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": site_coords}}]
    feats += list(facilities)
    doc = {"type": "FeatureCollection", "features": feats}
    if crs is not None:
        doc["crs"] = crs
    return doc


def facility(coords=(114.901, 40.801), **props):
    p = {"role": "facility", "floor_area_m2": 120.0}
    p.update(props)
    return {"type": "Feature", "properties": p, "geometry": {"type": "Point", "coordinates": list(coords)}}


def test_parse_good_submission_transforms_to_storage():
    sub = parse_submission(json.dumps(fc(facilities=[facility()])).encode())
    p = sub.project
    assert (p.name, p.developer, p.households, p.population_declared) == ("示例小区", "某公司", 300, None)
    assert p.site.geom_type == "MultiPolygon" and sub.source_srid == 4326
    x, y = pyproj.Transformer.from_crs(4326, 4547, always_xy=True).transform(114.901, 40.801)
    assert p.facilities[0].geom.x == pytest.approx(x) and p.facilities[0].geom.y == pytest.approx(y)
    assert p.facilities[0].kind == "community_service"
    assert 160 * 220 < p.site.area < 170 * 225  # 0.002 deg lon x 0.002 deg lat at 40.8 N


def test_parse_projected_crs_member_and_override():
    x, y = 600000.0, 4515000.0
    ring = [[[x, y], [x + 100, y], [x + 100, y + 100], [x, y + 100], [x, y]]]
    sub = parse_submission(fc(ring, crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4547"}}))
    assert sub.source_srid == 4547 and sub.project.site.area == pytest.approx(10000.0)
    assert parse_submission(fc(ring), srid=4547).project.site.area == pytest.approx(10000.0)
    with pytest.raises(SubmissionError) as e:
        parse_submission(fc(ring))  # metres without a crs
    assert e.value.code == "crs"


@pytest.mark.parametrize("doc, code", [
    (fc(site_props={"role": "facility", "floor_area_m2": 10}), "no_site"),
    ({"type": "FeatureCollection", "features": fc()["features"] * 2}, "two_sites"),
    (fc(site_props={"households": None}), "households"),
    (fc(site_props={"households": 0}), "households"),
    (fc(site_props={"households": -5}), "households"),
    (fc(site_props={"households": 2.5}), "households"),
    (fc(facilities=[facility(floor_area_m2=None)]), "facility_area"),
    (fc(facilities=[facility(floor_area_m2=0)]), "facility_area"),
    (fc([[[40.80, 114.90], [40.80, 114.902], [40.802, 114.902], [40.80, 114.90]]]), "swapped_axes"),
    (fc([[[14.90, 50.80], [14.902, 50.80], [14.902, 50.802], [14.90, 50.80]]]), "outside_china"),
    (fc([[[114.90, 40.80], [114.902, 40.802], [114.902, 40.80], [114.90, 40.802], [114.90, 40.80]]]),
     "invalid_polygon"),
    (fc([[[114.90, 40.80], [114.902, 40.80], [114.90, 40.80]]]), "invalid_polygon"),
    (fc(crs={"type": "link", "properties": {"href": "http://example.com/crs", "type": "proj4"}}), "crs"),
    (fc(facilities=[facility(kind="casino")]), "kind"),
    ({"type": "Feature"}, "structure"),
])
def test_bad_submissions_refused(doc, code):
    with pytest.raises(SubmissionError) as e:
        parse_submission(doc)
    assert e.value.code == code
    assert e.value.message_zh and e.value.message_en


def test_bad_json_refused():
    with pytest.raises(SubmissionError) as e:
        parse_submission(b"{not json")
    assert e.value.code == "json"


# ------------------------------------------------------------------ speed-ups: same answers (issue 4, p95 < 200 ms)
from layers.analysis.coverage import added_demand_capacity, capacitated_coverage  # noqa: E402


def nx_added(pop, dense, cap, reach, new_pop):
    """networkx max flow with and without the new point (independent of both our methods)."""
    import networkx as nx
    g = nx.DiGraph()
    g.add_node("s")
    g.add_node("t")
    for i, p in enumerate(pop):
        g.add_edge("s", f"d{i}", capacity=float(p))
        for j in np.flatnonzero(dense[i]):
            g.add_edge(f"d{i}", f"h{j}", capacity=math.inf)
    for j, c in enumerate(cap):
        if math.isfinite(c):
            g.add_edge(f"h{j}", "t", capacity=float(c))
        else:
            g.add_edge(f"h{j}", "t")  # no capacity attribute: unlimited
    base = nx.maximum_flow_value(g, "s", "t")
    g.add_edge("s", "p", capacity=float(new_pop))
    for j in reach:
        g.add_edge("p", f"h{j}", capacity=math.inf)
    return nx.maximum_flow_value(g, "s", "t") - base, base


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 30), st.integers(1, 8), st.integers(0, 2**31 - 1), st.floats(0.1, 0.7))
def test_added_demand_max_flow_matches_networkx_and_lp(n_demand, n_sites, seed, density):
    import scipy.sparse
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_demand, n_sites)) < density).astype(np.uint8)
    if n_demand > 3:  # identical reach sets are merged
        dense[: n_demand // 3] = dense[n_demand // 3: 2 * (n_demand // 3)]
    pop = rng.integers(0, 100, n_demand).astype(float)
    cap = rng.integers(0, 150, n_sites).astype(float)
    reach = np.flatnonzero(rng.random(n_sites) < 0.5)
    cover = scipy.sparse.csr_array(dense)
    res = added_demand_capacity(pop, cover, cap, reach)
    assert res.method == "max_flow"
    want, base = nx_added(pop, dense, cap, reach, cap[reach].sum())
    assert res.added_persons == want and res.population_served == base
    # the LP of capacitated_coverage, as shelter_spare_capacity computed it before
    lp = capacitated_coverage(pop, cover, cap)
    row = np.zeros((1, n_sites), dtype=np.uint8)
    row[0, reach] = 1
    lp2 = capacitated_coverage(np.append(pop, cap[reach].sum()), scipy.sparse.vstack([cover, row]).tocsr(), cap)
    assert res.added_persons == pytest.approx(lp2.population_served - lp.population_served, abs=1e-6)
    # the load is one optimal assignment: within capacity, summing to the maximum
    assert (res.load <= cap).all() and res.load.sum() == base
    # a bounded new point takes min(its population, the room)
    half = float(want // 2)
    assert added_demand_capacity(pop, cover, cap, reach, new_pop=half).added_persons == half


def test_added_demand_lp_fallback_and_limits():
    import scipy.sparse
    cover = scipy.sparse.csr_array(np.array([[1, 1], [1, 0]], dtype=np.uint8))
    # fractional population: the LP, same answer as networkx
    r = added_demand_capacity([60.5, 40.0], cover, [100.0, 50.0], [0])
    assert r.method == "lp"
    assert r.added_persons == pytest.approx(nx_added([60.5, 40.0], cover.toarray(), [100.0, 50.0], [0], 150.0)[0])
    # totals beyond int32 (scipy's maximum_flow would overflow): the LP
    big = added_demand_capacity([3e9, 1e9], cover, [3.5e9, 1e9], [0])
    assert big.method == "lp" and big.added_persons == pytest.approx(0.5e9)
    # an unlimited site in reach of an unbounded new point
    inf = added_demand_capacity([60.0, 40.0], cover, [np.inf, 50.0], [0])
    assert math.isinf(inf.added_persons) and inf.population_served == 100.0
    # an unlimited site out of reach does not matter
    r = added_demand_capacity([60.0, 40.0], cover, [100.0, np.inf], [0])
    assert (r.method, r.added_persons) == ("max_flow", 60.0)  # point 0 moves wholly to site 1
    # no demand at all; nothing in reach
    empty = scipy.sparse.csr_array((0, 2), dtype=np.uint8)
    assert added_demand_capacity(np.zeros(0), empty, [5.0, 7.0], [1]).added_persons == 7.0
    assert added_demand_capacity([60.0, 40.0], cover, [100.0, 50.0], []).added_persons == 0.0
    with pytest.raises(ValueError):
        added_demand_capacity([60.0, 40.0], cover, [100.0, 50.0], [2])


def random_shapes(rng, n, extent=1000.0):
    """Squares, rotated rectangles, L-shapes with holes, points and lines on integer coordinates
    (so that exact distance ties occur)."""
    import shapely.affinity
    out = []
    for _ in range(n):
        x, y = rng.integers(0, int(extent), 2).astype(float)
        k = rng.integers(0, 5)
        if k == 0:
            s = float(rng.integers(5, 120))
            out.append(shapely.box(x, y, x + s, y + s))
        elif k == 1:
            out.append(shapely.affinity.rotate(shapely.box(x, y, x + 80, y + 20), float(rng.integers(0, 90))))
        elif k == 2:
            outer = shapely.Polygon([(x, y), (x + 100, y), (x + 100, y + 30), (x + 30, y + 30), (x + 30, y + 100),
                                     (x, y + 100)], [[(x + 5, y + 5), (x + 20, y + 5), (x + 20, y + 20), (x + 5, y + 20)]])
            out.append(shapely.MultiPolygon([outer, shapely.box(x + 150, y, x + 160, y + 10)]))
        elif k == 3:
            out.append(shapely.Point(x, y))
        else:
            out.append(shapely.LineString([(x, y), (x + 50, y + float(rng.integers(-50, 50)))]))
    return np.array(out, dtype=object)


@pytest.mark.parametrize("seed", range(6))
def test_dwithin_pairs_equals_geos(seed):
    rng = np.random.default_rng(seed)
    a, b = random_shapes(rng, 150), random_shapes(rng, 25)
    r = rng.choice([0.0, 10.0, 50.0, 100.0, 250.0], b.size)
    ai, bi = R.dwithin_pairs(a, b, r)
    b_ref, a_ref = shapely.STRtree(a).query(b, predicate="dwithin", distance=r)
    want = sorted(zip(b_ref.tolist(), a_ref.tolist()))
    assert list(zip(bi.tolist(), ai.tolist())) == want
    brute = [(j, i) for j in range(b.size) for i in range(a.size) if shapely.distance(a[i], b[j]) <= r[j]]
    assert want == brute


def test_dwithin_pairs_exact_ties_and_empty():
    sq = shapely.box(0, 0, 10, 10)
    pts = shapely.points([[15.0, 5.0], [15.0 + 1e-9, 5.0], [13.0, 14.0], [5.0, 5.0]])  # 5, 5+1e-9, 5 (3-4-5), in
    ai, bi = R.dwithin_pairs(pts, [sq], 5.0)
    assert ai.tolist() == [0, 2, 3] and bi.tolist() == [0, 0, 0]
    assert R.dwithin_pairs([], [sq], 5.0)[0].size == 0
    assert R.dwithin_pairs(pts, [], 5.0)[0].size == 0


@pytest.mark.parametrize("seed", range(8))
def test_pruned_targets_keep_the_distance_function(seed):
    rng = np.random.default_rng(seed)
    targets = np.array([shapely.box(x, y, x + s, y + s) for (x, y), s in
                        zip(rng.uniform(-1500, 1500, (60, 2)), rng.uniform(20, 120, 60))], dtype=object)
    site = shapely.box(0, 0, 200, 150)
    keep = R._may_be_nearest(site, targets)
    assert 0 < keep.sum() < targets.size
    # nearest distance at points of the site: the same with the kept targets only
    xy = np.column_stack([rng.uniform(0, 200, 400), rng.uniform(0, 150, 400)])
    xy = np.vstack([xy, shapely.get_coordinates(site)])
    pts = shapely.points(xy)
    full = np.min([shapely.distance(t, pts) for t in targets], axis=0)
    kept = np.min([shapely.distance(t, pts) for t in targets[keep]], axis=0)
    np.testing.assert_array_equal(full, kept)
    a = R.farthest_distance(site, targets)
    b = R.farthest_distance(site, targets[keep])
    assert b.distance_m == pytest.approx(a.distance_m, abs=1e-6)
    assert b.upper_m == pytest.approx(a.upper_m, abs=1e-6)


@pytest.mark.parametrize("seed", range(2))
def test_spare_capacity_same_as_the_lp(seed):
    """shelter_spare_capacity (max-flow + dwithin_pairs) against the previous formulation: the
    GEOS coverage matrix and two HiGHS LPs, on a city-like case with all five shelter levels."""
    import scipy.sparse
    from layers.analysis.coverage import coverage_matrix_geoms
    rng = np.random.default_rng(100 + seed)
    n = 120
    levels = rng.choice(list(RS.shelter_service_distance_m), n)
    xy = rng.uniform(0, 5000, (n, 2))
    side = rng.uniform(30, 120, n)
    sh = np.array([shapely.box(x, y, x + s, y + s) for (x, y), s in zip(xy, side)], dtype=object)
    rad = np.array([RS.shelter_service_distance_m[lv] for lv in levels])
    cap = np.floor(0.7 * side**2 / np.array([RS.shelter_per_capita_m2[lv] for lv in levels]))
    gx, gy = np.meshgrid(np.arange(50.0, 5000, 100), np.arange(50.0, 5000, 100))
    dxy = np.column_stack([gx.ravel(), gy.ravel()])
    pop = rng.integers(0, 400, len(dxy)).astype(float)
    site = shapely.box(2400, 2400, 2600, 2550)
    res = R.shelter_spare_capacity(site, sh, rad, cap, dxy, pop)
    cover = coverage_matrix_geoms(dxy, sh, rad)
    base = capacitated_coverage(pop, cover, cap)
    row = np.zeros((1, n), dtype=np.uint8)
    row[0, res.reach_idx] = 1
    with_p = capacitated_coverage(np.append(pop, cap[res.reach_idx].sum()),
                                  scipy.sparse.vstack([cover, row]).tocsr(), cap)
    assert res.spare_persons == round(with_p.population_served - base.population_served)
    assert res.population_served == pytest.approx(base.population_served, abs=1e-6)


# ------------------------------------------------------------------ reach along the roads
from layers.analysis.network import build_network  # noqa: E402

NET_RS = R.RuleSet.from_settings({**SETTINGS, "reach_method": "network"})

# A U-shaped road: out along y = 0 from the shelter's gate at x = 0 to x = 400, up to y = 60 and back
# to x = 0. A 20 m site at x 0..20, y 70..90 is 60 m from the shelter in a straight line, but its
# farthest corner (0, 90) walks 30 (to the road end (0, 60)) + 400 + 60 + 400 + 10 (from the road
# at (0, 0) to the shelter's gate (0, 10), its nearest corner) = 900 m by road.
U_ROAD = [shapely.LineString([(0, 0), (400, 0), (400, 60), (0, 60)])]
U_SHELTER = shapely.box(-20, -10, 0, 10)
U_SITE = shapely.MultiPolygon([shapely.box(0, 70, 20, 90)])


def test_reach_method_setting():
    assert RS.reach_method == "euclidean" and RS.as_dict()["reach_method"] == "euclidean"
    assert NET_RS.reach_method == "network"
    with pytest.raises(ValueError):
        R.RuleSet.from_settings({**SETTINGS, "reach_method": "manhattan"})


def test_reach_samples_spacing_and_inside():
    site = shapely.Polygon([(0, 0), (130, 0), (130, 40), (60, 40), (60, 90), (0, 90)])  # an L
    xy = R.reach_samples(site, 25.0)
    pts = shapely.points(xy)
    assert shapely.intersects(site, pts).all()  # inside or on the boundary
    # every point of the site is within 25 / sqrt(2) m of a sample (lattice) or on a <= 25 m boundary step
    probe = shapely.get_coordinates(shapely.segmentize(site.boundary, 1.0))
    gx, gy = np.meshgrid(np.arange(0.5, 130, 3.0), np.arange(0.5, 90, 3.0))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    grid = grid[shapely.contains(site, shapely.points(grid))]
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(xy).query(np.vstack([probe, grid]))
    assert dist.max() <= 25.0 / math.sqrt(2) + 1e-9
    # the boundary steps are at most 25 m
    ring = site.exterior
    on = xy[shapely.distance(ring, pts) < 1e-9]
    assert len(on) >= math.ceil(ring.length / 25.0)


def test_network_reach_fails_where_straight_line_passes():
    net = build_network(U_ROAD)
    eu = R.check_shelter_reach(U_SITE, [U_SHELTER], RS)
    # straight line: the corner (20, 90) to the shelter's corner (0, 10)
    assert eu.status == "pass" and eu.value == pytest.approx(np.hypot(20, 80), abs=0.01) and eu.method is None
    assert "method" not in eu.as_dict()
    c = R.check_shelter_reach(U_SITE, [U_SHELTER], NET_RS, network=net)
    assert c.status == "fail" and c.value == pytest.approx(900.0, abs=1e-6) and c.method == "network"
    assert "by road" in c.message_en and "道路" in c.message_zh
    assert c.as_dict()["method"] == "network"
    # evidence: the samples beyond 500 m, i.e. all of them (the nearest walks 20 + 20 + 860 > 500)
    ev = shapely.get_coordinates(c.evidence)
    assert len(ev) == len(R.reach_samples(U_SITE)) and [0.0, 90.0] in ev.tolist()
    # the threshold decides on the value: 900 passes at 900 m, fails at 899 m
    rs900 = R.RuleSet.from_settings({**SETTINGS, "reach_method": "network", "shelter_reach_m": 900.0})
    assert R.check_shelter_reach(U_SITE, [U_SHELTER], rs900, network=net).status == "pass"
    rs899 = R.RuleSet.from_settings({**SETTINGS, "reach_method": "network", "shelter_reach_m": 899.0})
    c = R.check_shelter_reach(U_SITE, [U_SHELTER], rs899, network=net)
    assert c.status == "fail" and [0.0, 90.0] in shapely.get_coordinates(c.evidence).tolist()
    # a short cut from (10, 60) to (10, 0): the corners (0, 90) and (20, 90) walk 30 + 10 + 60 + 10 + 10
    cut = build_network(U_ROAD + [shapely.LineString([(10, 60), (10, 0)])])
    c = R.check_shelter_reach(U_SITE, [U_SHELTER], NET_RS, network=cut)
    assert c.status == "pass" and c.value == pytest.approx(120.0, abs=1e-6)


def test_network_reach_fire_station_point_and_inside_shelter():
    net = build_network(U_ROAD)
    # a micro station beside the road end at (0, 65): the corner (20, 70) walks 10 + 20 + 5 = 35 m;
    # the farthest sample is (20, 90): 30 + 20 + 5 = 55 m
    c = R.check_fire_reach(U_SITE, [shapely.Point(0, 65), shapely.Point(5000, 0)],
                           ("community_micro", "community_micro"), NET_RS, network=net)
    assert c.status == "pass" and c.value == pytest.approx(55.0, abs=1e-6)
    # other kinds do not count
    c = R.check_fire_reach(U_SITE, [shapely.Point(0, 65)], ("standard",), NET_RS, network=net)
    assert c.status == "fail" and c.value is None and c.method == "network"
    # a site inside a shelter polygon is reached without a road
    big = shapely.box(-10, 60, 40, 100)
    xy, d = R.network_reach_distances(U_SITE, [big], net)
    assert (d == 0).all()


def test_network_reach_without_roads_falls_back_and_says_so():
    c = R.check_shelter_reach(U_SITE, [U_SHELTER], NET_RS)  # no network, no roads loaded
    assert c.status == "pass" and c.method == "euclidean" and "no roads loaded" in c.message_en
    assert c.value == pytest.approx(np.hypot(20, 80), abs=0.01) and "直线" in c.message_zh
    # roads loaded, but none near the site: nothing reachable by road
    c = R.check_shelter_reach(U_SITE, [U_SHELTER], NET_RS, network=None, roads_loaded=True)
    assert c.status == "fail" and c.value is None and c.method == "network"
    # the review passes the context's network on
    ctx = good_context()
    p = project(households=100, facilities=[fac(shapely.Point(50, 50), 30.0)])
    rv = R.review(p, ctx, NET_RS)
    assert rv.check("SHELTER-REACH").method == "euclidean" and rv.check("FIRE-REACH").method == "euclidean"
    roads = [shapely.LineString([(-1000, 110), (1000, 110)])]
    rv = R.review(p, R.ReviewContext(**{**ctx.__dict__, "road_network": build_network(roads)}), NET_RS)
    assert rv.check("SHELTER-REACH").method == "network" and rv.check("FIRE-REACH").method == "network"
    assert rv.check("LIFE-CIRCLE").method is None


def _nx_reach(lines, site, targets, gate_m=R.NETWORK_GATE_SPACING_M):
    """Independent network reach: networkx Dijkstra over the road segments, brute-force snapping."""
    import networkx as nx
    segs = []
    for ln in lines:
        c = np.asarray(ln.coords)
        segs += [(tuple(c[i]), tuple(c[i + 1])) for i in range(len(c) - 1)]
    g = nx.Graph()
    for a, b in segs:
        g.add_edge(a, b, weight=math.dist(a, b))
    seg_geoms = np.array([shapely.LineString(s) for s in segs], dtype=object)

    def snap(p):
        d = shapely.distance(seg_geoms, shapely.Point(p))
        k = int(np.argmin(d))
        a, b = segs[k]
        t = shapely.line_locate_point(seg_geoms[k], shapely.Point(p))
        return k, float(d[k]), t, math.dist(a, b)

    gates = []
    for tg in targets:
        if tg.geom_type == "Point":
            gates.append(tuple(tg.coords[0]))
        else:
            gates += [tuple(c) for c in shapely.get_coordinates(shapely.segmentize(tg.boundary, gate_m))]
    gsnap = [snap(q) for q in gates]
    # multi-source Dijkstra from the gates' edge ends
    src = {}
    for k, acc, t, ln in gsnap:
        a, b = segs[k]
        src[a] = min(src.get(a, np.inf), acc + t)
        src[b] = min(src.get(b, np.inf), acc + ln - t)
    g.add_node("S")
    for node, w in src.items():
        g.add_edge("S", node, weight=w)
    dist = nx.single_source_dijkstra_path_length(g, "S")
    xy = R.reach_samples(site)
    out = []
    areal = [tg for tg in targets if tg.area > 0]
    for p in xy:
        if any(tg.intersects(shapely.Point(p)) for tg in areal):
            out.append(0.0)
            continue
        k, acc, t, ln = snap(p)
        a, b = segs[k]
        best = min(dist.get(a, np.inf) + t, dist.get(b, np.inf) + ln - t)
        for k2, acc2, t2, _ in gsnap:
            if k2 == k:
                best = min(best, abs(t - t2) + acc2)
        out.append(acc + best)
    return xy, np.array(out)


@pytest.mark.parametrize("seed", range(4))
def test_network_reach_matches_networkx(seed):
    rng = np.random.default_rng(seed)
    # a 6 x 6 lattice of 100 m streets with a third of the blocks' sides missing, nodes jittered
    n, step = 6, 100.0
    node = {(i, j): (i * step + rng.uniform(-15, 15), j * step + rng.uniform(-15, 15))
            for i in range(n) for j in range(n)}
    lines = []
    for i in range(n):
        for j in range(n):
            for di, dj in ((1, 0), (0, 1)):
                if i + di < n and j + dj < n and rng.random() > 0.33:
                    lines.append(shapely.LineString([node[i, j], node[i + di, j + dj]]))
    x0, y0 = rng.uniform(80, 300, 2)
    site = shapely.MultiPolygon([shapely.box(x0, y0, x0 + rng.uniform(30, 150), y0 + rng.uniform(30, 150))])
    targets = [shapely.Point(*rng.uniform(0, 500, 2)) for _ in range(3)]
    sx, sy = rng.uniform(0, 450, 2)
    targets.append(shapely.box(sx, sy, sx + 40, sy + 30))
    net = build_network(lines, snap_tol_m=0.0)
    xy, d = R.network_reach_distances(site, targets, net)
    xy2, d2 = _nx_reach(lines, site, targets)
    assert np.array_equal(xy, xy2)
    finite = np.isfinite(d2)
    assert np.array_equal(np.isfinite(d), finite)
    np.testing.assert_allclose(d[finite], d2[finite], rtol=1e-9, atol=1e-6)
    c = R.check_fire_reach(site, targets[:3], ["community_micro"] * 3, NET_RS, network=net)
    _, d3 = _nx_reach(lines, site, targets[:3])
    want = float(d3.max())
    if math.isfinite(want):
        assert c.value == pytest.approx(want, abs=0.01)
        assert c.status == ("pass" if want <= 500 else "fail")
    # never shorter than the straight line (no merged ends: snap_tol_m = 0)
    eu = shapely.distance(shapely.union_all(targets), shapely.points(xy))
    assert (d >= eu - 1e-6).all()
