"""Walking distances along the road network (DESIGN.md, Coverage and siting: "Distance").

The roads layer becomes an undirected graph: lines are split where they cross or touch
(GEOS noding, :func:`shapely.node`), line ends closer than ``snap_tol_m`` are merged into one node,
and every piece of road between two nodes is one edge whose weight is its length in metres.
A point (a population cell, a facility) joins the network at the nearest point of the nearest road
(its *snap*); its walk is the straight *access leg* to that point, then along the road to either end
of the edge it lies on, or directly along that edge to a point on the same edge.

Network distance = access leg at the demand end + path along the roads + access leg at the
facility end. By the triangle inequality it is never shorter than the straight-line distance
(up to the merged gaps of at most ``snap_tol_m`` per node).

All coordinates are in one metric CRS (``GIS_SRID``, EPSG:4547). Nothing here knows about
Django; functions take arrays and return arrays, sparse matrices and frozen dataclasses.

Known simplifications: every crossing is a junction (no bridges or tunnels: roads have no
grade-separation attribute), all roads are walkable both ways, and a road end that stops short of
another road's side (an undershoot) is joined only if it lies within ``snap_tol_m`` of that road's
*end*, not of its side.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from .coverage import _as_xy  # one check of (n, 2) point arrays for both engines

__all__ = [
    "RoadNetwork",
    "Snap",
    "build_network",
    "network_coverage_matrix",
    "network_distance_pairs",
    "network_distance_to_nearest",
    "network_version_key",
    "service_area_polygons",
    "snap_points",
]

#: Bump when the way a network is built changes, so cached networks keyed by
#: :func:`network_version_key` are rebuilt.
_ALGORITHM_VERSION = "network-v1"

#: Bytes of the dense (sources x nodes) distance block one Dijkstra batch may use.
_DIJKSTRA_BLOCK_BYTES = 64 * 2**20



# --------------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RoadNetwork:
    """An undirected road graph with the road geometry needed to snap points onto it.

    Attributes
    ----------
    node_xy : (n_nodes, 2) float
        Junctions and road ends (merged within the snap tolerance).
    adjacency : scipy.sparse.csr_array (n_nodes, n_nodes)
        Symmetric; entry (i, j) is the length in metres of the shortest edge between i and j.
    edge_u, edge_v : (n_edges,) int
        End nodes of each edge; the edge geometry runs from ``edge_u`` to ``edge_v``.
        ``edge_u == edge_v`` for a loop (a closed ring road); loops are not in ``adjacency``.
    edge_length_m : (n_edges,) float
        Length of each edge along its geometry.
    seg_a_xy, seg_b_xy : (n_segs, 2) float
        Straight pieces of the edge geometries (no piece longer than ``cell_size_m``).
    seg_edge_idx : (n_segs,) int
        Edge each piece belongs to; pieces of an edge are contiguous and in order.
    seg_start_m : (n_segs,) float
        Distance along the edge (from ``edge_u``) where each piece starts.
    grid_origin_xy : (2,) float, cell_size_m : float, grid_shape : (int, int)
        A uniform grid over the pieces; cell ``ix * grid_shape[1] + iy`` holds the pieces
        ``cell_seg_idx[cell_ptr[c]:cell_ptr[c + 1]]`` whose bounding box touches it.
    """

    node_xy: NDArray[np.float64]
    adjacency: scipy.sparse.csr_array
    edge_u: NDArray[np.int64]
    edge_v: NDArray[np.int64]
    edge_length_m: NDArray[np.float64]
    seg_a_xy: NDArray[np.float64]
    seg_b_xy: NDArray[np.float64]
    seg_edge_idx: NDArray[np.int64]
    seg_start_m: NDArray[np.float64]
    grid_origin_xy: NDArray[np.float64]
    cell_size_m: float
    grid_shape: tuple[int, int]
    cell_ptr: NDArray[np.int64]
    cell_seg_idx: NDArray[np.int64]

    @property
    def n_nodes(self) -> int:
        return len(self.node_xy)

    @property
    def n_edges(self) -> int:
        return len(self.edge_u)

    def edge_geometries(self) -> NDArray[np.object_]:
        """Return the edges as shapely LineStrings (for drawing and checks)."""
        if self.n_edges == 0:
            return np.empty(0, dtype=object)
        last = np.r_[self.seg_edge_idx[1:] != self.seg_edge_idx[:-1], True]
        # each edge: its piece starts, then the end of its last piece
        pts = np.concatenate([self.seg_a_xy, self.seg_b_xy[last]])
        owner = np.concatenate([self.seg_edge_idx, self.seg_edge_idx[last]])
        order = np.argsort(owner, kind="stable")
        return shapely.linestrings(pts[order], indices=owner[order])


@dataclass(frozen=True, eq=False)
class Snap:
    """Where points join the network.

    Attributes
    ----------
    seg_idx : (n,) int
        The nearest road piece (row of ``RoadNetwork.seg_a_xy``).
    edge_idx : (n,) int
        The edge that piece belongs to.
    along_m : (n,) float
        Distance along the edge from ``edge_u`` to the snapped point.
    access_m : (n,) float
        Length of the straight access leg from the point to the road.
    snapped_xy : (n, 2) float
        The nearest point on the road.
    """

    seg_idx: NDArray[np.int64]
    edge_idx: NDArray[np.int64]
    along_m: NDArray[np.float64]
    access_m: NDArray[np.float64]
    snapped_xy: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.seg_idx)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _as_radius(radius_m: ArrayLike, n_sites: int) -> NDArray[np.float64]:
    r = np.asarray(radius_m, dtype=np.float64)
    if r.ndim == 0:
        r = np.full(n_sites, float(r))
    elif r.shape != (n_sites,):
        raise ValueError(f"radius_m must be a scalar or have shape ({n_sites},), got {r.shape}")
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("radius_m must be >= 0")
    return r


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


def _line_parts(lines) -> NDArray[np.object_]:
    """Explode (Multi)LineStrings into non-empty LineStrings."""
    geoms = np.asarray(lines, dtype=object).reshape(-1)
    if geoms.size == 0:
        return geoms
    if shapely.is_missing(geoms).any():
        raise ValueError("lines contains missing geometries")
    parts = shapely.get_parts(geoms)
    type_id = shapely.get_type_id(parts)
    if not np.isin(type_id, (1, 2)).all():
        raise ValueError("lines must be LineStrings or MultiLineStrings")
    parts = parts[~shapely.is_empty(parts)]
    return shapely.force_2d(parts)


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def build_network(lines: Sequence[shapely.Geometry] | ArrayLike,
                  snap_tol_m: float = 1.0) -> RoadNetwork:
    """Build the undirected road graph from road lines in a metric CRS.

    Lines are split where they cross or touch (GEOS noding, which also merges overlapping
    stretches), then line ends within ``snap_tol_m`` of each other become one node (at their
    mean position; clusters chain, so ends farther apart can merge through a middle one).

    Parameters
    ----------
    lines : sequence of shapely LineString or MultiLineString
        Road centre lines in a metric CRS (EPSG:4547); Z is ignored.
    snap_tol_m : float, default 1.0
        Ends closer than this are merged (digitising gaps). 0 merges only identical ends.

    Returns
    -------
    RoadNetwork

    Examples
    --------
    Two crossing 10 m lines make a plus: 5 nodes, 4 edges of 5 m.

    >>> from shapely import LineString
    >>> net = build_network([LineString([(0, 5), (10, 5)]), LineString([(5, 0), (5, 10)])])
    >>> net.n_nodes, net.n_edges, sorted(net.edge_length_m.tolist())
    (5, 4, [5.0, 5.0, 5.0, 5.0])

    An end 0.5 m from another line's end is merged with the default 1 m tolerance.

    >>> net = build_network([LineString([(0, 0), (10, 0)]), LineString([(10.5, 0), (20, 0)])])
    >>> net.n_nodes, net.n_edges
    (3, 2)
    """
    if not snap_tol_m >= 0:
        raise ValueError("snap_tol_m must be >= 0")
    parts = _line_parts(lines)
    if parts.size == 0:
        raise ValueError("no road lines to build a network from")
    noded = shapely.get_parts(shapely.node(shapely.multilinestrings(parts)))
    coords, owner = shapely.get_coordinates(noded, return_index=True)

    # vertex-to-vertex segments of each noded line
    same = owner[1:] == owner[:-1]
    a_xy, b_xy, seg_owner = coords[:-1][same], coords[1:][same], owner[:-1][same]
    seg_len = np.hypot(*(b_xy - a_xy).T)
    keep = seg_len > 0
    a_xy, b_xy, seg_owner, seg_len = a_xy[keep], b_xy[keep], seg_owner[keep], seg_len[keep]
    line_len = np.bincount(seg_owner, weights=seg_len, minlength=len(noded))
    live = line_len > 0
    if not live.any():
        raise ValueError("road lines have no length")

    # renumber the surviving lines 0..m-1 (they become the edges)
    new_id = np.cumsum(live) - 1
    n_edges = int(live.sum())
    first = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1]
    last = np.r_[first[1:] - 1, len(owner) - 1]
    ends = np.concatenate([coords[first[live]], coords[last[live]]])  # (2m, 2): starts then ends

    label = _merge_points(ends, float(snap_tol_m))
    n_nodes = int(label.max()) + 1
    cnt = np.bincount(label, minlength=n_nodes)
    node_xy = np.column_stack([np.bincount(label, weights=ends[:, 0], minlength=n_nodes),
                               np.bincount(label, weights=ends[:, 1], minlength=n_nodes)]) / cnt[:, None]
    edge_u = label[:n_edges].astype(np.int64)
    edge_v = label[n_edges:].astype(np.int64)
    edge_length_m = line_len[live]

    seg_edge = new_id[seg_owner].astype(np.int64)
    cum = np.cumsum(seg_len)
    edge_first_seg = np.searchsorted(seg_edge, np.arange(n_edges))
    seg_start = cum - seg_len - (cum - seg_len)[edge_first_seg][seg_edge]

    adjacency = _adjacency(edge_u, edge_v, edge_length_m, n_nodes)

    # index: split long segments, then a uniform grid over the pieces
    cell = _cell_size(a_xy, b_xy, seg_len)
    a_xy, b_xy, seg_edge, seg_start = _split_segments(a_xy, b_xy, seg_edge, seg_start, seg_len, cell)
    origin, shape, cell_ptr, cell_seg = _grid_index(a_xy, b_xy, cell)

    net = RoadNetwork(node_xy=node_xy, adjacency=adjacency, edge_u=edge_u, edge_v=edge_v,
                      edge_length_m=edge_length_m, seg_a_xy=a_xy, seg_b_xy=b_xy,
                      seg_edge_idx=seg_edge, seg_start_m=seg_start, grid_origin_xy=origin,
                      cell_size_m=cell, grid_shape=shape, cell_ptr=cell_ptr, cell_seg_idx=cell_seg)
    _readonly(node_xy, edge_u, edge_v, edge_length_m, a_xy, b_xy, seg_edge, seg_start, origin,
              cell_ptr, cell_seg)
    return net


def _merge_points(xy: NDArray[np.float64], tol: float) -> NDArray[np.int64]:
    """Label points so that points within ``tol`` (transitively) share a label 0..k-1."""
    if tol == 0:
        _, label = np.unique(xy, axis=0, return_inverse=True)
        return label.reshape(-1).astype(np.int64)
    pairs = cKDTree(xy).query_pairs(tol, output_type="ndarray")
    n = len(xy)
    g = scipy.sparse.coo_array((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                               shape=(n, n))
    _, label = connected_components(g, directed=False)
    return label.astype(np.int64)


def _adjacency(u, v, length, n) -> scipy.sparse.csr_array:
    """Symmetric csr adjacency keeping the shortest of parallel edges, without loops."""
    ok = u != v
    lo, hi, w = np.minimum(u, v)[ok], np.maximum(u, v)[ok], length[ok]
    order = np.lexsort((w, hi, lo))
    lo, hi, w = lo[order], hi[order], w[order]
    first = np.r_[True, (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])]
    lo, hi, w = lo[first], hi[first], w[first]
    rows, cols = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    adj = scipy.sparse.csr_array((np.concatenate([w, w]), (rows, cols)), shape=(n, n))
    adj.sort_indices()
    return adj


def _cell_size(a_xy, b_xy, seg_len) -> float:
    """Grid cell: about a typical segment, but at most ~4 cells per segment overall."""
    lo = np.minimum(a_xy.min(axis=0), b_xy.min(axis=0))
    hi = np.maximum(a_xy.max(axis=0), b_xy.max(axis=0))
    w, h = np.maximum(hi - lo, 1.0)
    return float(max(np.median(seg_len), np.sqrt(w * h / (4.0 * len(seg_len))), 1.0))


def _split_segments(a_xy, b_xy, seg_edge, seg_start, seg_len, max_len):
    """Cut segments longer than ``max_len`` into equal pieces."""
    k = np.maximum(np.ceil(seg_len / max_len), 1).astype(np.int64)
    if (k == 1).all():
        return a_xy, b_xy, seg_edge, seg_start
    src = np.repeat(np.arange(len(k)), k)
    j = np.arange(len(src)) - np.repeat(np.cumsum(k) - k, k)
    f0, f1 = j / k[src], (j + 1) / k[src]
    d = (b_xy - a_xy)[src]
    a = a_xy[src] + d * f0[:, None]
    b = np.where((j + 1 == k[src])[:, None], b_xy[src], a_xy[src] + d * f1[:, None])
    return a, b, seg_edge[src], seg_start[src] + seg_len[src] * f0


def _grid_index(a_xy, b_xy, cell):
    lo = np.minimum(a_xy, b_xy)
    hi = np.maximum(a_xy, b_xy)
    origin = lo.min(axis=0)
    i0 = np.floor((lo - origin) / cell).astype(np.int64)
    i1 = np.floor((hi - origin) / cell).astype(np.int64)
    shape = (int(i1[:, 0].max()) + 1, int(i1[:, 1].max()) + 1)
    segs, cells = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            ix, iy = i0[:, 0] + dx, i0[:, 1] + dy
            ok = (ix <= i1[:, 0]) & (iy <= i1[:, 1])
            segs.append(np.flatnonzero(ok))
            cells.append(ix[ok] * shape[1] + iy[ok])
    seg, cid = np.concatenate(segs), np.concatenate(cells)
    order = np.argsort(cid, kind="stable")
    cell_ptr = np.zeros(shape[0] * shape[1] + 1, dtype=np.int64)
    np.cumsum(np.bincount(cid, minlength=shape[0] * shape[1]), out=cell_ptr[1:])
    return origin, shape, cell_ptr, seg[order].astype(np.int64)


# --------------------------------------------------------------------------------------------
# snapping
# --------------------------------------------------------------------------------------------
def snap_points(net: RoadNetwork, xy: ArrayLike) -> Snap:
    """Join each point to the nearest point of the nearest road piece.

    Exact: a search over growing blocks of grid cells (first the 2 x 2 cells nearest the point,
    then 3 x 3, 5 x 5, ...), each result certified by the distance from the point to the border
    of the searched block; a GEOS STRtree handles points farther than 8 cells from any road.

    Parameters
    ----------
    net : RoadNetwork
    xy : (n, 2) array of float
        Points in the network's CRS.

    Returns
    -------
    Snap

    Examples
    --------
    A point 3 m beside the middle of a 10 m road snaps to its middle.

    >>> from shapely import LineString
    >>> net = build_network([LineString([(0, 0), (10, 0)])])
    >>> s = snap_points(net, [[5.0, 3.0]])
    >>> s.along_m.tolist(), s.access_m.tolist(), s.snapped_xy.tolist()
    ([5.0], [3.0], [[5.0, 0.0]])
    """
    p = _as_xy(xy, "xy")
    n = len(p)
    best_seg = np.full(n, -1, dtype=np.int64)
    # the pieces in cell order, as separate coordinate arrays (local to the grid origin)
    reg = net.cell_seg_idx
    a_loc = net.seg_a_xy - net.grid_origin_xy
    d = net.seg_b_xy - net.seg_a_xy
    dd = np.einsum("ij,ij->i", d, d)
    inv = np.where(dd > 0, 1.0 / np.where(dd > 0, dd, 1.0), 0.0)
    soa = (a_loc[reg, 0], a_loc[reg, 1], d[reg, 0], d[reg, 1], inv[reg])
    p_loc = p - net.grid_origin_xy
    todo = np.arange(n)
    for width in _BLOCK_WIDTHS:
        if todo.size == 0:
            break
        step = max(1, 1_000_000 // (width * width))
        still = []
        for s in range(0, todo.size, step):
            idx = todo[s:s + step]
            pos, ok = _block_search(net, soa, p_loc[idx], width)
            best_seg[idx[ok]] = reg[pos[ok]]
            still.append(idx[~ok])
        todo = np.concatenate(still)
    if todo.size:
        pieces = shapely.linestrings(np.stack([net.seg_a_xy, net.seg_b_xy], axis=1))
        hit = shapely.STRtree(pieces).query_nearest(shapely.points(p[todo]), all_matches=False)
        best_seg[todo[hit[0]]] = hit[1]

    a, b = net.seg_a_xy[best_seg], net.seg_b_xy[best_seg]
    _, q, d2 = _project(p, a, b)
    edge = net.seg_edge_idx[best_seg]
    # the scalar projection (p - a).(b - a) / |b - a|, not t * |b - a|: exact for round
    # numbers (55.0, not 55.00000000000001), so hand-checked boundaries hold
    seg_len = np.hypot(*(b - a).T)
    proj = np.einsum("ij,ij->i", p - a, b - a) / np.where(seg_len > 0, seg_len, 1.0)
    along = net.seg_start_m[best_seg] + np.clip(proj, 0.0, seg_len)
    snap = Snap(seg_idx=best_seg, edge_idx=edge,
                along_m=np.minimum(along, net.edge_length_m[edge]),
                access_m=np.sqrt(d2), snapped_xy=q)
    _readonly(snap.seg_idx, snap.edge_idx, snap.along_m, snap.access_m, snap.snapped_xy)
    return snap


#: Block widths (cells) tried by the exact nearest-piece search before the STRtree fallback.
_BLOCK_WIDTHS = (2, 3, 5, 9, 17)


def _project(p, a, b):
    """Parameter t in [0, 1], nearest point q on segment ab, and squared distance |p - q|^2."""
    d = b - a
    dd = np.einsum("ij,ij->i", d, d)
    t = np.einsum("ij,ij->i", p - a, d) / np.where(dd > 0, dd, 1.0)
    np.clip(t, 0.0, 1.0, out=t)
    q = a + d * t[:, None]
    r = p - q
    return t, q, np.einsum("ij,ij->i", r, r)


def _block_search(net: RoadNetwork, soa, p, width: int):
    """Nearest registered piece among a width x width block of cells around each point.

    Returns the position in the cell-ordered registration arrays of the best piece, and
    whether that answer is certain (nothing outside the block can be closer).
    """
    c = net.cell_size_m
    nx, ny = net.grid_shape
    rel = p / c
    ij = np.floor(rel).astype(np.int64)
    if width % 2:
        lo = ij - width // 2
    else:  # even: the block leans towards the nearer neighbour cells
        lo = ij - width // 2 + (rel - ij >= 0.5)
    off = np.arange(width)
    cx = lo[:, 0:1, None] + off[None, :, None]
    cy = lo[:, 1:2, None] + off[None, None, :]
    valid = ((cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny)).reshape(len(p), -1)
    cid = np.where(valid, (cx * ny + cy).reshape(len(p), -1), 0)
    start = net.cell_ptr[cid]
    cnt = np.where(valid, net.cell_ptr[cid + 1] - start, 0)
    per_point = cnt.sum(axis=1)
    flat_cnt = cnt.reshape(-1)
    nz = flat_cnt > 0
    flat_cnt, flat_start = flat_cnt[nz], start.reshape(-1)[nz]
    total = int(flat_cnt.sum())
    pos = np.arange(total, dtype=np.int64)
    pos += np.repeat(flat_start - (np.cumsum(flat_cnt) - flat_cnt), flat_cnt)
    ax, ay, dx, dy, inv = (arr[pos] for arr in soa)
    has = per_point > 0
    px = np.repeat(p[has, 0], per_point[has])
    py = np.repeat(p[has, 1], per_point[has])
    rx = px - ax
    ry = py - ay
    t = (rx * dx + ry * dy) * inv
    np.clip(t, 0.0, 1.0, out=t)
    rx -= t * dx
    ry -= t * dy
    d2 = rx * rx + ry * ry

    best = np.full(len(p), -1, dtype=np.int64)
    best_d2 = np.full(len(p), np.inf)
    if total:
        starts = np.cumsum(per_point[has]) - per_point[has]
        gmin = np.minimum.reduceat(d2, starts)
        best_d2[has] = gmin
        hit = np.flatnonzero(d2 == np.repeat(gmin, per_point[has]))
        grp = np.searchsorted(starts, hit, side="right") - 1
        first = np.r_[True, grp[1:] != grp[:-1]]
        best[np.flatnonzero(has)[grp[first]]] = pos[hit[first]]
    # distance from the point to the border of its block
    margin = np.minimum(rel - lo, lo + width - rel).min(axis=1) * c
    ok = has & (best_d2 <= (margin * (1.0 - 1e-9)) ** 2)
    return best, ok


# --------------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------------
def _graph_with_sources(net: RoadNetwork, snap: Snap) -> scipy.sparse.csr_array:
    """The adjacency plus one node per source (rows n..n+k-1) with arcs to its edge's two ends.

    Source i's arcs cost its access leg plus the partial length to each end, so a Dijkstra run
    from node n + i measures whole walks from the source point.
    """
    n, k = net.n_nodes, len(snap)
    e = snap.edge_idx
    cols = np.stack([net.edge_u[e], net.edge_v[e]], axis=1)                      # (k, 2)
    w = np.stack([snap.access_m + snap.along_m,
                  snap.access_m + net.edge_length_m[e] - snap.along_m], axis=1)
    # a loop edge (u == v): keep the shorter way round
    loop = cols[:, 0] == cols[:, 1]
    w[loop, 0] = w[loop].min(axis=1)
    cnt = np.where(loop, 1, 2)
    keep = np.ones((k, 2), dtype=bool)
    keep[loop, 1] = False
    adj = net.adjacency
    indptr = np.concatenate([adj.indptr, adj.indptr[-1] + np.cumsum(cnt)]).astype(np.int64)
    indices = np.concatenate([adj.indices, cols[keep]]).astype(np.int64)
    data = np.concatenate([adj.data, w[keep]])
    return scipy.sparse.csr_array((data, indices, indptr), shape=(n + k, n + k))


def _same_edge_best(src_edge, src_along, src_cost, q_edge, q_along):
    """For each query, min over sources on its edge of cost + |along difference| (inf if none)."""
    out = np.full(len(q_edge), np.inf)
    if len(src_edge) == 0 or len(q_edge) == 0:
        return out
    order = np.lexsort((src_along, src_edge))
    e, t, c = src_edge[order], src_along[order], src_cost[order]
    new = np.r_[True, e[1:] != e[:-1]]
    g = np.cumsum(new) - 1
    uedge = e[new]
    gstart = np.flatnonzero(new)
    gend = np.r_[gstart[1:], len(e)]
    gi = np.searchsorted(uedge, q_edge)
    gi_c = np.minimum(gi, len(uedge) - 1)
    has = uedge[gi_c] == q_edge
    if not has.any():
        return out
    qi, qg, qt = np.flatnonzero(has), gi_c[has], q_along[has]
    width = max(float(t.max()), float(qt.max())) + 1.0
    fkey, qkey = g * width + t, qg * width + qt
    fwd, bwd = c - t, c + t
    big = 2.0 * max(np.abs(fwd).max(), np.abs(bwd).max()) + 1.0
    # prefix minimum of (cost - t) and suffix minimum of (cost + t), restarting at each edge
    pre = np.minimum.accumulate(fwd - g * big) + g * big
    suf = (np.minimum.accumulate((bwd + g * big)[::-1]) - (g * big)[::-1])[::-1]
    lo = np.searchsorted(fkey, qkey, side="right") - 1          # last source at or before
    hi = np.searchsorted(fkey, qkey, side="left")               # first source at or after
    best = np.full(len(qi), np.inf)
    ok = lo >= gstart[qg]
    best[ok] = pre[lo[ok]] + qt[ok]
    ok = hi < gend[qg]
    best[ok] = np.minimum(best[ok], suf[hi[ok]] - qt[ok])
    out[qi] = best
    return out


def _snap_or(net, xy, snap, name):
    if snap is not None:
        return snap
    return snap_points(net, _as_xy(xy, name))


def network_distance_to_nearest(net: RoadNetwork, facility_xy: ArrayLike, demand_xy: ArrayLike,
                                cutoff_m: float = np.inf, *, facility_snap: Snap | None = None,
                                demand_snap: Snap | None = None) -> NDArray[np.float64]:
    """Walking distance from each demand point to its nearest facility along the roads.

    One Dijkstra run from a virtual source joined to every facility's edge ends (arc cost =
    facility access leg + partial edge length), stopped at ``cutoff_m``; then each demand point
    takes the better of its edge's two ends, or the direct way along its edge to a facility on
    the same edge, plus its own access leg.

    Parameters
    ----------
    net : RoadNetwork
    facility_xy : (n_fac, 2) array of float
    demand_xy : (n_demand, 2) array of float
    cutoff_m : float, default inf
        Distances beyond this are reported as ``inf`` (and not searched).
    facility_snap, demand_snap : Snap, optional
        Snaps from :func:`snap_points` to reuse (the xy arguments are then ignored).

    Returns
    -------
    (n_demand,) array of float
        Metres, ``inf`` beyond ``cutoff_m`` or with no facilities.

    Examples
    --------
    A plus of four 10 m arms centred at (10, 10). A facility 1 m beside the end of the east arm,
    a demand point 2 m beside the middle of the north arm: 2 + 5 + 10 + 1 = 18 m.

    >>> from shapely import LineString
    >>> net = build_network([LineString([(0, 10), (20, 10)]), LineString([(10, 0), (10, 20)])])
    >>> network_distance_to_nearest(net, [[21.0, 10.0]], [[12.0, 15.0]]).tolist()
    [18.0]
    >>> network_distance_to_nearest(net, [[21.0, 10.0]], [[12.0, 15.0]], cutoff_m=17.0).tolist()
    [inf]
    """
    fs = _snap_or(net, facility_xy, facility_snap, "facility_xy")
    ds = _snap_or(net, demand_xy, demand_snap, "demand_xy")
    cutoff = float(cutoff_m)
    if np.isnan(cutoff) or cutoff < 0:
        raise ValueError("cutoff_m must be >= 0")
    out = np.full(len(ds), np.inf)
    if len(fs) == 0 or len(ds) == 0:
        return out
    n = net.n_nodes
    # one virtual source: collapse all facilities into a single extra node
    g = _graph_with_sources(net, fs)
    g = _collapse_sources(g, n, len(fs))
    dist = dijkstra(g, directed=True, indices=n, limit=cutoff)[:n]
    e = ds.edge_idx
    via = np.minimum(dist[net.edge_u[e]] + ds.along_m,
                     dist[net.edge_v[e]] + net.edge_length_m[e] - ds.along_m)
    same = _same_edge_best(fs.edge_idx, fs.along_m, fs.access_m, e, ds.along_m)
    out = ds.access_m + np.minimum(via, same)
    out[out > cutoff] = np.inf
    return out


def _collapse_sources(g: scipy.sparse.csr_array, n: int, k: int) -> scipy.sparse.csr_array:
    """Merge source rows n..n+k-1 into one row n (cheapest arc per target node)."""
    lo, hi = g.indptr[n], g.indptr[n + k]
    cols, w = g.indices[lo:hi], g.data[lo:hi]
    order = np.lexsort((w, cols))
    cols, w = cols[order], w[order]
    first = np.r_[True, cols[1:] != cols[:-1]]
    cols, w = cols[first], w[first]
    indptr = np.concatenate([g.indptr[:n + 1], [g.indptr[n] + len(cols)]])
    return scipy.sparse.csr_array((np.concatenate([g.data[:lo], w]),
                                   np.concatenate([g.indices[:lo], cols]), indptr),
                                  shape=(n + 1, n + 1))


def network_distance_pairs(net: RoadNetwork, demand_xy: ArrayLike, site_xy: ArrayLike,
                           radius_m: ArrayLike, *, demand_snap: Snap | None = None,
                           site_snap: Snap | None = None
                           ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Every (demand, site) pair within walking distance ``radius_m`` of the site, with the distance.

    A Dijkstra run per site from its snapped location, limited to its radius (in batches so
    the dense distance block stays small), then demand points are attached through their snaps:
    each pair is found once, from the first reached end of the demand point's edge, or from the
    site's own edge when neither end is reached.

    Parameters
    ----------
    net : RoadNetwork
    demand_xy : (n_demand, 2) array of float
    site_xy : (n_sites, 2) array of float
    radius_m : float or (n_sites,) array of float
    demand_snap, site_snap : Snap, optional
        Snaps to reuse (the xy arguments are then ignored).

    Returns
    -------
    demand_idx, site_idx : (n_pairs,) int
    distance_m : (n_pairs,) float
        Sorted by site, then demand.

    Examples
    --------
    >>> from shapely import LineString
    >>> net = build_network([LineString([(0, 0), (100, 0)])])
    >>> d, s, m = network_distance_pairs(net, [[10, 1], [60, 1], [90, 0]], [[50, 1]], 20.0)
    >>> d.tolist(), s.tolist(), m.tolist()
    ([1], [0], [12.0])
    """
    ds = _snap_or(net, demand_xy, demand_snap, "demand_xy")
    ss = _snap_or(net, site_xy, site_snap, "site_xy")
    d_idx, s_idx, dist_m = _pairs(net, ds, ss, _as_radius(radius_m, len(ss)))
    o = np.lexsort((d_idx, s_idx))
    return d_idx[o], s_idx[o], dist_m[o]


