"""Issue 8: gather_context reading small tables from per-process snapshots (layers.snapshots) gives exactly
the context, and so the reports, of reading them through the ORM: every review fixture moved around the
city, both languages; and the snapshots follow writes (a new shelter next to the site counts at once)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from django.contrib.gis.geos import MultiPolygon, Point
from django.test import override_settings

from layers import models, services_review, snapshots
from layers.analysis import rules as R
from tests.layers.test_review_identical import FIX, SHIFTS, _report, _shifted

pytestmark = pytest.mark.django_db

FIXTURES = sorted(p.name for p in Path(FIX).glob("*.geojson"))


@pytest.fixture(autouse=True)
def fresh():
    snapshots.clear()
    yield
    snapshots.clear()


def _context_equal(a: R.ReviewContext, b: R.ReviewContext) -> None:
    for field in a.__dataclass_fields__:
        x, y = getattr(a, field), getattr(b, field)
        if isinstance(x, R.Areas):
            assert x.codes == y.codes and x.names == y.names, field
            assert list(shapely.to_wkb(x.geoms)) == list(shapely.to_wkb(y.geoms)), field
        elif isinstance(x, np.ndarray) and x.dtype == object:
            assert list(shapely.to_wkb(x)) == list(shapely.to_wkb(y)), field
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), field
        else:
            assert x == y, field


def _demo():
    if not models.District.objects.filter(code="130702").exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


@pytest.mark.parametrize("name", FIXTURES)
def test_snapshot_and_orm_give_the_same_reports(name):
    _demo()
    base = json.loads((FIX / name).read_text())
    shifts = SHIFTS if name.startswith(("good", "fail_facility")) else SHIFTS[:3]
    docs = [_shifted(base, dx, dy) for dx, dy in shifts]
    calls = []
    orig = snapshots._build

    def counted(*a, **kw):
        calls.append(1)
        return orig(*a, **kw)

    snapshots._build = counted
    try:
        fast = [_report(d) for d in docs]
    finally:
        snapshots._build = orig
    with override_settings(GISPORTAL_SNAPSHOT_ROWS=0):
        slow = [_report(d) for d in docs]
    assert fast == slow
    if any(not r.startswith("refused") for r in fast):
        assert calls, "the snapshots were not used"


def test_contexts_identical_on_the_good_site():
    _demo()
    sub = services_review.parse_submission(json.loads((FIX / "good_qiaodong.geojson").read_text()))
    rs = services_review.rule_set()
    fast = services_review.gather_context(sub.project.site, rs)
    assert all(s is not None for s in snapshots.snapshots(services_review._SNAPSHOT_SPECS).values())
    with override_settings(GISPORTAL_SNAPSHOT_ROWS=0):
        slow = services_review.gather_context(sub.project.site, rs)
    _context_equal(fast, slow)
    assert fast.shelter_geoms.size and fast.grids.codes and fast.fire_geoms.size


def test_a_new_shelter_is_seen_at_once():
    _demo()
    sub = services_review.parse_submission(json.loads((FIX / "good_qiaodong.geojson").read_text()))
    rs = services_review.rule_set()
    before = services_review.gather_context(sub.project.site, rs)
    c = sub.project.site.centroid
    models.Shelter.objects.create(code="999SNAP1", name="测试避难场所", level="emergency",
                                  effective_area_m2=5000.0,
                                  geom=MultiPolygon(Point(c.x, c.y, srid=4547).buffer(20), srid=4547))
    after = services_review.gather_context(sub.project.site, rs)
    assert after.shelter_geoms.size == before.shelter_geoms.size + 1
    with override_settings(GISPORTAL_SNAPSHOT_ROWS=0):
        _context_equal(after, services_review.gather_context(sub.project.site, rs))


def test_tables_over_the_limit_use_the_database():
    _demo()
    with override_settings(GISPORTAL_SNAPSHOT_ROWS=100):   # grids (1,029) and others exceed it
        snaps = snapshots.snapshots(services_review._SNAPSHOT_SPECS)
        assert snaps[models.Grid] is None and snaps[models.District] is not None
        sub = services_review.parse_submission(json.loads((FIX / "good_qiaodong.geojson").read_text()))
        mixed = services_review.gather_context(sub.project.site, services_review.rule_set())
    with override_settings(GISPORTAL_SNAPSHOT_ROWS=0):
        _context_equal(mixed, services_review.gather_context(sub.project.site, services_review.rule_set()))
