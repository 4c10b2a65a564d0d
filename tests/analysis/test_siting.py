"""Siting: exact LSCP / MCLP / CMCLP against brute-force enumeration of every subset."""

import time
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.spatial import cKDTree

from layers.analysis import siting

SEEDS = range(30)


def random_instance(seed, n_max=14, q_max=9, density=0.3, p_existing=0.2):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, n_max + 1))
    q = int(rng.integers(2, q_max + 1))
    A = (rng.random((n, q)) < density).astype(np.int8)
    pop = rng.integers(0, 20, size=n).astype(float)
    existing = rng.random(n) < p_existing
    return sp.csr_array(A), pop, existing


def subsets(q, size):
    return combinations(range(q), size)


def bf_lscp(A, existing):
    D = A.toarray().astype(bool)
    need = ~existing & D.any(axis=1)
    q = D.shape[1]
    for k in range(q + 1):
        for S in subsets(q, k):
            if D[need][:, list(S)].any(axis=1).all():
                return k
    raise AssertionError("unreachable")


def bf_mclp(A, pop, p, existing):
    D = A.toarray().astype(bool)
    q = D.shape[1]
    best = 0.0
    for S in subsets(q, min(p, q)):
        hit = ~existing & D[:, list(S)].any(axis=1)
        best = max(best, float(pop[hit].sum()))
    return best


def assignment(D, pop, cap):
    """Max splittable assignment of demand to the columns of D within capacities."""
    rows, cols = np.nonzero(D)
    if rows.size == 0:
        return 0.0
    k = rows.size
    R = sp.csr_array((np.ones(k), (rows, np.arange(k))), shape=(D.shape[0], k))
    C = sp.csr_array((np.ones(k), (cols, np.arange(k))), shape=(D.shape[1], k))
    res = linprog(-np.ones(k), A_ub=sp.vstack([R, C]), b_ub=np.concatenate([pop, cap]), bounds=(0, None),
                  method="highs")
    return float(-res.fun)


def bf_cmclp(A, pop, p, cap, E=None, ecap=None):
    D = A.toarray().astype(bool)
    q = D.shape[1]
    De = np.zeros((D.shape[0], 0), bool) if E is None else E.toarray().astype(bool)
    ecap = np.zeros(0) if ecap is None else ecap
    best = 0.0
    for S in subsets(q, min(p, q)):
        best = max(best, assignment(np.hstack([D[:, list(S)], De]), pop, np.concatenate([cap[list(S)], ecap])))
    return best


def kdtree_matrix(demand_xy, sites_xy, radius_m):
    lists = cKDTree(sites_xy).query_ball_point(demand_xy, radius_m)
    rows = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
    cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    return sp.csr_array((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(len(demand_xy), len(sites_xy)))


def covered(A, sel, existing):
    return existing | (A[:, sel].toarray().sum(axis=1) > 0 if len(sel) else np.zeros(A.shape[0], bool))


# ---------------------------------------------------------------- hand-checkable
def test_hand_checked_kdtree_instance():
    # Demand on a line at x = 0, 3, 6, 10, 100; candidates at x = 0, 5, 10; r = 3 m.
    demand_xy = np.array([[0.0, 0], [3, 0], [6, 0], [10, 0], [100, 0]])
    sites_xy = np.array([[0.0, 0], [5, 0], [10, 0]])
    A = kdtree_matrix(demand_xy, sites_xy, 3.0)
    assert A.toarray().tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    # 0:{0} 1:{0,1} 2:{1} 3:{2} 4:{} -> LSCP needs all three; 4 is uncoverable.
    res = siting.lscp(A, pop=[1, 2, 3, 4, 5])
    assert (res.objective, res.status) == (3.0, "optimal")
    assert res.uncoverable_idx.tolist() == [4] and res.uncoverable_population == 5.0
    res = siting.mclp(A, [1, 2, 3, 4, 5], p=1)
    assert res.selected_idx.tolist() == [1] and res.objective == 5.0  # 2 + 3 beats 1 + 2 and 4
    assert res.population_total == 15.0 and res.population_covered == 5.0


def test_added_population_sums_to_new_coverage():
    A, pop, existing = random_instance(3, n_max=14, q_max=9, density=0.35)
    res = siting.mclp(A, pop, 3, existing)
    assert res.added_population.sum() == pytest.approx(res.objective)
    assert np.all(np.diff(res.added_population) <= 1e-9)
    assert res.population_covered == pytest.approx(res.population_existing + res.objective)
    assert res.served_population.sum() == pytest.approx(res.population_covered)


# ---------------------------------------------------------------- brute force
@pytest.mark.parametrize("seed", SEEDS)
def test_lscp_matches_brute_force(seed):
    A, pop, existing = random_instance(seed)
    opt = bf_lscp(A, existing)
    for reduce in (True, False):
        res = siting.lscp(A, existing, pop=pop, reduce=reduce)
        assert res.status == "optimal" and res.objective == opt == res.count
        need = ~existing & (A.toarray().sum(axis=1) > 0)
        assert covered(A, res.selected_idx, existing)[need].all()
    unc = np.flatnonzero(~existing & (A.toarray().sum(axis=1) == 0))
    assert res.uncoverable_idx.tolist() == unc.tolist()
    assert res.uncoverable_population == pytest.approx(pop[unc].sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_mclp_matches_brute_force(seed):
    A, pop, existing = random_instance(seed)
    p = 1 + seed % 4
    opt = bf_mclp(A, pop, p, existing)
    for reduce in (True, False):
        res = siting.mclp(A, pop, p, existing, reduce=reduce)
        assert res.status == "optimal"
        assert res.objective == pytest.approx(opt)
        assert res.count <= p
        hit = covered(A, res.selected_idx, np.zeros_like(existing)) & ~existing
        assert pop[hit].sum() == pytest.approx(opt)  # the sites really cover what is claimed


@pytest.mark.parametrize("seed", range(15))
def test_cmclp_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    A, pop, _ = random_instance(100 + seed, n_max=10, q_max=7, density=0.35)
    cap = rng.integers(1, 40, size=A.shape[1]).astype(float)
    p = 1 + seed % 3
    E = ecap = None
    if seed % 2:
        E = sp.csr_array((rng.random((A.shape[0], 2)) < 0.25).astype(np.int8))
        ecap = rng.integers(1, 20, size=2).astype(float)
    opt = bf_cmclp(A, pop, p, cap, E, ecap)
    res = siting.cmclp(A, pop, p, cap, existing_capacity=ecap, existing_A=E)
    assert res.status == "optimal"
    assert res.objective == pytest.approx(opt, abs=1e-6)
    assert res.count <= p and np.all(res.selected_idx < A.shape[1])  # existing never chosen
    assert np.all(res.added_population <= cap[res.selected_idx] + 1e-6)
    assert np.all(res.served_population <= pop + 1e-6)
    # Served with exactly the reported sites (recomputed independently) is the objective.
    De = np.zeros((A.shape[0], 0)) if E is None else E.toarray()
    again = assignment(np.hstack([A.toarray()[:, res.selected_idx], De]), pop,
                       np.concatenate([cap[res.selected_idx], [] if ecap is None else ecap]))
    assert again == pytest.approx(opt, abs=1e-6)


def test_cmclp_keeps_subset_site_that_adds_capacity():
    # Site 1 covers a subset of site 0's demand with less capacity, yet both are needed.
    A = sp.csr_array(np.array([[1, 1], [1, 0]]))
    res = siting.cmclp(A, [10, 10], 2, [10, 10])
    assert res.objective == 20.0 and sorted(res.selected_idx.tolist()) == [0, 1]


# ---------------------------------------------------------------- heuristics and bounds
@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_never_beats_exact_and_bounds_hold(seed):
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.25)
    p = 1 + seed % 3
    opt_l = bf_lscp(A, existing)
    opt_m = bf_mclp(A, pop, p, existing)
    g = siting.greedy_lscp(A, existing, pop=pop)
    assert g.status == "heuristic" and g.method == "heuristic"
    assert g.objective >= opt_l >= g.bound
    gm = siting.greedy_mclp(A, pop, p, existing)
    assert gm.status == "heuristic"
    assert gm.objective <= opt_m + 1e-9 <= gm.bound + 2e-9
    assert siting.greedy_mclp(A, pop, p, existing, local_search=False).objective <= gm.objective + 1e-9


def test_swaps_fix_greedy_trap():
    # Greedy takes candidate 0 (25) then 1 (+10); the swap to {1, 2} covers all 40.
    A = sp.csr_array(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]]))
    pop = np.array([10.0, 15.0, 10.0, 5.0])
    assert siting.greedy_mclp(A, pop, 2, local_search=False).objective == 35.0
    assert siting.greedy_mclp(A, pop, 2).objective == 40.0


