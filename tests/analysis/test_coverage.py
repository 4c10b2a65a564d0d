"""Coverage engine: hand-checkable cases plus brute-force cross-checks (layers/analysis/coverage.py)."""
import networkx as nx
import numpy as np
import pytest
import scipy.sparse
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.analysis.coverage import (
    CapacityResult,
    capacitated_coverage,
    coverage_matrix,
    coverage_matrix_geoms,
    coverage_of_points,
    group_sums,
    polygon_coverage_shares,
    uncovered_geometry,
)
from layers.analysis import coverage as coverage_module


def brute_cover(demand_xy, sites_xy, radius_m):
    d2 = ((demand_xy[:, None, :] - sites_xy[None, :, :]) ** 2).sum(-1)
    r = np.broadcast_to(np.asarray(radius_m, float), (len(sites_xy),))
    return (d2 <= r[None, :] ** 2).astype(np.uint8)


def random_case(seed, n_demand=300, n_sites=40, extent=1000.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, extent, (n_demand, 2)), rng.uniform(0, extent, (n_sites, 2)), rng


# ------------------------------------------------------------------ coverage_matrix
def test_345_triangle_boundary_is_inclusive():
    cover = coverage_matrix(np.array([[0.0, 0.0], [6.0, 8.0]]), np.array([[3.0, 4.0]]), 5.0)
    assert isinstance(cover, scipy.sparse.csr_array)
    assert cover.toarray().ravel().tolist() == [1, 1]
    assert coverage_matrix([[0.0, 0.0]], [[3.0, 4.0]], 4.999).nnz == 0


def test_per_site_radius():
    demand = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    sites = np.array([[0.0, 0.0], [20.0, 0.0]])
    cover = coverage_matrix(demand, sites, [10.0, 0.5]).toarray()
    assert cover.tolist() == [[1, 0], [1, 0], [0, 1]]


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed):
    demand, sites, rng = random_case(seed)
    radius = 150.0 if seed % 2 else rng.uniform(0, 300, len(sites))
    cover = coverage_matrix(demand, sites, radius)
    assert cover.shape == (len(demand), len(sites))
    assert cover.dtype == np.uint8
    assert cover.has_sorted_indices
    np.testing.assert_array_equal(cover.toarray(), brute_cover(demand, sites, radius))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), min_size=1, max_size=8),
       st.integers(0, 15))
def test_integer_grid_brute_force(demand, sites, radius):
    # Integer coordinates put many points exactly on the circle: the boundary must be inclusive.
    d, s = np.array(demand, float), np.array(sites, float)
    np.testing.assert_array_equal(coverage_matrix(d, s, float(radius)).toarray(),
                                  brute_cover(d, s, radius))


def test_empty_inputs_and_bad_shapes():
    assert coverage_matrix(np.zeros((0, 2)), [[0.0, 0.0]], 1.0).shape == (0, 1)
    assert coverage_matrix([[0.0, 0.0]], np.zeros((0, 2)), 1.0).shape == (1, 0)
    with pytest.raises(ValueError):
        coverage_matrix([[0.0, 0.0, 0.0]], [[0.0, 0.0]], 1.0)
    with pytest.raises(ValueError):
        coverage_matrix([[0.0, 0.0]], [[0.0, 0.0]], [1.0, 2.0])
    with pytest.raises(ValueError):
        coverage_matrix([[0.0, 0.0]], [[0.0, 0.0]], -1.0)
    with pytest.raises(ValueError):
        coverage_matrix([[np.nan, 0.0]], [[0.0, 0.0]], 1.0)


# ------------------------------------------------------------------ coverage_matrix_geoms
@pytest.mark.parametrize("seed", range(3))
def test_geoms_agree_with_points_for_point_sites(seed):
    demand, sites, rng = random_case(seed)
    radius = rng.uniform(50, 250, len(sites)) if seed else 120.0
    a = coverage_matrix(demand, sites, radius)
    b = coverage_matrix_geoms(demand, shapely.points(sites), radius)
    assert b.dtype == np.uint8 and b.has_sorted_indices
    np.testing.assert_array_equal(a.toarray(), b.toarray())


def test_polygon_site_distance_is_to_nearest_point():
    site = shapely.box(0, 0, 10, 10)
    demand = [[5.0, 5.0], [13.0, 14.0], [14.0, 14.0], [-5.0, 5.0], [-5.1, 5.0]]
    # (13, 14) is 5 m from the corner (10, 10) (3-4-5); (14, 14) is 5.66 m away.
    assert coverage_matrix_geoms(demand, [site], 5.0).toarray().ravel().tolist() == [1, 1, 0, 1, 0]


