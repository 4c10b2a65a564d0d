"""Road-network distances: hand-checkable cases and brute-force cross-checks against networkx."""
import networkx as nx
import numpy as np
import pytest
import shapely
from shapely import LineString, MultiLineString
from shapely.ops import substring

from layers.analysis.network import (
    build_network,
    network_coverage_matrix,
    network_distance_pairs,
    network_distance_to_nearest,
    network_version_key,
    service_area_polygons,
    snap_points,
)

PLUS = [LineString([(0, 10), (20, 10)]), LineString([(10, 0), (10, 20)])]


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def test_plus_is_split_at_the_crossing():
    net = build_network(PLUS)
    assert net.n_nodes == 5 and net.n_edges == 4
    np.testing.assert_allclose(np.sort(net.edge_length_m), [10, 10, 10, 10])
    centre = np.flatnonzero(np.all(net.node_xy == [10, 10], axis=1))
    assert centre.size == 1
    assert net.adjacency.shape == (5, 5)
    assert (net.adjacency != net.adjacency.T).nnz == 0
    assert net.adjacency[[centre[0]], :].nnz == 4


def test_crossing_between_vertices_becomes_a_node():
    # an X whose crossing (5, 5) is a vertex of neither line
    net = build_network([LineString([(0, 0), (10, 10)]), LineString([(0, 10), (10, 0)])])
    assert net.n_nodes == 5 and net.n_edges == 4
    d = network_distance_to_nearest(net, [[0, 0]], [[0, 10]])
    np.testing.assert_allclose(d, [2 * np.hypot(5, 5)])


def test_touching_line_splits_the_other():
    # a T: the stem ends on the middle of the bar
    net = build_network([LineString([(0, 0), (20, 0)]), LineString([(10, 0), (10, 5)])])
    assert net.n_nodes == 4 and net.n_edges == 3
    np.testing.assert_allclose(network_distance_to_nearest(net, [[0, 0]], [[10, 5]]), [15.0])


def test_ends_half_a_metre_apart_are_merged():
    lines = [LineString([(0, 0), (10, 0)]), LineString([(10.5, 0), (20, 0)])]
    merged = build_network(lines, snap_tol_m=1.0)
    assert merged.n_nodes == 3
    np.testing.assert_allclose(merged.node_xy[np.argsort(merged.node_xy[:, 0])][1], [10.25, 0])
    # along the roads: 10 + 9.5 (the 0.5 m gap is bridged by the merged node)
    np.testing.assert_allclose(network_distance_to_nearest(merged, [[0, 0]], [[20, 0]]), [19.5])
    apart = build_network(lines, snap_tol_m=0.2)
    assert apart.n_nodes == 4
    assert np.isinf(network_distance_to_nearest(apart, [[0, 0]], [[20, 0]]))


def test_multilinestrings_duplicates_and_z_are_accepted():
    ml = MultiLineString([[(0, 0, 5), (10, 0, 5)], [(10, 0, 5), (10, 10, 5)]])
    net = build_network([ml, LineString([(0, 0), (10, 0)])])  # the first part twice
    assert net.n_nodes == 3 and net.n_edges == 2