# ---------------------------------------------------------------- existing facilities
def test_existing_coverage_is_respected_and_never_rechosen():
    # Candidate 0 covers only demand already served by an existing facility.
    A = sp.csr_array(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]]))
    pop = np.array([50.0, 50, 1, 2, 3])
    existing = np.array([True, True, False, False, False])
    res = siting.mclp(A, pop, 1, existing)
    assert 0 not in res.selected_idx and res.objective == 5.0  # candidate 2: 2 + 3
    assert res.population_existing == 100.0 and res.population_covered == 105.0
    res = siting.lscp(A, existing, pop=pop)
    assert res.objective == 2.0 and 0 not in res.selected_idx.tolist()
    # With every demand covered already, nothing is chosen.
    res = siting.lscp(A, np.ones(5, bool))
    assert res.count == 0 and res.status == "optimal"


# ---------------------------------------------------------------- reductions
@pytest.mark.parametrize("seed", SEEDS)
def test_reduction_preserves_optimum(seed):
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.3)
    red = siting.reduce_instance(A, pop, existing, problem="lscp")
    R = sp.csr_array(red.A)
    # LSCP: fixed sites + optimum of the reduced instance = original optimum.
    opt_red = bf_lscp(R, np.zeros(R.shape[0], bool)) if R.shape[0] else 0
    assert red.fixed_idx.size + opt_red == bf_lscp(A, existing)
    # Reduced columns are original columns restricted to the kept rows, in the same positions.
    D = A.toarray()
    for i_orig in np.flatnonzero(red.row_of_demand >= 0):
        r = red.row_of_demand[i_orig]
        assert np.array_equal(R.toarray()[r], D[i_orig, red.candidate_idx])
    # MCLP: same optimum for every p, and the population is conserved.
    redm = siting.reduce_instance(A, pop, existing, problem="mclp")
    kept = ~existing & (D.sum(axis=1) > 0) & (pop > 0)
    assert redm.pop.sum() == pytest.approx(pop[kept].sum())
    for p in (1, 2, 3):
        got = bf_mclp(redm.A, redm.pop, p, np.zeros(redm.A.shape[0], bool)) if redm.A.shape[0] else 0.0
        assert got == pytest.approx(bf_mclp(A, pop, p, existing))


def test_reduction_merges_and_drops():
    A = sp.csr_array(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]]))
    red = siting.reduce_instance(A, [1, 2, 3, 4, 5], problem="mclp")
    # Column 1 == column 0 (keep 0), column 3 is a subset of column 2; rows 0, 1 then equal.
    assert red.candidate_idx.tolist() == [0, 2]
    assert red.uncoverable_idx.tolist() == [4]
    assert red.n_dominated_cols == 2 and red.n_merged_rows >= 1
    assert red.pop[red.row_of_demand[0]] == 3.0 and red.row_of_demand[0] == red.row_of_demand[1]
    assert red.row_of_demand[4] == -1


def test_reduction_is_sparse_and_fast_at_city_scale():
    rng = np.random.default_rng(7)
    demand_xy = rng.uniform(0, 10_000, size=(20_000, 2))
    sites_xy = rng.uniform(0, 10_000, size=(500, 2))
    A = kdtree_matrix(demand_xy, sites_xy, 600.0)
    red = siting.reduce_instance(A, rng.integers(0, 50, 20_000))
    assert red.seconds < 5.0 and red.shape[0] < 20_000 and red.shape[1] <= 500


# ---------------------------------------------------------------- curve
@pytest.mark.parametrize("seed", range(8))
def test_coverage_curve_exact_and_greedy(seed):
    A, pop, existing = random_instance(seed, n_max=14, q_max=8, density=0.3)
    curve = siting.coverage_curve(A, pop, 4, existing)
    base = pop[existing].sum()
    assert curve.method == "exact" and len(curve) == 4
    for (k, covered_pop), st in zip(curve, curve.status):
        assert st == "optimal"
        assert covered_pop == pytest.approx(base + bf_mclp(A, pop, k, existing))
    greedy = siting.coverage_curve(A, pop, 4, existing, exact=False)
    assert greedy.method == "greedy"
    assert np.all(greedy.population_covered <= curve.population_covered + 1e-9)
    assert np.all(greedy.bound >= curve.population_covered - 1e-9)
    assert np.all(np.diff(greedy.population_covered) >= 0)
    for v, opt, st in zip(greedy.population_covered, curve.population_covered, greedy.status):
        assert st != "optimal" or v == pytest.approx(opt)  # "optimal" only when proven


@pytest.mark.parametrize("seed", range(8))
def test_capacitated_curve_equals_brute_force_per_k(seed):
    rng = np.random.default_rng(500 + seed)
    A, pop, _ = random_instance(500 + seed, n_max=10, q_max=6, density=0.35)
    cap = rng.integers(1, 40, size=A.shape[1]).astype(float)
    E = ecap = None
    if seed % 2:
        E = sp.csr_array((rng.random((A.shape[0], 2)) < 0.25).astype(np.int8))
        ecap = rng.integers(1, 20, size=2).astype(float)
    curve = siting.capacitated_curve(A, pop, 3, cap, existing_capacity=ecap, existing_A=E)
    assert curve.k.tolist() == [1, 2, 3] and curve.method == "exact"
    assert curve.population_existing == pytest.approx(bf_cmclp(A, pop, 0, cap, E, ecap), abs=1e-6)
    for (k, served), b, st in zip(curve, curve.bound, curve.status):
        assert st == "optimal"
        assert served == pytest.approx(bf_cmclp(A, pop, k, cap, E, ecap), abs=1e-6) and b == pytest.approx(served)
    # with capacities a site can serve less than it covers: served <= covered, per k
    covered = siting.coverage_curve(A, pop, 3, None if E is None else E.toarray().any(axis=1))
    assert np.all(curve.population_covered <= covered.population_covered + 1e-6)