def _pairs(net: RoadNetwork, ds: Snap, ss: Snap, r: NDArray[np.float64]):
    """Unordered (demand, site, distance) triples within each site's radius."""
    if len(ds) == 0 or len(ss) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    n = net.n_nodes
    g = _graph_with_sources(net, ss)
    d_edge = ds.edge_idx
    du, dv, dl = net.edge_u[d_edge], net.edge_v[d_edge], net.edge_length_m[d_edge]
    d_along, d_access = ds.along_m, ds.access_m
    # demand points grouped by the node at each end of their edge, and by edge
    by_u, ptr_u = _group(du, n)
    by_v, ptr_v = _group(dv, n)
    by_e, ptr_e = _group(d_edge, net.n_edges)

    width = n + len(ss)
    rows = max(1, _DIJKSTRA_BLOCK_BYTES // (8 * width))
    order = np.argsort(r, kind="stable")       # batch sites of similar radius together
    out_d, out_s, out_m = [], [], []
    for b in range(0, len(ss), rows):
        sites = order[b:b + rows]
        rad = r[sites]
        # rows span all n + k columns (no slicing copy); site columns are never "reached"
        dist = dijkstra(g, directed=True, indices=n + sites, limit=float(rad.max()))
        reached = dist <= rad[:, None]
        reached[:, n:] = False
        row, node = np.nonzero(reached)
        flat_dist, flat_reached = dist.reshape(-1), reached.reshape(-1)
        # via the u end of the demand edge
        rr_u, dd_u = _expand(row, node, by_u, ptr_u)
        # via the v end, unless the u end was reached too (then it was found above)
        rr_v, dd_v = _expand(row, node, by_v, ptr_v)
        k = ~flat_reached[rr_v * width + du[dd_v]]
        rr_v, dd_v = rr_v[k], dd_v[k]
        # on the site's own edge with neither end reached
        rr_e, dd_e = _expand(np.arange(len(sites)), ss.edge_idx[sites], by_e, ptr_e)
        k = ~(flat_reached[rr_e * width + du[dd_e]] | flat_reached[rr_e * width + dv[dd_e]])
        rr = np.concatenate([rr_u, rr_v, rr_e[k]])
        dd = np.concatenate([dd_u, dd_v, dd_e[k]])
        base = rr * width
        along = d_along[dd]
        via = np.minimum(flat_dist[base + du[dd]] + along, flat_dist[base + dv[dd]] + dl[dd] - along)
        s = sites[rr]
        on_edge = np.flatnonzero(ss.edge_idx[s] == d_edge[dd])
        so = s[on_edge]
        via[on_edge] = np.minimum(via[on_edge],
                                  ss.access_m[so] + np.abs(ss.along_m[so] - along[on_edge]))
        via += d_access[dd]
        ok = via <= rad[rr]
        out_d.append(dd[ok])
        out_s.append(s[ok])
        out_m.append(via[ok])
    return np.concatenate(out_d), np.concatenate(out_s), np.concatenate(out_m)


def _group(key: NDArray[np.int64], n_keys: int):
    """Positions sorted by key, and pointers so group j is ``order[ptr[j]:ptr[j + 1]]``."""
    order = np.argsort(key, kind="stable")
    ptr = np.zeros(n_keys + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=n_keys), out=ptr[1:])
    return order, ptr