def test_polygon_sites_match_shapely_distance():
    demand, _, rng = random_case(7, n_demand=400, n_sites=1)
    centres = rng.uniform(0, 1000, (15, 2))
    sites = shapely.buffer(shapely.points(centres), rng.uniform(5, 60, 15), quad_segs=3)
    radius = rng.uniform(0, 200, 15)
    expected = shapely.distance(shapely.points(demand)[:, None], sites[None, :]) <= radius[None, :]
    np.testing.assert_array_equal(coverage_matrix_geoms(demand, sites, radius).toarray(), expected)


# ------------------------------------------------------------------ coverage_of_points
def test_coverage_of_points_hand():
    cover = scipy.sparse.csr_array(np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=np.uint8))
    res = coverage_of_points([10.0, 20.0, 30.0, 40.0], cover)
    assert res.covered_mask.tolist() == [True, True, False, True]
    assert (res.population_total, res.population_covered, res.population_uncovered) == (100, 70, 30)
    assert res.share == pytest.approx(0.7)
    assert res.site_population.tolist() == [30.0, 60.0]
    with pytest.raises(ValueError):
        res.covered_mask[0] = False  # results are read-only


def test_coverage_of_points_brute_force_and_explicit_zeros():
    demand, sites, rng = random_case(3)
    pop = rng.integers(0, 50, len(demand)).astype(float)
    dense = brute_cover(demand, sites, 120.0)
    res = coverage_of_points(pop, coverage_matrix(demand, sites, 120.0))
    assert res.population_covered == pytest.approx(pop[dense.any(1)].sum())
    np.testing.assert_allclose(res.site_population, dense.T.astype(float) @ pop)
    # An explicitly stored zero is "not in reach".
    z = scipy.sparse.csr_array((np.array([0, 1], np.uint8), np.array([0, 0]), np.array([0, 1, 2])),
                               shape=(2, 1))
    assert coverage_of_points([5.0, 7.0], z).population_covered == 7.0


def test_coverage_of_points_zero_population_and_bad_pop():
    cover = scipy.sparse.csr_array(np.ones((2, 1), dtype=np.uint8))
    assert coverage_of_points([0.0, 0.0], cover).share == 0.0
    with pytest.raises(ValueError):
        coverage_of_points([1.0, -1.0], cover)
    with pytest.raises(ValueError):
        coverage_of_points([1.0], cover)


def test_group_sums():
    assert group_sums([1.0, 2.0, 3.0, 4.0], [0, 2, 0, -1], 3).tolist() == [4.0, 0.0, 2.0]
    assert group_sums([], [], 2).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        group_sums([1.0], [3], 3)


# ------------------------------------------------------------------ polygon demand
def test_quarter_disc_share():
    share = polygon_coverage_shares([shapely.box(0, 0, 10, 10)], [shapely.Point(0, 0)], 10.0)
    assert share[0] == pytest.approx(np.pi / 4, rel=0.002)  # inscribed 64-gon: -0.16 %
    assert share[0] < np.pi / 4


def test_inside_outside_and_per_site_radius():
    grids = np.array([shapely.box(0, 0, 10, 10), shapely.box(100, 0, 110, 10),
                      shapely.box(300, 0, 310, 10)])
    sites = shapely.points([[5.0, 5.0], [105.0, 5.0]])
    share = polygon_coverage_shares(grids, sites, [50.0, 5.0])
    assert share[0] == 1.0 and share[2] == 0.0
    assert share[1] == pytest.approx(np.pi * 25 / 100, rel=0.002)
    assert polygon_coverage_shares(grids, np.array([], dtype=object), 10.0).tolist() == [0, 0, 0]


