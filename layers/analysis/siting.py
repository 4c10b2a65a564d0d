"""Optimal siting of new facilities on a sparse coverage matrix: LSCP, MCLP, capacitated MCLP.

Every function takes ``A``, a sparse ``(n_demand, n_candidates)`` matrix with a non-zero where the
candidate covers the demand point (see ``coverage.coverage_matrix``), and returns positions, never
objects. Demand already covered by existing facilities is passed as ``existing`` (a boolean mask per
demand point); existing facilities are never candidates, so they can never be "re-chosen".

Models
------
- LSCP, the location set covering problem (Toregas, Swain, ReVelle & Bergman 1971): the fewest
  candidates such that every demand point that some candidate can reach is covered. Demand that no
  candidate (and no existing facility) reaches is reported as uncoverable, never silently dropped.
- MCLP, the maximal covering location problem (Church & ReVelle 1974): ``p`` new sites maximising
  the population covered, existing coverage counted.
- CMCLP, a capacitated MCLP: ``p`` new sites with capacities (for shelters: effective area divided
  by the per-capita area), demand assigned, splittably, to open sites within reach without
  exceeding any capacity (a transportation LP inside the MILP, so "served" is the true maximum).

Exact solves use HiGHS through its own bindings ``highspy`` when installed (the heuristic's sites
are HiGHS's start solution, and its MIP dual bound is reported), else through
:func:`scipy.optimize.milp` (no start solution: the incumbent becomes a cutoff constraint instead);
the constraint matrix is built directly as a ``scipy.sparse`` array. Before solving,
:func:`reduce_instance` merges identical demand rows (hashing) and drops dominated rows and columns
(the classic set-covering reductions, Toregas & ReVelle 1973): rows by a linear-time
"one column more" hash pass, then an exact blocked ``A A^T`` pass when affordable; columns by
checking only the columns through each column's rarest row. That shrinks a 40,000 x 1,000 city
instance to a few hundred or thousand rows in a fraction of a second. A greedy + swap local search
runs first; when the time limit stops HiGHS with a worse incumbent (or none) the heuristic's sites
are returned, with HiGHS's proven bound, so the gap ``|objective - bound| / objective`` is always
known.

LSCP adds a Lagrangian relaxation of the covering constraints (subgradient optimisation, sparse
mat-vecs only): its bound is always available, even when HiGHS cannot finish the root LP; its
multipliers drive a greedy on Lagrangian costs (a better incumbent) and reduced-cost fixing
against the incumbent; HiGHS then gets what is left with ``sum x <= UB - 1``, so it searches only
for improvements. MCLP gives HiGHS the incumbent as a cutoff (``w.y >= incumbent``) after LP
reduced-cost fixing, with iterated swaps first on large instances. Above 600,000 reduced
non-zeros (where HiGHS does not finish the whole LP in time) the MCLP LP bound comes from column
generation (small restricted LPs priced by their multipliers; every iterate's Lagrangian value is
a proven bound, so it can stop at any time), whose multipliers then drive Lagrangian
reduced-cost fixing: candidates in no improving solution go, candidates in every one are fixed
in, and when what is left is small enough it is solved like a small instance.

When the reduced LSCP is too large for HiGHS (the whole demo city at 500 m: 39,223 x 13,401, an
LP bound near 813 against covers of about 1,020, a gap no LP-based search closes in a minute), the
time after the Lagrangian goes to the cover: 2-for-1 swaps, then a large-neighbourhood search
that removes the chosen sites around a random one and re-covers what they alone covered exactly
with a small HiGHS MILP.

LSCP separates over the connected components of the (reduced) demand-candidate graph
(:func:`split_components`, linear in the non-zeros): each component is solved on its own, small
ones straight by HiGHS, the optimum and the bound are the sums of the components' ones, and the
result is ``"optimal"`` only when every component is proven.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse.csgraph import connected_components

try:  # HiGHS's own bindings: start solutions and the MIP dual bound (scipy's milp has neither)
    import highspy
except ImportError:  # pragma: no cover - falls back to scipy.optimize.milp
    highspy = None

__all__ = [
    "CoverageCurve",
    "ReducedInstance",
    "SitingResult",
    "capacitated_curve",
    "cmclp",
    "coverage_curve",
    "greedy_lscp",
    "greedy_mclp",
    "interruptible",
    "lscp",
    "mclp",
    "reduce_instance",
    "split_components",
]

_ROW_BLOCK = 4096  # rows per block in the row-dominance product (bounds peak memory)
_COL_BLOCK = 1024  # columns per block in the column-dominance product
_ROW_DOM_WORK = 3e8  # exact row dominance (A A^T) only up to this many multiply-adds
_EXACT_CURVE_NNZ = 200_000  # coverage_curve solves exactly per k when the reduced nnz is below this
_ILS_MIN_NNZ = 20_000  # MCLP: iterated swaps before HiGHS from this many reduced non-zeros


# ---------------------------------------------------------------------------------------------
# Interruption: a caller's "stop now" turns every deadline into one already past
# ---------------------------------------------------------------------------------------------
_STOPPED_S = 1e7  # once stopped, the clock reads this much later: every deadline (< 115 days) has passed


class _Stop:
    """The stop request of one :func:`interruptible` block: ``should_stop`` is polled, and latched."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop
        self.stopped = False

    def check(self) -> bool:
        if not self.stopped and self.should_stop():
            self.stopped = True
        return self.stopped


_STOP: contextvars.ContextVar[_Stop | None] = contextvars.ContextVar("siting_stop", default=None)


@contextlib.contextmanager
def interruptible(should_stop: Callable[[], bool]) -> Iterator[_Stop]:
    """Let ``should_stop()`` end the solves run inside the block early, e.g. when a job is cancelled.

    Every time budget in this module is checked against :func:`_now`, which jumps past all deadlines
    once ``should_stop()`` has returned true (it is then not called again), and HiGHS gets an
    interrupt callback polling the same function; the solves return at once with what they have,
    as if their time limit had passed (status ``"time_limit"`` unless already proven). The caller
    sees ``stopped`` on the yielded object and should discard such a result. ``should_stop`` is
    called often, from the solving thread and possibly from HiGHS's threads: keep it cheap (rate-limit
    any I/O) and thread-safe. SciPy's ``linprog`` (some LP bounds) cannot be interrupted; it stops
    at its own time limit.
    """
    stop = _Stop(should_stop)
    token = _STOP.set(stop)
    try:
        yield stop
    finally:
        _STOP.reset(token)


def _stopped() -> bool:
    """True once an :func:`interruptible` block's caller asked to stop."""
    stop = _STOP.get()
    return stop is not None and stop.check()


def _now() -> float:
    """``time.perf_counter()``, or a time past every deadline once an :func:`interruptible` block's
    caller asked to stop. Used for every deadline check (budgets start from the real clock)."""
    return time.perf_counter() + (_STOPPED_S if _stopped() else 0.0)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReducedInstance:
    """A siting instance after reductions, with maps back to the original positions.

    Attributes
    ----------
    A : csr_array, shape (m, q)
        Reduced coverage matrix (int32 ones).
    pop : ndarray, shape (m,)
        Population of each reduced row (sum over the merged identical demand points).
    row_of_demand : ndarray of intp, shape (n_demand,)
        Reduced row of each original demand point; -1 when the point left the instance (covered by
        an existing facility, uncoverable, zero population (MCLP), dominated or covered by a fixed
        candidate (LSCP)).
    candidate_idx : ndarray of intp, shape (q,)
        Original candidate position of each reduced column.
    fixed_idx : ndarray of intp
        Original candidate positions in every optimal LSCP solution (sole cover of some demand).
    uncoverable_idx : ndarray of intp
        Original demand positions that no candidate and no existing facility covers.
    capacity : ndarray or None
        Capacity of each reduced column (CMCLP only).
    n_existing_covered, n_merged_rows, n_dominated_rows, n_dominated_cols : int
        What each reduction removed.
    seconds : float
    """

    A: sp.csr_array
    pop: NDArray[np.float64]
    row_of_demand: NDArray[np.intp]
    candidate_idx: NDArray[np.intp]
    fixed_idx: NDArray[np.intp]
    uncoverable_idx: NDArray[np.intp]
    capacity: NDArray[np.float64] | None
    n_existing_covered: int
    n_merged_rows: int
    n_dominated_rows: int
    n_dominated_cols: int
    seconds: float

    @property
    def shape(self) -> tuple[int, int]:
        """Reduced (rows, columns)."""
        return (int(self.A.shape[0]), int(self.A.shape[1]))


@dataclass(frozen=True, eq=False)
class SitingResult:
    """Outcome of a siting run.

    Attributes
    ----------
    problem : str
        ``"lscp"``, ``"mclp"`` or ``"cmclp"``.
    status : str
        ``"optimal"`` (proven, within ``mip_rel_gap``), ``"time_limit"`` (stopped with the gap
        below) or ``"heuristic"`` (no exact solve was attempted).
    method : str
        What produced ``selected_idx``: ``"milp"`` or ``"heuristic"``.
    objective : float
        LSCP: number of new sites. MCLP: population newly covered (beyond existing coverage).
        CMCLP: population served by new and existing sites together.
    bound : float
        Best proven bound on ``objective`` (lower for LSCP, upper for MCLP/CMCLP).
    gap : float
        ``|objective - bound| / |objective|`` (0 when they agree, inf when objective is 0).
    seconds : float
    selected_idx : ndarray of intp
        Chosen candidates, original positions, ordered by decreasing ``added_population``.
    added_population : ndarray of float64
        Per chosen site: LSCP/MCLP its marginal new coverage when the chosen sites are added in
        greedy order (the figures sum to the new coverage); CMCLP the population assigned to it.
    population_total, population_existing, population_covered : float
        All demand; covered by existing facilities alone (CMCLP: assigned to existing sites);
        covered (CMCLP: served) after the new sites.
    uncoverable_idx : ndarray of intp
        Demand positions no candidate and no existing facility can reach.
    uncoverable_population : float
    served_population : ndarray of float64, shape (n_demand,)
        Population covered/served at each demand point after the new sites.
    reduced_shape : tuple of int
        (rows, columns) the exact solver saw.
    message : str
    """

    problem: str
    status: str
    method: str
    objective: float
    bound: float
    gap: float
    seconds: float
    selected_idx: NDArray[np.intp]
    added_population: NDArray[np.float64]
    population_total: float
    population_existing: float
    population_covered: float
    uncoverable_idx: NDArray[np.intp]
    uncoverable_population: float
    served_population: NDArray[np.float64]
    reduced_shape: tuple[int, int]
    message: str = ""

    @property
    def count(self) -> int:
        """Number of new sites chosen."""
        return int(self.selected_idx.size)


@dataclass(frozen=True, eq=False)
class CoverageCurve:
    """Population covered with k = 1..K new sites; iterating yields ``(k, population_covered)``.

    Attributes
    ----------
    k : ndarray of intp
    population_covered : ndarray of float64
        Covered population (existing coverage included) with k new sites.
    bound : ndarray of float64
        Proven upper bound on the covered population with k new sites.
    status : tuple of str
        Per k: ``"optimal"``, ``"time_limit"`` or ``"heuristic"`` (greedy + swaps, not proven).
    method : str
        ``"exact"`` when every k was attempted with the MILP, ``"greedy"`` otherwise.
    population_existing, population_total : float
    """

    k: NDArray[np.intp]
    population_covered: NDArray[np.float64]
    bound: NDArray[np.float64]
    status: tuple[str, ...]
    method: str
    population_existing: float
    population_total: float

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return iter(zip(self.k.tolist(), self.population_covered.tolist()))

    def __len__(self) -> int:
        return int(self.k.size)


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------
def _as_csr(A: ArrayLike | sp.sparray | sp.spmatrix) -> sp.csr_array:
    """Binary int32 csr copy with sorted, unique indices."""
    M = sp.csr_array(A, copy=True)
    M.sum_duplicates()
    M.data = (M.data != 0).astype(np.int32)
    M.eliminate_zeros()
    M.sort_indices()
    return M


def _as_pop(pop: ArrayLike | None, n: int) -> NDArray[np.float64]:
    if pop is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(pop, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"pop has {w.size} values for {n} demand points")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("pop must be finite and non-negative")
    return w


def _as_mask(mask: ArrayLike | None, n: int) -> NDArray[np.bool_]:
    if mask is None:
        return np.zeros(n, dtype=bool)
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if m.shape != (n,):
        raise ValueError(f"existing has {m.size} values for {n} demand points")
    return m


