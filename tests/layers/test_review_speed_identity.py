"""Issue 8 (review CPU): the faster paths give the same answers as the ones they replace.

* ``_unique_rows`` is ``np.unique(axis=0)`` (same rows, same order);
* ``_relevant_samples`` keeps every boundary sample that is the nearest one to some point of R', so
  the farthest distance on the kept samples equals the one on all samples (up to Qhull's rounding of
  the Voronoi vertices, far below the reported 0.01 m). Whole reports: tests/layers/test_review_identical.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from scipy.spatial import cKDTree

from layers.analysis import rules as R


@pytest.mark.parametrize("seed", range(6))
def test_unique_rows_is_np_unique(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    xy = np.round(rng.uniform(4e5, 4.1e5, (n, 2)), int(rng.integers(0, 3)))
    xy = np.vstack([xy, xy[rng.integers(0, n, n // 2)]])  # duplicates
    rng.shuffle(xy)
    want = np.unique(xy, axis=0)
    got = R._unique_rows(xy)
    assert got.shape == want.shape and got.tobytes() == want.tobytes()
    assert R._unique_rows(np.zeros((0, 2))).shape == (0, 2)


def _case(rng):
    site = shapely.Polygon(rng.uniform(0, 300, (3, 2))).convex_hull.union(
        shapely.box(*sorted(rng.uniform(0, 300, 2)), *sorted(rng.uniform(300, 500, 2))))
    k = int(rng.integers(1, 7))
    cx, cy = rng.uniform(-900, 1300, k), rng.uniform(-900, 1300, k)
    targets = [shapely.box(x, y, x + rng.uniform(5, 300), y + rng.uniform(5, 200)) for x, y in zip(cx, cy)]
    if rng.random() < 0.3:
        targets.append(shapely.LineString(rng.uniform(-500, 1000, (4, 2))))
    if rng.random() < 0.3:
        targets.append(shapely.Point(rng.uniform(-300, 800, 2)))
    return site, np.array(targets, dtype=object)


def _rest(site, tunion):
    rest = shapely.difference(site, tunion)
    rest = shapely.make_valid(rest) if not rest.is_valid else rest
    return shapely.union_all([p for p in shapely.get_parts(rest) if p.geom_type == "Polygon"])


def _rest_case(seed):
    """A random site and targets, the targets' union and R' (skips when the site lies inside the targets)."""
    rng = np.random.default_rng(seed)
    site, targets = _case(rng)
    tunion = shapely.union_all(targets)
    rest = _rest(site, tunion)
    if rest.is_empty:
        pytest.skip("site inside the targets")
    return rng, site, targets, tunion, rest


def _points_in(rest, rng, n):
    """n random points of R' (those that fall inside it) and its vertices."""
    x0, y0, x1, y1 = rest.bounds
    pts = rng.uniform((x0, y0), (x1, y1), (n, 2))
    return np.vstack([pts[shapely.contains_xy(rest, pts[:, 0], pts[:, 1])], shapely.get_coordinates(rest)])


@pytest.mark.parametrize("seed", range(15))
def test_relevant_samples_keep_every_nearest_sample(seed):
    rng, site, targets, tunion, rest = _rest_case(100 + seed)
    for h in (1.0, 4.0):
        every = R._target_samples(tunion, h)
        kept = R._relevant_samples(rest, tunion, h)
        assert 0 < len(kept) <= len(every)
        # kept is a subset of the samples, in their (sorted) order
        idx = np.flatnonzero(np.isin(every.view(np.complex128).ravel(), kept.view(np.complex128).ravel()))
        assert len(idx) == len(kept) and every[idx].tobytes() == kept.tobytes()
        # the nearest sample of points of R' (random, its vertices) is always kept: same distance
        pts = _points_in(rest, rng, 3000)
        d_all, _ = cKDTree(every).query(pts)
        d_kept, _ = cKDTree(kept).query(pts)
        assert np.array_equal(d_all, d_kept)
        # the farthest distance on the kept samples is the one on all of them
        a = R._farthest_on_samples(rest, kept, h, tunion)
        b = R._farthest_on_samples(rest, every, h, tunion)
        assert a.distance_m == pytest.approx(b.distance_m, abs=1e-7)
        assert a.upper_m == pytest.approx(b.upper_m, abs=1e-7)
    # and the public function stays within its tolerance and bracket
    fr = R.farthest_distance(site, targets, tol_m=0.5)
    assert fr.distance_m <= fr.upper_m <= fr.distance_m + 0.5 + 1e-6