@pytest.mark.parametrize("seed", range(2))
def test_shares_agree_with_dense_point_sampling(seed):
    rng = np.random.default_rng(seed)
    size = 200.0
    grids = np.array([shapely.box(x, y, x + size, y + size)
                      for x in np.arange(0, 1000, size) for y in np.arange(0, 1000, size)])
    sites_xy = rng.uniform(0, 1000, (12, 2))
    radius = rng.uniform(60, 250, 12)
    # A site given as a polygon too: its footprint counts from its edge.
    site_geoms = shapely.points(sites_xy)
    footprint = shapely.box(*(sites_xy[0] - 30), *(sites_xy[0] + 30))
    site_geoms[0] = footprint
    share = polygon_coverage_shares(grids, site_geoms, radius)
    step = 2.0
    ticks = np.arange(step / 2, 1000, step)
    xx, yy = np.meshgrid(ticks, ticks)
    pts = np.column_stack([xx.ravel(), yy.ravel()])
    covered = np.asarray(coverage_matrix(pts, sites_xy[1:], radius[1:]).sum(axis=1)).ravel() > 0
    covered |= shapely.dwithin(footprint, shapely.points(pts), radius[0])
    cell = (np.floor(pts[:, 0] / size) * 5 + np.floor(pts[:, 1] / size)).astype(int)
    sampled = np.bincount(cell, weights=covered, minlength=25) / np.bincount(cell, minlength=25)
    assert np.abs(share - sampled).max() < 0.005
    assert (share > 0).any() and (share < 1).any()


def test_uncovered_geometry_matches_shares():
    rng = np.random.default_rng(11)
    grids = np.array([shapely.box(x, y, x + 100, y + 100)
                      for x in range(0, 500, 100) for y in range(0, 300, 100)])
    sites = shapely.points(rng.uniform(0, 500, (6, 2)))
    share = polygon_coverage_shares(grids, sites, 80.0)
    hole = uncovered_geometry(grids, sites, 80.0)
    assert hole.area == pytest.approx((shapely.area(grids) * (1 - share)).sum(), rel=1e-9)
    assert uncovered_geometry(grids, sites, 10_000.0).is_empty


# ------------------------------------------------------------------ capacitated coverage
def max_flow_value(pop, dense_cover, capacity):
    g = nx.DiGraph()
    for i, p in enumerate(pop):
        g.add_edge("s", ("d", i), capacity=int(p))
        for j in np.flatnonzero(dense_cover[i]):
            g.add_edge(("d", i), ("f", j))  # no capacity attribute: unbounded
    for j, c in enumerate(capacity):
        g.add_edge(("f", j), "t", capacity=int(c))
    g.add_node("t")
    return nx.maximum_flow_value(g, "s", "t")


def check_invariants(res: CapacityResult, pop, dense_cover, capacity):
    a = res.assignment.toarray()
    assert (a >= -1e-9).all()
    assert (a[dense_cover == 0] == 0).all()  # nobody sent out of reach
    np.testing.assert_allclose(a.sum(1), res.served, atol=1e-6)
    np.testing.assert_allclose(a.sum(0), res.load, atol=1e-6)
    assert (res.served <= np.asarray(pop) + 1e-9).all()
    assert (res.load <= np.asarray(capacity, float) + 1e-9).all()
    assert res.population_served == pytest.approx(res.served.sum(), abs=1e-6)
    total = res.population_served + res.population_short + res.population_unreachable
    assert total == pytest.approx(float(np.sum(pop)), abs=1e-6)
    assert res.status == "optimal"


def test_greedy_trap():
    cover = scipy.sparse.csr_array(np.array([[1, 1], [0, 1], [0, 0]], dtype=np.uint8))
    res = capacitated_coverage([30.0, 30.0, 10.0], cover, [30.0, 30.0])
    assert (res.population_served, res.population_short, res.population_unreachable) == (60, 0, 10)
    assert res.assignment.toarray().tolist() == [[30, 0], [0, 30], [0, 0]]
    check_invariants(res, [30, 30, 10], cover.toarray(), [30, 30])


def test_shortage_and_spare_capacity():
    # 100 people reach one shelter for 70 and another for 50: 100 served, 20 places spare.
    cover = scipy.sparse.csr_array(np.array([[1, 1]], dtype=np.uint8))
    res = capacitated_coverage([100.0], cover, [70.0, 50.0])
    assert res.population_served == pytest.approx(100.0)
    assert res.spare_capacity.sum() == pytest.approx(20.0)
    # 100 people, one shelter for 40: 60 short.
    res = capacitated_coverage([100.0], scipy.sparse.csr_array(np.ones((1, 1), np.uint8)), 40.0)
    assert (res.population_served, res.population_short) == pytest.approx((40.0, 60.0))
    assert res.share_served == pytest.approx(0.4)