def _expand(row, key, order, ptr):
    """For each (row, key), every member of group ``key``: returns (rows, members)."""
    start = ptr[key]
    cnt = ptr[key + 1] - start
    total = int(cnt.sum())
    pos = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(start, cnt)
    return np.repeat(row, cnt), order[pos]


def network_coverage_matrix(net: RoadNetwork, demand_xy: ArrayLike, site_xy: ArrayLike,
                            radius_m: ArrayLike, *, demand_snap: Snap | None = None,
                            site_snap: Snap | None = None) -> scipy.sparse.csr_array:
    """Sparse (n_demand, n_sites) matrix, 1 where the walking distance is <= radius_m.

    The network counterpart of :func:`layers.analysis.coverage.coverage_matrix` (same shape,
    dtype and radius convention), so coverage and siting can switch methods.

    Parameters
    ----------
    net : RoadNetwork
    demand_xy : (n_demand, 2) array of float
    site_xy : (n_sites, 2) array of float
    radius_m : float or (n_sites,) array of float
    demand_snap, site_snap : Snap, optional
        Snaps to reuse (the xy arguments are then ignored).

    Returns
    -------
    scipy.sparse.csr_array of uint8, shape (n_demand, n_sites)
        Sorted indices, no explicit zeros.

    Examples
    --------
    An L-shaped road: the demand point is 5 m from the site in a straight line but 7 m on foot.

    >>> from shapely import LineString
    >>> net = build_network([LineString([(0, 0), (4, 0), (4, 3)])])
    >>> network_coverage_matrix(net, [[0, 0]], [[4, 3]], [6.9]).toarray()
    array([[0]], dtype=uint8)
    >>> network_coverage_matrix(net, [[0, 0]], [[4, 3]], 7.0).toarray()
    array([[1]], dtype=uint8)
    """
    ds = _snap_or(net, demand_xy, demand_snap, "demand_xy")
    ss = _snap_or(net, site_xy, site_snap, "site_xy")
    d, s, _ = _pairs(net, ds, ss, _as_radius(radius_m, len(ss)))
    out = scipy.sparse.csr_array((np.ones(len(d), dtype=np.uint8), (d, s)),
                                 shape=(len(ds), len(ss)))
    out.sort_indices()
    return out


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------
def service_area_polygons(net: RoadNetwork, site_xy: ArrayLike, radius_m: ArrayLike,
                          buffer_m: float = 50.0) -> list[shapely.Geometry]:
    """The roads walkable within ``radius_m`` of each site (with its access leg), buffered.

    Whole edges and the reachable ends of partly reachable edges are cut from the road geometry,
    so the shape follows the streets; for drawing, not for measuring coverage.

    Parameters
    ----------
    net : RoadNetwork
    site_xy : (n_sites, 2) array of float
    radius_m : float or (n_sites,) array of float
    buffer_m : float, default 50
        Half-width of the drawn band, metres.

    Returns
    -------
    list of shapely Polygon or MultiPolygon, one per site
        Empty polygon when the site's access leg alone is longer than its radius.

    Examples
    --------
    A site on a straight road with a 10 m radius reaches 20 m of it; a 1 m band is 20 x 2 m plus
    round caps.

    >>> from shapely import LineString
    >>> net = build_network([LineString([(0, 0), (100, 0)])])
    >>> [p] = service_area_polygons(net, [[50, 0]], 10.0, buffer_m=1.0)
    >>> p.bounds
    (39.0, -1.0, 61.0, 1.0)
    """
    ss = snap_points(net, _as_xy(site_xy, "site_xy"))
    r = _as_radius(radius_m, len(ss))
    if not buffer_m > 0:
        raise ValueError("buffer_m must be > 0")
    sxy = _as_xy(site_xy, "site_xy")
    n = net.n_nodes
    g = _graph_with_sources(net, ss)
    eu, ev, el = net.edge_u, net.edge_v, net.edge_length_m
    seg_ptr = np.searchsorted(net.seg_edge_idx, np.arange(net.n_edges + 1))
    out = []
    for i in range(len(ss)):
        dist = dijkstra(g, directed=True, indices=n + i, limit=float(r[i]))[:n]
        left_u, left_v = r[i] - dist[eu], r[i] - dist[ev]
        k = np.flatnonzero((left_u >= 0) | (left_v >= 0))
        lu, lv, lk = left_u[k], left_v[k], el[k]
        full = lu + lv >= lk                      # reached from both ends: the whole edge
        from_u = ~full & (lu >= 0)
        from_v = ~full & (lv >= 0)
        edges = [k[full], k[from_u], k[from_v]]
        lo = [np.zeros(full.sum()), np.zeros(from_u.sum()), lk[from_v] - lv[from_v]]
        hi = [lk[full], lu[from_u], lk[from_v]]
        left = r[i] - ss.access_m[i]
        if left >= 0:  # along the site's own edge, both ways
            e, t = ss.edge_idx[i], ss.along_m[i]
            edges.append(np.array([e]))
            lo.append(np.array([max(0.0, t - left)]))
            hi.append(np.array([min(el[e], t + left)]))
        lines = _edge_stretches(net, seg_ptr, np.concatenate(edges), np.concatenate(lo),
                                np.concatenate(hi))
        if 0 < ss.access_m[i] <= r[i]:
            lines.append(shapely.LineString([sxy[i], ss.snapped_xy[i]]))
        if not lines:
            out.append(shapely.Polygon())
            continue
        merged = shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))
        # buffering the parts and then uniting them is ~5x faster than buffering the whole
        out.append(shapely.union_all(shapely.buffer(merged, buffer_m, quad_segs=4)))
    return out