def test_bad_inputs():
    with pytest.raises(ValueError):
        build_network([])
    with pytest.raises(ValueError):
        build_network([shapely.Point(0, 0)])
    with pytest.raises(ValueError):
        build_network(PLUS, snap_tol_m=-1)
    net = build_network(PLUS)
    with pytest.raises(ValueError):
        snap_points(net, [[0, 0, 0]])
    with pytest.raises(ValueError):
        network_coverage_matrix(net, [[0, 0]], [[1, 1], [2, 2]], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# snapping
# ---------------------------------------------------------------------------------------------
def test_point_in_mid_segment_and_its_access_leg():
    net = build_network([LineString([(0, 0), (100, 0)])])
    s = snap_points(net, [[30, 4], [-3, -4], [130, 0]])
    np.testing.assert_allclose(s.access_m, [4, 5, 30])
    np.testing.assert_allclose(s.snapped_xy, [[30, 0], [0, 0], [100, 0]])
    e = s.edge_idx[0]
    along_from_start = s.along_m if net.node_xy[net.edge_u[e], 0] == 0 else 100 - s.along_m
    np.testing.assert_allclose(along_from_start, [30, 0, 100])


def test_snap_is_exact_against_brute_force():
    rng = np.random.default_rng(7)
    lines = [LineString(rng.uniform(0, 2000, (rng.integers(2, 6), 2))) for _ in range(40)]
    net = build_network(lines)
    # near, inside, and far outside the network (exercising the STRtree fallback)
    pts = np.concatenate([rng.uniform(-100, 2100, (600, 2)), rng.uniform(-2e4, 2e4, (60, 2))])
    s = snap_points(net, pts)
    edges = net.edge_geometries()
    brute = shapely.distance(shapely.points(pts)[:, None], edges[None, :]).min(axis=1)
    np.testing.assert_allclose(s.access_m, brute, atol=1e-7)
    # the snapped point lies on its edge, at the stated distance along it
    on = shapely.line_interpolate_point(edges[s.edge_idx], s.along_m)
    np.testing.assert_allclose(shapely.get_coordinates(on), s.snapped_xy, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# distances, hand-checked
# ---------------------------------------------------------------------------------------------
def test_plus_distances_with_access_legs():
    net = build_network(PLUS)
    # facility 1 m off the east end; demand 2 m off the north arm at 5 m from the centre
    np.testing.assert_allclose(network_distance_to_nearest(net, [[21, 10]], [[12, 15]]), [18.0])
    # two facilities: the nearer along the roads wins, not the nearer in a straight line
    fac = [[21, 10], [9, 19.5]]
    np.testing.assert_allclose(network_distance_to_nearest(net, fac, [[12, 15]]), [2 + 4.5 + 1])


def test_same_segment_uses_the_direct_way():
    # a 100 m road; both points near its middle: 10 m apart along it, not via an end
    net = build_network([LineString([(0, 0), (100, 0)])])
    d = network_distance_to_nearest(net, [[45, 3]], [[55, 4], [95, 0], [50, 0]])
    np.testing.assert_allclose(d, [3 + 10 + 4, 3 + 50, 3 + 5])
    cover = network_coverage_matrix(net, [[55, 4], [95, 0], [50, 0]], [[45, 3]], 17.0).toarray()
    assert cover[:, 0].tolist() == [1, 0, 1]


def test_ring_road_is_walked_the_short_way_round():
    ring = LineString([(0, 0), (100, 0), (100, 100), (0, 100), (0, 0)])  # 400 m, one loop edge
    net = build_network([ring, LineString([(0, 0), (-50, 0)])])
    # from the spur's end to points 10 m and 90 m up the ring's west side (which the ring's
    # geometry reaches last): 50 + 10 and 50 + 90, not 50 + 390 and 50 + 310
    np.testing.assert_allclose(network_distance_to_nearest(net, [[-50, 0]], [[0, 90]]), [140.0])
    np.testing.assert_allclose(network_distance_to_nearest(net, [[-50, 0]], [[0, 10]]), [60.0])


def test_cutoff_and_empty_inputs():
    net = build_network(PLUS)
    assert np.isinf(network_distance_to_nearest(net, [[21, 10]], [[12, 15]], cutoff_m=17.9))
    assert network_distance_to_nearest(net, np.zeros((0, 2)), [[1, 1]]).tolist() == [np.inf]
    assert network_distance_to_nearest(net, [[1, 1]], np.zeros((0, 2))).shape == (0,)
    assert network_coverage_matrix(net, np.zeros((0, 2)), [[1, 1]], 5.0).shape == (0, 1)
    assert network_coverage_matrix(net, [[1, 1]], np.zeros((0, 2)), 5.0).shape == (1, 0)


def test_per_site_radius_and_pairs():
    net = build_network([LineString([(0, 0), (100, 0)])])
    demand = [[10, 0], [50, 0], [90, 0]]
    sites = [[0, 0], [100, 0]]
    cover = network_coverage_matrix(net, demand, sites, [50.0, 10.0])
    assert cover.dtype == np.uint8
    assert cover.toarray().tolist() == [[1, 0], [1, 0], [0, 1]]
    d, s, m = network_distance_pairs(net, demand, sites, [50.0, 10.0])
    assert list(zip(d.tolist(), s.tolist(), m.tolist())) == [(0, 0, 10.0), (1, 0, 50.0), (2, 1, 10.0)]


# ---------------------------------------------------------------------------------------------
# brute force: an independently built networkx graph with the points spliced in
# ---------------------------------------------------------------------------------------------
def _reference(lines, demand_xy, site_xy):
    """networkx graph of the noded lines with every point as a node; ids of the point nodes."""
    lines = list(lines)
    cuts = [[0.0, ln.length] for ln in lines]
    pts = [[ln.coords[0], ln.coords[-1]] for ln in lines]
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            x = lines[i].intersection(lines[j])
            if x.is_empty:
                continue
            for p in shapely.get_parts(x):
                assert p.geom_type == "Point", "random lines overlap; pick another seed"
                for k in (i, j):
                    cuts[k].append(lines[k].project(p))
                    pts[k].append(p.coords[0])
    key_of = {}

    def key(xy):
        return key_of.setdefault((round(xy[0], 6), round(xy[1], 6)), len(key_of))

    pieces = []  # (geometry, start key, end key)
    for ln, cs, ps in zip(lines, cuts, pts):
        order = np.argsort(cs)
        cs = np.asarray(cs)[order]
        ps = [ps[o] for o in order]
        for a in range(len(cs) - 1):
            if cs[a + 1] - cs[a] > 1e-9:
                pieces.append((substring(ln, cs[a], cs[a + 1]), key(ps[a]), key(ps[a + 1])))
    geoms = np.array([p[0] for p in pieces])
    all_xy = np.concatenate([demand_xy, site_xy])
    dist = shapely.distance(shapely.points(all_xy)[:, None], geoms[None, :])
    nearest = dist.argmin(axis=1)
    g = nx.Graph()
    for e, (geom, u, v) in enumerate(pieces):
        on = np.flatnonzero(nearest == e)
        at = np.array([geom.project(shapely.Point(all_xy[i])) for i in on])
        chain = [(0.0, ("n", u))] + sorted(zip(at, [("p", int(i)) for i in on])) \
            + [(geom.length, ("n", v))]
        for (t0, a), (t1, b) in zip(chain[:-1], chain[1:]):
            if a == b:
                continue
            w = t1 - t0
            if not g.has_edge(a, b) or g[a][b]["weight"] > w:
                g.add_edge(a, b, weight=w)
        for i in on:
            g.add_edge(("pt", int(i)), ("p", int(i)), weight=float(dist[i, e]))
    n_d = len(demand_xy)
    return g, [("pt", i) for i in range(n_d)], [("pt", n_d + i) for i in range(len(site_xy))]


def _random_case(seed):
    rng = np.random.default_rng(seed)
    lines = [LineString(rng.uniform(0, 1000, (rng.integers(2, 4), 2))) for _ in range(12)]
    demand = rng.uniform(-50, 1050, (60, 2))
    sites = rng.uniform(0, 1000, (5, 2))
    # some points on the same edge as a site: near-copies of site positions
    demand[:5] = sites + rng.normal(0, 20, (5, 2))
    return lines, demand, sites


@pytest.mark.parametrize("seed", range(12))
def test_nearest_matches_networkx(seed):
    lines, demand, sites = _random_case(seed)
    net = build_network(lines, snap_tol_m=0.0)
    g, d_nodes, s_nodes = _reference(lines, demand, sites)
    ref = nx.multi_source_dijkstra_path_length(g, set(s_nodes))
    expected = np.array([ref.get(n, np.inf) for n in d_nodes])
    got = network_distance_to_nearest(net, sites, demand)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-6)
    finite = np.sort(expected[np.isfinite(expected)])
    cutoff = float(finite[len(finite) // 2:][:2].mean())  # between two values, not on one
    got_cut = network_distance_to_nearest(net, sites, demand, cutoff_m=cutoff)
    np.testing.assert_allclose(got_cut, np.where(expected <= cutoff, expected, np.inf), atol=1e-6)
    # never shorter than the straight line to the nearest site
    euclid = np.hypot(*(demand[:, None, :] - sites[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert (got >= euclid - 1e-9).all()


@pytest.mark.parametrize("seed", range(12))
def test_coverage_matches_networkx(seed):
    lines, demand, sites = _random_case(seed)
    net = build_network(lines, snap_tol_m=0.0)
    g, d_nodes, s_nodes = _reference(lines, demand, sites)
    radius = np.random.default_rng(seed + 100).uniform(100, 700, len(sites))
    expected = np.zeros((len(demand), len(sites)), dtype=np.uint8)
    exp_dist = np.full((len(demand), len(sites)), np.inf)
    for j, s in enumerate(s_nodes):
        ref = nx.single_source_dijkstra_path_length(g, s, cutoff=radius[j])
        for i, d in enumerate(d_nodes):
            if d in ref:
                expected[i, j] = 1
                exp_dist[i, j] = ref[d]
    cover = network_coverage_matrix(net, demand, sites, radius)
    assert cover.shape == expected.shape and cover.has_sorted_indices
    np.testing.assert_array_equal(cover.toarray(), expected)
    d, s, m = network_distance_pairs(net, demand, sites, radius)
    np.testing.assert_allclose(m, exp_dist[d, s], atol=1e-6)
    euclid = np.hypot(*(demand[d] - sites[s]).T)
    assert (m >= euclid - 1e-9).all()
    # reusing snaps gives the same matrix
    again = network_coverage_matrix(net, None, None, radius, demand_snap=snap_points(net, demand),
                                    site_snap=snap_points(net, sites))
    assert (again != cover).nnz == 0


def test_coverage_batches_agree_with_one_batch(monkeypatch):
    import layers.analysis.network as mod

    lines, demand, sites = _random_case(3)
    net = build_network(lines)
    whole = network_coverage_matrix(net, demand, sites, 400.0)
    monkeypatch.setattr(mod, "_DIJKSTRA_BLOCK_BYTES", 1)  # one site per Dijkstra batch
    assert (network_coverage_matrix(net, demand, sites, 400.0) != whole).nnz == 0


# ---------------------------------------------------------------------------------------------
# drawing and caching
# ---------------------------------------------------------------------------------------------
def test_service_area_follows_the_streets():
    net = build_network(PLUS)
    # site at the centre, radius 5: half of each arm, a plus of 20 x 20 cut to 10 x 10
    [poly] = service_area_polygons(net, [[10, 10]], 5.0, buffer_m=0.5)
    assert poly.contains(shapely.Point(10, 14.9)) and poly.contains(shapely.Point(5.1, 10))
    assert not poly.contains(shapely.Point(10, 16)) and not poly.contains(shapely.Point(7, 7))
    np.testing.assert_allclose(poly.bounds, [4.5, 4.5, 15.5, 15.5], atol=1e-9)
    # larger radius, larger area; an access leg longer than the radius gives nothing
    big, far = service_area_polygons(net, [[10, 10], [100, 100]], [15.0, 5.0], buffer_m=0.5)
    assert big.area > poly.area
    assert far.is_empty


def test_version_key_is_stable_and_sensitive():
    a, b = PLUS
    k = network_version_key([a, b])
    assert k == network_version_key([b, a]) == network_version_key(np.array([a, b]))
    assert len(k) == 64
    assert k != network_version_key([a, LineString([(10, 0), (10, 20.001)])])
    assert k != network_version_key([a])