def capacitated_instance(seed):
    """A small capacitated instance with 2 existing sites: (A, pop, E, cap, ecap)."""
    rng = np.random.default_rng(seed)
    A, pop, _ = random_instance(seed, n_max=10, q_max=6, density=0.35)
    E = sp.csr_array((rng.random((A.shape[0], 2)) < 0.3).astype(np.int8))
    cap, ecap = rng.integers(5, 40, A.shape[1]).astype(float), rng.integers(5, 40, 2).astype(float)
    return A, pop, E, cap, ecap


@pytest.mark.parametrize("seed", range(6))
def test_capacitated_curve_greedy_path_is_bounded(seed, monkeypatch):
    monkeypatch.setattr(siting, "_CMCLP_MILP_MAX_NNZ", 0)  # every k takes the no-MILP path
    A, pop, E, cap, ecap = capacitated_instance(700 + seed)
    curve = siting.capacitated_curve(A, pop, 3, cap, existing_capacity=ecap, existing_A=E)
    assert curve.method == ("greedy" if "heuristic" in curve.status else "exact")
    assert np.all(np.diff(curve.population_covered) >= 0) and np.all(np.diff(curve.bound) >= 0)
    for (k, served), b, st in zip(curve, curve.bound, curve.status):
        opt = bf_cmclp(A, pop, k, cap, E, ecap)
        assert served <= opt + 1e-6 <= b + 2e-6
        assert st != "optimal" or served == pytest.approx(opt)


@pytest.mark.parametrize("seed", range(6))
def test_capacitated_curve_shares_one_instance_and_matches_separate_runs(seed, monkeypatch):
    """The curve prepares the instance once and solves each recurring assignment LP once (the
    existing sites alone: once, not once per k), and every k equals a separate ``cmclp`` run."""
    monkeypatch.setattr(siting, "_CMCLP_MILP_MAX_NNZ", 0 if seed % 2 else 10**9)  # both paths
    A, pop, E, cap, ecap = capacitated_instance(800 + seed)
    separate = [siting.cmclp(A, pop, k, cap, existing_capacity=ecap, existing_A=E) for k in (1, 2, 3)]
    solved = []
    real = siting._assignment_lp

    def counting(B, w, c, t, merge=True):
        if merge:
            solved.append(tuple(np.unique(B.indices).tolist()))
        return real(B, w, c, t, merge)

    monkeypatch.setattr(siting, "_assignment_lp", counting)
    curve = siting.capacitated_curve(A, pop, 3, cap, existing_capacity=ecap, existing_A=E)
    assert len(solved) == len(set(solved)), solved  # no open set solved twice
    for (k, served), res in zip(curve, separate):
        assert served == pytest.approx(max(res.objective, curve.population_existing), abs=1e-6)


def test_assignment_lp_merges_rows_without_changing_the_flow_value():
    """Rows with the same open sites are solved as one; the split-back flow is feasible and as large."""
    for seed in range(40):
        rng = np.random.default_rng(900 + seed)
        m, k = int(rng.integers(1, 30)), int(rng.integers(1, 6))
        D = (rng.random((m, k)) < 0.4).astype(np.int8)
        D = D[rng.integers(0, m, size=m)]  # repeated rows
        B = sp.csr_array(D)
        w, cap = rng.integers(0, 20, m).astype(float), rng.integers(1, 30, k).astype(float)
        val, flow, ok = siting._assignment_lp(B, w, cap, 10.0)
        assert ok and val == pytest.approx(assignment(D, w, cap), abs=1e-6)
        row = np.repeat(np.arange(m), np.diff(B.indptr))
        assert flow.sum() == pytest.approx(val, abs=1e-6) and flow.min() >= -1e-9
        assert np.all(np.bincount(row, weights=flow, minlength=m) <= w + 1e-6)
        assert np.all(np.bincount(B.indices, weights=flow, minlength=k) <= cap + 1e-6)


# ---------------------------------------------------------------- input checks and time limit
def test_bad_inputs_raise():
    A = sp.csr_array(np.eye(3))
    with pytest.raises(ValueError):
        siting.mclp(A, [1, 2], 1)
    with pytest.raises(ValueError):
        siting.lscp(A, existing=[True])
    with pytest.raises(ValueError):
        siting.cmclp(A, [1, 2, 3], 1, capacity=[1, 2])
    with pytest.raises(ValueError):
        siting.reduce_instance(A, problem="pmedian")


def test_time_limit_reports_a_valid_gap():
    rng = np.random.default_rng(11)
    demand_xy = rng.uniform(0, 5_000, size=(3_000, 2))
    sites_xy = rng.uniform(0, 5_000, size=(150, 2))
    A = kdtree_matrix(demand_xy, sites_xy, 900.0)
    pop = rng.integers(0, 100, 3_000).astype(float)
    res = siting.mclp(A, pop, 8, time_limit_s=2.0)
    assert res.status in ("optimal", "time_limit") and res.seconds < 6.0
    assert res.bound >= res.objective - 1e-6 and res.gap >= 0
    g = siting.greedy_mclp(A, pop, 8)
    assert g.objective <= res.bound + 1e-6 and res.objective >= g.objective - 1e-6


# ---------------------------------------------------------------- Lagrangian bound and fixing
def _reduced_lscp(seed):
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.3)
    red = siting.reduce_instance(A, pop, existing, problem="lscp")
    return sp.csr_array(red.A)


def _all_optimal_covers(R):
    D = R.toarray().astype(bool)
    opt = bf_lscp(R, np.zeros(R.shape[0], bool))
    return opt, [set(S) for S in subsets(D.shape[1], opt) if D[:, list(S)].any(axis=1).all()]


@pytest.mark.parametrize("seed", SEEDS)
def test_lagrangian_bound_never_exceeds_brute_force(seed):
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.3)
    D = A.toarray().astype(bool)
    rows = ~existing & D.any(axis=1)
    R = sp.csr_array(D[rows].astype(np.int32))  # unreduced: the bound must hold as is
    if R.shape[0] == 0:
        return
    opt = bf_lscp(A, existing)
    L, u, cover = siting._lagrangian_lscp(R, float(R.shape[1]), float("inf"), 300, heuristic_every=7)
    assert np.all(u >= 0) and L <= opt + 1e-9
    # Any u >= 0 gives a valid bound, not only the optimised one.
    rng = np.random.default_rng(seed)
    At = sp.csr_array(R.T).astype(float)
    for _ in range(5):
        assert siting._lagrangian_value(At, rng.random(R.shape[0]) * 2)[0] <= opt + 1e-9
    if cover is not None:  # the Lagrangian greedy returns real covers, never better than optimal
        assert D[rows][:, cover].any(axis=1).all() and cover.size >= opt