@pytest.mark.parametrize("seed", range(20))
def test_pruned_cells_keep_the_maximum(seed):
    """``prune=True``: the cells dropped cannot hold the maximum, the kept samples give every point of the
    kept cells its nearest sample, and the farthest distance equals the one on all the samples."""
    rng, _, _, tunion, rest = _rest_case(300 + seed)
    pts = _points_in(rest, rng, 4000)
    f = shapely.distance(tunion, shapely.points(pts))
    for h in (1.0, 4.0):
        every = R._target_samples(tunion, h)
        kept, cells = R._relevant_samples(rest, tunion, h, prune=True)
        assert 0 < len(kept) <= len(every)
        assert np.isin(kept.view(np.complex128).ravel(), every.view(np.complex128).ravel()).all()
        held = cells.hold(pts)
        full = R._farthest_on_samples(rest, every, h, tunion)
        pruned = R._farthest_on_samples(rest, kept, h, tunion, cells)
        assert pruned.distance_m == pytest.approx(full.distance_m, abs=1e-7)
        assert pruned.distance_m <= pruned.upper_m <= full.upper_m + 1e-7
        # outside the kept cells every point is below the maximum found
        assert (f[~held] <= pruned.distance_m + 1e-6).all()
        # inside them the kept samples are the nearest ones
        d_all, _ = cKDTree(every).query(pts[held])
        d_kept, _ = cKDTree(kept).query(pts[held])
        assert np.array_equal(d_all, d_kept)


def test_pruning_drops_the_cells_far_from_the_maximum():
    # a shelter to the west of a 200 m x 150 m site: the farthest points are on its east side
    site = shapely.box(0, 0, 200, 150)
    tunion = shapely.box(-400, -50, -300, 200)
    kept, cells = R._relevant_samples(site, tunion, 1.0, prune=True)
    assert (cells.cxy[:, 0] > 150).all()  # only cells near the east edge survive
    every = R._target_samples(tunion, 1.0)
    assert len(kept) < len(R._relevant_samples(site, tunion, 1.0)) <= len(every)
    fr = R.farthest_distance(site, [tunion], tol_m=0.5)
    assert fr.distance_m == pytest.approx(500.0, abs=1e-9)  # the whole east edge is 500 m away
    assert fr.point_xy[0] == pytest.approx(200.0, abs=1e-9)
    tunion = shapely.box(-400, 100, -300, 200)  # now the south-east corner is the farthest point
    fr = R.farthest_distance(site, [tunion], tol_m=0.5)
    assert fr.distance_m == pytest.approx(math.hypot(500, 100), abs=1e-9)
    assert fr.point_xy == pytest.approx((200.0, 0.0), abs=1e-9)


@pytest.mark.parametrize("seed", range(25))
def test_few_points_without_qhull_match_the_voronoi_candidates(seed):
    """Point targets (up to FEW_POINTS): all circumcentres and bisector crossings instead of a Qhull
    diagram give the same maximum, at a real point of the region; checked on a dense sample too."""
    rng = np.random.default_rng(700 + seed)
    site, _ = _case(rng)
    n = int(rng.integers(1, R.FEW_POINTS + 1))
    pts = R._unique_rows(rng.uniform(-400, 900, (n, 2)))
    if seed % 5 == 0:  # collinear and cocircular points, and points inside the site
        pts = R._unique_rows(np.vstack([pts, [[0, 0], [100, 100], [200, 200]],
                                        150 + 80 * np.column_stack([np.cos([0, 1, 2, 3]), np.sin([0, 1, 2, 3])])]))
    rest = _rest(site, shapely.union_all(shapely.points(pts)))
    a = R._farthest_few_points(rest, pts)
    b = R._farthest_on_samples(rest, pts, 0.0, shapely.union_all(shapely.points(pts)))
    assert a.distance_m == pytest.approx(b.distance_m, rel=1e-12, abs=1e-8)
    assert a.upper_m == a.distance_m
    assert rest.buffer(1e-6).contains(shapely.Point(a.point_xy))
    assert cKDTree(pts).query(a.point_xy)[0] == pytest.approx(a.distance_m, abs=1e-8)
    xy = _points_in(rest, rng, 5000)
    assert cKDTree(pts).query(xy)[0].max() <= a.distance_m + 1e-7
