"""LSCP on a square of the demo city's geometry: how hard exact set covering gets with dense demand.

    .venv/bin/python benchmarks/lscp_square.py --cells 60 --time-limit 600

Demand: an n x n square of 100 m cells (one point per cell centre, all populated, as the demo raster's
populated cells); candidates: the 200 m lattice over the square (as ``candidates_lattice``); radius 500 m
(micro fire stations). Prints the LP relaxation (HiGHS), then ``layers.analysis.siting.lscp``'s cover,
proven bound and status. Figures in benchmarks/RESULTS.md (## Siting, session 4). Prints only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layers.analysis import siting  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[20, 30, 40, 60], help="square sides in 100 m cells")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--radius-m", type=float, default=500.0)
    args = ap.parse_args()
    for n in args.cells:
        xs = (np.arange(n) + 0.5) * 100.0
        demand = np.array(np.meshgrid(xs, xs)).reshape(2, -1).T
        cs = np.arange(0.0, n * 100.0 + 1.0, 200.0)
        cand = np.array(np.meshgrid(cs, cs)).reshape(2, -1).T
        pairs = cKDTree(demand).query_ball_tree(cKDTree(cand), args.radius_m)
        rows = np.repeat(np.arange(len(demand)), [len(p) for p in pairs])
        A = sp.csr_array((np.ones(len(rows), np.uint8), (rows, np.concatenate(pairs))), shape=(len(demand), len(cand)))
        lp = linprog(np.ones(len(cand)), A_ub=-A.astype(float), b_ub=-np.ones(len(demand)), bounds=(0, 1),
                     method="highs")
        t = time.perf_counter()
        r = siting.lscp(A, time_limit_s=args.time_limit)
        print(f"{n * 100 / 1000:g} km square: {len(demand):,} x {len(cand):,}, r = {args.radius_m:g} m: LP {lp.fun:.2f}; "
              f"cover {r.objective:.0f}, bound {r.bound:.2f}, gap {100 * r.gap:.1f} %, {r.status}, "
              f"{time.perf_counter() - t:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
