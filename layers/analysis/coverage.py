"""Straight-line and capacity-aware coverage of demand by facilities (DESIGN.md, Coverage and siting).

Everything here works on arrays in one metric CRS (``GIS_SRID``, EPSG:4547 by default): demand as
points ``demand_xy`` (raster cell centres, see :mod:`layers.analysis.raster`) or as polygons (grids
with their population spread evenly), facilities as points ``sites_xy`` or shapely geometries
(a shelter's site polygon: the distance to a polygon is to its nearest point, 0 inside).

The central object is the sparse coverage matrix ``cover`` (n_demand, n_sites), 1 where demand
point i is within the service distance of site j. :func:`coverage_of_points` turns it into
population figures, :func:`capacitated_coverage` into the exact maximum population that can be
served when each site has a capacity (GB 51143-2015 §5.2.4: a shelter's capacity must hold the
evacuees of its area), and the siting module builds its set-covering models on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linprog
from scipy.sparse.csgraph import maximum_flow
from scipy.spatial import cKDTree

__all__ = [
    "AddedDemandResult",
    "CapacityResult",
    "added_demand_capacity",
    "CoverageResult",
    "capacitated_coverage",
    "coverage_matrix",
    "coverage_matrix_geoms",
    "coverage_of_points",
    "group_sums",
    "polygon_coverage_shares",
    "uncovered_geometry",
]

#: Segments per quarter circle of a buffer. A 64-gon inscribed in the circle has 0.16 % less area,
#: which keeps polygon shares within 0.5 % of dense point sampling (tested).
DEFAULT_QUAD_SEGS = 16


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _as_xy(xy: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def _as_radius(radius_m: ArrayLike, n_sites: int) -> NDArray[np.float64]:
    """Return one radius per site; accept a scalar or an array of length n_sites."""
    r = np.asarray(radius_m, dtype=np.float64)
    if r.ndim == 0:
        r = np.full(n_sites, float(r))
    elif r.shape != (n_sites,):
        raise ValueError(f"radius_m must be a scalar or have shape ({n_sites},), got {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ValueError("radius_m must be finite and >= 0")
    return r


def _as_geoms(geoms: ArrayLike, name: str) -> NDArray[np.object_]:
    arr = np.asarray(geoms, dtype=object)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of geometries")
    if arr.size and (shapely.is_missing(arr).any() or shapely.is_empty(arr).any()):
        raise ValueError(f"{name} contains missing or empty geometries")
    return arr


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


# --------------------------------------------------------------------------------------------
# coverage matrices
# --------------------------------------------------------------------------------------------
def _csr_from_site_lists(site_lists, n_demand: int, n_sites: int) -> scipy.sparse.csr_array:
    """Build the (n_demand, n_sites) matrix from, per site, the demand indices it reaches."""
    lens = np.fromiter((len(x) for x in site_lists), dtype=np.int64, count=n_sites)
    indptr = np.zeros(n_sites + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    if indptr[-1]:
        indices = np.concatenate([np.asarray(x, dtype=np.int64) for x in site_lists if len(x)])
    else:
        indices = np.zeros(0, dtype=np.int64)
    data = np.ones(indices.size, dtype=np.uint8)
    csc = scipy.sparse.csc_array((data, indices, indptr), shape=(n_demand, n_sites))
    out = csc.tocsr()
    out.sort_indices()
    return out


def coverage_matrix(demand_xy: ArrayLike, sites_xy: ArrayLike,
                    radius_m: ArrayLike) -> scipy.sparse.csr_array:
    """Sparse (n_demand, n_sites) matrix, 1 where the straight-line distance is <= radius_m.

    A k-d tree is built on the demand points and queried once per site (``query_ball_point``
    with one radius per site); on 1,000,000 cells x 2,000 sites this takes under 1 s, as fast
    as ``sparse_distance_matrix`` (which allows no per-site radius) and 3-4x faster than a
    tree on the sites (measured, benchmarks/RESULTS.md).

    Parameters
    ----------
    demand_xy : (n_demand, 2) array of float
        Demand points (e.g. population cell centres) in a metric CRS.
    sites_xy : (n_sites, 2) array of float
        Facility points in the same CRS.
    radius_m : float or (n_sites,) array of float
        Service distance in metres, one for all sites or one per site.

    Returns
    -------
    scipy.sparse.csr_array of uint8, shape (n_demand, n_sites)
        Sorted indices, no explicit zeros.

    Examples
    --------
    A 3-4-5 triangle: the first site is exactly 5 m away (covered), the second 50 m.

    >>> coverage_matrix(np.array([[0., 0.]]), np.array([[3., 4.], [30., 40.]]), 5.0).toarray()
    array([[1, 0]], dtype=uint8)
    >>> coverage_matrix([[0., 0.], [6., 8.]], [[3., 4.]], [4.9]).toarray()
    array([[0],
           [0]], dtype=uint8)
    """
    d = _as_xy(demand_xy, "demand_xy")
    s = _as_xy(sites_xy, "sites_xy")
    r = _as_radius(radius_m, len(s))
    if len(d) == 0 or len(s) == 0:
        return scipy.sparse.csr_array((len(d), len(s)), dtype=np.uint8)
    # The sliding-midpoint tree without shrunk nodes builds 2-3x faster on a million cells,
    # and building, not querying, dominates (measured, benchmarks/bench_coverage.py).
    tree = cKDTree(d, balanced_tree=False, compact_nodes=False)
    lists = tree.query_ball_point(s, r, workers=-1, return_sorted=False)
    return _csr_from_site_lists(lists, len(d), len(s))


def coverage_matrix_geoms(demand_xy: ArrayLike, site_geoms: ArrayLike,
                          radius_m: ArrayLike) -> scipy.sparse.csr_array:
    """Coverage matrix for facilities given as geometries (points, polygons, lines).

    The distance from a demand point to a site is to the site's nearest point (0 inside a
    polygon), so a shelter's whole site polygon counts, not only its centroid. For point
    geometries the result equals :func:`coverage_matrix`.

    Parameters
    ----------
    demand_xy : (n_demand, 2) array of float
        Demand points in a metric CRS.
    site_geoms : (n_sites,) array of shapely geometries
        Facility geometries in the same CRS.
    radius_m : float or (n_sites,) array of float
        Service distance in metres.

    Returns
    -------
    scipy.sparse.csr_array of uint8, shape (n_demand, n_sites)

    Examples
    --------
    A 10 m square site: a point inside is at distance 0, one 5 m east of its edge is covered
    by a 5 m radius, one 6 m east is not.

    >>> site = shapely.box(0, 0, 10, 10)
    >>> coverage_matrix_geoms([[5., 5.], [15., 5.], [16., 5.]], [site], 5.0).toarray().ravel()
    array([1, 1, 0], dtype=uint8)
    """
    d = _as_xy(demand_xy, "demand_xy")
    g = _as_geoms(site_geoms, "site_geoms")
    r = _as_radius(radius_m, len(g))
    if len(d) == 0 or len(g) == 0:
        return scipy.sparse.csr_array((len(d), len(g)), dtype=np.uint8)
    tree = shapely.STRtree(shapely.points(d))
    site_idx, demand_idx = tree.query(g, predicate="dwithin", distance=r)
    data = np.ones(site_idx.size, dtype=np.uint8)
    out = scipy.sparse.csr_array((data, (demand_idx, site_idx)), shape=(len(d), len(g)))
    out.sort_indices()
    return out


# --------------------------------------------------------------------------------------------
# population covered
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CoverageResult:
    """Population within reach of at least one site (no capacity).

    Attributes
    ----------
    covered_mask : (n_demand,) bool
        Demand point reaches at least one site.
    population_total : float
        Sum of the population of all demand points.
    population_covered : float
        Population of the covered demand points.
    share : float
        ``population_covered / population_total`` (0.0 when there is no population).
    site_population : (n_sites,) float
        People within reach of each site; a person reaching two sites counts at both, so this
        sums to more than ``population_covered`` where service areas overlap.
    """

    covered_mask: NDArray[np.bool_]
    population_total: float
    population_covered: float
    share: float
    site_population: NDArray[np.float64]

    @property
    def population_uncovered(self) -> float:
        """People out of reach of every site."""
        return self.population_total - self.population_covered


def coverage_of_points(pop: ArrayLike, cover: scipy.sparse.sparray) -> CoverageResult:
    """Population figures from a coverage matrix.

    Parameters
    ----------
    pop : (n_demand,) array of float
        Population of each demand point (>= 0).
    cover : sparse array, shape (n_demand, n_sites)
        From :func:`coverage_matrix` or :func:`coverage_matrix_geoms`; nonzero means in reach.

    Returns
    -------
    CoverageResult

    Examples
    --------
    Three cells of 10, 20 and 30 people; the first site reaches cells 0 and 1, the second
    reaches cell 1 only; cell 2 is out of reach.

    >>> cover = scipy.sparse.csr_array(np.array([[1, 0], [1, 1], [0, 0]], dtype=np.uint8))
    >>> res = coverage_of_points([10., 20., 30.], cover)
    >>> res.covered_mask.tolist(), res.population_covered, round(res.share, 4)
    ([True, True, False], 30.0, 0.5)
    >>> res.site_population.tolist()
    [30.0, 20.0]
    """
    p = np.asarray(pop, dtype=np.float64)
    c = scipy.sparse.csr_array(cover)
    if p.shape != (c.shape[0],):
        raise ValueError(f"pop must have shape ({c.shape[0]},), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("pop must be finite and >= 0")
    c = c.astype(bool)
    c.eliminate_zeros()
    covered_mask = np.diff(c.indptr) > 0
    site_population = np.asarray(c.T @ p, dtype=np.float64).reshape(-1)
    total = float(p.sum())
    covered = float(p[covered_mask].sum())
    share = covered / total if total > 0 else 0.0
    _readonly(covered_mask, site_population)
    return CoverageResult(covered_mask, total, covered, share, site_population)


def group_sums(values: ArrayLike, group_idx: ArrayLike, n_groups: int) -> NDArray[np.float64]:
    """Sum ``values`` per group; entries with ``group_idx == -1`` belong to no group.

    Use it to aggregate raster cells to grids with the output of
    :func:`layers.analysis.raster.points_in_polygons`.

    Examples
    --------
    >>> group_sums([1., 2., 3., 4.], [0, 2, 0, -1], 3).tolist()
    [4.0, 0.0, 2.0]
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(group_idx, dtype=np.int64)
    if v.shape != g.shape or v.ndim != 1:
        raise ValueError("values and group_idx must be 1-d arrays of the same length")
    if g.size and (g.max() >= n_groups or g.min() < -1):
        raise ValueError(f"group_idx must lie in [-1, {n_groups})")
    keep = g >= 0
    return np.bincount(g[keep], weights=v[keep], minlength=n_groups).astype(np.float64)