@pytest.mark.parametrize("seed", SEEDS)
def test_variable_fixing_never_removes_all_optimal_solutions(seed):
    R = _reduced_lscp(seed)
    if R.shape[0] == 0:
        return
    opt, optimal = _all_optimal_covers(R)
    At = sp.csr_array(R.T).astype(float)
    rng = np.random.default_rng(seed)
    _, u_opt, _ = siting._lagrangian_lscp(R, float(R.shape[1]), float("inf"), 300)
    for u in [u_opt] + [rng.random(R.shape[0]) for _ in range(5)]:
        drop, force = siting._lagrangian_fixing(At, u, float(opt))
        out, inn = set(np.flatnonzero(drop)), set(np.flatnonzero(force))
        # Target = optimum: every optimal cover avoids the dropped columns and holds the forced.
        assert optimal and all(not (S & out) and inn <= S for S in optimal)
        # Target = optimum - 1 (an optimal incumbent): no cover survives, or the bound says so.
        drop, force = siting._lagrangian_fixing(At, u, float(opt - 1))
        keep = np.flatnonzero(~drop)
        assert force.sum() > opt - 1 or not R.toarray()[:, keep].any(axis=1).all() or \
            bf_lscp(sp.csr_array(R.toarray()[:, keep]), np.zeros(R.shape[0], bool)) >= opt


def test_variable_fixing_hand_checked():
    # Rows {0}, {0, 1}, {1, 2}; u = (1, 0, 1): L = 2, reduced costs (0, 0, 0) -> nothing fixed
    # at target 2; at target 1 no cover exists, so every column is ruled out.
    R = sp.csr_array(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]]))
    At = sp.csr_array(R.T).astype(float)
    L, rc = siting._lagrangian_value(At, np.array([1.0, 0.0, 1.0]))
    assert L == 2.0 and rc.tolist() == [0.0, 0.0, 0.0]
    # u = (1, 0, 0.5): L = 1.5, rc = (0, 0.5, 0.5); ceil(1.5 + 0.5) = 2 <= 2 keeps columns 1, 2.
    drop, force = siting._lagrangian_fixing(At, np.array([1.0, 0.0, 0.5]), 2.0)
    assert not drop.any() and not force.any()
    # u = (2, 0, 0): L = 2 + (1 - 2) = 1, rc = (-1, 1, 1): column 0 is forced at target 1
    # (without it the bound is 2), columns 1 and 2 are dropped (with one the bound is 2).
    drop, force = siting._lagrangian_fixing(At, np.array([2.0, 0.0, 0.0]), 1.0)
    assert force.tolist() == [True, False, False] and drop.tolist() == [False, True, True]


def test_lscp_beats_plain_greedy_and_reports_an_honest_bound_at_scale():
    # Large radius, many candidates: greedy is not optimal, and the bound must be valid.
    rng = np.random.default_rng(5)
    demand_xy = rng.uniform(0, 5_000, size=(3_000, 2))
    sites_xy = rng.uniform(0, 5_000, size=(200, 2))
    A = kdtree_matrix(demand_xy, sites_xy, 800.0)
    res = siting.lscp(A, time_limit_s=3.0)
    g = siting.greedy_lscp(A, lp_bound=False)
    assert res.objective <= g.objective and res.seconds < 10.0
    assert res.bound <= res.objective and res.gap >= 0
    need = A.toarray().sum(axis=1) > 0
    assert covered(A, res.selected_idx, np.zeros(A.shape[0], bool))[need].all()
    # Bound from the Lagrangian alone (no MILP, no LP) is still valid and close to the optimum.
    red = siting.reduce_instance(A)
    L, _, _ = siting._lagrangian_lscp(red.A, float(res.objective), float("inf"), 500)
    assert red.fixed_idx.size + L <= res.objective + 1e-9
    if res.status == "optimal":
        assert red.fixed_idx.size + L >= 0.85 * res.objective


# ---------------------------------------------------------------- fast reductions, highspy path
def _distinct_rows(seed, m_max=14, q_max=8):
    rng = np.random.default_rng(1000 + seed)
    m, q = int(rng.integers(2, m_max + 1)), int(rng.integers(2, q_max + 1))
    D = rng.random((m, q)) < rng.uniform(0.2, 0.7)
    D = D[D.any(axis=1)]
    D = np.unique(D, axis=0)  # distinct rows, as after merging
    return D, sp.csr_array(D.astype(np.int32))


def bf_dominated_rows(D, one_deletion=False):
    out = np.zeros(D.shape[0], bool)
    for i in range(D.shape[0]):
        for k in range(D.shape[0]):
            strict = k != i and np.all(D[k] <= D[i]) and D[k].sum() < D[i].sum()
            if strict and (not one_deletion or D[i].sum() - D[k].sum() == 1):
                out[i] = True
    return out


def bf_dominated_cols(D):
    q = D.shape[1]
    out = ~D.any(axis=0)
    for j in range(q):
        for k in range(q):
            if k != j and np.all(D[:, j] <= D[:, k]) and (D[:, j].sum() < D[:, k].sum() or k < j):
                out[j] = True
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_row_and_column_dominance_match_brute_force(seed):
    D, M = _distinct_rows(seed)
    assert np.array_equal(siting._one_deletion_dominated(M), bf_dominated_rows(D, one_deletion=True))
    assert np.array_equal(siting._dominated_rows(M), bf_dominated_rows(D))
    # With no budget for the exact pass only the one-deletion rows go: a subset, never more.
    fast = siting._dominated_rows(M, max_work=0)
    assert not np.any(fast & ~bf_dominated_rows(D))
    Dc = np.hstack([D, D[:, :1]])  # a duplicate column: the first copy stays
    assert np.array_equal(siting._dominated_cols(sp.csr_array(Dc.astype(np.int32))), bf_dominated_cols(Dc))


def test_one_deletion_hand_checked():
    # {0,1,2} = {0,1} + 2: dominated; {0,1,2,3} is {0,1} + two columns (exact pass only); {3} not.
    M = sp.csr_array(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]], np.int32))
    assert siting._one_deletion_dominated(M).tolist() == [False, True, True, False]
    M = sp.csr_array(np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]], np.int32))
    assert siting._one_deletion_dominated(M).tolist() == [False, False, False]
    assert siting._dominated_rows(M).tolist() == [False, True, False]


@pytest.mark.parametrize("seed", SEEDS)
def test_reduction_with_only_linear_dominance_preserves_optimum(seed, monkeypatch):
    monkeypatch.setattr(siting, "_ROW_DOM_WORK", 0.0)
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.35)
    red = siting.reduce_instance(A, pop, existing, problem="lscp")
    R = sp.csr_array(red.A)
    opt_red = bf_lscp(R, np.zeros(R.shape[0], bool)) if R.shape[0] else 0
    assert red.fixed_idx.size + opt_red == bf_lscp(A, existing)


@pytest.mark.parametrize("use_highspy", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_exact_paths_with_and_without_highspy_match_brute_force(seed, use_highspy, monkeypatch):
    if use_highspy and siting.highspy is None:
        pytest.skip("highspy not installed")
    if not use_highspy:
        monkeypatch.setattr(siting, "highspy", None)
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.3)
    p = 1 + seed % 3
    res = siting.lscp(A, existing, pop=pop)
    assert res.objective == bf_lscp(A, existing) and res.status == "optimal"
    assert res.gap == 0.0 and res.bound <= res.objective
    rm = siting.mclp(A, pop, p, existing)
    assert rm.objective == pytest.approx(bf_mclp(A, pop, p, existing))
    assert rm.gap >= 0 and rm.bound >= rm.objective - 1e-9


