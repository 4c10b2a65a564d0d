"""Benchmark: one housing project review with 10,000 grids, 1,000 shelters and 2,000 facilities loaded.

    DATABASE_URL=postgis://... .venv/bin/python benchmarks/bench_review.py [--runs 60]

Creates a synthetic 10 km x 10 km city (codes 999xxx) inside one transaction, reviews random
200 m x 150 m sites (gather with spatial lookups + the pure rules), prints p50/p95 and rolls
everything back; then replaces the ``## Review`` section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gisportal.settings")
os.environ.setdefault("GISPORTAL_DEV_KEY", "1")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import shapely  # noqa: E402
from django.contrib.gis.geos import MultiPolygon, Point, Polygon  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from layers import models, services_review  # noqa: E402
from layers.analysis import rules as R  # noqa: E402

X0, Y0 = 430000.0, 4410000.0  # far from the demo city (west of it), inside the 4547 zone
SRID = 4547


class Rollback(Exception):
    pass


def _mp(x0, y0, x1, y1):
    return MultiPolygon(Polygon.from_bbox((x0, y0, x1, y1)), srid=SRID)


def build(rng):
    d = models.District.objects.create(code="999001", name="基准区", geom=_mp(X0, Y0, X0 + 10000, Y0 + 10000))
    st = models.Street.objects.create(code="999001001", name="基准街道", district=d,
                                      geom=_mp(X0, Y0, X0 + 10000, Y0 + 10000))
    comms = models.Community.objects.bulk_create([
        models.Community(code=f"999001001{c:03d}", name=f"社区{c}", street=st,
                         geom=_mp(X0 + (c % 10) * 1000, Y0 + (c // 10) * 1000,
                                  X0 + (c % 10 + 1) * 1000, Y0 + (c // 10 + 1) * 1000))
        for c in range(100)])
    grids = []
    pop = rng.integers(0, 400, 10000)
    for c, comm in enumerate(comms):
        cx, cy = X0 + (c % 10) * 1000, Y0 + (c // 10) * 1000
        for k in range(100):
            gx, gy = cx + (k % 10) * 100, cy + (k // 10) * 100
            p = int(pop[c * 100 + k])
            grids.append(models.Grid(code=f"{comm.code}{k + 1:03d}", community=comm, population=p,
                                     households=round(p / 2.62), geom=_mp(gx, gy, gx + 100, gy + 100)))
    models.Grid.objects.bulk_create(grids, batch_size=2000)
    levels = rng.choice(["emergency"] * 90 + ["fixed_short"] * 7 + ["fixed_medium"] * 2 + ["central"], 1000)
    xy = rng.uniform((X0, Y0), (X0 + 10000, Y0 + 10000), (1000, 2))
    side = rng.uniform(30, 120, 1000)
    models.Shelter.objects.bulk_create([
        models.Shelter(code=f"S999{i:05d}", name=f"避难场所{i}", level=lv, effective_area_m2=0.7 * s * s,
                       geom=_mp(x, y, x + s, y + s)) for i, (lv, (x, y), s) in enumerate(zip(levels, xy, side))],
        batch_size=1000)
    kinds = rng.choice(["community_service_centre", "culture_sport", "health_station", "elderly_care",
                        "kindergarten"], 2000)
    fxy = rng.uniform((X0, Y0), (X0 + 10000, Y0 + 10000), (2000, 2))
    models.ServiceFacility.objects.bulk_create([
        models.ServiceFacility(code=f"F999{i:05d}", name=f"设施{i}", kind=k, floor_area_m2=300,
                               geom=Point(x, y, srid=SRID)) for i, (k, (x, y)) in enumerate(zip(kinds, fxy))],
        batch_size=1000)
    sxy = rng.uniform((X0, Y0), (X0 + 10000, Y0 + 10000), (400, 2))
    models.FireStation.objects.bulk_create([
        models.FireStation(code=f"X999{i:05d}", name=f"微型站{i}", kind="community_micro",
                           geom=Point(x, y, srid=SRID)) for i, (x, y) in enumerate(sxy)], batch_size=1000)


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after start-up (as a server would after loading the app); off by default. "
                         "A full collection of the Django process's heap costs ~100-200 ms here and falls on "
                         "a few reviews (the p95); with the start-up objects frozen it scans only new ones")
    args = ap.parse_args()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    gen2_ms: list[float] = []
    _gc_t0 = [0.0]

    def _gc_cb(phase, info):  # time the full (generation 2) collections during the reviews
        if info["generation"] == 2:
            if phase == "start":
                _gc_t0[0] = time.perf_counter()
            else:
                gen2_ms.append((time.perf_counter() - _gc_t0[0]) * 1000)
    gc.callbacks.append(_gc_cb)
    rng = np.random.default_rng(20261126)
    rs = services_review.rule_set()
    times, gathers, cpus, cpu_gathers, verdicts = [], [], [], [], []
    load_start = _load()
    t_build = 0.0
    try:
        with transaction.atomic():
            t = time.perf_counter()
            build(rng)
            t_build = time.perf_counter() - t
            gen2_ms.clear()
            for i in range(args.runs + 3):
                x, y = rng.uniform((X0 + 500, Y0 + 500), (X0 + 9300, Y0 + 9350))
                site = shapely.MultiPolygon([shapely.box(x, y, x + 200, y + 150)])
                proj = R.Project("bench", "dev", 500, site,
                                 (R.ProjectFacility("community_service", 150.0, shapely.Point(x + 100, y + 75)),))
                c0, t0 = time.process_time(), time.perf_counter()
                ctx = services_review.gather_context(site, rs)
                c1, t1 = time.process_time(), time.perf_counter()
                rv = R.review(proj, ctx, rs)
                c2, t2 = time.process_time(), time.perf_counter()
                if i >= 3:  # warm-up
                    times.append(t2 - t0)
                    gathers.append(t1 - t0)
                    cpus.append(c2 - c0)
                    cpu_gathers.append(c1 - c0)
                    verdicts.append(rv.verdict)
            raise Rollback
    except Rollback:
        pass
    load_end = _load()
    gc.callbacks.remove(_gc_cb)
    ms, gms = np.array(times) * 1000, np.array(gathers) * 1000
    cms, cgms = np.array(cpus) * 1000, np.array(cpu_gathers) * 1000
    backend = connection.vendor + (" (PostGIS)" if connection.vendor == "postgresql" else " (SpatiaLite)")

    def row(name, wall, cpu_):
        return (name, *np.percentile(wall, [50, 95]), wall.max(), *np.percentile(cpu_, [50, 95]))

    rows = [
        row("one review (gather + rules)", ms, cms),
        row("  gather (spatial lookups, ORM -> arrays)", gms, cgms),
        row("  rules (pure)", ms - gms, cms - cgms),
    ]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    head = (f"`benchmarks/bench_review.py`, {time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"shapely {shapely.__version__} (GEOS {'.'.join(map(str, shapely.geos_version))}); database {backend}. "
            f"Synthetic 10 km x 10 km city: 10,000 grids (100 m), 1,000 shelters, 2,000 facilities, "
            f"400 micro fire stations; {len(ms)} reviews of random 200 m x 150 m sites after 3 warm-up runs "
            f"(build {t_build:.1f} s, rolled back). Verdicts: {verdicts.count('pass')} pass, "
            f"{verdicts.count('fail')} fail. 1-minute load average {load_start:.1f} at the start, "
            f"{load_end:.1f} at the end (machine shared: wall times grow with it; CPU = this process only, "
            f"the database server's work is in wall only). Python full garbage collections during the reviews: "
            f"{len(gen2_ms)}, {np.median(gen2_ms) if gen2_ms else 0:.0f} ms median"
            f"{' (gc.freeze() after start-up)' if args.gc_freeze else ''}. Target p95 < 200 ms.")
    table = ["| step | p50 (ms) | p95 (ms) | max (ms) | CPU p50 (ms) | CPU p95 (ms) |",
             "|---|---:|---:|---:|---:|---:|"]
    table += [f"| {n} | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} | {e:.1f} |" for n, a, b, c, d, e in rows]
    text = "## Review\n\n" + head + "\n\n" + "\n".join(table) + "\n"
    print(text)
    if not args.no_write:
        path = ROOT / "benchmarks" / "RESULTS.md"
        old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
        pat = re.compile(r"^## Review\n.*?(?=^## |\Z)", re.S | re.M)
        m = pat.search(old)
        # keep a hand-written "Before" / "Changes" block (paragraphs starting so) of the old section
        kept = [b for b in re.split(r"\n\n+", m.group(0)) if b.startswith(("Before", "Changes", "| before"))] if m else []
        body = text + ("\n" + "\n\n".join(kept) + "\n" if kept else "")
        new = pat.sub(lambda _: body + "\n", old) if m else old.rstrip("\n") + "\n\n" + body
        path.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