# --------------------------------------------------------------------------------------------
# polygon demand (grids without a raster)
# --------------------------------------------------------------------------------------------
def _reach_buffers(site_geoms, radius_m, quad_segs: int) -> NDArray[np.object_]:
    g = _as_geoms(site_geoms, "site_geoms")
    r = _as_radius(radius_m, len(g))
    return shapely.buffer(g, r, quad_segs=quad_segs)


def _reach_union(site_geoms, radius_m, quad_segs: int):
    buffers = _reach_buffers(site_geoms, radius_m, quad_segs)
    return shapely.union_all(buffers) if len(buffers) else shapely.Polygon()


def polygon_coverage_shares(grid_geoms: ArrayLike, site_geoms: ArrayLike, radius_m: ArrayLike,
                            *, quad_segs: int = DEFAULT_QUAD_SEGS) -> NDArray[np.float64]:
    """Share of each polygon's area within ``radius_m`` of some site.

    ``area(grid ∩ union of buffers) / area(grid)``, the polygon counterpart of point coverage
    when a grid's population is spread evenly over it (DESIGN.md, Demand): covered population
    of grid k is ``pop[k] * share[k]``. Buffers are polygons inscribed in the true circles;
    with ``quad_segs=16`` they miss 0.16 % of a circle's area.

    Parameters
    ----------
    grid_geoms : (n_grids,) array of shapely polygons
    site_geoms : (n_sites,) array of shapely geometries
    radius_m : float or (n_sites,) array of float
    quad_segs : int, keyword-only
        Segments per quarter circle of the buffers.

    Returns
    -------
    (n_grids,) array of float in [0, 1]

    Examples
    --------
    A site at the corner of a 10 m square with a radius of 10 m covers a quarter disc:
    pi * 10**2 / 4 / 100 = 0.785 (0.784 with the inscribed polygon).

    >>> polygon_coverage_shares([shapely.box(0, 0, 10, 10)], [shapely.Point(0, 0)], 10.0).round(3)
    array([0.784])
    """
    grids = _as_geoms(grid_geoms, "grid_geoms")
    out = np.zeros(len(grids), dtype=np.float64)
    buffers = _reach_buffers(site_geoms, radius_m, quad_segs)
    if len(grids) == 0 or len(buffers) == 0:
        return out
    area = shapely.area(grids)
    if (area <= 0).any():
        raise ValueError("grid_geoms must have positive area")
    # Intersect each grid with the union of only the buffers that touch it: intersecting every
    # grid with the union of all buffers is ~9x slower (measured on 19,600 grids x 600 sites).
    grid_idx, buf_idx = shapely.STRtree(buffers).query(grids, predicate="intersects")
    if grid_idx.size == 0:
        return out
    inside = np.zeros(len(grids), dtype=bool)
    inside[grid_idx[shapely.contains(buffers[buf_idx], grids[grid_idx])]] = True
    out[inside] = 1.0
    keep = ~inside[grid_idx]
    grid_idx, buf_idx = grid_idx[keep], buf_idx[keep]
    order = np.argsort(grid_idx, kind="stable")
    grid_idx, buf_idx = grid_idx[order], buf_idx[order]
    starts = np.flatnonzero(np.r_[True, grid_idx[1:] != grid_idx[:-1]])
    touched = grid_idx[starts]
    local = np.empty(touched.size, dtype=object)
    bounds = np.r_[starts, grid_idx.size]
    for k in range(touched.size):
        parts = buffers[buf_idx[bounds[k]:bounds[k + 1]]]
        local[k] = parts[0] if parts.size == 1 else shapely.union_all(parts)
    covered = shapely.area(shapely.intersection(grids[touched], local))
    out[touched] = np.clip(covered / area[touched], 0.0, 1.0)
    return out