# ---------------------------------------------------------------------------------------------
# Reductions (all vectorised / sparse)
# ---------------------------------------------------------------------------------------------
def _merge_identical_rows(A: sp.csr_array) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Group identical rows: return (first row of each group, group of each row)."""
    m, q = A.shape
    if m == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    rng = np.random.default_rng(0x5171)
    # Two random 64-bit hashes; unsigned wrap-around addition is order-independent, so equal
    # rows hash equal exactly. Collisions are checked below.
    W = rng.integers(1, np.iinfo(np.uint64).max, size=(q, 2), dtype=np.uint64, endpoint=True)
    H = A.astype(np.uint64) @ W
    deg = np.diff(A.indptr).astype(np.uint64)
    key = np.column_stack([deg, H])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    diff = A - A[first[inverse]]
    diff.eliminate_zeros()
    if diff.nnz:  # a hash collision: astronomically unlikely; fall back to exact bytes keys
        seen: dict[bytes, int] = {}
        inverse = np.empty(m, np.intp)
        firsts: list[int] = []
        for i in range(m):
            key_b = A.indices[A.indptr[i] : A.indptr[i + 1]].tobytes()
            g = seen.setdefault(key_b, len(firsts))
            if g == len(firsts):
                firsts.append(i)
            inverse[i] = g
        first = np.asarray(firsts, dtype=np.intp)
    return first.astype(np.intp), inverse.astype(np.intp)


def _one_deletion_dominated(A: sp.csr_array) -> NDArray[np.bool_]:
    """Rows (pairwise distinct, sorted indices) equal to another row plus one column.

    Linear in nnz: with additive random row hashes ``H_i = sum_{j in i} W_j``, row ``i`` minus
    column ``j`` hashes to ``H_i - W_j``; every such key is looked up among the row hashes, and
    each hit is checked exactly (``|k & i| = |k| = |i| - 1``), so a hash collision can only cost
    a reduction, never a wrong one.
    """
    m, q = A.shape
    dominated = np.zeros(m, dtype=bool)
    if m < 2 or A.nnz == 0:
        return dominated
    deg = np.diff(A.indptr)
    rng = np.random.default_rng(0x5172)
    W = rng.integers(1, np.iinfo(np.uint64).max, size=(q, 2), dtype=np.uint64, endpoint=True)
    H = A.astype(np.uint64) @ W
    order = np.argsort(H[:, 0], kind="stable")
    h_sorted = H[order, 0]
    for lo in range(0, A.nnz, 1 << 22):  # entries in chunks (bounds peak memory)
        hi = min(lo + (1 << 22), A.nnz)
        rows_e = np.searchsorted(A.indptr, np.arange(lo, hi), side="right") - 1
        cols_e = A.indices[lo:hi]
        key = H[rows_e, 0] - W[cols_e, 0]  # uint64 wrap-around
        pos = np.minimum(np.searchsorted(h_sorted, key), m - 1)
        hit = h_sorted[pos] == key
        i_arr, k_arr, j_arr = rows_e[hit], order[pos[hit]], cols_e[hit]
        ok = (deg[k_arr] == deg[i_arr] - 1) & (H[k_arr, 1] == H[i_arr, 1] - W[j_arr, 1])
        i_arr, k_arr = i_arr[ok], k_arr[ok]
        if i_arr.size:
            inter = np.asarray(A[k_arr].multiply(A[i_arr]).sum(axis=1)).reshape(-1)
            dominated[i_arr[inter == deg[k_arr]]] = True
    return dominated


def _dominated_rows(A: sp.csr_array, max_work: float | None = None) -> NDArray[np.bool_]:
    """Rows (pairwise distinct) whose candidate set strictly contains another row's.

    First the linear-time one-deletion pass (:func:`_one_deletion_dominated`, most of them on
    geometric instances), then, on the rows left, the exact check by the blocked product
    ``A A^T`` when its work (``sum_j |column j|^2``) is at most ``max_work``; otherwise the
    result is a subset of the dominated rows (still a valid reduction). Completeness of the
    second pass: a row containing a removed row also contains that row's minimal subset row,
    which is never removed.
    """
    dominated = _one_deletion_dominated(A)
    left = np.flatnonzero(~dominated)
    B = A[left]
    cnt = np.diff(sp.csc_array(B).indptr).astype(np.float64)
    if float(cnt @ cnt) > (_ROW_DOM_WORK if max_work is None else max_work):
        return dominated
    deg = np.diff(B.indptr)
    Bt = B.T.tocsr()
    for start in range(0, B.shape[0], _ROW_BLOCK):
        S = (B[start : start + _ROW_BLOCK] @ Bt).tocoo()
        r = S.row.astype(np.intp) + start
        c = S.col.astype(np.intp)
        hit = (S.data == deg[c]) & (r != c)
        dominated[left[r[hit]]] = True
    return dominated


def _dominated_cols(A: sp.csr_array) -> NDArray[np.bool_]:
    """Columns covering nothing, or a subset of another column; among equal ones the first stays.

    A column ``k`` containing column ``j`` must cover ``j``'s rarest row (the row of ``j`` with
    the fewest columns), so only the pairs ``(j, k in that row)`` are checked, exactly, by their
    intersection size: work about ``sum_j |j| * min degree`` instead of the ``A^T A`` product.
    """
    m, q = A.shape
    Ac = sp.csc_array(A)
    Ac.sort_indices()
    cnt = np.diff(Ac.indptr)
    dominated = cnt == 0
    nz = np.flatnonzero(cnt > 0)
    if nz.size < 2:
        return dominated
    deg = np.diff(A.indptr).astype(np.int64)
    key = deg[Ac.indices] * np.int64(m) + Ac.indices.astype(np.int64)
    rare = (np.minimum.reduceat(key, Ac.indptr[nz]) % m).astype(np.intp)  # rarest row per column
    n_pair = deg[rare]
    j_all = np.repeat(nz, n_pair)
    offs = np.arange(j_all.size) - np.repeat(np.cumsum(n_pair) - n_pair, n_pair)
    k_all = A.indices[np.repeat(A.indptr[rare], n_pair) + offs].astype(np.intp)
    keep = (k_all != j_all) & (cnt[k_all] >= cnt[j_all])
    j_all, k_all = j_all[keep], k_all[keep]
    work = np.cumsum(cnt[j_all])
    step = 1 << 22
    start = 0
    while start < j_all.size:  # pairs in chunks of about 4 M entries
        stop = max(int(np.searchsorted(work, (work[start - 1] if start else 0) + step)), start + 1)
        j, k = j_all[start:stop], k_all[start:stop]
        inter = np.asarray(Ac[:, j].multiply(Ac[:, k]).sum(axis=0)).reshape(-1)
        wins = (inter == cnt[j]) & ((cnt[k] != cnt[j]) | (k < j))
        dominated[j[wins]] = True
        start = stop
    return dominated


def reduce_instance(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    pop: ArrayLike | None = None,
    existing: ArrayLike | None = None,
    *,
    problem: str = "lscp",
    capacity: ArrayLike | None = None,
) -> ReducedInstance:
    """Shrink a siting instance without changing its optimum.

    Drops demand already covered by existing facilities and uncoverable demand (reported in
    ``uncoverable_idx``), merges identical demand rows (summing ``pop``), and drops dominated
    columns (a candidate whose covered set is a subset of another's, or equal with a higher
    position). For ``problem="lscp"`` it also drops dominated rows (a row whose candidate set
    strictly contains another row's: covering the smaller covers it) and fixes candidates that
    are the sole cover of some row. For ``"mclp"`` zero-population rows go. For ``"cmclp"`` only
    candidates reaching no demand go (with capacities, a site covering a subset of another's demand
    can still add service). Repeats until nothing changes.

    Parameters
    ----------
    A : sparse (n_demand, n_candidates)
        Non-zero where the candidate covers the demand point.
    pop : (n_demand,) array, optional
        Population (weights); ones when omitted.
    existing : (n_demand,) bool array, optional
        Demand already covered by existing facilities.
    problem : {"lscp", "mclp", "cmclp"}
    capacity : (n_candidates,) array, optional
        Candidate capacities (``"cmclp"`` only; carried through to ``ReducedInstance.capacity``).

    Returns
    -------
    ReducedInstance

    Examples
    --------
    Rows 0 and 1 are identical; row 2 {c0, c1} contains row 0 {c0}; column 1 covers a subset of
    column 0; row 3 is covered already; row 4 is out of reach:

    >>> A = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0]])
    >>> red = reduce_instance(A, pop=[1, 2, 3, 4, 5], existing=[0, 0, 0, 1, 0])
    >>> red.shape, red.fixed_idx.tolist(), red.uncoverable_idx.tolist()
    ((0, 0), [0], [4])
    >>> red = reduce_instance(A, pop=[1, 2, 3, 4, 5], existing=[0, 0, 0, 1, 0], problem="mclp")
    >>> red.A.toarray().tolist(), red.pop.tolist(), red.candidate_idx.tolist()
    ([[1]], [6.0], [0])
    """
    t0 = time.perf_counter()
    if problem not in ("lscp", "mclp", "cmclp"):
        raise ValueError(f"unknown problem {problem!r}")
    M = _as_csr(A)
    n, q0 = M.shape
    w = _as_pop(pop, n)
    ex = _as_mask(existing, n)
    cap = None
    if capacity is not None:
        cap = np.asarray(capacity, dtype=np.float64).reshape(-1)
        if cap.shape != (q0,):
            raise ValueError(f"capacity has {cap.size} values for {q0} candidates")
    deg0 = np.diff(M.indptr)
    uncoverable = ~ex & (deg0 == 0)
    keep = ~ex & ~uncoverable
    if problem != "lscp":
        keep &= w > 0
    rows = np.flatnonzero(keep)
    row_of_demand = np.full(n, -1, dtype=np.intp)
    row_of_demand[rows] = np.arange(rows.size)
    M = M[rows]
    w_r = w[rows]
    cols = np.arange(q0, dtype=np.intp)
    fixed: list[NDArray[np.intp]] = []
    n_merged = n_dom_rows = n_dom_cols = 0

    def drop_rows(keep_rows: NDArray[np.bool_]) -> None:
        nonlocal M, w_r, row_of_demand
        new_index = np.full(keep_rows.size + 1, -1, dtype=np.intp)  # slot -1 keeps -1
        new_index[np.flatnonzero(keep_rows)] = np.arange(int(keep_rows.sum()))
        row_of_demand = new_index[row_of_demand]
        M = M[np.flatnonzero(keep_rows)]
        w_r = w_r[keep_rows]

    changed = True
    while changed and M.shape[0] and M.shape[1] and not _stopped():  # each round is exact on its own
        changed = False
        first, inverse = _merge_identical_rows(M)
        if first.size < M.shape[0]:
            n_merged += M.shape[0] - first.size
            w_r = np.bincount(inverse, weights=w_r, minlength=first.size)
            mapped = np.full(inverse.size + 1, -1, dtype=np.intp)
            mapped[: inverse.size] = inverse
            row_of_demand = mapped[row_of_demand]
            M = M[first]
            changed = True
        if problem == "lscp":
            dom = _dominated_rows(M)
            if dom.any():
                n_dom_rows += int(dom.sum())
                drop_rows(~dom)
                changed = True
        if problem == "cmclp":  # with capacities a subset column can still add service
            dom_c = np.diff(M.tocsc().indptr) == 0
        else:
            dom_c = _dominated_cols(M)
        if dom_c.any():
            n_dom_cols += int(dom_c.sum())
            keep_c = np.flatnonzero(~dom_c)
            M = M[:, keep_c]
            M.sort_indices()
            cols = cols[keep_c]
            changed = True
        if problem == "lscp" and M.shape[0]:
            deg = np.diff(M.indptr)
            sole = np.unique(M.indices[M.indptr[:-1][deg == 1]])
            if sole.size:
                fixed.append(cols[sole])
                covered = np.asarray(M[:, sole].sum(axis=1)).reshape(-1) > 0
                drop_rows(~covered)
                keep_c = np.setdiff1d(np.arange(M.shape[1]), sole)
                M = M[:, keep_c]
                M.sort_indices()
                cols = cols[keep_c]
                changed = True
    if M.shape[0] == 0:  # nothing left to cover: no column is useful
        n_dom_cols += M.shape[1]
        M = sp.csr_array((0, 0), dtype=np.int32)
        cols = cols[:0]
    elif M.shape[1] == 0:  # cannot happen (every kept row has a column), kept for safety
        M = sp.csr_array((M.shape[0], 0), dtype=np.int32)
    M.sort_indices()
    return ReducedInstance(
        A=M,
        pop=np.asarray(w_r, dtype=np.float64),
        row_of_demand=row_of_demand,
        candidate_idx=cols,
        fixed_idx=np.sort(np.concatenate(fixed)) if fixed else np.zeros(0, np.intp),
        uncoverable_idx=np.flatnonzero(uncoverable),
        capacity=None if cap is None else cap[cols],
        n_existing_covered=int(ex.sum()),
        n_merged_rows=n_merged,
        n_dominated_rows=n_dom_rows,
        n_dominated_cols=n_dom_cols,
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------------------
# Heuristics on a reduced instance (positions are reduced columns)
# ---------------------------------------------------------------------------------------------
def _greedy_cover(A: sp.csr_array) -> NDArray[np.intp]:
    """Greedy set cover of every row, then drop redundant picks."""
    m, q = A.shape
    if m == 0:
        return np.zeros(0, np.intp)
    Ac = A.tocsc()
    uncovered = np.ones(m, dtype=bool)
    cnt = np.diff(Ac.indptr).astype(np.int64)
    chosen: list[int] = []
    while uncovered.any():
        j = int(np.argmax(cnt))
        rows = Ac.indices[Ac.indptr[j] : Ac.indptr[j + 1]]
        rows = rows[uncovered[rows]]
        uncovered[rows] = False
        sub = A[rows]
        cnt -= np.bincount(sub.indices, minlength=q)
        chosen.append(j)
    return _drop_redundant(Ac, np.asarray(chosen, dtype=np.intp))


def _drop_redundant(Ac: sp.csc_array, chosen: NDArray[np.intp]) -> NDArray[np.intp]:
    """Remove picks whose rows are all covered twice, smallest first."""
    m = Ac.shape[0]
    c = np.zeros(m, dtype=np.int64)
    for j in chosen:
        c[Ac.indices[Ac.indptr[j] : Ac.indptr[j + 1]]] += 1
    sizes = np.diff(Ac.indptr)[chosen]
    keep = np.ones(chosen.size, dtype=bool)
    for a in np.argsort(sizes, kind="stable"):
        rows = Ac.indices[Ac.indptr[chosen[a]] : Ac.indptr[chosen[a] + 1]]
        if np.all(c[rows] >= 2):
            c[rows] -= 1
            keep[a] = False
    return chosen[keep]


def _two_for_one(A: sp.csr_array, cover: NDArray[np.intp], deadline: float) -> NDArray[np.intp]:
    """Local search on a cover of every row of A: replace two chosen columns by one, repeatedly.

    With ``U_a`` the rows only chosen column ``a`` covers, a candidate ``k`` can replace ``a``
    and ``b`` together when it covers ``U_a`` and ``U_b``: the pairs come from one sparse
    product (``F^T F``, ``F[k, a]`` = "k covers all of U_a"). Disjoint pairs are swapped at once,
    the result repaired (greedy) and redundant picks dropped; a round is kept only if it shrinks
    the cover. Returns a cover no larger than ``cover``.
    """
    m, q = A.shape
    Ac = A.tocsc()
    At = sp.csr_array(A.T).astype(np.float64)
    cur = _drop_redundant(Ac, np.unique(np.asarray(cover, dtype=np.intp)))
    while cur.size >= 2 and _now() < deadline:
        As = A[:, cur].tocsr()
        cnt = np.diff(As.indptr)
        uniq = np.flatnonzero(cnt == 1)
        owner = As[uniq].indices  # the one chosen column (position in cur) covering each
        P = sp.csr_array((np.ones(uniq.size), (uniq, owner)), shape=(m, cur.size))
        n_u = np.bincount(owner, minlength=cur.size)
        C = (At @ P).tocoo()  # C[k, a]: rows of U_a that k covers
        full = C.data == n_u[C.col]
        F = sp.csc_array((np.ones(int(full.sum())), (C.row[full], C.col[full])), shape=(q, cur.size))
        G = (F.T @ F).tocoo()
        off = G.row < G.col
        if not off.any():
            break
        used = np.zeros(cur.size, dtype=bool)
        out: list[int] = []
        add: list[int] = []
        for a, b in zip(G.row[off].tolist(), G.col[off].tolist()):
            if used[a] or used[b]:
                continue
            k = np.intersect1d(F.indices[F.indptr[a] : F.indptr[a + 1]], F.indices[F.indptr[b] : F.indptr[b + 1]])
            if k.size:
                used[a] = used[b] = True
                out += [a, b]
                add.append(int(k[0]))
        keep = np.ones(cur.size, dtype=bool)
        keep[out] = False
        cand = _repair_cover(A, np.union1d(cur[keep], np.asarray(add, dtype=np.intp)))
        if cand.size >= cur.size:
            break
        cur = cand
    return cur


def _lns_cover(A: sp.csr_array, cover: NDArray[np.intp], deadline: float, hops: int = 2,
               seed: int = 0, p_equal: float = 0.5, sub_limit_s: float = 0.15) -> NDArray[np.intp]:
    """Large-neighbourhood search on a cover of every row of A, with exact re-covering by HiGHS.

    Repeatedly: a random chosen column and the chosen columns within ``hops`` column-row-column
    steps of it leave the cover; the rows left uncovered are covered again optimally by a small
    MILP (the removed columns are its start), stopped after ``sub_limit_s``: many short tries beat
    few long ones (on the demo city, 39,223 x 13,401, 20 s from 1,096 sites: 1,028-1,038 with
    0.15 s, 1,060-1,067 with 1 s). Fewer columns: kept; as many: kept with probability
    ``p_equal`` (moves along plateaus). Returns a cover no larger than ``cover``.
    """
    m, q = A.shape
    Ac = A.tocsc()
    rng = np.random.default_rng(seed)
    in_s = np.zeros(q, dtype=bool)
    in_s[np.asarray(cover, dtype=np.intp)] = True
    cnt = np.asarray(Ac[:, np.flatnonzero(in_s)].sum(axis=1)).reshape(-1).astype(np.int64)

    def rows_of(cols: NDArray[np.intp]) -> NDArray[np.intp]:
        return np.concatenate([Ac.indices[Ac.indptr[j] : Ac.indptr[j + 1]] for j in cols])

    while _now() < deadline - 0.05 and in_s.any():
        cols = np.array([int(rng.choice(np.flatnonzero(in_s)))], dtype=np.intp)
        for _ in range(hops):
            cols = np.unique(A[np.unique(rows_of(cols))].indices).astype(np.intp)
        out = cols[in_s[cols]]
        lost = np.flatnonzero(cnt - np.bincount(rows_of(out), minlength=m) == 0)
        sub = A[lost]
        sc = np.unique(sub.indices)
        loc = np.full(q, -1, dtype=np.intp)
        loc[sc] = np.arange(sc.size)
        S = sp.csr_array((sub.data, loc[sub.indices], sub.indptr), shape=(lost.size, sc.size))
        cons = [LinearConstraint(S, lb=np.ones(lost.size), ub=np.inf)]
        st, x, _, _ = _run_milp(np.ones(sc.size), cons, Bounds(0, 1), np.ones(sc.size),
                                min(sub_limit_s, deadline - _now()), 1e-9,
                                np.isin(sc, out).astype(np.float64))
        if x is None:
            continue
        pick = np.flatnonzero(x > 0.5)
        whole = st == 0 and out.size == int(in_s.sum()) and lost.size == m  # solved outright
        if pick.size > out.size or (pick.size == out.size and rng.random() >= p_equal and not whole):
            continue
        if not np.all(np.asarray(S[:, pick].sum(axis=1)).reshape(-1) >= 1):
            continue
        cnt -= np.bincount(rows_of(out), minlength=m)
        in_s[out] = False
        cnt += np.bincount(rows_of(sc[pick]), minlength=m) if pick.size else 0
        in_s[sc[pick]] = True
        if whole:
            break
    return _drop_redundant(Ac, np.flatnonzero(in_s).astype(np.intp))


def _repair_cover(A: sp.csr_array, chosen: NDArray[np.intp]) -> NDArray[np.intp]:
    """Complete ``chosen`` to a cover of every row of A (greedy), then drop redundant picks."""
    m, q = A.shape
    Ac = A.tocsc()
    chosen = np.unique(np.asarray(chosen, dtype=np.intp))
    if m == 0:
        return np.zeros(0, np.intp)
    covered = np.asarray(Ac[:, chosen].sum(axis=1)).reshape(-1) > 0 if chosen.size else np.zeros(m, bool)
    if not covered.all():
        rest = np.flatnonzero(~covered)
        extra = _greedy_cover(sp.csr_array(A[rest]))
        chosen = np.union1d(chosen, extra)
    return _drop_redundant(Ac, chosen)


def _greedy_max_cover(A: sp.csr_array, w: NDArray[np.float64], p: int) -> NDArray[np.intp]:
    """Greedy MCLP: p times the column with the largest uncovered weight."""
    m, q = A.shape
    Ac = A.tocsc()
    uncovered = np.ones(m, dtype=bool)
    gain = np.asarray(A.T @ w, dtype=np.float64).reshape(-1)
    chosen: list[int] = []
    for _ in range(min(p, q)):
        j = int(np.argmax(gain))
        if gain[j] <= 0:
            break
        rows = Ac.indices[Ac.indptr[j] : Ac.indptr[j + 1]]
        rows = rows[uncovered[rows]]
        uncovered[rows] = False
        sub = A[rows]
        gain -= np.bincount(sub.indices, weights=np.repeat(w[rows], np.diff(sub.indptr)), minlength=q)
        gain[j] = -np.inf
        chosen.append(j)
    return np.asarray(chosen, dtype=np.intp)


def _swap_search(
    A: sp.csr_array, w: NDArray[np.float64], chosen: NDArray[np.intp], deadline: float, max_iter: int = 500,
    Ac: sp.csc_array | None = None,
) -> NDArray[np.intp]:
    """Best-improvement 1-for-1 swaps (Teitz & Bart 1968) for MCLP until no swap helps.

    ``Ac``: A as csc, when the caller already has it (repeated calls).
    """
    m, q = A.shape
    S = chosen.copy()
    if S.size == 0 or S.size >= q:
        return S
    Ac = A.tocsc() if Ac is None else Ac
    c = np.asarray(Ac[:, S].sum(axis=1)).reshape(-1).astype(np.int64)
    total = float(w.sum())
    for _ in range(max_iter):
        if _now() > deadline:
            break
        gain = np.asarray(A.T @ (w * (c == 0)), dtype=np.float64).reshape(-1)
        r1 = np.flatnonzero(c == 1)  # rows covered exactly once: only they can be lost
        A1 = A[r1]
        AS = A1[:, S]
        loss = np.asarray(AS.T @ w[r1], dtype=np.float64).reshape(-1)
        # M[a, k]: weight covered only by S[a] that candidate k also covers.
        M = (AS.T.multiply(w[r1][None, :])).tocsr() @ A1
        delta = np.asarray(M.toarray(), dtype=np.float64) + gain[None, :] - loss[:, None]
        delta[:, S] = -np.inf
        a, k = np.unravel_index(int(np.argmax(delta)), delta.shape)
        if delta[a, k] <= 1e-9 * max(total, 1.0):
            break
        out = S[a]
        c[Ac.indices[Ac.indptr[out] : Ac.indptr[out + 1]]] -= 1
        c[Ac.indices[Ac.indptr[k] : Ac.indptr[k + 1]]] += 1
        S[a] = k
    return S


def _covered_weight(A: sp.csr_array, w: NDArray[np.float64], S: NDArray[np.intp]) -> float:
    if S.size == 0 or A.shape[0] == 0:
        return 0.0
    hit = np.asarray(A[:, S].sum(axis=1)).reshape(-1) > 0
    return float(w[hit].sum())


# ---------------------------------------------------------------------------------------------
# MILP / LP models, built directly as sparse matrices
# ---------------------------------------------------------------------------------------------
def _milp_options(time_limit_s: float, mip_rel_gap: float) -> dict:
    return {"time_limit": max(float(time_limit_s), 0.05), "mip_rel_gap": mip_rel_gap, "disp": False}


def _lscp_model(A: sp.csr_array, integral: bool):
    m, q = A.shape
    c = np.ones(q)
    cons = [LinearConstraint(A, lb=np.ones(m), ub=np.inf)]
    return c, cons, Bounds(0, 1), np.ones(q) if integral else np.zeros(q)


def _mclp_model(A: sp.csr_array, w: NDArray[np.float64], p: int, integral: bool):
    m, q = A.shape
    # Variables [x (q) | y (m)]; y_i <= sum_j A_ij x_j ; sum x <= p ; maximise w.y
    G = sp.hstack([-A.astype(np.float64), sp.eye_array(m, format="csr")], format="csr")
    card = sp.csr_array((np.ones(q), (np.zeros(q, np.intp), np.arange(q))), shape=(1, q + m))
    cons = [LinearConstraint(G, lb=-np.inf, ub=0.0), LinearConstraint(card, lb=-np.inf, ub=float(p))]
    c = np.concatenate([np.zeros(q), -w])
    integrality = np.concatenate([np.ones(q) if integral else np.zeros(q), np.zeros(m)])
    return c, cons, Bounds(0, 1), integrality


def _mclp_lp(A: sp.csr_array, w: NDArray[np.float64], p: int, time_limit_s: float):
    """LP relaxation of MCLP by HiGHS interior point (far faster than dual simplex here).

    Returns (upper bound or None, fractional x or None).
    """
    m, q = A.shape
    G = sp.vstack([sp.hstack([-A.astype(np.float64), sp.eye_array(m, format="csr")], format="csr"),
                   sp.csr_array(np.concatenate([np.ones(q), np.zeros(m)])[None, :])], format="csr")
    res = linprog(np.concatenate([np.zeros(q), -w]), A_ub=G, b_ub=np.concatenate([np.zeros(m), [p]]),
                  bounds=(0, 1), method="highs-ipm", options={"time_limit": max(time_limit_s, 0.05)})
    if res.status != 0 or res.x is None:
        return None, None
    return float(-res.fun), np.asarray(res.x[:q])


def _lp_bound(c, cons, bounds, time_limit_s: float) -> float | None:
    """Optimal value of the LP relaxation (None if it did not finish)."""
    res = milp(c, integrality=np.zeros_like(c), bounds=bounds, constraints=cons,
               options=_milp_options(time_limit_s, 1e-9))
    if res.status == 0 and res.fun is not None:
        return float(res.fun)
    return None


def _stack_constraints(cons, n_var: int) -> tuple[sp.csr_array, NDArray[np.float64], NDArray[np.float64]]:
    """One csr matrix with row bounds from a list of ``LinearConstraint``."""
    mats, lo, hi = [], [], []
    for con in cons:
        M = sp.csr_array(con.A, dtype=np.float64) if sp.issparse(con.A) else \
            sp.csr_array(np.atleast_2d(np.asarray(con.A, dtype=np.float64)))
        k = M.shape[0]
        mats.append(M)
        lo.append(np.broadcast_to(np.asarray(con.lb, dtype=np.float64), (k,)))
        hi.append(np.broadcast_to(np.asarray(con.ub, dtype=np.float64), (k,)))
    if not mats:
        return sp.csr_array((0, n_var)), np.zeros(0), np.zeros(0)
    G = sp.vstack(mats, format="csr")
    G.sort_indices()
    return G, np.concatenate(lo), np.concatenate(hi)


_HIGHS_QUIET = False


def _new_highs():
    """A ``highspy.Highs``; the first one per process prints a banner to fd 1 from C++: hide it."""
    global _HIGHS_QUIET
    if _HIGHS_QUIET:
        return highspy.Highs()
    import ctypes
    import os
    import sys

    try:
        sys.stdout.flush()
    except (AttributeError, ValueError):  # pragma: no cover - closed or replaced stdout
        pass
    try:
        saved = os.dup(1)
    except OSError:  # pragma: no cover - no fd 1 at all
        _HIGHS_QUIET = True
        return highspy.Highs()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
        try:
            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):  # pragma: no cover - no C library handle
            pass
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _HIGHS_QUIET = True
    return h


def _run_highs(c, cons, bounds, integrality, time_limit_s: float, mip_rel_gap: float,
               x0: NDArray[np.float64] | None):
    """``_run_milp`` through highspy: takes a start solution, reports HiGHS's MIP dual bound."""
    n = int(np.asarray(c).size)
    G, lo, hi = _stack_constraints(cons, n)
    inf = highspy.kHighsInf
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", max(float(time_limit_s), 0.05))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    h.setOptionValue("random_seed", 0)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, G.shape[0]
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.broadcast_to(np.asarray(bounds.lb, dtype=np.float64), (n,)).copy()
    lp.col_upper_ = np.broadcast_to(np.asarray(bounds.ub, dtype=np.float64), (n,)).copy()
    lp.row_lower_ = np.where(np.isfinite(lo), lo, -inf)
    lp.row_upper_ = np.where(np.isfinite(hi), hi, inf)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, G.shape[0]
    lp.a_matrix_.start_ = G.indptr.astype(np.int32)
    lp.a_matrix_.index_ = G.indices.astype(np.int32)
    lp.a_matrix_.value_ = G.data.astype(np.float64)
    integ = np.asarray(integrality).reshape(-1) > 0
    lp.integrality_ = [highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous
                       for v in integ]
    h.passModel(lp)
    stop = _STOP.get()
    if stop is not None:  # the caller's stop request interrupts simplex, IPM and the MIP search

        def _interrupt(e):
            if stop.check():
                e.interrupt()

        h.cbSimplexInterrupt += _interrupt
        h.cbIpmInterrupt += _interrupt
        h.cbMipInterrupt += _interrupt
    if x0 is not None:
        sol = highspy.HighsSolution()
        sol.col_value = np.asarray(x0, dtype=np.float64).tolist()
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    MS = highspy.HighsModelStatus
    if ms == MS.kOptimal:
        status = 0
    elif ms == MS.kInfeasible:
        status = 2
    elif ms in (MS.kTimeLimit, MS.kIterationLimit, MS.kSolutionLimit, MS.kInterrupt):
        status = 1
    else:
        status = 4
    x = None
    if info.primal_solution_status == 2:  # kSolutionStatusFeasible
        x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    dual = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else None
    if status == 0 and x is not None:
        dual = float(info.objective_function_value) if dual is None else dual
    return status, x, dual, f"HiGHS {h.version()}: {h.modelStatusToString(ms)}"


