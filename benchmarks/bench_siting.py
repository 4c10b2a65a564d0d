"""Siting benchmark (issue 6): our LSCP/MCLP (HiGHS on a reduced sparse matrix) vs spopt (PuLP/CBC).

Instances: a 20 km x 20 km city centre, skewed population (a main centre, sub-centres, empty
cells), demand on a square grid (2,500 / 10,000 / 40,000 points = 400 / 200 / 100 m spacing, the
same population surface), 250 / 500 / 1,000 uniformly random candidates, r = 500 m and 1,000 m.
Each run is a fresh subprocess, so "peak MB" is that process's peak RSS (Python, numpy, the
instance and the solver; spopt's input is the dense cost matrix it requires, ours the sparse
coverage matrix). Time is from the matrix in hand to the answer.

    .venv/bin/pip install -r benchmarks/requirements-siting.txt
    .venv/bin/python benchmarks/bench_siting.py                      # default grid, ~10 min
    .venv/bin/python benchmarks/bench_siting.py --sizes 2500x250 --spopt-sizes 2500x250 --no-write

Writes the table under ``## Siting`` in benchmarks/RESULTS.md (only that section is replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SIDE_M = 20_000.0


def make_instance(n_demand: int, n_candidates: int, seed: int = 6):
    """Demand grid cell centres (x, y), population per cell, candidate sites (x, y)."""
    side = int(round(np.sqrt(n_demand)))
    if side * side != n_demand:
        raise ValueError("n_demand must be a square number")
    step = SIDE_M / side
    c = (np.arange(side) + 0.5) * step
    X, Y = np.meshgrid(c, c)
    demand_xy = np.column_stack([X.ravel(), Y.ravel()])
    # Population density (persons / km2) on a fixed 100 m surface, aggregated to the grid cell,
    # so every size shares the same city.
    rng = np.random.default_rng(seed)
    centres = np.array([[10_000, 10_000], [5_000, 14_000], [15_500, 6_000], [13_000, 15_500],
                        [4_000, 4_500], [17_000, 12_000], [8_000, 7_500]])
    peaks = np.array([30_000, 12_000, 10_000, 8_000, 6_000, 5_000, 9_000], dtype=float)
    widths = np.array([2_500, 1_500, 1_800, 1_200, 1_000, 1_300, 900], dtype=float)
    fine = 200
    fc = (np.arange(fine) + 0.5) * (SIDE_M / fine)
    FX, FY = np.meshgrid(fc, fc)
    dens = np.zeros_like(FX)
    for (cx, cy), a, s in zip(centres, peaks, widths):
        dens += a * np.exp(-((FX - cx) ** 2 + (FY - cy) ** 2) / (2 * s * s))
    dens *= rng.lognormal(0.0, 0.6, size=dens.shape)
    dens[rng.random(dens.shape) < 0.25] = 0.0  # parks, water, industry
    fine_pop = np.round(dens * 0.01)  # 100 m cell = 0.01 km2
    if side <= fine:
        f = fine // side
        pop = fine_pop.reshape(side, f, side, f).sum(axis=(1, 3)).ravel()
    else:  # finer than the 100 m surface (1,000,000 points = 20 m): split each cell evenly
        f = side // fine
        if f * fine != side:
            raise ValueError("n_demand must be a square of a divisor or multiple of 200")
        pop = (np.repeat(np.repeat(fine_pop, f, axis=0), f, axis=1) / (f * f)).ravel()
    sites_xy = rng.uniform(0.0, SIDE_M, size=(n_candidates, 2))
    return demand_xy, pop.astype(np.float64), sites_xy


def coverage_csr(demand_xy, sites_xy, radius_m: float):
    """Sparse (n_demand, n_sites) 0/1 coverage by a KD-tree (the project's ``coverage_matrix``)."""
    sys.path.insert(0, str(ROOT))
    from layers.analysis.coverage import coverage_matrix

    return coverage_matrix(demand_xy, sites_xy, radius_m)


def _coverage_csr_sites_tree(demand_xy, sites_xy, radius_m: float):
    """Sparse (n_demand, n_sites) 0/1 coverage by a KD-tree on the sites (the earlier runs' builder)."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    lists = cKDTree(sites_xy).query_ball_point(demand_xy, radius_m)
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    idx = np.fromiter((j for x in lists for j in x), dtype=np.int64, count=int(lens.sum()))
    indptr = np.concatenate([[0], np.cumsum(lens)])
    A = sp.csr_array((np.ones(idx.size, dtype=np.int8), idx, indptr),
                     shape=(len(demand_xy), len(sites_xy)))
    A.sort_indices()
    return A


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(spec: dict) -> dict:
    """Run one (solver, problem, size, radius) in this process; return the row."""
    n, q = spec["n"], spec["q"]
    t_build = time.perf_counter()
    demand_xy, pop, sites_xy = make_instance(n, q)
    A = coverage_csr(demand_xy, sites_xy, spec["radius_m"])
    coverable = np.diff(A.indptr) > 0
    out = dict(spec)
    out.update(nnz=int(A.nnz), matrix_seconds=time.perf_counter() - t_build, load_start=os.getloadavg()[0])
    if spec["solver"] == "ours":
        sys.path.insert(0, str(ROOT))
        from layers.analysis import siting

        t0 = time.perf_counter()
        if spec["problem"] == "lscp":
            res = siting.lscp(A, pop=pop, time_limit_s=spec["max_seconds"])
        else:
            res = siting.mclp(A, pop, spec["p"], time_limit_s=spec["max_seconds"])
        out.update(seconds=time.perf_counter() - t0, objective=res.objective, bound=res.bound,
                   gap=res.gap, status=res.status, method=res.method,
                   reduced=f"{res.reduced_shape[0]}x{res.reduced_shape[1]}",
                   selected=sorted(res.selected_idx.tolist()))
    else:
        import pulp
        from scipy.spatial.distance import cdist
        from spopt.locate import LSCP, MCLP

        if spec["problem"] == "lscp":
            cost = cdist(demand_xy[coverable], sites_xy)  # spopt's LSCP is infeasible otherwise
        else:
            cost = cdist(demand_xy, sites_xy)
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=spec["max_seconds"])
        t0 = time.perf_counter()
        if spec["problem"] == "lscp":
            model = LSCP.from_cost_matrix(cost, spec["radius_m"])
        else:
            model = MCLP.from_cost_matrix(cost, pop, spec["radius_m"], p_facilities=spec["p"])
        t_build = time.perf_counter() - t0
        model = model.solve(solver, results=False)
        sel = np.array([j for j, v in enumerate(model.fac_vars) if (v.value() or 0) > 0.5], dtype=np.intp)
        if spec["problem"] == "lscp":
            obj = float(sel.size)
        else:
            hit = np.asarray(A[:, sel].sum(axis=1)).reshape(-1) > 0
            obj = float(pop[hit].sum())
        sol_status = getattr(model.problem, "sol_status", None)
        out.update(seconds=time.perf_counter() - t0, build_seconds=t_build, objective=obj,
                   bound=None, gap=None, status="optimal" if sol_status == 1 else f"cbc:{sol_status}",
                   method="cbc", reduced="-", selected=sorted(sel.tolist()))
    out["peak_mb"] = _peak_mb()
    out["load_end"] = os.getloadavg()[0]
    if spec["solver"] == "ours":
        out["message"] = res.message
    return out


def _spawn(spec: dict, hard_timeout: float) -> dict:
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                              text=True, timeout=hard_timeout)
    except subprocess.TimeoutExpired:
        return dict(spec, seconds=None, status=f"killed>{hard_timeout:.0f}s", objective=None, gap=None,
                    peak_mb=None, reduced="-", method="-")
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return dict(spec, seconds=None, status=f"error: {err[0][:60]}", objective=None, gap=None,
                    peak_mb=None, reduced="-", method="-")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v, spec="{:.2f}"):
    return "-" if v is None else spec.format(v)


def machine() -> str:
    import scipy

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import spopt
        import pulp

        peer = f"spopt {spopt.__version__}, PuLP {pulp.__version__} (CBC)"
    except Exception:  # noqa: BLE001 - benchmark may run without the peer
        peer = "spopt not installed"
    try:
        from importlib.metadata import version

        highs = f"highspy {version('highspy')}"
    except Exception:  # noqa: BLE001 - falls back to scipy's bundled HiGHS
        highs = "no highspy (scipy's HiGHS)"
    return (f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}, {highs}; {peer}")


def table(rows: list[dict]) -> str:
    head = ("| instance | r (m) | problem | solver | seconds | peak MB | objective | gap | status | "
            "reduced | same obj |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    by_key = {}
    for r in rows:
        by_key.setdefault((r["n"], r["q"], r["radius_m"], r["problem"]), {})[r["solver"]] = r
    for r in rows:
        key = (r["n"], r["q"], r["radius_m"], r["problem"])
        other = by_key[key].get("spopt" if r["solver"] == "ours" else "ours")
        same = "-"
        if other and r["solver"] == "ours" and other.get("status") == "optimal" and r.get("objective") is not None:
            same = "yes" if abs(other["objective"] - r["objective"]) <= 1e-6 * max(1.0, abs(r["objective"])) \
                else f"no ({other['objective']:.0f})"
        prob = r["problem"] + (f" p={r['p']}" if r["problem"] == "mclp" else "")
        obj = _fmt(r.get("objective"), "{:,.0f}")
        gap = "-" if r.get("gap") is None else f"{100 * r['gap']:.2f} %"
        lines.append(f"| {r['n']:,} x {r['q']:,} | {r['radius_m']:.0f} | {prob} | {r['solver']} | "
                     f"{_fmt(r.get('seconds'))} | {_fmt(r.get('peak_mb'), '{:.0f}')} | {obj} | {gap} | "
                     f"{r.get('status')} ({r.get('method', '-')}) | {r.get('reduced', '-')} | {same} |")
    return "\n".join(lines)


def write_section(text: str) -> None:
    body = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    section = "## Siting\n\n" + text.strip() + "\n"
    pat = re.compile(r"^## Siting\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(body):
        body = pat.sub(lambda _: section + "\n", body, count=1)
    else:
        body = body.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(body.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="2500x250,10000x500,40000x1000",
                    help="demand x candidates for our solver (comma separated)")
    ap.add_argument("--spopt-sizes", default="2500x250,10000x500",
                    help="sizes spopt also runs ('' for none; 40000x1000 takes minutes per run)")
    ap.add_argument("--radii", default="500,1000")
    ap.add_argument("--problems", default="lscp,mclp")
    ap.add_argument("--p", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="time limit per run (our solver's time_limit_s, CBC's timeLimit)")
    ap.add_argument("--spopt-max-seconds", type=float, default=None,
                    help="CBC's timeLimit for spopt (default: --max-seconds), so it can prove what it can")
    ap.add_argument("--spopt-kill-seconds", type=float, default=150.0,
                    help="kill a spopt run after this many seconds (model building is not limited)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    spopt_sizes = {tuple(int(v) for v in s.split("x")) for s in args.spopt_sizes.split(",") if s}
    rows = []
    t_all = time.perf_counter()
    for n, q in sorted(set(sizes) | spopt_sizes):
        for radius in [float(r) for r in args.radii.split(",")]:
            for problem in args.problems.split(","):
                for solver in ("ours", "spopt"):
                    if solver == "ours" and (n, q) not in sizes:
                        continue
                    if solver == "spopt" and (n, q) not in spopt_sizes:
                        continue
                    limit = args.max_seconds if solver == "ours" or args.spopt_max_seconds is None \
                        else args.spopt_max_seconds
                    spec = dict(solver=solver, problem=problem, n=n, q=q, radius_m=radius, p=args.p,
                                max_seconds=limit)
                    kill = args.max_seconds + 300 if solver == "ours" else args.spopt_kill_seconds
                    row = _spawn(spec, kill)
                    rows.append(row)
                    print(f"{n}x{q} r={radius:.0f} {problem:5s} {solver:5s} "
                          f"t={_fmt(row.get('seconds'))}s mem={_fmt(row.get('peak_mb'), '{:.0f}')}MB "
                          f"obj={row.get('objective')} gap={row.get('gap')} {row.get('status')} "
                          f"{row.get('reduced', '')} load {_fmt(row.get('load_start'), '{:.1f}')}->"
                          f"{_fmt(row.get('load_end'), '{:.1f}')} nnz={row.get('nnz')} "
                          f"{row.get('message', '')}", flush=True)
    tab = table(rows)
    notes = (f"Machine: {machine()}.\n\nCommand: `.venv/bin/python benchmarks/bench_siting.py "
             f"--sizes {args.sizes} --spopt-sizes '{args.spopt_sizes}' --radii {args.radii} --p {args.p} "
             f"--max-seconds {args.max_seconds:g}"
             + (f" --spopt-max-seconds {args.spopt_max_seconds:g}" if args.spopt_max_seconds is not None else "")
             + f"` ({time.perf_counter() - t_all:.0f} s in all).\n\n"
             "Instances: 20 km x 20 km, skewed population on a 400/200/100 m grid (same surface), uniform random "
             "candidates, no existing facilities; spopt's LSCP gets only the coverable demand (it is infeasible "
             "otherwise), ours reports the rest as uncoverable. seconds: matrix in hand to answer; peak MB: peak "
             "RSS of the run's own process. gap: proven relative gap (ours; PuLP does not expose CBC's bound). "
             "reduced: rows x columns after `reduce_instance`. status (method): method says whether HiGHS "
             "(`milp`, through highspy with the heuristic's sites as its start solution) or the heuristics "
             "(`heuristic`) produced the reported sites. 'same obj' compares with "
             "spopt where CBC reports optimal.\n\n")
    print()
    print(tab)
    if not args.no_write:
        write_section(notes + tab)
        print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
