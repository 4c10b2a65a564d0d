"""Housing project review against the database (layers/services_review.py, manage.py review_project).

Runs on SpatiaLite and PostGIS. Tests marked ``demo`` need the Zhangjiakou demo (tests/conftest.py);
the hand-made ones use codes 999xxx far from the city.
"""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from django.contrib.gis.geos import MultiPolygon, Point, Polygon
from django.core.management import call_command
from django.core.management.base import CommandError

from layers import models, services_review
from layers.analysis import rules as R

pytestmark = pytest.mark.django_db
FIX = Path(__file__).resolve().parents[2] / "fixtures" / "review"
BAD = sorted(p.name for p in FIX.glob("bad_*.geojson"))


@pytest.fixture
def demo():
    if not models.District.objects.filter(code="130702").exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


def run(name, *args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("review_project", str(FIX / name), *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


def counts():
    return (models.HousingProject.objects.count(), models.ServiceFacility.objects.count())


def brute_farthest(site, geoms, step=5.0):
    """Max over sampled site points of the distance to the nearest geometry (a lower bound)."""
    x0, y0, x1, y1 = site.bounds
    xs, ys = np.meshgrid(np.arange(x0, x1 + step, step), np.arange(y0, y1 + step, step))
    pts = shapely.points(xs.ravel(), ys.ravel())
    pts = np.concatenate([pts[shapely.contains(site, pts)],
                          shapely.points(shapely.get_coordinates(shapely.segmentize(site.boundary, step)))])
    d = np.min([shapely.distance(g, pts) for g in geoms], axis=0)
    return float(d.max())


# ------------------------------------------------------------------ the demo city
def test_good_submission_in_central_qiaodong(demo):
    before = counts()
    code, out, err = run("good_qiaodong.geojson", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verdict"] == "pass" and doc["rule_set"] == services_review.rule_set().version
    assert doc["project"] == {"name": "示例·桥东花园", "households": 500, "population": 1310}
    assert {c["code"]: c["status"] for c in doc["checks"]} == {
        "LOC-INSIDE-CITY": "pass", "LOC-DISTRICT": "pass", "FAC-DECLARED": "pass", "FAC-IN-SITE": "pass",
        "FAC-AREA": "pass", "SHELTER-REACH": "pass", "SHELTER-CAPACITY": "pass", "FIRE-REACH": "pass",
        # the project's own kindergarten and service station count; elderly care, health and culture
        # facilities of the demo lie farther than 300 / 500 m: advisory only
        "LIFE-CIRCLE": "warn", "SITE-NO-SHELTER": "pass"}
    assert doc["location"]["districts"] == [{"code": "130702", "name": "桥东区", "share": 1.0}]
    assert [s["code"] for s in doc["location"]["streets"]] == ["130702001"]
    assert sum(g["share"] for g in doc["location"]["grids"]) == pytest.approx(1.0, abs=1e-3)
    assert all(g["code"].startswith("130702001") and len(g["code"]) == 15 for g in doc["location"]["grids"])
    byc = {c["code"]: c for c in doc["checks"]}
    assert byc["FAC-AREA"]["value"] == 150.0 and byc["FAC-AREA"]["required"] == 150.0
    assert byc["LIFE-CIRCLE"]["value"]["kindergarten"] == pytest.approx(
        np.hypot(200 - 70, 150 - 60), abs=25)  # the project's own kindergarten, roughly (lon/lat rounding)
    assert counts() == before  # no --save: nothing stored

    # cross-check the reach values against brute force over every shelter / micro station in the DB
    sub = services_review.parse_path(FIX / "good_qiaodong.geojson")
    site = sub.project.site
    shelters = [shapely.from_wkb(bytes(g.wkb)) for g in models.Shelter.objects.values_list("geom", flat=True)]
    stations = [shapely.from_wkb(bytes(g.wkb)) for g in models.FireStation.objects.filter(
        kind="community_micro").values_list("geom", flat=True)]
    b = brute_farthest(site, shelters)
    assert b - 0.5 <= byc["SHELTER-REACH"]["value"] <= b + 5.0
    b = brute_farthest(site, stations)
    assert b - 0.5 <= byc["FIRE-REACH"]["value"] <= b + 5.0
    # districts/streets: the shares sum to the site area inside the city
    inter = sum(shapely.from_wkb(bytes(g.wkb)).intersection(site).area
                for g in models.Street.objects.filter(code="130702001").values_list("geom", flat=True))
    assert inter / site.area == pytest.approx(doc["location"]["streets"][0]["share"], abs=1e-4)


def test_failing_submission_exits_1(demo):
    code, out, err = run("fail_facility.geojson", "--json")
    assert code == 1
    doc = json.loads(out)
    st = {c["code"]: c for c in doc["checks"]}
    assert doc["verdict"] == "fail"
    assert st["FAC-IN-SITE"]["status"] == "fail" and st["FAC-IN-SITE"]["value"] == pytest.approx(20.0, abs=0.5)
    assert st["FAC-AREA"]["status"] == "fail" and (st["FAC-AREA"]["value"], st["FAC-AREA"]["required"]) == (140.0, 150.0)
    assert st["SHELTER-REACH"]["status"] == "pass"


@pytest.mark.parametrize("name", BAD)
def test_bad_submission_exits_2_nothing_saved(name, request):
    if name == "bad_outside_city.geojson":  # needs the city's districts
        request.getfixturevalue("demo")
    before = counts()
    code, out, err = run(name, "--json", "--save")
    assert code == 2, (out, err)
    assert out == "" and err.strip()
    assert counts() == before


def test_save_stores_project_and_facilities(demo):
    before = counts()
    code, out, _ = run("good_qiaodong.geojson", "--json", "--save")
    assert code == 0
    pk = json.loads(out)["project_id"]
    p = models.HousingProject.objects.get(pk=pk)
    assert (p.households, p.status, p.district.code) == (500, "in_review", "130702")
    assert sorted(p.facilities.values_list("kind", flat=True)) == ["community_service_centre", "kindergarten"]
    assert counts() == (before[0] + 1, before[1] + 2)


def test_human_readable_output(demo):
    code, out, _ = run("good_qiaodong.geojson")
    assert code == 0 and "SHELTER-REACH" in out and "verdict: pass" in out


# ------------------------------------------------------------------ hand-made rows (no demo needed)
def _mp(x0, y0, x1, y1):
    return MultiPolygon(Polygon.from_bbox((x0, y0, x1, y1)), srid=4547)


@pytest.fixture
def toy_city():
    # two districts far west of Zhangjiakou's zone centre; a shelter and a micro station between them
    x, y = 420000.0, 4400000.0
    a = models.District.objects.create(code="999001", name="甲区", geom=_mp(x, y, x + 1040, y + 2000))
    b = models.District.objects.create(code="999002", name="乙区", geom=_mp(x + 1040, y, x + 3000, y + 2000))
    models.Shelter.objects.create(code="S999001", name="t", level="emergency", effective_area_m2=5000,
                                  geom=_mp(x + 1200, y + 900, x + 1300, y + 1000))
    models.FireStation.objects.create(code="X999001", name="t", kind="community_micro",
                                      geom=Point(x + 1000, y + 700, srid=4547))
    return x, y, a, b


def test_service_straddling_site_warns_with_shares(toy_city):
    x, y, a, b = toy_city
    site = shapely.MultiPolygon([shapely.box(x + 1000, y + 800, x + 1100, y + 850)])
    project = R.Project("t", "d", 100, site, (R.ProjectFacility("community_service", 30.0,
                                                                 shapely.Point(x + 1050, y + 820)),))
    sub = services_review.Submission(project, 4547)
    rv = services_review.review_submission(sub)
    assert rv.check("LOC-DISTRICT").status == "warn"
    assert [(d["code"], d["share"]) for d in rv.location["districts"]] == [("999002", 0.6), ("999001", 0.4)]
    assert rv.check("LOC-INSIDE-CITY").status == "pass"
    # farthest point from the shelter: the site's south-west corner (x+1000, y+800) -> (x+1200, y+900)
    assert rv.check("SHELTER-REACH").value == pytest.approx(np.hypot(200, 100), abs=0.01)
    assert rv.check("FIRE-REACH").value == pytest.approx(np.hypot(100, 150), abs=0.01)
    assert rv.check("SHELTER-CAPACITY").status == "pass" and rv.check("SHELTER-CAPACITY").value == 5000
    assert rv.verdict == "pass"


def test_service_site_outside_every_district_is_refused(toy_city):
    x, y, *_ = toy_city
    site = shapely.MultiPolygon([shapely.box(x - 5000, y, x - 4900, y + 100)])
    sub = services_review.Submission(R.Project("t", "d", 10, site), 4547)
    with pytest.raises(services_review.SubmissionError) as e:
        services_review.review_submission(sub)
    assert e.value.code == "outside_city"