def _run_milp(c, cons, bounds, integrality, time_limit_s: float, mip_rel_gap: float,
              x0: NDArray[np.float64] | None = None):
    """HiGHS MILP: (status as scipy's milp, x or None, dual bound or None, message).

    Uses ``highspy`` when installed (start solution ``x0`` passed in, MIP dual bound reported),
    else :func:`scipy.optimize.milp` (``x0`` ignored).
    """
    if highspy is not None:
        return _run_highs(c, cons, bounds, integrality, time_limit_s, mip_rel_gap, x0)
    res = milp(c, integrality=integrality, bounds=bounds, constraints=cons,
               options=_milp_options(time_limit_s, mip_rel_gap))
    x = None if res.x is None else np.asarray(res.x)
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not np.isfinite(dual):
        dual = float(res.fun) if (res.status == 0 and res.fun is not None) else None
    return res.status, x, dual, str(res.message)


def _gap(obj: float, bound: float) -> float:
    diff = abs(bound - obj)
    if diff <= 1e-9 * max(1.0, abs(bound)):
        return 0.0
    return diff / abs(obj) if obj != 0 else float("inf")


# ---------------------------------------------------------------------------------------------
# Result assembly on the original matrix
# ---------------------------------------------------------------------------------------------
def _assemble(
    problem: str, status: str, method: str, objective: float, bound: float, t0: float,
    A: sp.csr_array, w: NDArray[np.float64], ex: NDArray[np.bool_], selected: NDArray[np.intp],
    uncoverable_idx: NDArray[np.intp], reduced_shape: tuple[int, int], message: str,
) -> SitingResult:
    selected = np.asarray(selected, dtype=np.intp)
    base = ex.copy()
    gains = np.zeros(selected.size)
    order = np.zeros(0, np.intp)
    if selected.size:
        sub = A[:, selected].tocsc()
        wf = w * ~base
        g = np.asarray(sub.T @ wf, dtype=np.float64).reshape(-1)
        left = np.ones(selected.size, dtype=bool)
        order_l: list[int] = []
        for _ in range(selected.size):  # marginal gains in greedy order
            a = int(np.argmax(np.where(left, g, -np.inf)))
            rows = sub.indices[sub.indptr[a] : sub.indptr[a + 1]]
            rows = rows[~base[rows]]
            gains[a] = float(w[rows].sum())
            base[rows] = True
            left[a] = False
            order_l.append(a)
            if rows.size:
                r = A[rows][:, selected]
                g -= np.bincount(r.indices, weights=np.repeat(w[rows], np.diff(r.indptr)),
                                 minlength=selected.size)
        order = np.asarray(order_l, dtype=np.intp)
    served = np.where(base, w, 0.0)
    return SitingResult(
        problem=problem, status=status, method=method, objective=float(objective),
        bound=float(bound), gap=_gap(float(objective), float(bound)),
        seconds=time.perf_counter() - t0,
        selected_idx=selected[order] if selected.size else selected,
        added_population=gains[order] if selected.size else gains,
        population_total=float(w.sum()), population_existing=float(w[ex].sum()),
        population_covered=float(served.sum()), uncoverable_idx=uncoverable_idx,
        uncoverable_population=float(w[uncoverable_idx].sum()), served_population=served,
        reduced_shape=reduced_shape, message=message,
    )