@pytest.mark.parametrize("seed", range(2))
def test_gap_never_negative_and_heuristic_never_beats_exact_under_a_tight_limit(seed):
    rng = np.random.default_rng(200 + seed)
    demand_xy = rng.uniform(0, 4_000, size=(1_000, 2))
    sites_xy = rng.uniform(0, 4_000, size=(90, 2))
    A = kdtree_matrix(demand_xy, sites_xy, 700.0)
    pop = rng.integers(0, 50, 1_000).astype(float)
    for limit in (0.2, 1.0):
        ex = siting.lscp(A, pop=pop, time_limit_s=limit)
        g = siting.greedy_lscp(A, pop=pop, time_limit_s=limit)
        assert ex.gap >= 0 and g.gap >= 0
        assert ex.bound <= ex.objective and g.bound <= g.objective
        assert ex.gap == pytest.approx((ex.objective - ex.bound) / ex.objective)
        assert g.objective >= ex.bound and ex.objective >= g.bound  # no bound crosses a solution
        m = siting.mclp(A, pop, 6, time_limit_s=limit)
        gm = siting.greedy_mclp(A, pop, 6, time_limit_s=limit)
        assert m.gap >= 0 and gm.gap >= 0
        assert gm.objective <= m.bound + 1e-6 and m.objective <= gm.bound + 1e-6
        assert m.gap == pytest.approx((m.bound - m.objective) / m.objective)


def test_highs_start_solution_and_dual_bound():
    if siting.highspy is None:
        pytest.skip("highspy not installed")
    # Cover rows {0,1}, {1,2}, {2,3} with columns a={0,1}, b={1,2}, c={2,3}, d={0,3}: optimum 2.
    A = sp.csr_array(np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], float))
    cons = [siting.LinearConstraint(A, lb=np.ones(4), ub=np.inf)]
    x0 = np.array([1.0, 1.0, 1.0, 0.0])  # a feasible, non-optimal start
    st, x, dual, msg = siting._run_milp(np.ones(4), cons, siting.Bounds(0, 1), np.ones(4), 5.0, 1e-9, x0)
    assert st == 0 and x.sum() == pytest.approx(2.0) and dual == pytest.approx(2.0)
    assert np.all(A @ np.round(x) >= 1) and "HiGHS" in msg


@pytest.mark.parametrize("seed", SEEDS)
def test_mclp_lagrangian_bound_never_below_brute_force(seed, monkeypatch):
    A, pop, existing = random_instance(seed, n_max=16, q_max=10, density=0.3)
    p = 1 + seed % 3
    opt = bf_mclp(A, pop, p, existing)
    red = siting.reduce_instance(A, pop, existing, problem="mclp")
    if red.A.shape[0] and red.A.shape[1] > p:
        L, cols = siting._lagrangian_mclp(red.A, red.pop, p, 0.0, 1e9, max_iter=200)
        assert L >= opt - 1e-9 and cols.size == p
        # lam = w (start of nothing relaxed) gives the trivial bound: top-p column weights
        col_w = np.sort(np.asarray(red.A.T @ red.pop).reshape(-1))[::-1]
        assert L <= col_w[:p].sum() + 1e-9
    # the large-instance path (Lagrangian bound + iterated swaps, no LP / MILP)
    monkeypatch.setattr(siting, "_MCLP_LP_MAX_NNZ", 0)
    res = siting.mclp(A, pop, p, existing, time_limit_s=0.5)
    assert res.objective <= opt + 1e-9 <= res.bound + 2e-9 and res.gap >= 0


# ---------------------------------------------------------------- connected components (LSCP separates)
def complete_graph_edges(n):
    """Vertex cover of K_n as set cover: rows = edges, columns = vertices; optimum n - 1, LP n / 2."""
    edges = list(combinations(range(n), 2))
    D = np.zeros((len(edges), n), np.int8)
    for i, (a, b) in enumerate(edges):
        D[i, a] = D[i, b] = 1
    return D


def block_instance(seed, blocks=None, n_blocks=3, n_max=6, q_max=4, density=0.45, p_existing=0.15):
    """Independent blocks on the diagonal, rows and columns shuffled; also each block's rows/cols."""
    rng = np.random.default_rng(seed)
    if blocks is None:
        blocks = [(rng.random((int(rng.integers(2, n_max + 1)), int(rng.integers(2, q_max + 1)))) < density)
                  for _ in range(n_blocks)]
    D = sp.block_diag([sp.csr_array(np.asarray(b, np.int8)) for b in blocks], format="csr")
    rp, cp = rng.permutation(D.shape[0]), rng.permutation(D.shape[1])
    A = sp.csr_array(D[rp][:, cp])
    row_block = np.repeat(np.arange(len(blocks)), [b.shape[0] for b in blocks])[rp]
    col_block = np.repeat(np.arange(len(blocks)), [b.shape[1] for b in blocks])[cp]
    pop = rng.integers(1, 30, size=A.shape[0]).astype(float)
    existing = rng.random(A.shape[0]) < p_existing
    return A, pop, existing, row_block, col_block


def test_split_components_hand_checked_and_against_networkx():
    nx = pytest.importorskip("networkx")
    A = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
    rows_idx, cols_idx = siting.split_components(A)
    assert [r.tolist() for r in rows_idx] == [[0, 2], [1], [3], [], []]
    assert [c.tolist() for c in cols_idx] == [[0, 2], [1], [], [3], [4]]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        M = sp.csr_array((rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 20)))) < 0.08).astype(np.int8))
        m, q = M.shape
        G = nx.Graph()
        G.add_nodes_from([("r", i) for i in range(m)] + [("c", j) for j in range(q)])
        G.add_edges_from((("r", i), ("c", j)) for i, j in zip(*M.nonzero()))
        want = sorted(sorted(c) for c in nx.connected_components(G))
        rows_idx, cols_idx = siting.split_components(M)
        got = sorted(sorted([("r", int(i)) for i in r] + [("c", int(j)) for j in c])
                     for r, c in zip(rows_idx, cols_idx))
        assert got == want


def test_decomposed_lscp_hand_checked_complete_graphs():
    # Vertex covers of K3, K4 and K5 (edges to cover, vertices as candidates), shuffled together:
    # nothing reduces, three components, optimum 2 + 3 + 4.
    A, pop, _, row_block, col_block = block_instance(0, blocks=[complete_graph_edges(n) for n in (3, 4, 5)])
    red = siting.reduce_instance(A)
    assert red.shape == A.shape and len(siting.split_components(red.A)[0]) == 3
    res = siting.lscp(A, pop=pop)
    assert (res.objective, res.bound, res.status) == (9.0, 9.0, "optimal")
    assert res.message.startswith("3 components, 3 proven optimal")
    assert np.bincount(col_block[res.selected_idx]).tolist() == [2, 3, 4]
    assert covered(A, res.selected_idx, np.zeros(A.shape[0], bool)).all()


