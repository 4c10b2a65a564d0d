"""Benchmark road-network distances (layers/analysis/network.py).

Large: a perturbed street grid over a 30 km square (~100,000 edges), 1,000,000 demand points and
2,000 facilities: build, snap, nearest-facility distance and coverage matrix, with peak memory.
Small: the same answers from networkx (points spliced into the graph), timed side by side.

Run: .venv/bin/python benchmarks/bench_network.py   (writes the "## Network" section of
benchmarks/RESULTS.md, leaving the other sections alone)
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import scipy
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layers.analysis.network import (  # noqa: E402
    build_network,
    network_coverage_matrix,
    network_distance_to_nearest,
    snap_points,
)

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Network"


def street_grid(n_lines: int, side_m: float, rng) -> list[shapely.LineString]:
    """n_lines east-west and n_lines north-south streets, every vertex jittered by 10 % of the block."""
    xs = np.linspace(0.0, side_m, n_lines)
    jitter = 0.1 * side_m / (n_lines - 1)
    lines = []
    for v in xs:
        y = v + rng.normal(0, jitter, n_lines)
        lines.append(shapely.LineString(np.c_[xs + rng.normal(0, jitter, n_lines), y]))
        x = v + rng.normal(0, jitter, n_lines)
        lines.append(shapely.LineString(np.c_[x, xs + rng.normal(0, jitter, n_lines)]))
    return lines


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


CPU_S: list[float] = []  # process CPU seconds of each timed() call, in order


def timed(fn, *args, **kwargs):
    """Run fn; return (result, wall seconds) and record its CPU seconds in CPU_S."""
    c, t = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    CPU_S.append(time.process_time() - c)
    return out, time.perf_counter() - t


def networkx_reference(net, demand_snap, site_snap, radius_m):
    """Graph of the network with every snapped point spliced into its edge; nearest and coverage."""
    n_d = len(demand_snap)
    edge = np.concatenate([demand_snap.edge_idx, site_snap.edge_idx])
    along = np.concatenate([demand_snap.along_m, site_snap.along_m])
    access = np.concatenate([demand_snap.access_m, site_snap.access_m])
    g = nx.Graph()
    by_edge: dict[int, list[int]] = {}
    for i, e in enumerate(edge.tolist()):
        by_edge.setdefault(e, []).append(i)
    for e in range(net.n_edges):
        u, v, length = int(net.edge_u[e]), int(net.edge_v[e]), float(net.edge_length_m[e])
        chain = [(0.0, ("n", u))] + sorted((float(along[i]), ("p", i)) for i in by_edge.get(e, [])) \
            + [(length, ("n", v))]
        for (t0, a), (t1, b) in zip(chain[:-1], chain[1:]):
            if a != b and (not g.has_edge(a, b) or g[a][b]["weight"] > t1 - t0):
                g.add_edge(a, b, weight=t1 - t0)
    for i in range(len(edge)):
        g.add_edge(("pt", i), ("p", i), weight=float(access[i]))
    t = time.perf_counter()
    ref = nx.multi_source_dijkstra_path_length(g, {("pt", n_d + j) for j in range(len(site_snap))})
    nearest = np.array([ref.get(("pt", i), np.inf) for i in range(n_d)])
    t_nearest = time.perf_counter() - t
    t = time.perf_counter()
    cover = np.zeros((n_d, len(site_snap)), dtype=np.uint8)
    for j in range(len(site_snap)):
        for node in nx.single_source_dijkstra_path_length(g, ("pt", n_d + j), cutoff=radius_m):
            if node[0] == "pt" and node[1] < n_d:
                cover[node[1], j] = 1
    t_cover = time.perf_counter() - t
    return nearest, t_nearest, cover, t_cover


def large(rng, n_lines=224, n_demand=1_000_000, n_sites=2_000, radius_m=1_000.0):
    side = 30_000.0
    lines = street_grid(n_lines, side, rng)
    demand = rng.uniform(0, side, (n_demand, 2))
    sites = rng.uniform(0, side, (n_sites, 2))
    rows = []
    first = len(CPU_S)
    net, t_build = timed(build_network, lines)
    rows.append(("build_network", f"{len(lines)} lines -> {net.n_nodes:,} nodes, {net.n_edges:,} edges",
                 t_build))
    ds, t_snap = timed(snap_points, net, demand)
    rows.append(("snap_points (demand)", f"{n_demand:,} points", t_snap))
    ss, t_snap_s = timed(snap_points, net, sites)
    rows.append(("snap_points (sites)", f"{n_sites:,} points", t_snap_s))
    near, t_near = timed(network_distance_to_nearest, net, None, None, 2 * radius_m,
                         facility_snap=ss, demand_snap=ds)
    rows.append(("network_distance_to_nearest", f"cutoff {2 * radius_m:.0f} m, "
                 f"{np.isfinite(near).mean():.1%} within", t_near))
    cover, t_cover = timed(network_coverage_matrix, net, None, None, radius_m,
                           demand_snap=ds, site_snap=ss)
    covered = np.asarray(cover.sum(axis=1)).ravel() > 0
    rows.append(("network_coverage_matrix", f"r = {radius_m:.0f} m, nnz {cover.nnz:,}, "
                 f"{covered.mean():.1%} of demand covered", t_cover))
    # consistency: a demand point is covered iff its nearest site is within the radius
    assert np.array_equal(covered, near <= radius_m), "coverage and nearest disagree"
    total = t_build + t_snap + t_snap_s + t_near + t_cover
    cpu = CPU_S[first:]
    rows = [(name, size, t, c) for (name, size, t), c in zip(rows, cpu)]
    return rows, (total, sum(cpu)), peak_rss_mb()


def small(rng):
    lines = street_grid(15, 2_000.0, rng)
    demand = rng.uniform(0, 2_000.0, (2_000, 2))
    sites = rng.uniform(0, 2_000.0, (20, 2))
    radius = 400.0
    t = time.perf_counter()
    net = build_network(lines)
    ds, ss = snap_points(net, demand), snap_points(net, sites)
    t_prep = time.perf_counter() - t
    near, t_near = timed(network_distance_to_nearest, net, None, None, facility_snap=ss,
                         demand_snap=ds)
    cover, t_cover = timed(network_coverage_matrix, net, None, None, radius, demand_snap=ds,
                           site_snap=ss)
    ref_near, t_ref_near, ref_cover, t_ref_cover = networkx_reference(net, ds, ss, radius)
    max_diff = float(np.max(np.abs(near - ref_near)))
    same_cover = bool(np.array_equal(cover.toarray(), ref_cover))
    return dict(n_edges=net.n_edges, t_prep=t_prep, t_near=t_near, t_cover=t_cover,
                t_ref_near=t_ref_near, t_ref_cover=t_ref_cover, max_diff=max_diff,
                same_cover=same_cover, nnz=cover.nnz)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, numpy "
            f"{np.__version__}, scipy {scipy.__version__}, shapely {shapely.__version__} "
            f"(GEOS {'.'.join(map(str, shapely.geos_version))}), networkx {nx.__version__}")


def render(rows, total, peak_mb, sm) -> str:
    out = [SECTION, "", f"Machine: {machine()}. Load from other jobs may inflate times.", "",
           "Large: perturbed 224 x 224 street grid over 30 km x 30 km, 1,000,000 demand points, "
           "2,000 sites (uniform random).", "",
           "| step | size | wall (s) | CPU (s) |", "|---|---|---:|---:|"]
    out += [f"| {name} | {size} | {t:.2f} | {c:.2f} |" for name, size, t, c in rows]
    out += [f"| **total** | build + snap + nearest + coverage | **{total[0]:.2f}** | "
            f"**{total[1]:.2f}** |", "",
            "CPU = process CPU time (all steps are single-threaded, so on an idle machine wall "
            "time is about the CPU time; the gap is other jobs sharing the 2 cores).", "",
            f"Peak resident memory of the process: {peak_mb:,.0f} MB.", "",
            f"Small: 15 x 15 street grid over 2 km ({sm['n_edges']} edges), 2,000 demand points, "
            f"20 sites, r = 400 m; networkx on the same graph with every point spliced in.", "",
            "| | gisportal (scipy) | networkx | same answer |", "|---|---:|---:|---|",
            f"| nearest facility, all demand | {sm['t_near']:.3f} s | {sm['t_ref_near']:.3f} s | "
            f"max abs diff {sm['max_diff']:.1e} m |",
            f"| coverage matrix (nnz {sm['nnz']:,}) | {sm['t_cover']:.3f} s | "
            f"{sm['t_ref_cover']:.3f} s | {'identical' if sm['same_cover'] else 'DIFFERENT'} |",
            "", f"(gisportal build + snap for the small case: {sm['t_prep']:.3f} s, not in the "
            "networkx column, which reuses the snaps.)", ""]
    return "\n".join(out)


def write_section(text: str) -> None:
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    lines = current.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == SECTION), None)
    if start is None:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        new = "\n".join(lines[:start] + text.splitlines() + [""] + lines[end:])
    RESULTS.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    rng = np.random.default_rng(20240601)
    sm = small(rng)
    rows, total, peak = large(rng)
    text = render(rows, total, peak, sm)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