def test_merged_rows_split_back_in_proportion():
    # Three points share one reach set {0}; 90 people, 45 places: each gets half.
    cover = scipy.sparse.csr_array(np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.uint8))
    res = capacitated_coverage([10.0, 20.0, 60.0, 5.0], cover, [45.0, 100.0])
    assert res.n_groups == 2
    np.testing.assert_allclose(res.served, [5.0, 10.0, 30.0, 5.0])
    np.testing.assert_allclose(res.load, [45.0, 5.0])


def test_infinite_capacity_and_zero_population_and_empty():
    cover = scipy.sparse.csr_array(np.array([[1, 0], [1, 1], [0, 1]], dtype=np.uint8))
    res = capacitated_coverage([10.0, 0.0, 7.0], cover, [np.inf, 3.0])
    np.testing.assert_allclose(res.served, [10.0, 0.0, 3.0])
    assert res.population_short == pytest.approx(4.0)
    assert np.isinf(res.spare_capacity[0])
    empty = capacitated_coverage([5.0, 6.0], scipy.sparse.csr_array((2, 3), dtype=np.uint8), 1.0)
    assert (empty.population_served, empty.population_unreachable) == (0.0, 11.0)
    assert empty.load.dtype == np.float64 and empty.load.tolist() == [0.0, 0.0, 0.0]
    none = capacitated_coverage(np.zeros(0), scipy.sparse.csr_array((0, 2), dtype=np.uint8), 1.0)
    assert none.load.dtype == np.float64 and none.population_served == 0.0
    with pytest.raises(ValueError):
        capacitated_coverage([1.0], scipy.sparse.csr_array(np.ones((1, 1))), -1.0)
    with pytest.raises(ValueError):
        capacitated_coverage([1.0, 2.0], scipy.sparse.csr_array(np.ones((1, 1))), 1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25), st.integers(1, 8), st.integers(0, 2**31 - 1), st.floats(0.1, 0.7))
def test_capacitated_equals_max_flow(n_demand, n_sites, seed, density):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_demand, n_sites)) < density).astype(np.uint8)
    if n_demand > 3:  # duplicate some rows to exercise merging
        dense[: n_demand // 3] = dense[n_demand // 3: 2 * (n_demand // 3)]
    pop = rng.integers(0, 100, n_demand).astype(float)
    capacity = rng.integers(0, 150, n_sites).astype(float)
    res = capacitated_coverage(pop, scipy.sparse.csr_array(dense), capacity)
    assert res.population_served == pytest.approx(max_flow_value(pop, dense, capacity), abs=1e-6)
    check_invariants(res, pop, dense, capacity)


def test_capacitated_on_geometry_with_brute_force_flow():
    demand, sites, rng = random_case(5, n_demand=120, n_sites=10, extent=600)
    pop = rng.integers(1, 60, len(demand)).astype(float)
    capacity = rng.integers(50, 400, len(sites)).astype(float)
    cover = coverage_matrix(demand, sites, 150.0)
    res = capacitated_coverage(pop, cover, capacity)
    dense = cover.toarray()
    assert res.population_served == pytest.approx(max_flow_value(pop, dense, capacity), abs=1e-6)
    check_invariants(res, pop, dense, capacity)
    plain = coverage_of_points(pop, cover)
    assert res.population_served + res.population_short == pytest.approx(plain.population_covered)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_row_merging_is_exact(n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_rows, n_cols)) < 0.4).astype(np.uint8)
    c = scipy.sparse.csr_array(dense)
    c.sort_indices()
    label = coverage_module._merge_identical_rows(c)
    same_label = label[:, None] == label[None, :]
    same_row = (dense[:, None, :] == dense[None, :, :]).all(-1)
    np.testing.assert_array_equal(same_label, same_row)


def test_row_merging_survives_a_hash_collision(monkeypatch):
    # Force every column to hash to 0: all rows of equal length collide, the check must catch it.
    class ZeroRng:
        def integers(self, low, high, size, dtype, endpoint):
            return np.zeros(size, dtype=dtype)  # every column hashes to 0

    monkeypatch.setattr(coverage_module.np.random, "default_rng", lambda seed: ZeroRng())
    c = scipy.sparse.csr_array(np.array([[1, 0], [0, 1], [1, 0], [1, 1], [0, 0], [1, 1]],
                                        dtype=np.uint8))
    label = coverage_module._merge_identical_rows(c)
    assert label[0] == label[2] != label[1]
    assert label[3] == label[5] and len(set(label[[0, 1, 3, 4]].tolist())) == 4