def _edge_stretches(net: RoadNetwork, seg_ptr, edge, lo, hi) -> list[shapely.Geometry]:
    """Cut stretches [lo, hi] (metres from ``edge_u``) of edges out of the road geometry."""
    if len(edge) == 0:
        return []
    start = seg_ptr[edge]
    cnt = seg_ptr[edge + 1] - start
    piece = np.repeat(np.arange(len(edge)), cnt)
    seg = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(start, cnt)
    a, b = net.seg_a_xy[seg], net.seg_b_xy[seg]
    s0 = net.seg_start_m[seg]
    length = np.hypot(*(b - a).T)
    t0 = np.clip((lo[piece] - s0) / length, 0.0, 1.0)
    t1 = np.clip((hi[piece] - s0) / length, 0.0, 1.0)
    keep = t1 > t0
    if not keep.any():
        return []
    a, b, t0, t1, piece = a[keep], b[keep], t0[keep], t1[keep], piece[keep]
    p0 = a + (b - a) * t0[:, None]
    p1 = a + (b - a) * t1[:, None]
    # one line per stretch: the start of its first piece, then the end of every piece
    first = np.r_[True, piece[1:] != piece[:-1]]
    pts = np.concatenate([p0[first], p1])
    owner = np.concatenate([piece[first], piece])
    rank = np.concatenate([np.zeros(first.sum()), np.ones(len(piece))])
    order = np.lexsort((rank, owner))  # stable within a piece: keeps the segment order
    return list(shapely.linestrings(pts[order], indices=owner[order]))


# --------------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------------
def network_version_key(lines: Sequence[shapely.Geometry] | ArrayLike) -> str:
    """A stable hash of the road geometries, for caching a built network per roads version.

    The key does not depend on the order of the lines (rows may come back from the database in
    any order), but does on every coordinate; it includes the algorithm version of this module.

    Examples
    --------
    >>> from shapely import LineString
    >>> a, b = LineString([(0, 0), (1, 0)]), LineString([(0, 0), (0, 1)])
    >>> network_version_key([a, b]) == network_version_key([b, a])
    True
    >>> network_version_key([a, b]) == network_version_key([a])
    False
    """
    geoms = np.asarray(lines, dtype=object).reshape(-1)
    wkb = shapely.to_wkb(shapely.force_2d(geoms), byte_order=1, include_srid=False) \
        if geoms.size else []
    digests = sorted(hashlib.sha256(w).digest() for w in wkb)
    h = hashlib.sha256(_ALGORITHM_VERSION.encode())
    for d in digests:
        h.update(d)
    return h.hexdigest()