@pytest.mark.parametrize("seed", range(20))
def test_decomposed_lscp_matches_brute_force_and_sum_of_blocks(seed, monkeypatch):
    A, pop, existing, row_block, col_block = block_instance(seed)
    D = A.toarray()
    per_block = sum(bf_lscp(sp.csr_array(D[row_block == b][:, col_block == b]), existing[row_block == b])
                    for b in range(row_block.max() + 1))
    opt = bf_lscp(A, existing)
    assert opt == per_block
    need = ~existing & (D.sum(axis=1) > 0)
    unc = np.flatnonzero(~existing & (D.sum(axis=1) == 0))  # uncoverable, still reported
    for reduce in (True, False):  # without reductions the blocks reach the decomposition intact
        res = siting.lscp(A, existing, pop=pop, reduce=reduce)
        assert res.status == "optimal" and res.objective == opt == res.count and res.bound == opt
        assert covered(A, res.selected_idx, existing)[need].all()
        assert res.uncoverable_idx.tolist() == unc.tolist()
        assert res.uncoverable_population == pytest.approx(pop[unc].sum())
    n_comp = sum(r.size > 0 for r in siting.split_components(A[np.flatnonzero(need)])[0])
    assert n_comp == 1 or res.message.startswith(f"{n_comp} components, {n_comp} proven optimal")
    # the larger-component path (subgradient, fixing, HiGHS) gives the same optimum
    monkeypatch.setattr(siting, "_SMALL_COMPONENT_NNZ", 0)
    sel, lb, st, _, _ = siting._lscp_decomposed(sp.csr_array(A[np.flatnonzero(need)]), 1e18, 1e-6)
    assert st == "optimal" and sel.size == lb == opt


def test_decomposed_lscp_many_components_is_fast_and_exact():
    blocks = [complete_graph_edges(3 + k % 4) for k in range(120)]  # optima 2, 3, 4, 5
    A, pop, _, _, col_block = block_instance(1, blocks=blocks)
    res = siting.lscp(A, pop=pop, time_limit_s=30.0)
    assert res.status == "optimal" and res.objective == 30 * (2 + 3 + 4 + 5) == res.bound
    assert res.message.startswith("120 components, 120 proven optimal")
    assert res.seconds < 15.0


def test_decomposed_lscp_component_cut_by_time_limit(monkeypatch):
    # HiGHS "runs out of time" on whatever reaches it: K6 (optimum 5, Lagrangian/LP bound 3)
    # cannot be proven, the K3 blocks are proven by the Lagrangian bound alone.
    def timed_out(*args, **kwargs):
        return 1, None, None, "time limit reached (test)"

    monkeypatch.setattr(siting, "_run_milp", timed_out)
    monkeypatch.setattr(siting, "_lagrangian_fixing",
                        lambda At, u, target: (np.zeros(At.shape[0], bool), np.zeros(At.shape[0], bool)))
    blocks = [complete_graph_edges(3), complete_graph_edges(6), complete_graph_edges(3)]
    A, pop, existing, row_block, col_block = block_instance(2, blocks=blocks, p_existing=0.0)
    opt = bf_lscp(A, existing)
    assert opt == 2 + 5 + 2
    res = siting.lscp(A, pop=pop, time_limit_s=5.0)
    assert res.status == "time_limit" and res.message.startswith("3 components, 2 proven optimal")
    assert res.bound <= opt <= res.objective and res.bound >= 2 + 3 + 2
    assert res.gap == pytest.approx((res.objective - res.bound) / res.objective)
    assert covered(A, res.selected_idx, existing).all()


# ---------------------------------------------------------------- CMCLP too large for the MILP
@pytest.mark.parametrize("seed", range(10))
def test_cmclp_greedy_path_bounds_brute_force(seed, monkeypatch):
    monkeypatch.setattr(siting, "_CMCLP_MILP_MAX_NNZ", 0)  # every instance takes the no-MILP path
    A, pop, E, cap, ecap = capacitated_instance(300 + seed)
    p = 1 + seed % 3
    opt = bf_cmclp(A, pop, p, cap, E, ecap)
    res = siting.cmclp(A, pop, p, cap, existing_capacity=ecap, existing_A=E)
    assert res.method == "heuristic" and res.status in ("heuristic", "optimal")
    assert res.objective <= opt + 1e-6 <= res.bound + 2e-6
    assert res.status == "heuristic" or res.objective == pytest.approx(opt)
    # the figures are those of an exact assignment to the chosen sites plus the existing ones
    D = np.hstack([A.toarray()[:, res.selected_idx], E.toarray()])
    assert res.objective == pytest.approx(assignment(D, pop, np.concatenate([cap[res.selected_idx], ecap])))


def test_cmclp_greedy_path_hand_checked(monkeypatch):
    # The existing site (capacity 10) serves demand 0 fully; candidate 0 reaches only demand 0,
    # candidate 1 demand 1 (10 unserved): greedy on what is left takes candidate 1.
    monkeypatch.setattr(siting, "_CMCLP_MILP_MAX_NNZ", 0)
    A = np.array([[1, 0], [0, 1]])
    res = siting.cmclp(A, [10, 10], 1, [50, 5], existing_capacity=[10], existing_A=np.array([[1], [0]]))
    assert res.selected_idx.tolist() == [1] and res.objective == 15.0
    # bound: existing alone 10, plus the best min(capacity, reach) = min(50, 10); not proven
    assert res.bound == 20.0 and res.status == "heuristic"


# ---------------------------------------------------------------- LSCP 2-for-1 local search
def test_two_for_one_hand_checked():
    # Columns a = {0}, b = {1}, k = {0, 1}, c = {2}: the cover {a, b, c} becomes {k, c}.
    A = sp.csr_array(np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]]))
    assert sorted(siting._two_for_one(A, np.array([0, 1, 3]), 1e18).tolist()) == [2, 3]


@pytest.mark.parametrize("seed", range(15))
def test_two_for_one_and_large_instance_path_against_brute_force(seed):
    R = _reduced_lscp(seed)
    if R.shape[0] == 0:
        R = sp.csr_array(complete_graph_edges(4 + seed % 3))
    opt = bf_lscp(R, np.zeros(R.shape[0], bool))
    start = np.arange(R.shape[1])  # every column: the local search must shrink it to a cover
    out = siting._two_for_one(R, start, 1e18)
    assert opt <= out.size <= start.size and (R[:, out].sum(axis=1) >= 1).all()
    # neighbourhood search: a whole small instance is one neighbourhood, re-covered exactly
    lns = siting._lns_cover(R, start, time.perf_counter() + 0.5)
    assert opt <= lns.size <= start.size and (R[:, lns].sum(axis=1) >= 1).all()
    if R.shape[1] <= 12:
        assert lns.size == opt
    # the "too large for HiGHS" branch (local search + Lagrangian) stays a valid cover and bound
    sel, lb, st, _, _ = siting._lscp_reduced(R, time.perf_counter() + 2.0, 1e-6, milp_max_nnz=0)
    assert lb <= opt <= sel.size and (R[:, sel].sum(axis=1) >= 1).all()
    assert st == ("optimal" if lb == sel.size else "time_limit")



def _lattice_lscp(n_cells, radius_m=300.0):
    """An n x n square of 100 m demand cells, candidates on the 200 m lattice (as lscp_square)."""
    xs = (np.arange(n_cells) + 0.5) * 100.0
    demand = np.array(np.meshgrid(xs, xs)).reshape(2, -1).T
    cs = np.arange(0.0, n_cells * 100.0 + 1.0, 200.0)
    cand = np.array(np.meshgrid(cs, cs)).reshape(2, -1).T
    pairs = cKDTree(demand).query_ball_tree(cKDTree(cand), radius_m)
    rows = np.repeat(np.arange(len(demand)), [len(p) for p in pairs])
    return sp.csr_array((np.ones(len(rows), np.int8), (rows, np.concatenate(pairs))),
                        shape=(len(demand), len(cand)))