def uncovered_geometry(grid_geoms: ArrayLike, site_geoms: ArrayLike, radius_m: ArrayLike,
                       *, quad_segs: int = DEFAULT_QUAD_SEGS):
    """Union of the parts of the grids out of reach of every site (to draw in red).

    Parameters
    ----------
    grid_geoms, site_geoms, radius_m, quad_segs
        As in :func:`polygon_coverage_shares`.

    Returns
    -------
    shapely geometry
        Empty when everything is covered.

    Examples
    --------
    A 20 x 10 box with a site covering its western half (a 10 m buffer of the segment x = 0):
    the eastern 10 x 10 square is left.

    >>> left = shapely.LineString([(0, 0), (0, 10)])
    >>> round(uncovered_geometry([shapely.box(0, 0, 20, 10)], [left], 10.0).area, 6)
    100.0
    """
    grids = _as_geoms(grid_geoms, "grid_geoms")
    if len(grids) == 0:
        return shapely.Polygon()
    union = _reach_union(site_geoms, radius_m, quad_segs)
    return shapely.difference(shapely.union_all(grids), union)


# --------------------------------------------------------------------------------------------
# capacity-aware coverage: the transportation LP
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CapacityResult:
    """Population served when each site has a capacity (exact maximum, see
    :func:`capacitated_coverage`).

    Attributes
    ----------
    served : (n_demand,) float
        People of each demand point assigned to some site.
    load : (n_sites,) float
        People assigned to each site (<= its capacity).
    capacity : (n_sites,) float
        The capacities used (``inf`` for unlimited).
    assignment : csr_array (n_demand, n_sites) float
        People of demand point i assigned to site j; rows sum to ``served``, columns to ``load``.
    population_total : float
    population_served : float
        The maximum total population that can be served.
    population_short : float
        In reach of some site but not served for lack of capacity.
    population_unreachable : float
        Out of reach of every site.
    status : str
        ``"optimal"``, or the solver's message when it stopped early (time limit).
    n_groups : int
        Distinct sets of reachable sites, i.e. demand rows after merging (the LP's size).
    """

    served: NDArray[np.float64]
    load: NDArray[np.float64]
    capacity: NDArray[np.float64]
    assignment: scipy.sparse.csr_array
    population_total: float
    population_served: float
    population_short: float
    population_unreachable: float
    status: str
    n_groups: int

    @property
    def spare_capacity(self) -> NDArray[np.float64]:
        """Capacity minus load per site (``inf`` for unlimited sites)."""
        return np.maximum(self.capacity - self.load, 0.0)

    @property
    def share_served(self) -> float:
        """Population served / population total (0.0 when there is no population)."""
        return self.population_served / self.population_total if self.population_total else 0.0


