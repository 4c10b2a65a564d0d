"""Road-network reach for the housing project review (``reach_method="network"``) against the database.

Hand-made rows with codes 999xxx west of Zhangjiakou. A U-shaped road leaves the shelter, runs 400 m
east, 60 m north and 400 m back west; the site sits just north of the road's far end, 80 m from the
shelter in a straight line but 900 m by road (layers/analysis/rules.py, the same case in
tests/analysis/test_rules.py). Runs on SpatiaLite and PostGIS.
"""
import numpy as np
import pytest
import shapely
from django.contrib.gis.geos import MultiLineString, LineString, MultiPolygon, Point, Polygon

from layers import models, services_coverage, services_review
from layers.analysis import rules as R

pytestmark = pytest.mark.django_db
X, Y = 420000.0, 4400000.0


def _mp(x0, y0, x1, y1):
    return MultiPolygon(Polygon.from_bbox((X + x0, Y + y0, X + x1, Y + y1)), srid=4547)


def _road(*xy, name="t"):
    return models.Road.objects.create(
        name=name, geom=MultiLineString(LineString([(X + x, Y + y) for x, y in xy]), srid=4547))


@pytest.fixture
def network_rules(settings):
    settings.GISPORTAL_RULES = {**settings.GISPORTAL_RULES, "reach_method": "network"}
    return settings


@pytest.fixture
def toy():
    models.District.objects.create(code="999001", name="甲区", geom=_mp(-1000, -1000, 2000, 2000))
    models.Shelter.objects.create(code="S999001", name="t", level="emergency", effective_area_m2=5000,
                                  geom=_mp(-20, -10, 0, 10))
    # a micro station beside the road's west end at (0, 65)
    models.FireStation.objects.create(code="X999001", name="t", kind="community_micro",
                                      geom=Point(X + 0, Y + 65, srid=4547))
    site = shapely.MultiPolygon([shapely.box(X + 0, Y + 70, X + 20, Y + 90)])
    project = R.Project("t", "d", 100, site, (R.ProjectFacility("community_service", 30.0,
                                                                 shapely.Point(X + 10, Y + 80)),))
    return services_review.Submission(project, 4547)


def u_road():
    return _road((0, 0), (400, 0), (400, 60), (0, 60))


def test_gate_spacing_is_the_coverage_engines():
    assert R.NETWORK_GATE_SPACING_M == services_coverage.GATE_SPACING_M


def test_default_rules_are_straight_line(toy):
    u_road()
    rv = services_review.review_submission(toy)
    c = rv.check("SHELTER-REACH")
    assert services_review.rule_set().reach_method == "euclidean"
    assert c.status == "pass" and c.value == pytest.approx(np.hypot(20, 80), abs=0.01)
    assert "method" not in c.as_dict() and "method" not in rv.check("FIRE-REACH").as_dict()


def test_network_reach_by_road(toy, network_rules):
    u_road()
    _road((5000, 5000), (6000, 5000), name="far away")  # outside the query distance: not fetched
    rv = services_review.review_submission(toy)
    c = rv.check("SHELTER-REACH")
    assert c.status == "fail" and c.value == pytest.approx(900.0, abs=1e-6)
    assert c.method == "network" and c.as_dict("en")["method"] == "network"
    assert "by road" in c.as_dict("en")["message"] and "道路" in c.as_dict("zh")["message"]
    assert shapely.get_coordinates(c.evidence).tolist().count([X + 0, Y + 90]) == 1
    assert rv.verdict == "fail"
    # the micro station at (0, 65): the farthest sample (20, 90) walks 30 + 20 + 5 = 55 m
    f = rv.check("FIRE-REACH")
    assert f.status == "pass" and f.value == pytest.approx(55.0, abs=1e-6) and f.method == "network"
    # a short cut from (10, 60) to (10, 0) brings the shelter within 120 m by road
    _road((10, 60), (10, 0))
    c = services_review.review_submission(toy).check("SHELTER-REACH")
    assert c.status == "pass" and c.value == pytest.approx(120.0, abs=1e-6)


def test_network_reach_roads_elsewhere_only(toy, network_rules):
    _road((5000, 5000), (6000, 5000))
    c = services_review.review_submission(toy).check("SHELTER-REACH")
    assert c.status == "fail" and c.value is None and c.method == "network"


def test_network_reach_without_roads_falls_back(toy, network_rules):
    models.Road.objects.all().delete()  # the demo's roads too (rolled back after the test)
    rv = services_review.review_submission(toy)
    c = rv.check("SHELTER-REACH")
    assert c.status == "pass" and c.method == "euclidean"
    assert c.value == pytest.approx(np.hypot(20, 80), abs=0.01)
    assert "no roads loaded" in c.as_dict("en")["message"] and "未加载道路" in c.as_dict("zh")["message"]
    assert rv.check("FIRE-REACH").method == "euclidean"


def test_demo_city_by_road_never_shorter_than_straight_line(settings):
    if not models.District.objects.filter(code="130702").exists() or not models.Road.objects.exists():
        pytest.skip("the demo city (with roads) is not loaded (GISPORTAL_TEST_NO_DEMO=1)")
    import time
    from pathlib import Path
    good = Path(__file__).resolve().parents[2] / "fixtures" / "review" / "good_qiaodong.geojson"
    sub = services_review.parse_path(good)
    services_review.review_submission(sub)  # warm
    t0 = time.perf_counter()
    eu = services_review.review_submission(sub)
    t1 = time.perf_counter()
    settings.GISPORTAL_RULES = {**settings.GISPORTAL_RULES, "reach_method": "network"}
    services_review.review_submission(sub)  # builds and caches the network of the roads near the site
    t2 = time.perf_counter()
    net = services_review.review_submission(sub)
    t3 = time.perf_counter()
    print(f"\nreview: euclidean {t1 - t0:.3f} s, network first {t2 - t1:.3f} s, cached {t3 - t2:.3f} s; "
          + ", ".join(f"{c} {eu.check(c).value} -> {net.check(c).value}" for c in ("SHELTER-REACH", "FIRE-REACH")))
    for code in ("SHELTER-REACH", "FIRE-REACH"):
        a, b = eu.check(code), net.check(code)
        assert b.method == "network"
        # the samples are at most 25 / sqrt(2) m from any point of the site; merged road ends <= 1 m
        if b.value is not None:
            assert b.value >= a.value - 25 / np.sqrt(2) - 1.0
        assert b.status == ("pass" if b.value is not None and b.value <= a.required else "fail")