@pytest.mark.parametrize("seed", range(6))
def test_lns_cover_short_sub_milps_and_plateau_settings_against_brute_force(seed):
    # Sub-MILPs cut off after 0.05 s, plateau moves always / never accepted: still a cover,
    # never larger than the start, never below the optimum; whole small instances solved exactly.
    R = _reduced_lscp(seed)
    if R.shape[0] == 0:
        R = sp.csr_array(complete_graph_edges(5))
    opt = bf_lscp(R, np.zeros(R.shape[0], bool))
    start = np.arange(R.shape[1])
    for p_equal in (0.0, 1.0):
        out = siting._lns_cover(R, start, time.perf_counter() + 0.3, seed=seed, p_equal=p_equal,
                                sub_limit_s=0.05)
        assert opt <= out.size <= start.size and (R[:, out].sum(axis=1) >= 1).all()
        if R.shape[1] <= 12:
            assert out.size == opt


def test_lns_cover_on_a_lattice_square_improves_on_greedy_and_stays_above_the_optimum():
    # 2 km square, r = 300 m: 400 x 121, small enough for HiGHS to prove the optimum, large
    # enough that a neighbourhood (two hops) is not the whole square.
    A = _lattice_lscp(20)
    opt = siting.lscp(A, time_limit_s=20.0)
    assert opt.status == "optimal"
    g = siting._greedy_cover(A)
    out = siting._lns_cover(A, g, time.perf_counter() + 1.0, seed=1)
    assert opt.objective <= out.size <= g.size and (A[:, out].sum(axis=1) >= 1).all()
    # the "too large for HiGHS" path: valid cover, no worse than greedy, bound below the optimum
    sel, lb, st, method, _ = siting._lscp_reduced(A, time.perf_counter() + 2.0, 1e-6, milp_max_nnz=0)
    assert (A[:, sel].sum(axis=1) >= 1).all() and opt.objective <= sel.size <= g.size
    assert lb <= opt.objective and method == "heuristic"
    assert st == ("optimal" if lb >= sel.size else "time_limit")

# ---------------------------------------------------------------- MCLP: Lagrangian fixing, column generation
def bf_mclp_optimal_sets(D, pop, p):
    """Value and every optimal subset of min(p, q) columns (D dense bool, no existing coverage)."""
    q = D.shape[1]
    vals = {S: float(pop[D[:, list(S)].any(axis=1)].sum()) for S in subsets(q, min(p, q))}
    best = max(vals.values())
    return best, [set(S) for S, v in vals.items() if v >= best - 1e-9]


def test_mclp_lagrangian_fixing_hand_checked():
    # Three disjoint candidates covering 10, 5 and 1 people, p = 1, lam = w: s = (10, 5, 1), L = 10.
    A = sp.csr_array(np.eye(3, dtype=np.int8))
    w = np.array([10.0, 5.0, 1.0])
    At = sp.csr_array(A.T).astype(np.float64)
    L, s, top = siting._mclp_lagrangian_value(At, w, w, 1)
    assert L == 10.0 and s.tolist() == [10.0, 5.0, 1.0] and top.tolist() == [0]
    # Incumbent 10: forcing 1 bounds at 10 - 10 + 5 = 5, forcing 2 at 1; leaving 0 out at 10 - 10 + 5.
    L, drop, force = siting._mclp_lagrangian_fixing(At, w, w, 1, 10.0, 1e-9)
    assert drop.tolist() == [False, True, True] and force.tolist() == [True, False, False]
    B, wB, cols, forced, const = siting._mclp_fixed_instance(A, w, drop, force)
    assert B.shape == (0, 0) and forced.tolist() == [0] and const == 10.0
    # Incumbent 5 (site 1 alone): only site 2 (bound 1 < 5) goes; 5 < 5 is false, nothing forced.
    _, drop, force = siting._mclp_lagrangian_fixing(At, w, w, 1, 5.0, 1e-9)
    assert drop.tolist() == [False, False, True] and not force.any()
    B, wB, cols, forced, const = siting._mclp_fixed_instance(A, w, drop, force)
    assert cols.tolist() == [0, 1] and forced.size == 0 and const == 0.0  # rows may come merged in any order
    assert sorted(zip(map(tuple, B.toarray().tolist()), wB.tolist())) == [((0, 1), 5.0), ((1, 0), 10.0)]


@pytest.mark.parametrize("seed", SEEDS)
def test_mclp_lagrangian_fixing_keeps_every_optimal_solution(seed):
    A, pop, _ = random_instance(seed, n_max=16, q_max=9, density=0.3)
    pop = pop + 1.0
    rng = np.random.default_rng(1000 + seed)
    p = 1 + seed % 3
    D = A.toarray().astype(bool)
    opt, opt_sets = bf_mclp_optimal_sets(D, pop, p)
    At = sp.csr_array(A.T).astype(np.float64)
    # Multipliers: the LP's (tight: the most fixing) and random ones in [0, w]; incumbents: the
    # optimum itself and a worse solution's value.
    _, lam_lp, _ = siting._mclp_restricted_lp(A, pop, p, np.arange(A.shape[1]), 10.0)
    greedy = siting._covered_weight(A, pop, siting._greedy_max_cover(A, pop, p))
    n_fixed = 0
    for lam in (lam_lp, rng.random(pop.size) * pop, pop.copy()):
        L, _, _ = siting._mclp_lagrangian_value(At, pop, lam, p)
        assert L >= opt - 1e-9  # every multiplier vector in [0, w] gives a bound
        for inc in (opt, greedy):
            _, drop, force = siting._mclp_lagrangian_fixing(At, pop, lam, p, inc, 1e-9)
            assert not (drop & force).any()
            for S in opt_sets:  # a dropped column is in no optimal solution, a forced one in all
                assert not (set(np.flatnonzero(drop)) & S)
                assert set(np.flatnonzero(force)) <= S
            B, wB, cols, forced, const = siting._mclp_fixed_instance(A, pop, drop, force)
            left = p - forced.size
            sub = bf_mclp(B, wB, left, np.zeros(B.shape[0], bool)) if B.shape[0] and left > 0 else 0.0
            assert const + sub == pytest.approx(opt)
            n_fixed += int(drop.sum() + force.sum())
    if seed == 0:
        assert n_fixed > 0  # the test exercises fixing at all


@pytest.mark.parametrize("seed", SEEDS)
def test_mclp_column_generation_reaches_the_lp_bound(seed):
    A, pop, _ = random_instance(seed, n_max=16, q_max=9, density=0.3)
    red = siting.reduce_instance(A, pop, problem="mclp")
    R, w = red.A, red.pop
    p = 1 + seed % 3
    if R.shape[0] == 0 or R.shape[1] <= p:
        return
    opt = bf_mclp(R, w, p, np.zeros(R.shape[0], bool))
    lp, _, _ = siting._mclp_lp_full(R, w, p, 10.0)
    bound, lam, x, done = siting._mclp_lp_colgen(R, w, p, time.perf_counter() + 10.0, np.array([0]))
    assert done and bound == pytest.approx(lp, abs=1e-6) and bound >= opt - 1e-9
    assert np.all(lam >= 0) and np.all(lam <= w + 1e-12) and x.sum() <= p + 1e-6
    # stopped before it starts: no bound claimed
    bound, lam, x, done = siting._mclp_lp_colgen(R, w, p, time.perf_counter() - 1.0, np.array([0]))
    assert not done and lam is None and bound == np.inf