def _merge_identical_rows(c: scipy.sparse.csr_array) -> NDArray[np.int64]:
    """Label rows of a CSR pattern (sorted indices) so that equal rows share a label.

    Hash each row by a random 64-bit sum over its columns, group by hash, then verify every
    row against its group's first row; on a collision (odds ~n**2 / 2**64) fall back to exact
    byte keys, so the grouping is always exact.
    """
    n_rows, n_cols = c.shape
    lens = np.diff(c.indptr)
    rng = np.random.default_rng(0x5EED)
    w = rng.integers(0, np.iinfo(np.uint64).max, size=n_cols + 1, dtype=np.uint64, endpoint=True)
    row_of_nnz = np.repeat(np.arange(n_rows), lens)
    with np.errstate(over="ignore"):
        key = lens.astype(np.uint64) * w[n_cols]
        np.add.at(key, row_of_nnz, w[c.indices])
    _, first, label = np.unique(key, return_index=True, return_inverse=True)
    label = label.reshape(-1)
    rep = first[label]
    offset = np.arange(c.indices.size) - c.indptr[row_of_nnz]
    same = (lens == lens[rep]).all() and bool(
        (c.indices == c.indices[c.indptr[rep[row_of_nnz]] + offset]).all())
    if same:
        return label.astype(np.int64)
    exact: dict[bytes, int] = {}
    return np.fromiter(
        (exact.setdefault(c.indices[c.indptr[i]:c.indptr[i + 1]].tobytes(), len(exact))
         for i in range(n_rows)), dtype=np.int64, count=n_rows)


