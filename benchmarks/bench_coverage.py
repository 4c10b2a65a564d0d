"""Benchmark the coverage engine (layers/analysis/coverage.py) and compare with today's GIS workflow.

Cases (synthetic, in EPSG:4547 metres around Zhangjiakou):
1. straight-line coverage, 1,000,000 demand cells (100 m raster) x 2,000 facilities, r = 500 m
   (target < 3 s), with the k-d tree alternatives that were measured against it;
2. capacity-aware coverage (exact transportation LP), 200,000 cells x 500 shelters
   (target < 15 s), its total checked against an independent max-flow (scipy csgraph);
3. grid polygons without a raster: ``polygon_coverage_shares`` against the analyst's geopandas
   workflow buffer -> union -> overlay with the grids, same quad_segs, shares compared.

Each case runs in a fresh process so its peak RSS (``resource.getrusage``) is its own.
Prints a markdown table and replaces the ``## Coverage`` section of benchmarks/RESULTS.md.
Run: ``.venv/bin/python benchmarks/bench_coverage.py`` (about 2-4 minutes on 2 cores);
geopandas is pinned in benchmarks/requirements-coverage.txt.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
X0, Y0 = 480_000.0, 4_500_000.0  # EPSG:4547, near Zhangjiakou's centre


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def _raster_cells(n_rows, n_cols, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    xs = X0 + 50.0 + 100.0 * np.arange(n_cols)
    ys = Y0 + 50.0 + 100.0 * np.arange(n_rows)
    xx, yy = np.meshgrid(xs, ys)
    xy = np.column_stack([xx.ravel(), yy.ravel()])
    pop = np.round(rng.gamma(1.5, 8.0, len(xy)))
    return xy, pop, rng


def case_straight_line(q):
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import scipy.sparse
    from scipy.spatial import cKDTree
    from layers.analysis.coverage import coverage_matrix, coverage_of_points

    xy, pop, rng = _raster_cells(1000, 1000, 1)
    sites = rng.uniform([X0, Y0], [X0 + 100_000, Y0 + 100_000], (2000, 2))
    base = _rss_mb()
    rows = []
    for label, radius in [("r = 500 m", 500.0),
                          ("r = 500-1,000 m per site", rng.uniform(500, 1000, len(sites)))]:
        def run():
            cover = coverage_matrix(xy, sites, radius)
            return cover, coverage_of_points(pop, cover)
        t, (cover, res) = _best(run, 3)
        rows.append(dict(case=f"straight-line coverage, {label}", size="1,000,000 cells x 2,000 sites",
                         ours=t, check=f"nnz {cover.nnz:,}; covered {res.share:.1%}"))
    # Alternatives measured for the docstring's choice (scalar radius 500 m, same output).
    ref = coverage_matrix(xy, sites, 500.0)

    def sdm():
        tree = cKDTree(xy, balanced_tree=False, compact_nodes=False)
        d = cKDTree(sites).sparse_distance_matrix(tree, 500.0, output_type="ndarray")
        return scipy.sparse.csr_array((np.ones(len(d), np.uint8), (d["j"], d["i"])),
                                      shape=(len(xy), len(sites)))

    def site_tree():
        lists = cKDTree(sites).query_ball_point(xy, 500.0, workers=-1, return_sorted=False)
        lens = np.fromiter((len(x) for x in lists), np.int64, len(lists))
        indptr = np.r_[0, np.cumsum(lens)]
        idx = np.concatenate([np.asarray(x, np.int64) for x in lists if len(x)])
        return scipy.sparse.csr_array((np.ones(len(idx), np.uint8), idx, indptr),
                                      shape=(len(xy), len(sites)))

    for name, fn in [("sparse_distance_matrix", sdm), ("k-d tree on the sites", site_tree)]:
        t, m = _best(fn, 1)
        same = (abs(m.astype(np.int8) - ref.astype(np.int8)).nnz == 0)
        rows.append(dict(case=f"  alternative: {name}, r = 500 m", size="1,000,000 x 2,000",
                         ours=t, check="same matrix" if same else "DIFFERENT"))
    q.put(dict(rows=rows, peak=_peak_mb(), base=base))


def case_capacity(q):
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import scipy.sparse
    from scipy.sparse.csgraph import maximum_flow
    from layers.analysis.coverage import capacitated_coverage, coverage_matrix

    xy, pop, rng = _raster_cells(400, 500, 2)  # 200,000 cells, 40 x 50 km
    sites = rng.uniform([X0, Y0], [X0 + 50_000, Y0 + 40_000], (500, 2))
    # Capacities for 70 % of the population in total, uneven (effective area / per-capita area).
    capacity = np.round(rng.uniform(0.3, 1.7, len(sites)) * 0.7 * pop.sum() / len(sites))
    base = _rss_mb()
    rows = []
    for radius in (1000.0, 2500.0):  # 固定-短期 1.0 km and 固定-长期 2.5 km (STANDARDS.md)
        t_cover, cover = _best(lambda: coverage_matrix(xy, sites, radius), 2)
        t_lp, res = _best(lambda: capacitated_coverage(pop, cover, capacity), 2)
        # Independent check: integer max-flow source -> cells -> sites -> sink.
        n, m = cover.shape
        coo = cover.tocoo()
        big = int(pop.sum()) + 1
        src = np.r_[np.zeros(n, np.int64), 1 + coo.row, 1 + n + np.arange(m)]
        dst = np.r_[1 + np.arange(n), 1 + n + coo.col, np.full(m, n + m + 1)]
        capv = np.r_[pop.astype(np.int64), np.full(coo.nnz, big), capacity.astype(np.int64)]
        graph = scipy.sparse.csr_array((capv.astype(np.int32), (src, dst)), shape=(n + m + 2,) * 2)
        t_flow, flow = _best(lambda: maximum_flow(graph, 0, n + m + 1).flow_value, 1)
        equal = abs(flow - res.population_served) < 1e-6 * pop.sum()
        rows.append(dict(
            case=f"capacity LP (merge + HiGHS), r = {radius:,.0f} m",
            size=f"200,000 cells x 500 shelters, nnz {cover.nnz:,} -> {res.n_groups:,} merged rows",
            ours=t_lp, peer=t_flow, peer_name="csgraph integer max-flow",
            check=(f"matrix {t_cover:.2f} s + LP {t_lp:.2f} s = {t_cover + t_lp:.2f} s; served "
                   f"{res.population_served:,.0f} = max-flow {flow:,} "
                   f"{'(equal)' if equal else '(DIFFERENT)'}; short {res.population_short:,.0f}, "
                   f"unreachable {res.population_unreachable:,.0f}; {res.status}")))
    q.put(dict(rows=rows, peak=_peak_mb(), base=base))


def case_geopandas(q):
    sys.path.insert(0, str(ROOT))
    import geopandas as gpd
    import numpy as np
    import shapely
    from layers.analysis.coverage import polygon_coverage_shares

    rng = np.random.default_rng(3)
    size, nx, ny = 250.0, 140, 140  # 19,600 grids of 250 m, 35 x 35 km
    gx, gy = np.meshgrid(X0 + size * np.arange(nx), Y0 + size * np.arange(ny))
    grids = shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + size, gy.ravel() + size)
    sites = shapely.points(rng.uniform([X0, Y0], [X0 + nx * size, Y0 + ny * size], (600, 2)))
    radius = 500.0
    base = _rss_mb()

    def analyst():
        grid_df = gpd.GeoDataFrame({"grid": np.arange(len(grids))}, geometry=grids, crs=4547)
        buffers = gpd.GeoSeries(sites, crs=4547).buffer(radius, quad_segs=16)
        reach = gpd.GeoDataFrame(geometry=[buffers.union_all()], crs=4547)
        pieces = gpd.overlay(grid_df, reach, how="intersection")
        share = np.zeros(len(grids))
        share[pieces["grid"].to_numpy()] = (pieces.area.to_numpy()
                                            / grid_df.area.to_numpy()[pieces["grid"].to_numpy()])
        return share

    t_peer, peer = _best(analyst, 1)
    t_ours, ours = _best(lambda: polygon_coverage_shares(grids, sites, radius), 3)
    diff = float(np.abs(peer - ours).max())
    q.put(dict(rows=[dict(
        case="grid shares (polygons), r = 500 m", size="19,600 grids x 600 sites",
        ours=t_ours, peer=t_peer, peer_name="geopandas buffer-union-overlay",
        check=f"max abs share difference {diff:.1e} {'(equal)' if diff < 1e-9 else '(DIFFERENT)'}")],
        peak=_peak_mb(), base=base))


def _run(case):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=case, args=(q,))
    p.start()
    out = q.get()
    p.join()
    return out


def _versions() -> str:
    import geopandas
    import numpy
    import scipy
    import shapely
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return (f"{mp.cpu_count()} cores ({cpu}), Python {platform.python_version()}, numpy "
            f"{numpy.__version__}, scipy {scipy.__version__} (HiGHS), shapely {shapely.__version__} "
            f"(GEOS {'.'.join(map(str, shapely.geos_version))}), geopandas {geopandas.__version__}")


def main() -> None:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    results = [_run(c) for c in (case_straight_line, case_capacity, case_geopandas)]
    lines = ["| case | size | ours (s) | peer (s) | speed-up | check | peak RSS of the case (MB) |",
             "|---|---|---:|---:|---:|---|---:|"]
    for r in results:
        mem = f"{r['peak']:,.0f} (inputs {r['base']:,.0f})"
        for row in r["rows"]:
            peer = row.get("peer")
            peer_cell = f"{peer:.2f} ({row['peer_name']})" if peer is not None else "—"
            ratio = f"{peer / row['ours']:.1f}x" if peer is not None else "—"
            lines.append(f"| {row['case']} | {row['size']} | {row['ours']:.2f} | {peer_cell} | "
                         f"{ratio} | {row['check']} | {mem} |")
            mem = ""
    table = "\n".join(lines)
    section = (
        "## Coverage\n\n"
        f"`benchmarks/bench_coverage.py`, {time.strftime('%Y-%m-%d')}; {_versions()}. "
        f"Times are the best of 1-3 runs on a machine shared with other jobs (1-minute load "
        f"average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); each group of rows "
        "ran in its own process (peak RSS includes its inputs). Targets: 1M x 2,000 coverage "
        "< 3 s; 200k x 500 capacity LP < 15 s (coverage matrix included).\n\n"
        f"{table}\n\n"
        f"Whole benchmark: {time.perf_counter() - started:.0f} s.\n")
    print(section)
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Coverage\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