# ---------------------------------------------------------------------------------------------
# Lagrangian relaxation of the LSCP covering constraints (Beasley 1990; Caprara, Fischetti &
# Toth 1999): a lower bound that needs only sparse mat-vecs, reduced costs for variable fixing
# and a greedy on reduced costs that usually beats plain greedy.
# ---------------------------------------------------------------------------------------------
def _lagrangian_value(At: sp.csr_array, u: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
    """``L(u) = sum u + sum_j min(0, 1 - (A^T u)_j)`` (a lower bound on LSCP for any u >= 0)."""
    rc = 1.0 - np.asarray(At @ u, dtype=np.float64)
    return float(u.sum() + rc[rc < 0].sum()), rc


def _lagrangian_lscp(
    A: sp.csr_array, ub: float, deadline: float, max_iter: int = 1000, *,
    u0: NDArray[np.float64] | None = None, heuristic_every: int = 0,
) -> tuple[float, NDArray[np.float64], NDArray[np.intp] | None]:
    """Subgradient optimisation of the LSCP Lagrangian (unit costs).

    Returns ``(L, u, best_cover)``: the best bound found, its multipliers, and the best cover
    the Lagrangian greedy produced (``None`` when ``heuristic_every`` is 0 or none beat ``ub``).
    """
    m, q = A.shape
    At = sp.csr_array(A.T).astype(np.float64)
    Af = A.astype(np.float64)
    if u0 is None:  # u_i = min over the columns covering i of 1 / |column|
        size = np.maximum(np.diff(At.indptr), 1).astype(np.float64)
        u = np.full(m, np.inf)
        np.minimum.at(u, np.repeat(np.arange(m), np.diff(A.indptr)), 1.0 / size[A.indices])
        u[~np.isfinite(u)] = 0.0
    else:
        u = np.maximum(np.asarray(u0, dtype=np.float64), 0.0)
    best_L, best_u = -np.inf, u.copy()
    best_cover: NDArray[np.intp] | None = None
    lam, stall = 1.0, 0
    Ac = A.tocsc() if heuristic_every else None
    for it in range(max_iter):
        L, rc = _lagrangian_value(At, u)
        if L > best_L + 1e-6:
            best_L, best_u, stall = L, u.copy(), 0
        else:
            stall += 1
            if stall >= 50:
                lam, stall = lam / 2.0, 0
        if heuristic_every and it % heuristic_every == heuristic_every - 1:
            cov = _lagrangian_greedy(A, Ac, u)
            if cov.size < ub:
                ub, best_cover = float(cov.size), cov
        if lam < 1e-4 or _now() > deadline or np.ceil(best_L - 1e-6) >= ub:
            break
        x = (rc < 0).astype(np.float64)
        g = 1.0 - np.asarray(Af @ x, dtype=np.float64)
        g[(u <= 0) & (g < 0)] = 0.0
        nrm = float(g @ g)
        if nrm == 0.0:  # x covers every row exactly where u > 0: L(u) is optimal
            break
        u = np.maximum(0.0, u + lam * max(ub - L, 1e-3) / nrm * g)
    return best_L, best_u, best_cover


def _lagrangian_greedy(A: sp.csr_array, Ac: sp.csc_array, u: NDArray[np.float64]) -> NDArray[np.intp]:
    """Greedy cover scored on Lagrangian costs (Caprara et al. 1999), then redundancy removal.

    Score of column j: ``gamma_j / mu_j`` if ``gamma_j > 0`` else ``gamma_j * mu_j``, with
    ``mu_j`` the uncovered rows it covers and ``gamma_j = 1 - sum of u over them``.
    """
    m, q = A.shape
    if m == 0:
        return np.zeros(0, np.intp)
    uncovered = np.ones(m, dtype=bool)
    mu = np.diff(Ac.indptr).astype(np.float64)
    usum = np.asarray(A.T @ u, dtype=np.float64).reshape(-1)
    chosen: list[int] = []
    while uncovered.any():
        gamma = 1.0 - usum
        score = np.where(gamma > 0, gamma / np.maximum(mu, 1e-12), gamma * mu)
        score[mu <= 0] = np.inf
        j = int(np.argmin(score))
        rows = Ac.indices[Ac.indptr[j] : Ac.indptr[j + 1]]
        rows = rows[uncovered[rows]]
        uncovered[rows] = False
        sub = A[rows]
        mu -= np.bincount(sub.indices, minlength=q)
        usum -= np.bincount(sub.indices, weights=np.repeat(u[rows], np.diff(sub.indptr)), minlength=q)
        chosen.append(j)
    return _drop_redundant(Ac, np.asarray(chosen, dtype=np.intp))


def _lagrangian_fixing(
    At: sp.csr_array, u: NDArray[np.float64], target: float,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Columns in no cover of size <= ``target``, and columns in every such cover.

    With ``L = L(u)`` and reduced costs ``rc``: a cover using column j with ``rc_j > 0`` costs at
    least ``L + rc_j``; a cover without column j with ``rc_j < 0`` at least ``L - rc_j``. Both are
    integers, so they are ruled out when that bound rounded up exceeds ``target``. With ``target``
    the optimum no optimal cover is lost; with ``target = UB - 1`` only the covers better than an
    incumbent are kept.
    """
    L, rc = _lagrangian_value(At, u)
    tol = 1e-6
    drop = np.ceil(L + np.maximum(rc, 0.0) - tol) > target + tol
    force = np.ceil(L - np.minimum(rc, 0.0) - tol) > target + tol
    drop &= rc > 0
    force &= rc < 0
    return drop, force


# ---------------------------------------------------------------------------------------------
# LSCP
# ---------------------------------------------------------------------------------------------
def _prepare(A, pop, existing, problem, reduce, capacity=None):
    M = _as_csr(A)
    w = _as_pop(pop, M.shape[0])
    ex = _as_mask(existing, M.shape[0])
    if reduce:
        red = reduce_instance(M, w, ex, problem=problem, capacity=capacity)
    else:
        deg = np.diff(M.indptr)
        unc = ~ex & (deg == 0)
        rows = np.flatnonzero(~ex & ~unc)
        rod = np.full(M.shape[0], -1, np.intp)
        rod[rows] = np.arange(rows.size)
        red = ReducedInstance(
            A=M[rows], pop=w[rows], row_of_demand=rod, candidate_idx=np.arange(M.shape[1]),
            fixed_idx=np.zeros(0, np.intp), uncoverable_idx=np.flatnonzero(unc),
            capacity=None if capacity is None else np.asarray(capacity, np.float64),
            n_existing_covered=int(ex.sum()), n_merged_rows=0, n_dominated_rows=0,
            n_dominated_cols=0, seconds=0.0)
    return M, w, ex, red


_MCLP_LP_MAX_NNZ = 600_000  # MCLP: above this (reduced) the LP / MILP does not finish in time
_MCLP_FIXED_MAX_NNZ = _MCLP_LP_MAX_NNZ  # MCLP: LP / MILP on the instance left after fixing up to this
_MILP_MAX_NNZ = 400_000  # above this (after fixing) HiGHS does not finish the root LP in time
# LSCP: above this (after fixing) HiGHS left the start cover as it was in 72 s (1,000,000 x 5,000
# benchmark, 9,981 x 4,375 reduced, 873 sites): neighbourhood search gets 40 % of the time first.
_LNS_FIRST_NNZ = 50_000


def _lscp_reduced(
    R: sp.csr_array, deadline: float, mip_rel_gap: float, *, lagrange_iter: int = 1000,
    milp_max_nnz: int = _MILP_MAX_NNZ,
) -> tuple[NDArray[np.intp], float, str, str, str]:
    """LSCP on a reduced instance: (reduced columns, lower bound, status, method, message).

    Greedy, then subgradient optimisation of the Lagrangian (bound + Lagrangian greedy), then
    reduced-cost fixing against ``UB - 1`` and HiGHS on what is left: with highspy, the incumbent
    (repaired onto the remaining columns) is HiGHS's start solution; with scipy's milp,
    ``sum x <= UB - 1`` makes it search only for improvements (infeasible: the incumbent is
    optimal). Either way the bound is ``min(UB, fixed + HiGHS's dual bound)``.
    """
    m, q = R.shape
    best = greedy0 = _greedy_cover(R)
    if m == 0:
        return best, 0.0, "optimal", "heuristic", "nothing to cover"
    lag_end = _now() + 0.3 * max(deadline - _now(), 0.0)
    L, u, cov = _lagrangian_lscp(R, float(best.size), lag_end, lagrange_iter, heuristic_every=100)
    msg = "greedy"
    if cov is not None and cov.size < best.size:
        best, msg = cov, "Lagrangian greedy"
    lb = float(np.ceil(L - 1e-6))
    if lb >= best.size:
        return best, float(best.size), "optimal", "heuristic", msg + "; Lagrangian bound met"
    At = sp.csr_array(R.T).astype(np.float64)
    drop, force = _lagrangian_fixing(At, u, best.size - 1.0)
    forced = np.flatnonzero(force)
    keep_cols = np.flatnonzero(~drop & ~force)
    rows_left = np.asarray(R[:, forced].sum(axis=1)).reshape(-1) == 0 if forced.size else np.ones(m, bool)
    R2 = R[np.flatnonzero(rows_left)][:, keep_cols]
    if R2.shape[0] and np.any(np.diff(R2.indptr) == 0):  # a row lost every column: no improvement
        return best, float(best.size), "optimal", "heuristic", msg + "; reduced-cost fixing proves it"
    red2 = reduce_instance(R2, problem="lscp")
    pre = np.concatenate([forced, keep_cols[red2.fixed_idx]])
    target = best.size - 1 - pre.size  # an improvement needs at most this many more columns
    msg += f"; fixing {int(drop.sum())} out, {forced.size} in"
    if target < 0 or (red2.A.shape[0] and target == 0):
        return best, float(best.size), "optimal", "heuristic", msg + "; no improvement possible"
    if red2.A.shape[0] == 0:  # the fixed columns alone cover: an improvement (pre.size < UB)
        return pre.astype(np.intp), float(pre.size), "optimal", "heuristic", msg
    if red2.A.nnz > milp_max_nnz:  # too large for HiGHS: local search, more Lagrangian iterations
        for start in (best, greedy0):
            alt = _two_for_one(R, start, deadline)
            if alt.size < best.size:
                best, msg = alt, msg + f"; 2-for-1 swaps {start.size} -> {alt.size}"
        now = _now()  # the bound moves little from here: most time goes to the cover
        L2, _, cov2 = _lagrangian_lscp(R, float(best.size), now + 0.1 * max(deadline - now, 0.0), 100_000,
                                       u0=u, heuristic_every=100)
        if cov2 is not None and cov2.size < best.size:
            best = _two_for_one(R, cov2, deadline)
        best, n_before = _lns_cover(R, best, deadline), best.size
        if best.size < n_before:
            msg += f"; neighbourhood search {n_before} -> {best.size}"
        lb = max(lb, float(np.ceil(L2 - 1e-6)))
        status = "optimal" if lb >= best.size else "time_limit"
        return best, min(lb, float(best.size)), status, "heuristic", msg + "; Lagrangian bound"
    R3 = red2.A
    q3 = R3.shape[1]
    if R3.nnz > _LNS_FIRST_NNZ:  # HiGHS rarely improves the start here: the cover gets time first
        now = _now()
        best, n_before = _lns_cover(R, best, now + 0.4 * max(deadline - now, 0.0)), best.size
        if best.size < n_before:
            msg += f"; neighbourhood search {n_before} -> {best.size}"
    cons = [LinearConstraint(R3, lb=np.ones(R3.shape[0]), ub=np.inf)]
    x0 = None
    if highspy is not None:  # the incumbent (repaired onto R3) as HiGHS's start solution
        pos = np.full(q, -1, np.intp)
        pos[keep_cols[red2.candidate_idx]] = np.arange(q3)
        start = _repair_cover(R3, pos[best][pos[best] >= 0])
        x0 = np.zeros(q3)
        x0[start] = 1.0
        msg += f"; start {pre.size + start.size}"
    else:  # scipy's milp takes no start: search only for improvements instead
        cons.append(LinearConstraint(np.ones((1, q3)), lb=-np.inf, ub=float(target)))
    t_milp = time.perf_counter()
    # HiGHS 1.16 overran its time limit by up to 70 s on a 9,981 x 4,375 instance (86,514
    # non-zeros) under load, so on large instances it gets only part of the time left.
    share = 0.6 if R3.nnz > 50_000 else 1.0
    st, x, dual, msg_m = _run_milp(np.ones(q3), cons, Bounds(0, 1), np.ones(q3),
                                   share * (deadline - t_milp), mip_rel_gap, x0)
    msg_m += f" after {time.perf_counter() - t_milp:.1f} s on {R3.shape[0]}x{q3}"
    method = "heuristic"
    ub_old = float(best.size)
    if x is not None:
        sel = np.flatnonzero(x > 0.5)
        if pre.size + sel.size < best.size and np.all(R3[:, sel].sum(axis=1) >= 1):
            best = np.concatenate([pre, keep_cols[red2.candidate_idx[sel]]]).astype(np.intp)
            method = "milp"
    if st == 0 and x is not None:
        return best, float(best.size), "optimal", method, msg + "; " + msg_m
    if st == 2:  # no cover with fewer columns than the incumbent
        return best, float(best.size), "optimal", method, msg + "; HiGHS: no better cover exists"
    if dual is not None and np.isfinite(dual):
        lb = max(lb, min(ub_old, float(pre.size + np.ceil(dual - 1e-6))))
    lb = min(lb, float(best.size))
    return best, lb, "optimal" if lb >= best.size else "time_limit", method, msg + "; " + msg_m


def split_components(
    A: ArrayLike | sp.sparray | sp.spmatrix,
) -> tuple[list[NDArray[np.intp]], list[NDArray[np.intp]]]:
    """Connected components of the bipartite demand-candidate graph of a coverage matrix.

    Demand ``i`` and candidate ``j`` are joined when ``A[i, j] != 0``; a component is a set of rows
    and columns no non-zero links to the rest, so covering problems (LSCP) separate over them.
    Computed by :func:`scipy.sparse.csgraph.connected_components` on the ``(m + q) x (m + q)``
    block matrix ``[[0, A], [A^T, 0]]`` (linear in the non-zeros). A row without non-zeros, or a
    column without non-zeros, is a component of its own.

    Parameters
    ----------
    A : sparse (m, q)

    Returns
    -------
    rows_idx, cols_idx : list of ndarray of intp
        Per component its rows and its columns, each sorted; components ordered by their
        smallest row, then (row-less components) by column.

    Examples
    --------
    Rows {0, 2} with columns {0, 2}, row 1 with column 1; column 3 covers nothing:

    >>> A = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    >>> rows_idx, cols_idx = split_components(A)
    >>> [r.tolist() for r in rows_idx], [c.tolist() for c in cols_idx]
    ([[0, 2], [1], []], [[0, 2], [1], [3]])
    """
    M = sp.csr_array(A)
    m, q = M.shape
    if m + q == 0:
        return [], []
    B = sp.block_array([[None, M], [M.T, None]], format="csr") if m and q else \
        sp.csr_array((m + q, m + q), dtype=np.int8)
    n, lab = connected_components(B, directed=False)
    # Renumber: components in order of their first node (rows come first, so of their first row).
    _, first = np.unique(lab, return_index=True)
    rank = np.empty(n, np.intp)
    rank[np.argsort(first, kind="stable")] = np.arange(n)
    lab = rank[lab]
    r_lab, c_lab = lab[:m], lab[m:]
    r_ord = np.argsort(r_lab, kind="stable").astype(np.intp)
    c_ord = np.argsort(c_lab, kind="stable").astype(np.intp)
    r_cut = np.cumsum(np.bincount(r_lab, minlength=n))[:-1]
    c_cut = np.cumsum(np.bincount(c_lab, minlength=n))[:-1]
    return np.split(r_ord, r_cut), np.split(c_ord, c_cut)


_SMALL_COMPONENT_NNZ = 2_000  # LSCP components up to this size go straight to HiGHS


def _lscp_small(
    R: sp.csr_array, deadline: float, mip_rel_gap: float,
) -> tuple[NDArray[np.intp], float, str, str, str] | None:
    """A small LSCP component straight to HiGHS (greedy cover as its start solution): a few
    milliseconds where :func:`_lscp_reduced`'s subgradient loop can take tens. Returns ``None``
    when HiGHS did not prove an optimum (the caller falls back to :func:`_lscp_reduced`).
    """
    m, q = R.shape
    best = _greedy_cover(R)
    if m == 0 or best.size <= 1:
        return best, float(best.size), "optimal", "heuristic", "greedy"
    x0 = np.zeros(q)
    x0[best] = 1.0
    cons = [LinearConstraint(R, lb=np.ones(m), ub=np.inf)]
    st, x, _, msg = _run_milp(np.ones(q), cons, Bounds(0, 1), np.ones(q),
                              max(deadline - _now(), 0.05), mip_rel_gap, x0)
    if st != 0 or x is None:
        return None
    sel = np.flatnonzero(x > 0.5)
    if sel.size > best.size or not np.all(R[:, sel].sum(axis=1) >= 1):
        return None
    return sel.astype(np.intp), float(sel.size), "optimal", "milp", msg


def _lscp_decomposed(
    R: sp.csr_array, deadline: float, mip_rel_gap: float,
) -> tuple[NDArray[np.intp], float, str, str, str]:
    """LSCP on a reduced instance, one connected component at a time (same returns as
    :func:`_lscp_reduced`).

    LSCP separates over the components of the demand-candidate graph: the optimum is the sum of
    the components' optima and any sum of component lower bounds is a lower bound. Components are
    solved smallest first (by non-zeros), each with a share of the time left proportional to its
    size among those left, so time the small ones do not need passes on to the larger ones and
    the largest gets whatever is left. One component: :func:`_lscp_reduced` as is.
    """
    m, q = R.shape
    if m == 0:
        return _lscp_reduced(R, deadline, mip_rel_gap)
    rows_idx, cols_idx = split_components(R)
    comps = [(r, c) for r, c in zip(rows_idx, cols_idx) if r.size]  # row-less: nothing to cover
    if len(comps) <= 1:
        return _lscp_reduced(R, deadline, mip_rel_gap)
    deg = np.diff(R.indptr)
    nnz = np.array([int(deg[r].sum()) for r, _ in comps], dtype=np.float64)
    order = np.argsort(nnz, kind="stable")
    local = np.empty(q, np.intp)
    picks: list[NDArray[np.intp]] = []
    lb_total = 0.0
    n_proven = 0
    any_milp = False
    left = float(nnz.sum())
    largest_msg = ""
    for k, i in enumerate(order):
        rows, cols = comps[i]
        local[cols] = np.arange(cols.size)
        Rr = R[rows]
        # Columns renumbered within the component (``cols`` is sorted: indices stay sorted).
        sub = sp.csr_array((Rr.data, local[Rr.indices], Rr.indptr), shape=(rows.size, cols.size))
        now = _now()
        share = 1.0 if k == len(order) - 1 else nnz[i] / max(left, 1.0)
        end = now + share * max(deadline - now, 0.0)
        res_c = _lscp_small(sub, end, mip_rel_gap) if nnz[i] <= _SMALL_COMPONENT_NNZ else None
        sel, lb, st, method, msg = res_c if res_c is not None else _lscp_reduced(sub, end, mip_rel_gap)
        left -= nnz[i]
        picks.append(cols[sel])
        lb_total += min(float(lb), float(sel.size))
        n_proven += st == "optimal"
        any_milp |= method == "milp"
        largest_msg = f"largest {rows.size}x{cols.size}: {st}, {msg}"
    best = np.concatenate(picks).astype(np.intp)
    status = "optimal" if n_proven == len(comps) else "time_limit"
    msg = f"{len(comps)} components, {n_proven} proven optimal; {largest_msg}"
    return best, min(lb_total, float(best.size)), status, "milp" if any_milp else "heuristic", msg


def lscp(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    existing: ArrayLike | None = None,
    time_limit_s: float = 60.0,
    *,
    pop: ArrayLike | None = None,
    reduce: bool = True,
    mip_rel_gap: float = 1e-6,
) -> SitingResult:
    """Fewest new sites so that every coverable demand point is covered (LSCP).

    Solves ``min sum_j x_j  s.t.  sum_j A_ij x_j >= 1`` for every demand point ``i`` not covered by
    an existing facility and reachable by some candidate, ``x`` binary (Toregas et al. 1971), with
    HiGHS after :func:`reduce_instance`. Demand no candidate reaches is reported, with its
    population, in ``uncoverable_idx`` / ``uncoverable_population``. When the reduced instance
    splits into connected components (towns far apart), each is solved on its own, smallest first,
    sharing the time limit in proportion to size (what a small one leaves goes to the larger ones);
    ``status`` is ``"optimal"`` only if every component is proven, ``bound`` sums the components'
    bounds, and ``message`` starts with "<n> components, <k> proven optimal".

    Parameters
    ----------
    A : sparse (n_demand, n_candidates)
    existing : (n_demand,) bool array, optional
        Demand covered by existing facilities (those are not candidates).
    time_limit_s : float
        Wall-clock limit for the whole call (heuristic + MILP).
    pop : (n_demand,) array, optional
        Population, for the reported figures only; ones when omitted.
    reduce : bool
        Apply :func:`reduce_instance` first (it never changes the optimum).
    mip_rel_gap : float
        HiGHS relative gap at which "optimal" is declared.

    Returns
    -------
    SitingResult
        ``objective`` is the number of new sites, ``bound`` a proven lower bound.

    Examples
    --------
    Candidate 1 covers demand 1 and 2, candidate 0 demand 0 and 1; demand 3 is out of reach:

    >>> A = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    >>> res = lscp(A, pop=[10, 20, 30, 40])
    >>> res.status, res.objective, sorted(res.selected_idx.tolist())
    ('optimal', 2.0, [0, 1])
    >>> res.uncoverable_idx.tolist(), res.uncoverable_population, res.population_covered
    ([3], 40.0, 60.0)
    >>> lscp(A, existing=[True, False, False, False]).selected_idx.tolist()
    [1]
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    M, w, ex, red = _prepare(A, pop, existing, "lscp", reduce)
    fixed = red.fixed_idx
    best, lb, status, method, msg = _lscp_decomposed(red.A, deadline, mip_rel_gap)
    bound = float(fixed.size) + lb
    selected = np.concatenate([fixed, red.candidate_idx[best]]).astype(np.intp)
    return _assemble("lscp", status, method, float(selected.size), bound, t0, M, w, ex, selected,
                     red.uncoverable_idx, red.shape, msg)


def greedy_lscp(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    existing: ArrayLike | None = None,
    *,
    pop: ArrayLike | None = None,
    lp_bound: bool = True,
    time_limit_s: float = 60.0,
) -> SitingResult:
    """Greedy set cover plus removal of redundant sites, labelled ``status="heuristic"``.

    The bound is the LP relaxation rounded up (after reductions), so ``gap`` is known.

    Examples
    --------
    >>> A = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]])
    >>> res = greedy_lscp(A)
    >>> res.status, res.objective, res.bound
    ('heuristic', 2.0, 2.0)
    """
    t0 = time.perf_counter()
    M, w, ex, red = _prepare(A, pop, existing, "lscp", True)
    heur = _greedy_cover(red.A)
    bound = float(red.fixed_idx.size)
    if lp_bound and red.A.shape[0]:
        # Lagrangian bound (sparse mat-vecs, always available), then the LP if it finishes.
        t_lag = 0.3 * time_limit_s
        L, _, _ = _lagrangian_lscp(red.A, float(heur.size), time.perf_counter() + t_lag, 1000)
        lb = float(np.ceil(L - 1e-6))
        c, cons, bnds, integ = _lscp_model(red.A, False)
        lp = _lp_bound(c, cons, bnds, max(t0 + time_limit_s - _now(), 0.05))
        if lp is not None:
            lb = max(lb, float(np.ceil(lp - 1e-6)))
        bound += min(lb, float(heur.size))
    elif not red.A.shape[0]:
        bound = float(red.fixed_idx.size)
    selected = np.concatenate([red.fixed_idx, red.candidate_idx[heur]]).astype(np.intp)
    return _assemble("lscp", "heuristic", "heuristic", float(selected.size), bound, t0, M, w, ex,
                     selected, red.uncoverable_idx, red.shape, "greedy + redundancy removal")


# ---------------------------------------------------------------------------------------------
# MCLP
# ---------------------------------------------------------------------------------------------
def _mclp_lp_full(A: sp.csr_array, w: NDArray[np.float64], p: int, time_limit_s: float):
    """LP relaxation of MCLP (HiGHS interior point + crossover): (bound, x, reduced costs of x).

    Reduced costs are in the maximisation sense: forcing candidate j into the solution lowers the
    LP bound by at least ``rc[j]`` (>= 0 for candidates at 0); ``None`` values when unsolved.
    """
    m, q = A.shape
    G = sp.vstack([sp.hstack([-A.astype(np.float64), sp.eye_array(m, format="csr")], format="csr"),
                   sp.csr_array(np.concatenate([np.ones(q), np.zeros(m)])[None, :])], format="csr")
    res = linprog(np.concatenate([np.zeros(q), -w]), A_ub=G, b_ub=np.concatenate([np.zeros(m), [p]]),
                  bounds=(0, 1), method="highs-ipm", options={"time_limit": max(time_limit_s, 0.05)})
    if res.status != 0 or res.x is None:
        return None, None, None
    rc = None
    if getattr(res, "lower", None) is not None and res.lower.marginals is not None:
        rc = np.asarray(res.lower.marginals[:q], dtype=np.float64)  # min form: d(obj)/d(lb) >= 0
    return float(-res.fun), np.asarray(res.x[:q]), rc


def _mclp_milp(R: sp.csr_array, w: NDArray[np.float64], p: int, cols: NDArray[np.intp],
               cutoff: float, time_limit_s: float, mip_rel_gap: float,
               start: NDArray[np.intp] | None = None):
    """HiGHS MCLP on the columns ``cols`` of R: (status, sel, value, dual).

    With highspy, ``start`` (the incumbent, columns of R within ``cols``) is HiGHS's start
    solution; otherwise the constraint ``w.y >= cutoff`` makes HiGHS search only for
    improvements (status 2, infeasible, then means none exists).
    """
    sub = R[:, cols]
    rows = np.flatnonzero(np.diff(sub.indptr) > 0)
    sub, ws = sub[rows], w[rows]
    c, cons, bnds, integ = _mclp_model(sub, ws, p, True)
    q = cols.size
    x0 = None
    if highspy is not None and start is not None:
        # The incumbent as HiGHS's start solution (no dense cutoff row: it slows every LP).
        xs = np.isin(cols, start).astype(np.float64)
        ys = (np.asarray(sub @ xs).reshape(-1) > 0).astype(np.float64)
        x0 = np.concatenate([xs, ys])
    else:
        cons.append(LinearConstraint(np.concatenate([np.zeros(q), ws])[None, :], lb=cutoff, ub=np.inf))
    st, x, dual, msg = _run_milp(c, cons, bnds, integ, time_limit_s, mip_rel_gap, x0)
    sel = cols[np.flatnonzero(x[:q] > 0.5)] if x is not None else None
    val = _covered_weight(R, w, sel) if sel is not None else None
    return st, sel, val, (None if dual is None else -dual), msg


def _mclp_reduced(
    red: ReducedInstance, p: int, deadline: float, mip_rel_gap: float, exact: bool,
    lp_bound: bool = True,
) -> tuple[NDArray[np.intp], float, float, str, str, str]:
    """Solve MCLP on a reduced instance: (reduced columns, value, bound, status, method, msg)."""
    return _mclp_solve(red.A, red.pop, p, deadline, mip_rel_gap, exact, lp_bound)


def _mclp_solve(
    R: sp.csr_array, wr: NDArray[np.float64], p: int, deadline: float, mip_rel_gap: float,
    exact: bool, lp_bound: bool = True, start: NDArray[np.intp] | None = None, depth: int = 0,
) -> tuple[NDArray[np.intp], float, float, str, str, str]:
    """MCLP on (R, wr): (columns, value, bound, status, method, msg); ``start``: a known solution.

    ``depth`` 1 marks an instance left after Lagrangian fixing (never treated as large again).
    """
    m, q = R.shape
    total = float(wr.sum())
    if m == 0 or p <= 0:
        return np.zeros(0, np.intp), 0.0, 0.0, "optimal", "heuristic", "nothing to add"
    if q <= p:
        S = np.arange(q, dtype=np.intp)
        return S, total, total, "optimal", "heuristic", "every candidate fits in p"
    tol = 1e-9 * max(total, 1.0)
    heur = _swap_search(R, wr, _greedy_max_cover(R, wr, p), deadline)
    hval = _covered_weight(R, wr, heur)
    if start is not None and start.size:
        start = np.unique(np.asarray(start, dtype=np.intp))[:p]
        sval = _covered_weight(R, wr, start)
        if sval > hval:
            heur, hval = start, sval
    if hval >= total - tol:
        return heur, hval, hval, "optimal", "heuristic", "every coverable point covered"
    bound, msg = total, "greedy + swaps"
    x_lp = rc_lp = lp = None
    big = depth == 0 and R.nnz > _MCLP_LP_MAX_NNZ  # a fixed instance (depth 1) never is
    if lp_bound or exact:  # Lagrangian bound first: sparse mat-vecs, always available
        now = _now()
        lag, lag_cols = _lagrangian_mclp(R, wr, p, hval, now + (0.05 if big else 0.1) * (deadline - now))
        bound = min(bound, lag)
        msg += f"; Lagrangian bound {lag:,.0f}"
        alt = _swap_search(R, wr, lag_cols, deadline)
        aval = _covered_weight(R, wr, alt)
        if aval > hval + tol:
            heur, hval, msg = alt, aval, msg + " (its columns + swaps improve)"
    if (lp_bound or exact) and not big:
        lp, x_lp, rc_lp = _mclp_lp_full(R, wr, p, deadline - _now())
        if lp is not None:
            bound = min(bound, lp)
            # Second start: LP rounding (the p largest x), then swaps.
            start = np.argsort(-x_lp, kind="stable")[:p]
            alt = _swap_search(R, wr, start, deadline)
            aval = _covered_weight(R, wr, alt)
            if aval > hval + tol:
                heur, hval, msg = alt, aval, "LP rounding + swaps"
    if _gap(hval, bound) <= mip_rel_gap:
        return heur, hval, hval, "optimal", "heuristic", msg
    if not exact:
        return heur, hval, max(bound, hval), "heuristic", "heuristic", msg
    best, val, method = heur, hval, "heuristic"
    if big:  # HiGHS does not finish this LP in time: column generation, fixing, then the rest
        At = sp.csr_array(R.T).astype(np.float64)
        col_w = np.asarray(At @ wr).reshape(-1)
        cg_start = np.union1d(np.argsort(-col_w, kind="stable")[: 4 * p], np.union1d(best, lag_cols))
        now = _now()
        cg, lam, x_cg, done = _mclp_lp_colgen(R, wr, p, now + 0.5 * (deadline - now), cg_start, At)
        if lam is not None and cg < bound:
            bound = cg
            msg += f"; LP bound {cg:,.0f} by column generation" + ("" if done else " (stopped early)")
        if x_cg is not None:  # LP rounding (the p largest x), then swaps
            alt = _swap_search(R, wr, np.argsort(-x_cg, kind="stable")[:p], deadline)
            aval = _covered_weight(R, wr, alt)
            if aval > val + tol:
                best, val, msg = alt, aval, msg + "; LP rounding + swaps"
        if _gap(val, bound) <= mip_rel_gap:
            return best, val, max(bound, val), "optimal", method, msg
        if lam is not None and depth == 0:
            _, drop, force = _mclp_lagrangian_fixing(At, wr, lam, p, val, tol)
            B, wB, cols, forced, const = _mclp_fixed_instance(R, wr, drop, force)
            msg += f"; fixing: {int(drop.sum())} out, {forced.size} in, {B.shape[0]:,} x {B.shape[1]} left"
            if B.nnz <= _MCLP_FIXED_MAX_NNZ and forced.size <= p:
                # Every optimal solution is ``forced`` + an optimal solution of B (see
                # _mclp_lagrangian_fixing), so const + B's bound bounds the whole instance.
                pos = np.searchsorted(cols, best)
                ok = (pos < cols.size) & (cols[np.minimum(pos, cols.size - 1)] == best)
                selB, vB, bB, stB, methB, msgB = _mclp_solve(
                    B, wB, p - forced.size, deadline, mip_rel_gap, True, start=pos[ok], depth=1)
                cand = np.union1d(forced, cols[selB])
                cval = _covered_weight(R, wr, cand)
                if cval > val + tol:
                    best, val, method = cand, cval, methB
                bound = max(min(bound, const + bB), val)
                status = "optimal" if _gap(val, bound) <= mip_rel_gap else "time_limit"
                return best, val, bound, status, method, msg + "; fixed instance: " + msgB
        now = _now()  # moves of a dozen sites at once first, then single swaps
        alt, aval, n_moves = _mclp_neighbourhood_search(R, wr, best, val, now + 0.8 * (deadline - now))
        if aval > val + tol:
            best, val, msg = alt, aval, msg + f"; neighbourhood search ({n_moves} moves)"
        alt, aval = _iterated_swaps(R, wr, best, val, deadline)
        if aval > val + tol:
            best, val, msg = alt, aval, msg + "; iterated swaps"
        bound = max(bound, val)
        status = "optimal" if _gap(val, bound) <= mip_rel_gap else "time_limit"
        return best, val, bound, status, method, msg + f"; {R.nnz:,} non-zeros: no MILP"
    # HiGHS cannot take a start solution, so it is given the incumbent as a cutoff instead
    # (w.y >= incumbent + a hair): it then searches only for improvements.
    def thr(v: float) -> float:
        return max(tol, 0.5 * mip_rel_gap * max(v, 1.0))

    # 1. Iterated local search (random kicks + swaps) sharpens the incumbent, hence the cutoff.
    if R.nnz >= _ILS_MIN_NNZ:  # small instances go straight to HiGHS
        alt, aval = _iterated_swaps(R, wr, best, val,
                                    _now() + 0.35 * (deadline - _now()))
    else:
        alt, aval = best, val
    if aval > val + tol:
        best, val, msg = alt, aval, msg + "; iterated swaps"
    if _gap(val, bound) <= mip_rel_gap:
        return best, val, val, "optimal", method, msg
    # 2. LP reduced-cost fixing: a candidate whose forcing drops the LP bound below the
    #    incumbent is in no improving solution; then HiGHS on the rest, with the cutoff.
    cols = np.arange(q, dtype=np.intp)
    if rc_lp is not None and lp is not None:
        keep = lp - np.maximum(rc_lp, 0.0) >= val - 1e-7 * max(total, 1.0)
        cols = np.union1d(np.flatnonzero(keep), best)
    cut = val + thr(val)
    st, sel, v, dual, msg_m = _mclp_milp(R, wr, p, cols, cut, deadline - _now(),
                                         mip_rel_gap, start=best)
    if sel is not None and v > val + tol:
        best, val, method, msg = sel, v, "milp", msg + f"; {cols.size} of {q} candidates after fixing"
    if not (st == 0 or st == 2) and _now() < deadline:
        alt, aval = _iterated_swaps(R, wr, best, val, deadline, seed=1)
        if aval > val + tol:
            best, val, method, msg = alt, aval, "heuristic", msg + "; iterated swaps"
    if st == 0 and sel is not None:
        if highspy is not None and dual is not None:  # HiGHS's optimum within its gap
            return best, val, max(val, min(bound, dual)), "optimal", method, msg + "; " + msg_m
        return best, val, val, "optimal", method, msg + "; " + msg_m
    if st == 2 and highspy is None:  # nothing beats the incumbent by more than the hair
        return best, val, max(val, cut), "optimal", method, msg + "; HiGHS: no better solution"
    if dual is not None and np.isfinite(dual):
        bound = min(bound, max(dual, cut if highspy is None else val))
    bound = max(bound, val)
    if _gap(val, bound) <= mip_rel_gap:
        return best, val, bound, "optimal", method, msg
    return best, val, bound, "time_limit", method, msg + "; " + msg_m


def _lagrangian_mclp(
    A: sp.csr_array, w: NDArray[np.float64], p: int, lb: float, deadline: float, max_iter: int = 3000,
) -> tuple[float, NDArray[np.intp]]:
    """Upper bound on MCLP by relaxing ``y_i <= sum_j A_ij x_j`` with ``0 <= lam_i <= w_i``.

    ``L(lam) = sum_i (w_i - lam_i) + (sum of the p largest (A^T lam)_j)`` bounds the optimum for
    every such ``lam`` (Galvao & ReVelle 1996); subgradient steps towards the incumbent ``lb``.
    Returns ``(best L, the p columns of the best L)``.
    """
    m, q = A.shape
    Af = A.astype(np.float64)
    At = sp.csr_array(A.T).astype(np.float64)
    deg = np.maximum(np.diff(A.indptr), 1).astype(np.float64)
    lam = w / deg
    best, best_cols = np.inf, np.zeros(0, np.intp)
    theta, stall = 1.0, 0
    for _ in range(max_iter):
        L, _, cols = _mclp_lagrangian_value(At, w, lam, p)  # lam stays in [0, w]: the clip is a no-op
        if L < best - 1e-9 * max(best, 1.0) if np.isfinite(best) else True:
            best, best_cols, stall = L, cols, 0
        else:
            stall += 1
            if stall >= 30:
                theta, stall = theta / 2.0, 0
        if theta < 1e-4 or _now() > deadline or best <= lb * (1 + 1e-9):
            break
        x = np.zeros(q)
        x[cols] = 1.0
        g = np.asarray(Af @ x).reshape(-1) - (lam < w)  # dL/dlam
        g[(lam <= 0) & (g > 0)] = 0.0
        g[(lam >= w) & (g < 0)] = 0.0
        nrm = float(g @ g)
        if nrm == 0.0:
            break
        lam = np.clip(lam - theta * max(L - lb, 1e-9 * max(L, 1.0)) / nrm * g, 0.0, w)
    return max(best, lb), np.asarray(best_cols, dtype=np.intp)



def _mclp_lagrangian_value(At: sp.csr_array, w: NDArray[np.float64], lam: NDArray[np.float64], p: int
                           ) -> tuple[float, NDArray[np.float64], NDArray[np.intp]]:
    """``L(lam) = sum(w - lam) + (sum of the p largest s_j)``, ``s = A^T lam``; also s and the top p.

    For ``0 <= lam <= w`` and every feasible ``(x, y)`` (x binary, at most p ones, ``y_i <= 1``,
    ``y_i <= sum_j A_ij x_j``): ``w.y <= w.y + lam.(A x - y) = (w - lam).y + s.x <= L(lam)``.
    """
    lam = np.clip(lam, 0.0, w)
    s = np.asarray(At @ lam, dtype=np.float64).reshape(-1)
    q = s.size
    top = np.argsort(-s, kind="stable")[: min(p, q)]
    return float((w - lam).sum() + s[top].sum()), s, top


def _mclp_lagrangian_fixing(
    At: sp.csr_array, w: NDArray[np.float64], lam: NDArray[np.float64], p: int, incumbent: float,
    tol: float,
) -> tuple[float, NDArray[np.bool_], NDArray[np.bool_]]:
    """Lagrangian reduced-cost fixing for MCLP: ``(L, drop, force)`` masks over the columns.

    Let ``T`` be the p columns with the largest ``s_j`` (``s = A^T lam``, ``0 <= lam <= w``),
    ``s_(p)`` the smallest s in T and ``s_(p+1)`` the largest outside it. By the Lagrangian bound
    (see :func:`_mclp_lagrangian_value`) a solution S is worth at most
    ``sum(w - lam) + sum_{j in S} s_j`` (s >= 0, so fewer than p sites never helps the bound):

    - a solution containing ``j`` not in T: at most ``L - s_(p) + s_j`` (j plus the best p - 1
      others, which are T minus its smallest);
    - a solution without ``j`` in T: at most ``L - s_j + s_(p+1)``.

    ``incumbent`` is the value of an actual solution, so it is <= the optimum. When the first
    bound is below ``incumbent - tol``, no optimal solution contains j (``drop``); when the second
    is, every optimal solution contains j (``force``). Fixing both at once therefore keeps every
    optimal solution, and the optimum of the fixed instance equals the unfixed one's.
    """
    L, s, top = _mclp_lagrangian_value(At, w, lam, p)
    q = s.size
    drop = np.zeros(q, dtype=bool)
    force = np.zeros(q, dtype=bool)
    if q <= p:  # every column fits: nothing to decide
        return L, drop, force
    in_top = np.zeros(q, dtype=bool)
    in_top[top] = True
    s_p = float(s[top].min())
    s_p1 = float(s[~in_top].max())
    drop = ~in_top & (L - s_p + s < incumbent - tol)
    force = in_top & (L - s + s_p1 < incumbent - tol)
    return L, drop, force


def _mclp_fixed_instance(
    R: sp.csr_array, w: NDArray[np.float64], drop: NDArray[np.bool_], force: NDArray[np.bool_],
) -> tuple[sp.csr_array, NDArray[np.float64], NDArray[np.intp], NDArray[np.intp], float]:
    """The MCLP left after fixing: ``(B, wB, cols, forced, const)``.

    Rows covered by a forced column are covered (their weight goes to ``const``); rows that no
    remaining column covers are lost (y = 0); identical rows are merged (weights summed).
    ``B`` has the columns ``cols`` of R (neither dropped nor forced) and p - ``forced.size`` sites
    are left to choose; a solution S of B is worth ``const + (weight of B's rows S covers)`` on R.
    """
    forced = np.flatnonzero(force)
    cols = np.flatnonzero(~drop & ~force)
    if forced.size:
        hit = np.asarray(R[:, forced].sum(axis=1)).reshape(-1) > 0
    else:
        hit = np.zeros(R.shape[0], dtype=bool)
    const = float(w[hit].sum())
    sub = sp.csr_array(R[np.flatnonzero(~hit)][:, cols])
    ws = w[~hit]
    live = np.flatnonzero(np.diff(sub.indptr) > 0)
    sub, ws = sp.csr_array(sub[live]), ws[live]
    first, inv = _merge_identical_rows(sub)
    wB = np.bincount(inv, weights=ws, minlength=first.size) if first.size else np.zeros(0)
    B = sp.csr_array(sub[first]) if first.size else sp.csr_array((0, cols.size), dtype=R.dtype)
    B.sort_indices()
    return B, np.asarray(wB, dtype=np.float64), cols, forced, const


def _mclp_restricted_lp(R: sp.csr_array, w: NDArray[np.float64], p: int, C: NDArray[np.intp],
                        time_limit_s: float):
    """LP of MCLP on the columns C only: (value, multipliers lam over all rows of R, x on C).

    Identical rows (on C) are merged for the LP and their multiplier split in proportion to w;
    rows no column of C covers get ``lam_i = w_i``. Any ``0 <= lam <= w`` gives a valid bound
    through :func:`_mclp_lagrangian_value`, so nothing here needs to be exact.
    """
    sub = sp.csr_array(R[:, C])
    rows = np.flatnonzero(np.diff(sub.indptr) > 0)
    lam = w.copy()
    if rows.size == 0:
        return 0.0, lam, np.zeros(C.size)
    sub = sp.csr_array(sub[rows])
    first, inv = _merge_identical_rows(sub)
    W = np.bincount(inv, weights=w[rows], minlength=first.size)
    B = sp.csr_array(sub[first])
    m, q = B.shape
    G = sp.vstack([sp.hstack([-B.astype(np.float64), sp.eye_array(m, format="csr")], format="csr"),
                   sp.csr_array(np.concatenate([np.ones(q), np.zeros(m)])[None, :])], format="csr")
    res = linprog(np.concatenate([np.zeros(q), -W]), A_ub=G, b_ub=np.concatenate([np.zeros(m), [p]]),
                  bounds=(0, 1), method="highs-ipm", options={"time_limit": max(time_limit_s, 0.05)})
    if res.status != 0 or res.x is None or getattr(res, "ineqlin", None) is None:
        return None, None, None
    lamB = np.clip(-np.asarray(res.ineqlin.marginals[:m], dtype=np.float64), 0.0, W)
    share = np.divide(w[rows], W[inv], out=np.zeros(rows.size), where=W[inv] > 0)
    lam[rows] = lamB[inv] * share
    return float(-res.fun), np.clip(lam, 0.0, w), np.asarray(res.x[:q])


def _mclp_lp_colgen(
    R: sp.csr_array, w: NDArray[np.float64], p: int, deadline: float, start: NDArray[np.intp],
    At: sp.csr_array | None = None,
) -> tuple[float, NDArray[np.float64] | None, NDArray[np.float64] | None, bool]:
    """LP bound of MCLP by column generation: ``(bound, lam, x, converged)``.

    Solves the LP on a few columns (``start``), prices every column with the restricted LP's
    multipliers (``s = A^T lam``) and adds the columns outside whose ``s_j`` reaches the p-th
    largest, until ``L(lam)`` equals the restricted LP's value (then both equal the full LP's
    optimum, which lies between them). Every iterate's ``L(lam)`` is a
    proven bound (:func:`_mclp_lagrangian_value`), so stopping early is safe: the least is
    returned with its multipliers, and ``x`` (on all columns) is the last restricted LP's.
    """
    m, q = R.shape
    At = sp.csr_array(R.T).astype(np.float64) if At is None else At
    C = np.unique(np.asarray(start, dtype=np.intp))
    best, best_lam, x_full, done = np.inf, None, None, False
    while _now() < deadline:
        val, lam, x = _mclp_restricted_lp(R, w, p, C, deadline - _now())
        if val is None:
            break
        L, s, top = _mclp_lagrangian_value(At, w, lam, p)
        if L < best:
            best, best_lam = L, lam
        x_full = np.zeros(q)
        x_full[C] = x
        if L <= val + 1e-9 * max(val, 1.0):  # restricted LP <= full LP <= L(lam): all equal
            done = True
            break
        s_p = float(s[top].min()) if top.size else 0.0
        out = np.setdiff1d(np.arange(q), C)
        viol = out[s[out] >= s_p]  # among the top p, or tied with them
        if viol.size == 0:  # only round-off left between the restricted LP and L(lam)
            break
        add = viol[np.argsort(-s[viol], kind="stable")[: max(2 * p, C.size // 2)]]
        C = np.union1d(C, add)
    return best, best_lam, x_full, done


def _mclp_neighbourhood_search(R: sp.csr_array, w: NDArray[np.float64], S: NDArray[np.intp], val: float,
                               deadline: float, k_free: int = 12, sub_limit_s: float = 8.0,
                               seed: int = 0) -> tuple[NDArray[np.intp], float, int]:
    """Large-neighbourhood search for MCLP: (sites, value, improving moves).

    Repeatedly frees the ``k_free`` chosen sites nearest to a random chosen one (nearest in the
    graph of candidates that share a demand point, i.e. within twice the radius, by breadth-first
    search) and re-solves exactly (:func:`_mclp_solve`, at most ``sub_limit_s``) which that many
    sites, among the candidates around them, cover the most of the demand the other chosen sites
    leave. Swaps move one site at a time; a dense centre often needs a dozen moved together (the
    1,000,000 x 5,000 benchmark: 682,078 -> 685,679 by exact 4 km windows). A move is kept only
    when the whole solution's value rises, so the value never drops.
    """
    q = R.shape[1]
    p = S.size
    if p == 0 or p >= q:
        return S, val, 0
    rng = np.random.default_rng(seed)
    tol = 1e-9 * max(float(w.sum()), 1.0)
    Rc = sp.csc_array(R)
    adj = sp.csr_array(sp.csr_array(R.T) @ R)  # candidates sharing a demand point
    best, best_val, moves = np.asarray(S, dtype=np.intp).copy(), float(val), 0
    while _now() < deadline - 0.5:
        chosen = np.zeros(q, dtype=bool)
        chosen[best] = True
        seen = np.zeros(q, dtype=bool)
        frontier = np.array([int(rng.choice(best))], dtype=np.intp)
        seen[frontier] = True
        order = [frontier]
        while frontier.size and int(chosen[np.concatenate(order)].sum()) < k_free:
            nxt = np.unique(adj[frontier].indices)
            frontier = nxt[~seen[nxt]]
            seen[frontier] = True
            order.append(frontier)
        ring = np.concatenate(order)
        freed = ring[chosen[ring]][:k_free]
        k = freed.size
        fixed = best[~np.isin(best, freed)]
        cand = np.union1d(np.flatnonzero(seen), np.unique(adj[freed].indices))
        cand = cand[~np.isin(cand, fixed)]
        covered = np.zeros(R.shape[0], dtype=bool)
        if fixed.size:
            covered[np.unique(Rc[:, fixed].indices)] = True
        sub_c = Rc[:, cand]
        rows = np.unique(sub_c.indices)
        rows = rows[~covered[rows]]
        if rows.size == 0:
            continue
        sub = sp.csr_array(sp.csr_array(sub_c)[rows])
        start = np.flatnonzero(np.isin(cand, freed))
        end = min(deadline, _now() + sub_limit_s)
        sel, v, _, _, _, _ = _mclp_solve(sub, w[rows], k, end, 1e-6, True, start=start, depth=1)
        new = np.concatenate([fixed, cand[sel]])
        nv = _covered_weight(R, w, new)
        if nv > best_val + tol:
            best, best_val, moves = new, nv, moves + 1
    return best, best_val, moves


def _iterated_swaps(A: sp.csr_array, w: NDArray[np.float64], S: NDArray[np.intp], val: float,
                    deadline: float, seed: int = 0) -> tuple[NDArray[np.intp], float]:
    """Perturb the best solution (a few random swaps), re-run swaps, keep improvements."""
    rng = np.random.default_rng(seed)
    q = A.shape[1]
    p = S.size
    if p == 0 or p >= q:
        return S, val
    best, best_val = S.copy(), val
    tol = 1e-9 * max(float(w.sum()), 1.0)
    Ac = A.tocsc()  # once, not per swap search
    while _now() < deadline:
        cand = best.copy()
        k = int(rng.integers(1, max(2, min(p, 5)) + 1))
        out = rng.choice(p, size=min(k, p), replace=False)
        pool = np.setdiff1d(np.arange(q), cand)
        cand[out] = rng.choice(pool, size=out.size, replace=False)
        cand = _swap_search(A, w, cand, deadline, Ac=Ac)
        v = _covered_weight(A, w, cand)
        if v > best_val + tol:
            best, best_val = cand, v
    return best, best_val


def mclp(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    pop: ArrayLike,
    p: int,
    existing: ArrayLike | None = None,
    time_limit_s: float = 60.0,
    *,
    reduce: bool = True,
    mip_rel_gap: float = 1e-6,
) -> SitingResult:
    """Best ``p`` new sites maximising the population covered (MCLP), existing coverage counted.

    Solves ``max sum_i pop_i y_i  s.t.  y_i <= sum_j A_ij x_j,  sum_j x_j <= p``, ``x`` binary,
    ``0 <= y <= 1`` (Church & ReVelle 1974) over the demand not already covered, with HiGHS after
    :func:`reduce_instance`; greedy + swap local search first, kept when HiGHS does not beat it in
    time (``method`` says which).

    Parameters
    ----------
    A : sparse (n_demand, n_candidates)
    pop : (n_demand,) array
    p : int
        Number of new sites (fewer are chosen only if fewer add anything).
    existing : (n_demand,) bool array, optional
    time_limit_s : float
    reduce : bool
    mip_rel_gap : float

    Returns
    -------
    SitingResult
        ``objective`` is the population newly covered, ``bound`` a proven upper bound on it;
        ``population_covered`` adds the existing coverage.

    Examples
    --------
    Greedy takes candidate 0 (25 people) and then 1 (10 more, 35 in all), but candidates 1 and 2
    together cover all 40:

    >>> A = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    >>> res = mclp(A, pop=[10, 15, 10, 5], p=2)
    >>> res.status, res.objective, sorted(res.selected_idx.tolist())
    ('optimal', 40.0, [1, 2])
    >>> res = mclp(A, pop=[10, 15, 10, 5], p=1, existing=[True, True, False, False])
    >>> res.selected_idx.tolist(), res.objective, res.population_covered
    ([1], 10.0, 35.0)
    """
    t0 = time.perf_counter()
    M, w, ex, red = _prepare(A, pop, existing, "mclp", reduce)
    sel, val, bound, status, method, msg = _mclp_reduced(
        red, int(p), t0 + time_limit_s, mip_rel_gap, exact=True)
    return _assemble("mclp", status, method, val, bound, t0, M, w, ex, red.candidate_idx[sel],
                     red.uncoverable_idx, red.shape, msg)


def greedy_mclp(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    pop: ArrayLike,
    p: int,
    existing: ArrayLike | None = None,
    *,
    local_search: bool = True,
    lp_bound: bool = True,
    time_limit_s: float = 60.0,
) -> SitingResult:
    """Greedy MCLP plus best-improvement swaps, labelled ``status="heuristic"``; LP bound for the gap.

    Examples
    --------
    >>> A = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    >>> res = greedy_mclp(A, pop=[10, 15, 10, 5], p=2, local_search=False)
    >>> res.status, res.objective, res.selected_idx.tolist()
    ('heuristic', 35.0, [0, 1])
    >>> greedy_mclp(A, pop=[10, 15, 10, 5], p=2).objective
    40.0
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    M, w, ex, red = _prepare(A, pop, existing, "mclp", True)
    R, wr = red.A, red.pop
    sel = _greedy_max_cover(R, wr, int(p)) if R.shape[0] else np.zeros(0, np.intp)
    if local_search and sel.size:
        sel = _swap_search(R, wr, sel, deadline)
    val = _covered_weight(R, wr, sel)
    bound = float(wr.sum())
    if lp_bound and R.shape[0] and R.shape[1] > p:
        lp, _ = _mclp_lp(R, wr, int(p), deadline - _now())
        if lp is not None:
            bound = min(bound, lp)
    return _assemble("mclp", "heuristic", "heuristic", val, max(bound, val), t0, M, w, ex,
                     red.candidate_idx[sel], red.uncoverable_idx, red.shape,
                     "greedy + swaps" if local_search else "greedy")


def coverage_curve(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    pop: ArrayLike,
    k_max: int,
    existing: ArrayLike | None = None,
    time_limit_s: float = 60.0,
    *,
    exact: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CoverageCurve:
    """Population covered with k = 1..k_max new sites (MCLP per k).

    With ``exact=None`` each k is solved with the MILP when the reduced instance is small
    (< 200,000 non-zeros), sharing ``time_limit_s``; otherwise the greedy order, swaps from its
    first k sites and a Lagrangian bound per k, sharing the time too (``status`` per k says whether
    it is proven, ``method`` overall). Values are made non-decreasing in k. ``progress(k, k_max)``
    is called after each k (an exception it raises, e.g. a cancellation, stops the curve).

    Examples
    --------
    >>> A = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    >>> curve = coverage_curve(A, pop=[10, 15, 10, 5], k_max=3)
    >>> list(curve), curve.method
    ([(1, 25.0), (2, 40.0), (3, 40.0)], 'exact')
    """
    t0 = time.perf_counter()
    M, w, ex, red = _prepare(A, pop, existing, "mclp", True)
    if exact is None:
        exact = red.A.nnz < _EXACT_CURVE_NNZ
    base = float(w[ex].sum())
    ks = np.arange(1, int(k_max) + 1, dtype=np.intp)
    vals = np.zeros(ks.size)
    bnds = np.zeros(ks.size)
    stats: list[str] = []
    if exact:
        for i, k in enumerate(ks):
            now = _now()
            share = (t0 + time_limit_s - now) / (ks.size - i)
            _, v, b, st, _, _ = _mclp_reduced(red, int(k), now + max(share, 0.05), 1e-6, exact=True)
            vals[i], bnds[i] = v, b
            stats.append(st)
            if progress is not None:
                progress(int(k), int(ks.size))
    else:  # one greedy pass gives every k; then per k swaps from its prefix and a Lagrangian bound
        R, wr = red.A, red.pop
        total = float(wr.sum())
        order = _greedy_max_cover(R, wr, int(k_max)) if R.shape[0] else np.zeros(0, np.intp)
        col_w = np.sort(np.asarray(R.T @ wr, dtype=np.float64).reshape(-1))[::-1]
        top = np.cumsum(col_w) if col_w.size else np.zeros(1)
        for i, k in enumerate(ks):
            vals[i] = _covered_weight(R, wr, order[:k])
            bnds[i] = min(total, float(top[min(k, top.size) - 1]))
            now = _now()
            dl = now + max((t0 + time_limit_s - now) / (ks.size - i), 0.0)
            if R.shape[0] and k < R.shape[1] and _gap(vals[i], bnds[i]) > 1e-6 and now < dl:
                S = _swap_search(R, wr, order[:k], now + 0.5 * (dl - now))
                vals[i] = max(vals[i], _covered_weight(R, wr, S))
                lag, _ = _lagrangian_mclp(R, wr, int(k), vals[i], dl)  # a proven bound (>= vals[i])
                bnds[i] = min(bnds[i], lag)
            stats.append("optimal" if _gap(vals[i], bnds[i]) <= 1e-6 else "heuristic")
            if progress is not None:
                progress(int(k), int(ks.size))
    vals = np.maximum.accumulate(vals) if vals.size else vals
    return CoverageCurve(k=ks, population_covered=base + vals, bound=base + bnds, status=tuple(stats),
                         method="exact" if exact else "greedy", population_existing=base,
                         population_total=float(w.sum()))


# ---------------------------------------------------------------------------------------------
# Capacitated MCLP
# ---------------------------------------------------------------------------------------------
_CMCLP_MILP_MAX_NNZ = 500_000  # CMCLP: above this the MILP neither fits in memory nor finishes
_ASSIGN_MIN_S = 20.0  # the final assignment LP always gets at least this long


def _assignment_lp(B: sp.csr_array, w: NDArray[np.float64], cap: NDArray[np.float64],
                   time_limit_s: float, merge: bool = True) -> tuple[float, NDArray[np.float64], bool]:
    """Max flow demand -> open columns of B within capacities: (served, flow per entry, solved).

    With ``merge`` rows reaching the same columns are solved as one (weights summed) and the
    flow is split back in proportion to ``w``: any flow of the merged problem splits into one of
    the same value for the rows (each row's share of each entry is ``w_i / W_g``, within ``w_i``),
    and any flow of the rows sums into one of the merged problem, so the optimum is the same. The
    demo's raster has ~49,000 cells but a few thousand distinct sets of open sites.
    """
    m, k = B.shape
    nnz = B.nnz
    if nnz == 0:
        return 0.0, np.zeros(0), True
    if merge and B.has_sorted_indices:  # (the flow is returned in B's own entry order)
        first, inv = _merge_identical_rows(B)
        if first.size < m:
            Wg = np.bincount(inv, weights=w, minlength=first.size)
            Bm = sp.csr_array(B[first])
            val, fm, ok = _assignment_lp(Bm, Wg, cap, time_limit_s, merge=False)
            if not ok:
                return 0.0, np.zeros(nnz), False
            deg = np.diff(B.indptr)
            row = np.repeat(np.arange(m), deg)
            pos = np.arange(nnz) - B.indptr[row]  # an entry's position within its row
            g = inv[row]
            share = np.divide(w[row], Wg[g], out=np.zeros(nnz), where=Wg[g] > 0)
            return val, fm[Bm.indptr[g] + pos] * share, True
    ent = np.arange(nnz)
    R = sp.csr_array((np.ones(nnz), B.indices * 0 + ent, B.indptr), shape=(m, nnz))
    C = sp.csr_array((np.ones(nnz), (B.indices, ent)), shape=(k, nnz))
    res = linprog(-np.ones(nnz), A_ub=sp.vstack([R, C], format="csr"), b_ub=np.concatenate([w, cap]),
                  bounds=(0, None), method="highs", options={"time_limit": max(time_limit_s, 0.05)})
    if res.status != 0 or res.x is None:
        return 0.0, np.zeros(nnz), False
    return float(-res.fun), np.asarray(res.x), True


@dataclass(eq=False)
class _CmclpInstance:
    """A CMCLP instance prepared once (rows merged, empty candidates dropped) for several ``p``:
    the coverage of candidates (columns ``:q``) and existing sites (``q:``) as ``B`` with its entries
    (``ecol``, ``erow``, row-major), weights ``w`` per merged row, capacities ``cap``; ``w0``,
    ``row_of`` and ``cand_cols`` map back to the caller's demand and candidates. The assignment
    LPs solved on it are kept by their set of open columns (a k-curve asks the same ones often)."""

    B: sp.csr_array
    w: NDArray[np.float64]
    cap: NDArray[np.float64]
    q: int
    ne: int
    w0: NDArray[np.float64]
    row_of: NDArray[np.intp]
    cand_cols: NDArray[np.intp]
    uncoverable: NDArray[np.bool_]
    ecol: NDArray[np.intp] | None = None
    erow: NDArray[np.intp] | None = None
    _solved: dict | None = None

    def __post_init__(self):
        self.ecol = self.B.indices
        self.erow = np.repeat(np.arange(self.B.shape[0]), np.diff(self.B.indptr))
        self._solved = {}

    def assign(self, open_cols: NDArray[np.intp], time_limit_s: float) -> tuple[float, NDArray[np.float64], bool]:
        """The assignment LP (:func:`_assignment_lp`) with only ``open_cols`` open: (served, flow per
        entry of ``B`` with zeros on closed columns, solved). Solved results are kept."""
        key = np.unique(np.asarray(open_cols, dtype=np.intp)).tobytes()
        if key in self._solved:
            val, flow = self._solved[key]
            return val, flow.copy(), True
        m = self.B.shape[0]
        keep = np.isin(self.ecol, open_cols)
        sub = sp.csr_array((np.ones(int(keep.sum())), self.ecol[keep], np.concatenate(
            [[0], np.cumsum(np.bincount(self.erow[keep], minlength=m))])), shape=(m, self.q + self.ne))
        val, f_sub, ok = _assignment_lp(sub, self.w, self.cap, time_limit_s)
        flow = np.zeros(self.ecol.size)
        if ok:
            flow[np.flatnonzero(keep)] = f_sub
            self._solved[key] = (val, flow.copy())
        return val, flow, ok

    def existing_cols(self) -> NDArray[np.intp]:
        return np.arange(self.q, self.q + self.ne)


def _cmclp_greedy(inst: _CmclpInstance, p: int, time_limit_s: float) -> tuple[NDArray[np.intp], float, str]:
    """CMCLP without the MILP (too large): (chosen candidate columns, upper bound, message).

    Existing sites (columns ``q:`` of B) serve first (assignment LP); then ``p`` times the
    candidate with the most still-unserved demand within reach, capped by its capacity, whose
    demand is then served in proportion. Bound: what the existing sites serve alone (in any
    solution the flow through them is a feasible flow for them alone) plus the ``p`` largest
    ``min(capacity, population within reach)`` of the candidates, at most all the demand.
    """
    B, w, cap, q = inst.B, inst.w, inst.cap, inst.q
    m = B.shape[0]
    served_e, f, ok = inst.assign(inst.existing_cols(), time_limit_s)
    r = w.copy()
    if ok and inst.ne:
        r = np.maximum(w - np.bincount(inst.erow, weights=f, minlength=m), 0.0)
    Ac = sp.csc_array(B[:, :q])
    Ac.sort_indices()
    reach = np.minimum(np.asarray(Ac.T @ w, dtype=np.float64).reshape(-1), cap[:q])
    top = float(np.sort(reach)[::-1][:p].sum())
    total = float(min(w.sum(), cap.sum()))
    bound = min(total, served_e + top) if ok else total
    chosen: list[int] = []
    for _ in range(min(p, q)):
        gain = np.minimum(np.asarray(Ac.T @ r, dtype=np.float64).reshape(-1), cap[:q])
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        if gain[j] <= 0:
            break
        rows = Ac.indices[Ac.indptr[j] : Ac.indptr[j + 1]]
        r[rows] *= 1.0 - min(1.0, cap[j] / float(r[rows].sum()))
        chosen.append(j)
    msg = f"{B.nnz:,} non-zeros: no MILP; greedy on the demand existing sites leave unserved"
    return np.asarray(chosen, dtype=np.intp), bound, msg


def cmclp(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    pop: ArrayLike,
    p: int,
    capacity: ArrayLike,
    existing_capacity: ArrayLike | None = None,
    existing_A: ArrayLike | sp.sparray | sp.spmatrix | None = None,
    time_limit_s: float = 60.0,
    *,
    reduce: bool = True,
    mip_rel_gap: float = 1e-6,
) -> SitingResult:
    """Capacitated MCLP: ``p`` new sites with capacities maximising the population served.

    Demand point ``i`` may be split among open sites ``j`` that cover it (``A_ij = 1``), each site
    serving at most its capacity; existing sites (columns of ``existing_A`` with
    ``existing_capacity``) are always open and never chosen. The MILP::

        max sum z_ij   s.t.  sum_j z_ij <= pop_i,   sum_i z_ij <= cap_j x_j,   sum_j x_j <= p,
                             z_ij <= pop_i x_j  (strengthening),   z >= 0,  x binary

    Above 500,000 coverage non-zeros (new and existing sites) the MILP neither fits in memory
    nor finishes, so it is not built: existing sites serve first, then ``p`` times the candidate
    with the most unserved demand within reach (``status="heuristic"`` unless the bound meets
    it); the bound is what existing sites serve alone plus the ``p`` largest
    ``min(capacity, population within reach)``. Either way the reported figures come from an exact
    assignment LP on the chosen sites, which always gets at least 20 s.

    Parameters
    ----------
    A : sparse (n_demand, n_candidates)
    pop : (n_demand,) array
    p : int
        Number of new sites; ``p=0`` gives the served population with existing sites alone.
    capacity : (n_candidates,) array
        Persons each candidate can serve.
    existing_capacity : (n_existing,) array, optional
    existing_A : sparse (n_demand, n_existing), optional
        Coverage of the existing sites.
    time_limit_s : float
    reduce : bool
        Merge identical demand rows and drop candidates that reach no demand. (Dominated
        columns are not dropped: with capacities a site covering a subset still adds service.)
    mip_rel_gap : float

    Returns
    -------
    SitingResult
        ``objective`` is the total population served (existing sites included),
        ``added_population`` the population assigned to each chosen site, ``population_existing``
        the population assigned to existing sites in the solution.

    Examples
    --------
    Candidate 0 reaches everyone but holds 20; candidate 1 (demand 0) holds 15, candidate 2 (demand 1) 5:

    >>> A = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0]])
    >>> res = cmclp(A, pop=[10, 10, 10], p=1, capacity=[20, 15, 5])
    >>> res.objective, res.selected_idx.tolist()
    (20.0, [0])
    >>> res = cmclp(A, pop=[10, 10, 10], p=2, capacity=[20, 15, 5])
    >>> res.objective, sorted(res.selected_idx.tolist())
    (30.0, [0, 1])
    """
    t0 = time.perf_counter()
    inst = _cmclp_prepare(A, pop, capacity, existing_capacity, existing_A, reduce)
    return _cmclp_solve(inst, p, t0, t0 + time_limit_s, mip_rel_gap)


def _cmclp_prepare(A, pop, capacity, existing_capacity, existing_A, reduce: bool) -> _CmclpInstance:
    """Check the inputs and build the instance :func:`cmclp` solves (see :class:`_CmclpInstance`)."""
    M = _as_csr(A)
    n, q0 = M.shape
    w = _as_pop(pop, n)
    cap0 = np.asarray(capacity, dtype=np.float64).reshape(-1)
    if cap0.shape != (q0,):
        raise ValueError(f"capacity has {cap0.size} values for {q0} candidates")
    if existing_A is None:
        E = sp.csr_array((n, 0), dtype=np.int32)
        ecap = np.zeros(0)
    else:
        E = _as_csr(existing_A)
        ecap = np.asarray(existing_capacity, dtype=np.float64).reshape(-1)
        if E.shape[0] != n or ecap.shape != (E.shape[1],):
            raise ValueError("existing_A must be (n_demand, n_existing) with one capacity each")
    B = sp.hstack([M, E], format="csr")
    B.sort_indices()
    unc_mask = np.diff(B.indptr) == 0
    rows = np.flatnonzero(~unc_mask & (w > 0))
    Bk, wk = B[rows], w[rows]
    row_of = np.full(n, -1, np.intp)
    row_of[rows] = np.arange(rows.size)
    cand_cols = np.arange(q0, dtype=np.intp)
    if reduce and rows.size:
        first, inverse = _merge_identical_rows(Bk)
        wk = np.bincount(inverse, weights=wk, minlength=first.size)
        Bk = Bk[first]
        mapped = np.append(inverse, -1)
        row_of = mapped[row_of]
        Mk = Bk[:, :q0]
        # Only empty candidates go: with capacities a subset column can still add service.
        cand_cols = np.flatnonzero(np.diff(sp.csc_array(Mk).indptr) > 0)
        Bk = sp.hstack([Mk[:, cand_cols], Bk[:, q0:]], format="csr")
        Bk.sort_indices()
    Bk = sp.csr_array(Bk)
    return _CmclpInstance(B=Bk, w=np.asarray(wk, dtype=np.float64), cap=np.concatenate([cap0[cand_cols], ecap]),
                          q=int(cand_cols.size), ne=int(E.shape[1]), w0=w, row_of=row_of, cand_cols=cand_cols,
                          uncoverable=unc_mask)


def _cmclp_solve(inst: _CmclpInstance, p: int, t0: float, deadline: float, mip_rel_gap: float) -> SitingResult:
    """:func:`cmclp` on a prepared instance (``t0`` only for the reported seconds)."""
    Bk, wk, cap, q, ne = inst.B, inst.w, inst.cap, inst.q, inst.ne
    w, row_of, cand_cols, unc_mask = inst.w0, inst.row_of, inst.cand_cols, inst.uncoverable
    ecol, erow = inst.ecol, inst.erow
    ecap = cap[q:]
    m = Bk.shape[0]
    nnz = Bk.nnz
    ex_cols = inst.existing_cols()
    p_eff = min(int(p), q)
    msg = ""
    st = x = None
    if m == 0 or nnz == 0:
        sel_r = np.zeros(0, np.intp)
        flow = np.zeros(0)
        status, method, val, bound = "optimal", "heuristic", 0.0, 0.0
    elif nnz > _CMCLP_MILP_MAX_NNZ:
        sel_r, bound, msg = _cmclp_greedy(inst, p_eff, max(deadline - _now(), _ASSIGN_MIN_S))
        method, flow = "heuristic", np.zeros(nnz)
    else:
        ent = np.arange(nnz)
        # The greedy and its bound first: when the capacities bind, its sites often meet the bound
        # (existing sites alone + the p largest min(capacity, reach)) and no MILP is needed.
        sel_g, bound_g, _ = _cmclp_greedy(inst, p_eff, max(deadline - _now(), _ASSIGN_MIN_S))
        val_g, f_g, ok_g = inst.assign(np.concatenate([sel_g, ex_cols]), max(deadline - _now(), _ASSIGN_MIN_S))
        if ok_g and _gap(val_g, max(bound_g, val_g)) <= mip_rel_gap:
            sel_r, bound = sel_g, bound_g
            msg = "greedy meets the bound (existing sites alone + the p largest min(capacity, reach))"
            method, flow = "heuristic", np.zeros(nnz)
        else:
            is_cand = ecol < q
            # Variables [x (q) | z (nnz)].
            Rz = sp.csr_array((np.ones(nnz), ent.copy(), Bk.indptr.copy()), shape=(m, nnz))
            Cz = sp.csr_array((np.ones(nnz), (ecol, ent)), shape=(q + ne, nnz))
            Cx = sp.csr_array((-cap[:q], (np.arange(q), np.arange(q))), shape=(q + ne, q))
            ce = np.flatnonzero(is_cand)
            Vx = sp.csr_array((-wk[erow[ce]], (np.arange(ce.size), ecol[ce])), shape=(ce.size, q))
            Vz = sp.csr_array((np.ones(ce.size), (np.arange(ce.size), ce)), shape=(ce.size, nnz))
            Z0 = sp.csr_array((m, q))
            G = sp.vstack([sp.hstack([Z0, Rz]), sp.hstack([Cx, Cz]), sp.hstack([Vx, Vz]),
                           sp.hstack([sp.csr_array(np.ones((1, q))), sp.csr_array((1, nnz))])], format="csr")
            ub = np.concatenate([wk, np.where(np.arange(q + ne) < q, 0.0, cap), np.zeros(ce.size),
                                 [float(p_eff)]])
            cons = [LinearConstraint(G, lb=-np.inf, ub=ub)]
            zub = np.minimum(wk[erow], cap[ecol])
            bnds = Bounds(np.zeros(q + nnz), np.concatenate([np.ones(q), zub]))
            c = np.concatenate([np.zeros(q), -np.ones(nnz)])
            integ = np.concatenate([np.ones(q), np.zeros(nnz)])
            x0 = None
            if ok_g:  # the greedy as HiGHS's start solution (x of its sites, z its assignment)
                z0 = np.minimum(np.maximum(f_g, 0.0), zub)
                x0 = np.concatenate([np.isin(np.arange(q), sel_g).astype(np.float64), z0])
            st, x, dual, msg = _run_milp(c, cons, bnds, integ, deadline - _now(), mip_rel_gap, x0)
            total = float(min(wk.sum(), cap[:q].sum() + ecap.sum()))
            bound = min(-dual, total) if dual is not None else total
            bound = min(bound, max(bound_g, val_g if ok_g else 0.0))
            if x is not None and ok_g and val_g > -float(c @ x) + 1e-9 * max(val_g, 1.0):
                x = None  # the greedy's sites serve more than HiGHS's incumbent
            if x is not None:
                sel_r = np.flatnonzero(x[:q] > 0.5)
                flow = x[q:]
                method = "milp"
            else:  # no incumbent in time: the greedy's sites, assignment LP on them
                sel_r = sel_g
                method = "heuristic"
                flow = np.zeros(nnz)
    if m and nnz:
        # Re-solve the assignment exactly for the chosen sites (cleans MILP tolerances); it
        # defines every reported figure, so it gets at least _ASSIGN_MIN_S even after the limit.
        val, f_open, ok = inst.assign(np.concatenate([sel_r, ex_cols]), max(deadline - _now(), _ASSIGN_MIN_S))
        if ok:
            flow = f_open
        else:  # keep the MILP's own flow (zeros for the heuristic): never more than is feasible
            flow = np.clip(flow, 0.0, None)
            val = float(flow.sum())
        bound = max(bound, val)
        if st is None:  # no exact solve attempted
            status = "optimal" if _gap(val, bound) <= mip_rel_gap else "heuristic"
        else:
            status = "optimal" if (st == 0 and x is not None) or _gap(val, bound) <= mip_rel_gap else "time_limit"
        if status == "optimal" and st == 0 and x is not None:
            bound = val
    # Per chosen site and per demand point.
    site_flow = np.bincount(Bk.indices, weights=flow, minlength=q + ne) if nnz else np.zeros(q + ne)
    served_row = np.bincount(np.repeat(np.arange(m), np.diff(Bk.indptr)), weights=flow,
                             minlength=m) if nnz else np.zeros(m)
    share = np.where(wk > 0, served_row / np.where(wk > 0, wk, 1.0), 0.0)
    served = np.where(row_of >= 0, w * np.append(share, 0.0)[row_of], 0.0)
    added = site_flow[sel_r]
    order = np.argsort(-added, kind="stable")
    selected = cand_cols[sel_r][order]
    val = float(served.sum())
    return SitingResult(
        problem="cmclp", status=status, method=method, objective=val, bound=float(max(bound, val)),
        gap=_gap(val, float(max(bound, val))), seconds=time.perf_counter() - t0,
        selected_idx=selected.astype(np.intp), added_population=added[order],
        population_total=float(w.sum()), population_existing=float(site_flow[q:].sum()),
        population_covered=val, uncoverable_idx=np.flatnonzero(unc_mask),
        uncoverable_population=float(w[unc_mask].sum()), served_population=served,
        reduced_shape=(m, q), message=msg,
    )


def capacitated_curve(
    A: ArrayLike | sp.sparray | sp.spmatrix,
    pop: ArrayLike,
    k_max: int,
    capacity: ArrayLike,
    existing_capacity: ArrayLike | None = None,
    existing_A: ArrayLike | sp.sparray | sp.spmatrix | None = None,
    time_limit_s: float = 60.0,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CoverageCurve:
    """Population *served* with k = 1..k_max new sites with capacities (:func:`cmclp` per k).

    The capacitated counterpart of :func:`coverage_curve`: ``population_covered`` holds the
    population served (existing sites included, each within its capacity), ``population_existing``
    what the existing sites serve alone (k = 0). Each k is a :func:`cmclp` run sharing
    ``time_limit_s``, with its status. Values are made non-decreasing in k (a solution with k
    sites plus any other site is one with k + 1: adding a site never lowers the maximum flow) and
    bounds non-decreasing from the right (the optimum with k sites is at most that with more).
    ``method`` is ``"exact"`` unless some k is an unproven greedy (status ``"heuristic"``).
    ``progress(k, k_max)`` is called after each k (an exception it raises stops the curve).

    Examples
    --------
    Candidate 0 reaches everyone but holds 20; candidates 1 and 2 hold 15 and 5:

    >>> A = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0]])
    >>> curve = capacitated_curve(A, pop=[10, 10, 10], k_max=3, capacity=[20, 15, 5])
    >>> list(curve), curve.status
    ([(1, 20.0), (2, 30.0), (3, 30.0)], ('optimal', 'optimal', 'optimal'))
    """
    t0 = time.perf_counter()
    ks = np.arange(1, int(k_max) + 1, dtype=np.intp)
    # One prepared instance for every k: rows merged once, and the assignment LPs that recur (the
    # existing sites alone, in every greedy) solved once.
    inst = _cmclp_prepare(A, pop, capacity, existing_capacity, existing_A, True)
    base = _cmclp_solve(inst, 0, t0, time.perf_counter() + max(time_limit_s / (ks.size + 1), 0.05), 1e-6)
    vals = np.zeros(ks.size)
    bnds = np.zeros(ks.size)
    stats: list[str] = []
    for i, k in enumerate(ks):
        share = (t0 + time_limit_s - _now()) / (ks.size - i)
        res = _cmclp_solve(inst, int(k), t0, time.perf_counter() + max(share, 0.05), 1e-6)
        vals[i], bnds[i] = res.objective, res.bound
        stats.append(res.status)
        if progress is not None:
            progress(int(k), int(ks.size))
    if vals.size:
        vals = np.maximum.accumulate(np.maximum(vals, base.objective))
        bnds = np.minimum.accumulate(np.maximum(bnds, vals)[::-1])[::-1]
        bnds = np.maximum(bnds, vals)
        stats = ["optimal" if _gap(v, b) <= 1e-6 else st for v, b, st in zip(vals, bnds, stats)]
    return CoverageCurve(k=ks, population_covered=vals, bound=bnds, status=tuple(stats),
                         method="greedy" if "heuristic" in stats else "exact",
                         population_existing=float(base.objective), population_total=base.population_total)