def capacitated_coverage(pop: ArrayLike, cover: scipy.sparse.sparray, capacity: ArrayLike, *,
                         time_limit_s: float | None = None) -> CapacityResult:
    """Maximum population served by sites of limited capacity (the transportation LP).

    Each demand point's population may be split among the sites within its reach, and no site
    may take more than its capacity (GB 51143-2015 §5.2.4; STANDARDS.md, SHELTER-CAPACITY).
    With ``x[i, j]`` the people of demand point i served at site j::

        maximise   sum_ij x[i, j]
        subject to sum_j  x[i, j] <= pop[i]        for every demand point i
                   sum_i  x[i, j] <= capacity[j]   for every site j
                   x[i, j] >= 0, and x[i, j] = 0 where i is out of reach of j

    This is a maximum flow on the bipartite reach graph, so the optimum is the true maximum,
    not a greedy guess. Demand points that reach exactly the same set of sites are merged
    first (their populations summed): the LP has one row per distinct reach set, which on
    population rasters is a small fraction of the cells. The merged LP is solved with HiGHS
    (``scipy.optimize.linprog(method="highs")``, sparse constraint matrix) and each group's
    flows are split back to its points in proportion to their population.

    The ``population_*`` totals are exact; how they split among points and sites (``served``,
    ``load``, ``assignment``) is one of possibly several optimal assignments. Reuse: to ask
    whether a housing project's population fits into the shelters in its reach, add it as a
    demand point and check that ``population_served`` grows by all of it (``spare_capacity``
    of one optimum can understate what a re-assignment frees); siting compares the served
    population before and after adding sites.

    Parameters
    ----------
    pop : (n_demand,) array of float
        Population of each demand point (>= 0).
    cover : sparse array, shape (n_demand, n_sites)
        Nonzero where demand point i is within reach of site j (:func:`coverage_matrix`).
    capacity : float or (n_sites,) array of float
        Persons each site can take (>= 0; ``np.inf`` for no limit). For shelters: effective
        area / per-capita area, unless a capacity attribute is given (STANDARDS.md).
    time_limit_s : float, optional, keyword-only
        Stop HiGHS after this many seconds; ``status`` then says so.

    Returns
    -------
    CapacityResult

    Examples
    --------
    Point 0 (30 people) reaches sites 0 and 1, point 1 (30 people) only site 1, point 2
    (10 people) none; each site holds 30. Sending point 0 to site 1 (say, its nearest) would
    leave point 1 unserved; the optimum sends point 0 to site 0 and serves 60.

    >>> cover = scipy.sparse.csr_array(np.array([[1, 1], [0, 1], [0, 0]], dtype=np.uint8))
    >>> res = capacitated_coverage([30., 30., 10.], cover, [30., 30.])
    >>> res.population_served, res.population_short, res.population_unreachable
    (60.0, 0.0, 10.0)
    >>> res.assignment.toarray().tolist()
    [[30.0, 0.0], [0.0, 30.0], [0.0, 0.0]]

    With site 1 holding only 20, 10 people in reach are short of room:

    >>> res = capacitated_coverage([30., 30., 10.], cover, [30., 20.])
    >>> res.population_served, res.population_short, res.spare_capacity.tolist()
    (50.0, 10.0, [0.0, 0.0])
    """
    p = np.asarray(pop, dtype=np.float64)
    c = scipy.sparse.csr_array(cover).astype(bool)
    n_demand, n_sites = c.shape
    if p.shape != (n_demand,):
        raise ValueError(f"pop must have shape ({n_demand},), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("pop must be finite and >= 0")
    cap = np.asarray(capacity, dtype=np.float64)
    cap = np.full(n_sites, float(cap)) if cap.ndim == 0 else cap.copy()
    if cap.shape != (n_sites,):
        raise ValueError(f"capacity must be a scalar or have shape ({n_sites},), got {cap.shape}")
    if np.isnan(cap).any() or (cap < 0).any():
        raise ValueError("capacity must be >= 0 (np.inf for no limit)")
    c.eliminate_zeros()
    c.sort_indices()

    total = float(p.sum())
    reach = np.diff(c.indptr) > 0
    unreachable = float(p[~reach].sum())
    reachable = total - unreachable

    # Merge demand points with identical reach sets; drop empty and zero-population groups.
    label = _merge_identical_rows(c)
    n_groups_all = int(label.max()) + 1 if n_demand else 0
    group_pop = np.bincount(label, weights=p, minlength=n_groups_all)
    first = np.full(n_groups_all, -1, dtype=np.int64)
    first[label[::-1]] = np.arange(n_demand)[::-1]
    g_rows = c[first] if n_demand else c
    active = (np.diff(g_rows.indptr) > 0) & (group_pop > 0)
    g_idx = np.flatnonzero(active)
    g = g_rows[g_idx]                                  # (n_active, n_sites) reach pattern
    gp = group_pop[g_idx]
    g_lens = np.diff(g.indptr)
    var_group = np.repeat(np.arange(len(g_idx)), g_lens)
    var_site = g.indices.astype(np.int64)
    n_var = var_site.size

    status = "optimal"
    if n_var == 0:
        x = np.zeros(0)
    else:
        finite_site = np.flatnonzero(np.isfinite(cap))
        site_row = np.full(n_sites, -1, dtype=np.int64)
        site_row[finite_site] = len(g_idx) + np.arange(finite_site.size)
        in_capped = site_row[var_site] >= 0
        rows = np.concatenate([var_group, site_row[var_site][in_capped]])
        cols = np.concatenate([np.arange(n_var), np.flatnonzero(in_capped)])
        a_ub = scipy.sparse.csr_array((np.ones(rows.size), (rows, cols)),
                                      shape=(len(g_idx) + finite_site.size, n_var))
        b_ub = np.concatenate([gp, cap[finite_site]])
        options = {} if time_limit_s is None else {"time_limit": float(time_limit_s)}
        lp = linprog(-np.ones(n_var), A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs",
                     options=options)
        if lp.x is None:
            raise RuntimeError(f"HiGHS found no solution: {lp.message}")
        if lp.status != 0:
            status = str(lp.message)
        x = np.clip(lp.x, 0.0, None)
        # Undo solver round-off so that no group or site exceeds its bound.
        g_served = np.bincount(var_group, weights=x, minlength=len(g_idx))
        x *= np.minimum(1.0, gp / np.where(g_served > 0, g_served, 1.0))[var_group]
        s_load = np.bincount(var_site, weights=x, minlength=n_sites)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(s_load > cap, cap / s_load, 1.0)
        x *= scale[var_site]

    # Split each group's flows back to its points in proportion to their population.
    flow_g = scipy.sparse.csr_array((x, (var_group, var_site)), shape=(len(g_idx), n_sites))
    pos = np.full(n_groups_all, -1, dtype=np.int64)
    pos[g_idx] = np.arange(len(g_idx))
    member_pos = pos[label] if n_demand else np.zeros(0, dtype=np.int64)
    in_lp = member_pos >= 0
    frac = np.zeros(n_demand)
    frac[in_lp] = p[in_lp] / gp[member_pos[in_lp]]
    rows_in = np.flatnonzero(in_lp)
    spread = scipy.sparse.csr_array((frac[rows_in], (rows_in, member_pos[rows_in])),
                                    shape=(n_demand, len(g_idx)))
    assignment = scipy.sparse.csr_array(spread @ flow_g)
    served = np.asarray(assignment.sum(axis=1)).reshape(-1)
    served = np.minimum(served, p)
    load = np.bincount(var_site, weights=x, minlength=n_sites).astype(np.float64)
    pop_served = float(x.sum())
    _readonly(served, load, cap)
    return CapacityResult(
        served=served, load=load, capacity=cap, assignment=assignment,
        population_total=total, population_served=pop_served,
        population_short=max(reachable - pop_served, 0.0),
        population_unreachable=unreachable, status=status, n_groups=int(len(g_idx)))


# --------------------------------------------------------------------------------------------
# room for one more demand point: integer max-flow (exact), the LP as fallback
# --------------------------------------------------------------------------------------------
#: scipy's ``maximum_flow`` computes in int32; larger totals go to the LP instead.
_INT32_MAX = int(np.iinfo(np.int32).max)


@dataclass(frozen=True, eq=False)
class AddedDemandResult:
    """What a new demand point adds to the maximum served population (:func:`added_demand_capacity`).

    Attributes
    ----------
    added_persons : float
        Increase of the maximum served population when the new point is added (``inf`` when an
        unlimited site is in its reach and its population is unbounded).
    population_served : float
        Maximum population served without the new point (as ``capacitated_coverage``).
    load : (n_sites,) float
        People assigned to each site in one optimal assignment without the new point.
    method : str
        ``"max_flow"`` (integer data: exact) or ``"lp"`` (HiGHS, :func:`capacitated_coverage`).
    n_groups : int
        Distinct non-empty reach sets with population (the size of the flow network / LP).
    """

    added_persons: float
    population_served: float
    load: NDArray[np.float64]
    method: str
    n_groups: int


def _is_whole(a: NDArray[np.float64]) -> bool:
    return bool(np.isfinite(a).all() and (a == np.floor(a)).all())


def added_demand_capacity(pop: ArrayLike, cover: scipy.sparse.sparray, capacity: ArrayLike,
                          new_reach_idx: ArrayLike, *, new_pop: float | None = None) -> AddedDemandResult:
    """Increase of the maximum served population when one demand point is added.

    ``added = served(with the new point) - served(without)``, both maximum flows of the
    transportation problem of :func:`capacitated_coverage` (a new point reaching the sites
    ``new_reach_idx``, of population ``new_pop``; ``None`` = unbounded, i.e. the total capacity of
    those sites). Augmenting paths never drop anybody already served, so ``added`` is the room
    the sites in reach have for the new point after re-assigning existing demand within its own
    reach (SHELTER-CAPACITY of a housing project).

    When population, capacities and ``new_pop`` are whole numbers (persons) and their totals fit
    in int32, both maxima are computed exactly as integer maximum flows
    (``scipy.sparse.csgraph.maximum_flow``, Dinic) on the network source -> reach-set group
    (demand points with identical reach sets merged, as in :func:`capacitated_coverage`) -> site
    -> sink; this is some 100x faster than two LPs on a city district. Otherwise the two LPs of
    :func:`capacitated_coverage` are solved (``method="lp"``) and the difference is snapped to a
    whole number when HiGHS leaves it within 1e-6 of one.

    Parameters
    ----------
    pop : (n_demand,) array of float
        Population of each existing demand point (>= 0).
    cover : sparse array, shape (n_demand, n_sites)
        Reach of the existing demand points (:func:`coverage_matrix_geoms`).
    capacity : float or (n_sites,) array of float
        Persons each site can take (>= 0, ``np.inf`` for no limit).
    new_reach_idx : array of int
        The sites the new point reaches.
    new_pop : float, optional, keyword-only
        Population of the new point; default unbounded.

    Returns
    -------
    AddedDemandResult

    Examples
    --------
    Sites of 100 and 50 persons; point 0 (60 people) reaches both, point 1 (40) only site 0.
    A new point that reaches only site 0 finds room for 50: point 0 moves 50 people to site 1.

    >>> cover = scipy.sparse.csr_array(np.array([[1, 1], [1, 0]], dtype=np.uint8))
    >>> r = added_demand_capacity([60., 40.], cover, [100., 50.], [0])
    >>> r.added_persons, r.population_served, r.method
    (50.0, 100.0, 'max_flow')
    >>> added_demand_capacity([60., 40.], cover, [100., 50.], [0], new_pop=20.).added_persons
    20.0
    >>> added_demand_capacity([60.5, 40.], cover, [100., 50.], [0]).method
    'lp'
    """
    p = np.asarray(pop, dtype=np.float64)
    c = scipy.sparse.csr_array(cover).astype(bool)
    n_demand, n_sites = c.shape
    if p.shape != (n_demand,):
        raise ValueError(f"pop must have shape ({n_demand},), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("pop must be finite and >= 0")
    cap = np.asarray(capacity, dtype=np.float64)
    cap = np.full(n_sites, float(cap)) if cap.ndim == 0 else cap.copy()
    if cap.shape != (n_sites,):
        raise ValueError(f"capacity must be a scalar or have shape ({n_sites},), got {cap.shape}")
    if np.isnan(cap).any() or (cap < 0).any():
        raise ValueError("capacity must be >= 0 (np.inf for no limit)")
    reach = np.unique(np.asarray(new_reach_idx, dtype=np.int64).reshape(-1))
    if reach.size and (reach[0] < 0 or reach[-1] >= n_sites):
        raise ValueError(f"new_reach_idx must lie in [0, {n_sites})")
    room = float(cap[reach].sum())
    if new_pop is None:
        new_pop = room
    new_pop = float(new_pop)
    if math.isnan(new_pop) or new_pop < 0:
        raise ValueError("new_pop must be >= 0")
    c.eliminate_zeros()
    c.sort_indices()

    # merged reach-set groups with population (as in capacitated_coverage)
    label = _merge_identical_rows(c) if n_demand else np.zeros(0, dtype=np.int64)
    n_all = int(label.max()) + 1 if n_demand else 0
    group_pop = np.bincount(label, weights=p, minlength=n_all)
    first = np.full(n_all, -1, dtype=np.int64)
    first[label[::-1]] = np.arange(n_demand)[::-1]
    g_rows = c[first] if n_demand else c
    g_idx = np.flatnonzero((np.diff(g_rows.indptr) > 0) & (group_pop > 0))
    g = g_rows[g_idx]
    gp = group_pop[g_idx]
    n_g = len(g_idx)

    total = float(gp.sum())
    whole = _is_whole(gp) and _is_whole(cap[np.isfinite(cap)]) and (
        math.isinf(new_pop) or new_pop == math.floor(new_pop))
    fits = whole and total <= _INT32_MAX
    if math.isinf(new_pop):
        # unbounded new demand and an unlimited site in reach: unlimited room
        if fits:
            served0, load = _max_flow_served(g, gp, cap, None, 0)
            return AddedDemandResult(math.inf, float(served0), load, "max_flow", n_g)
        base = capacitated_coverage(p, c, cap)
        return AddedDemandResult(math.inf, base.population_served, np.asarray(base.load), "lp", n_g)
    if fits and total + new_pop <= _INT32_MAX:
        served0, load = _max_flow_served(g, gp, cap, None, 0)
        served1, _ = _max_flow_served(g, gp, cap, reach, int(new_pop))
        return AddedDemandResult(float(served1 - served0), float(served0), load, "max_flow", n_g)

    base = capacitated_coverage(p, c, cap)
    row = np.zeros((1, n_sites), dtype=np.uint8)
    row[0, reach] = 1
    c2 = scipy.sparse.vstack([c.astype(np.uint8), scipy.sparse.csr_array(row)]).tocsr()
    with_p = capacitated_coverage(np.append(p, new_pop), c2, cap)
    added = max(with_p.population_served - base.population_served, 0.0)
    added = float(round(added)) if abs(added - round(added)) < 1e-6 else added
    return AddedDemandResult(added, base.population_served, np.asarray(base.load), "lp", n_g)


def _max_flow_served(g: scipy.sparse.csr_array, gp: NDArray[np.float64], cap: NDArray[np.float64],
                     reach: NDArray[np.int64] | None, new_pop: int) -> tuple[int, NDArray[np.float64]]:
    """Integer max flow source -> groups (gp) -> sites (cap) -> sink, plus an optional new point.

    Nodes: 0 source, 1..G groups, G+1..G+S sites, G+S+1 the new point, G+S+2 sink. No edge
    capacity exceeds the total supply, so unlimited sites are capped at it without effect.
    """
    n_g, n_s = g.shape
    supply = int(gp.sum()) + int(new_pop)
    src, newp, sink = 0, n_g + n_s + 1, n_g + n_s + 2
    grp = 1 + np.arange(n_g)
    site = 1 + n_g + np.arange(n_s)
    lens = np.diff(g.indptr)
    gpi = gp.astype(np.int64)
    rows = [np.zeros(n_g, np.int64), np.repeat(grp, lens), site]
    cols = [grp, site[g.indices], np.full(n_s, sink)]
    data = [gpi, np.repeat(gpi, lens), np.minimum(cap, supply).astype(np.int64)]
    if reach is not None and reach.size and new_pop > 0:
        rows += [np.array([src]), np.full(reach.size, newp)]
        cols += [np.array([newp]), site[reach]]
        data += [np.array([new_pop]), np.full(reach.size, new_pop)]
    n = n_g + n_s + 3
    graph = scipy.sparse.csr_array(
        (np.concatenate(data).astype(np.int32), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    graph.eliminate_zeros()
    res = maximum_flow(graph, src, sink)
    fl = res.flow.tocoo()
    into_sink = (fl.col == sink) & (fl.data > 0)
    load = np.zeros(n_s)
    load[fl.row[into_sink] - (1 + n_g)] = fl.data[into_sink]
    return int(res.flow_value), load