@pytest.mark.parametrize("seed", range(12))
def test_mclp_large_instance_path_with_fixing_matches_brute_force(seed, monkeypatch):
    A, pop, existing = random_instance(seed, n_max=18, q_max=10, density=0.3)
    p = 1 + seed % 3
    opt = bf_mclp(A, pop, p, existing)
    # Every instance counts as "large" (column generation, fixing), the fixed one gets the MILP.
    monkeypatch.setattr(siting, "_MCLP_LP_MAX_NNZ", 0)
    monkeypatch.setattr(siting, "_MCLP_FIXED_MAX_NNZ", 10**9)
    res = siting.mclp(A, pop, p, existing, time_limit_s=5.0)
    assert res.objective == pytest.approx(opt) and res.bound >= opt - 1e-9 and res.status == "optimal"
    # ... and when the fixed instance is too large too: iterated swaps, still an honest bound
    monkeypatch.setattr(siting, "_MCLP_FIXED_MAX_NNZ", -1)
    res = siting.mclp(A, pop, p, existing, time_limit_s=0.3)
    assert res.objective <= opt + 1e-9 <= res.bound + 2e-9 and res.gap >= 0


def test_mclp_fixing_on_a_city_instance_keeps_the_optimum():
    # 900 demand points, 60 candidates, r = 300 m: the fixed instance's optimum (HiGHS) + the forced
    # sites' coverage equals the whole instance's optimum (HiGHS), and fixing removes something.
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 3000, size=(900, 2))
    sites = rng.uniform(0, 3000, size=(60, 2))
    pop = rng.integers(1, 50, size=900).astype(float)
    lists = cKDTree(sites).query_ball_point(xy, 300.0)
    rows = np.repeat(np.arange(900), [len(x) for x in lists])
    A = sp.csr_array((np.ones(rows.size, np.int8), (rows, np.concatenate([x for x in lists if x] or [[]]).astype(int))),
                     shape=(900, 60))
    red = siting.reduce_instance(A, pop, problem="mclp")
    R, w = red.A, red.pop
    p = 6
    full = siting._mclp_solve(R, w, p, time.perf_counter() + 20, 1e-9, True)
    assert full[3] == "optimal"
    At = sp.csr_array(R.T).astype(np.float64)
    _, lam, _ = siting._mclp_restricted_lp(R, w, p, np.arange(R.shape[1]), 10.0)
    heur = siting._covered_weight(R, w, siting._greedy_max_cover(R, w, p))
    _, drop, force = siting._mclp_lagrangian_fixing(At, w, lam, p, heur, 1e-9)
    assert drop.sum() + force.sum() > 0
    B, wB, cols, forced, const = siting._mclp_fixed_instance(R, w, drop, force)
    sub = siting._mclp_solve(B, wB, p - forced.size, time.perf_counter() + 20, 1e-9, True)
    assert sub[3] == "optimal" and const + sub[1] == pytest.approx(full[1])
    assert siting._covered_weight(R, w, np.union1d(forced, cols[sub[0]])) == pytest.approx(full[1])


@pytest.mark.parametrize("n", range(5, 10))
def test_lscp_milp_path_with_neighbourhood_search_first_against_brute_force(n, monkeypatch):
    # Neighbourhood search before HiGHS on every instance (counted: the path is taken). Vertex
    # cover of K_n as set cover: one component, LP n / 2 so no Lagrangian shortcut; optimum n - 1.
    monkeypatch.setattr(siting, "_LNS_FIRST_NNZ", -1)
    calls = []
    lns = siting._lns_cover
    monkeypatch.setattr(siting, "_lns_cover", lambda *a, **k: calls.append(1) or lns(*a, **k))
    A = sp.csr_array(complete_graph_edges(n))
    opt = bf_lscp(A, np.zeros(A.shape[0], bool))
    assert opt == n - 1
    res = siting.lscp(A, time_limit_s=5.0)
    assert calls and (A[:, res.selected_idx].sum(axis=1) >= 1).all()
    assert res.status == "optimal" and res.objective == res.bound == opt


# ---------------------------------------------------------------- interruption (job cancellation)
@pytest.mark.parametrize("seed", range(8))
def test_interruptible_that_never_stops_changes_nothing(seed):
    A, pop, ex = random_instance(seed)
    with siting.interruptible(lambda: False) as stop:
        a = siting.mclp(A, pop, 2, ex)
        b = siting.lscp(A, ex)
    assert not stop.stopped
    assert a.objective == pytest.approx(bf_mclp(A, pop, 2, ex)) and b.objective == bf_lscp(A, ex)
    assert a.status == b.status == "optimal"


@pytest.mark.parametrize("problem", ["lscp", "mclp"])
def test_a_stop_request_ends_a_long_solve_early_with_a_valid_answer(problem):
    """A 600 s solve on an instance none of our paths proves quickly (the 6 km lattice square, LSCP
    gap ~10 % after 600 s) returns soon after ``should_stop`` turns true, with a feasible answer
    and an honest bound; ``should_stop`` is not called again once it said yes."""
    A = _lattice_lscp(60, 500.0)
    pop = np.random.default_rng(3).integers(1, 100, A.shape[0]).astype(float)
    t0 = time.perf_counter()
    calls = []

    def should_stop():
        calls.append(time.perf_counter() - t0)
        return calls[-1] > 1.0

    with siting.interruptible(should_stop) as stop:
        res = siting.lscp(A, time_limit_s=600) if problem == "lscp" else siting.mclp(A, pop, 30, time_limit_s=600)
    elapsed = time.perf_counter() - t0
    assert stop.stopped and calls[-1] > 1.0 and sum(c > 1.0 for c in calls) == 1
    assert elapsed < 120, elapsed  # HiGHS polls its interrupt only between phases; our own loops at once
    assert res.status in ("time_limit", "optimal") and res.gap >= 0
    sel = res.selected_idx
    if problem == "lscp":
        assert covered(A, sel, np.zeros(A.shape[0], bool)).all() and res.bound <= res.objective
    else:
        assert len(sel) <= 30 and res.bound >= res.objective - 1e-6
        assert res.objective == pytest.approx(float(pop[covered(A, sel, np.zeros(A.shape[0], bool))].sum()))


@pytest.mark.parametrize("seed", range(10))
def test_mclp_neighbourhood_search_never_worsens_and_never_beats_brute_force(seed):
    A, pop, _ = random_instance(900 + seed, n_max=16, q_max=10, density=0.3)
    p = 2 + seed % 2
    R, w = sp.csr_array(A), pop
    start = np.arange(p, dtype=np.intp)  # a poor start: the first p candidates
    v0 = float(w[covered(R, start, np.zeros(R.shape[0], bool))].sum())
    S, v, moves = siting._mclp_neighbourhood_search(R, w, start, v0, time.perf_counter() + 1.0, k_free=2,
                                                    sub_limit_s=0.5, seed=seed)
    assert len(set(S.tolist())) == S.size == p
    assert v == pytest.approx(float(w[covered(R, S, np.zeros(R.shape[0], bool))].sum()))
    assert v0 - 1e-9 <= v <= bf_mclp(R, w, p, np.zeros(R.shape[0], bool)) + 1e-9
    assert (moves > 0) == (v > v0 + 1e-9)

