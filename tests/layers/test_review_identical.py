"""Issue 8: the faster farthest_distance (a cheap coarse pass, the inner-disc bound when no coarse pass
pays) gives byte-identical review reports on the demo: the review fixtures and the same sites moved
around the city, each reviewed with the new code and with the implementation before issue 8 (copied
below), both languages. Plus a pure cross-check on random cases: both within the tolerance.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely

from layers import models, services_review
from layers.analysis import rules as R
from tests.layers.test_review_speed_identity import _case

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "review"
GOOD = ("good_qiaodong.geojson", "fail_facility.geojson")
# lon/lat offsets of the fixture sites: in Qiaodong, towards the city edges, and one far outside
SHIFTS = ((0.0, 0.0), (0.012, -0.006), (-0.03, 0.02), (0.05, 0.03), (-0.07, -0.04), (0.15, 0.1), (3.0, 3.0))


def farthest_before(region, targets, *, tol_m: float = 0.5) -> R.Farthest:
    """layers.analysis.rules.farthest_distance before issue 8 (coarse pass of ~2,000 samples whenever
    its spacing exceeds the fine one, no bound otherwise)."""
    t = np.asarray(targets, dtype=object).reshape(-1)
    t = t[~(shapely.is_missing(t) | shapely.is_empty(t))] if t.size else t
    if region is None or region.is_empty:
        return R.Farthest(0.0, 0.0, None)
    if t.size == 0:
        return R.Farthest(math.inf, math.inf, None)
    if region.geom_type in ("Point", "MultiPoint"):
        pts = shapely.get_coordinates(region)
        d = shapely.distance(shapely.union_all(t), shapely.points(pts))
        k = int(np.argmax(d))
        return R.Farthest(float(d[k]), float(d[k]), (float(pts[k, 0]), float(pts[k, 1])))
    tunion = shapely.union_all(t)
    rest = shapely.difference(region, tunion)
    rest = shapely.make_valid(rest) if not rest.is_valid else rest
    rest_poly = shapely.union_all([p for p in shapely.get_parts(rest) if p.geom_type == "Polygon"]) \
        if not rest.is_empty else rest
    if rest_poly.is_empty:
        c = shapely.get_coordinates(region)[0]
        return R.Farthest(0.0, 0.0, (float(c[0]), float(c[1])))
    if all(g.geom_type in ("Point", "MultiPoint") for g in t):
        samples = np.unique(shapely.get_coordinates(t)[:, :2], axis=0)
        return R._farthest_on_samples(rest_poly, samples, 0.0, tunion)
    h = 2.0 * tol_m
    perim = float(sum(p.boundary.length if p.geom_type == "Polygon" else p.length
                      for p in shapely.get_parts(tunion)))
    h0 = max(h, perim / 2000.0)
    if h0 > h:
        coarse = R._farthest_on_samples(rest_poly, R._target_samples(tunion, h0), h0, tunion)
        bound = coarse.upper_m + h / 2.0
    else:
        bound = math.inf
    samples = R._target_samples(tunion, h)
    if math.isfinite(bound):
        x0, y0, x1, y1 = rest_poly.bounds
        keep = ((samples[:, 0] >= x0 - bound) & (samples[:, 0] <= x1 + bound)
                & (samples[:, 1] >= y0 - bound) & (samples[:, 1] <= y1 + bound))
        samples = samples[keep]
    return R._farthest_on_samples(rest_poly, samples, h, tunion)


def _shifted(doc: dict, dx: float, dy: float) -> dict:
    doc = copy.deepcopy(doc)

    def move(c):
        return [c[0] + dx, c[1] + dy] if isinstance(c[0], (int, float)) else [move(x) for x in c]

    for f in doc["features"]:
        f["geometry"]["coordinates"] = move(f["geometry"]["coordinates"])
    return doc


def _report(doc: dict) -> str:
    try:
        review = services_review.review_submission(services_review.parse_submission(doc))
    except services_review.SubmissionError as exc:
        return "refused " + exc.code
    return "\n".join(json.dumps(review.as_dict(lang), ensure_ascii=False) for lang in ("zh", "en"))


@pytest.mark.django_db
@pytest.mark.parametrize("name", GOOD)
def test_reports_byte_identical(name, monkeypatch):
    if not models.District.objects.filter(code="130702").exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")
    base = json.loads((FIX / name).read_text())
    new, calls = [], []
    orig = R.farthest_distance

    def counted(*args, **kw):
        calls.append(1)
        return orig(*args, **kw)

    monkeypatch.setattr(R, "farthest_distance", counted)
    for dx, dy in SHIFTS:
        new.append(_report(_shifted(base, dx, dy)))
    monkeypatch.setattr(R, "farthest_distance", farthest_before)
    old = [_report(_shifted(base, dx, dy)) for dx, dy in SHIFTS]
    assert len(calls) >= 10  # the check really went through farthest_distance
    assert sum(not r.startswith("refused") for r in new) >= 4
    assert new[-1] == "refused outside_city"
    for (dx, dy), a, b in zip(SHIFTS, new, old):
        assert a == b, (dx, dy)


@pytest.mark.parametrize("seed", range(12))
def test_random_within_tolerance_and_bracketed(seed):
    rng = np.random.default_rng(seed)
    site, targets = _case(rng)  # random boxes, sometimes a line and a point
    for tol in (0.5, 2.0):
        a = R.farthest_distance(site, targets, tol_m=tol)
        b = farthest_before(site, targets, tol_m=tol)
        assert a.distance_m <= a.upper_m <= a.distance_m + tol + 1e-6
        assert abs(a.distance_m - b.distance_m) <= tol + 1e-6
        # the reported point is a real point of the site at that distance
        assert site.buffer(1e-6).contains(shapely.Point(a.point_xy))
        assert shapely.distance(shapely.union_all(targets), shapely.Point(a.point_xy)) == pytest.approx(
            a.distance_m, abs=1e-6)
