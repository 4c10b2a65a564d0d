"""Benchmark: a 500-grid atlas PDF (index + one vector page per grid), issue 7.

    .venv/bin/python benchmarks/bench_atlas.py [--grids 500] [--no-write]

Reads the demo from the configured database (``manage.py load_demo`` first); takes the first N grids by
code (repeating the demo's grids if it has fewer), gathers their sheets with layers.services_export and
writes the atlas with layers.analysis.mapsheet.write_atlas. Prints time per page (wall and CPU), peak
memory and KB per page, then replaces the ``## Atlas`` section of benchmarks/RESULTS.md.
Targets: < 60 s for 500 pages, < 1 GB, < 150 KB per page.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gisportal.settings")
os.environ.setdefault("GISPORTAL_DEV_KEY", "1")

import django  # noqa: E402

django.setup()

import matplotlib  # noqa: E402
import shapely  # noqa: E402

from layers import models  # noqa: E402
from layers import services_export as se  # noqa: E402
from layers.analysis import mapsheet  # noqa: E402


def rss_mb() -> float:
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def cpu_s() -> float:
    """CPU time of this process and of its finished children (the render workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grids", type=int, default=500)
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: cores, at most 4)")
    a = ap.parse_args()
    codes = list(models.Grid.objects.order_by("code").values_list("code", flat=True))
    if not codes:
        sys.exit("no grids: run manage.py load_demo first")
    load0 = os.getloadavg()[0]
    workers = mapsheet._atlas_workers(a.workers) if a.grids >= mapsheet.PARALLEL_MIN_PAGES else 1
    part = max(10, -(-a.grids // (workers * 4))) if workers > 1 else a.grids
    t0, c0 = time.perf_counter(), cpu_s()
    qs = models.Grid.objects.filter(code__in=codes[:a.grids]).order_by("code")
    rows = se._grid_rows(qs)
    rows = list(itertools.islice(itertools.cycle(rows), a.grids))  # repeat the demo if it is smaller
    layouts = [mapsheet.plan_sheet(r.geom.bounds, "A4") for r in rows]
    n_index = mapsheet.index_page_count(len(rows))
    pages = {r.code: n_index + 1 + i for i, r in enumerate(rows)}
    index = [mapsheet.IndexRow(r.code, r.community_name, r.street_name, r.worker_name, n_index + 1 + i, r.geom)
             for i, r in enumerate(rows)]
    sheets = list(se._sheets(rows, layouts, pages, "2026-01-01", n_index + len(rows)))
    t_gather, c_gather = time.perf_counter() - t0, cpu_s() - c0
    rss_gather = rss_mb()
    orient = {o: sum(1 for lay in layouts if lay.orientation == o) for o in ("portrait", "landscape")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "atlas.pdf"
        t1, c1 = time.perf_counter(), cpu_s()
        n_pages = mapsheet.write_atlas(out, iter(sheets), index, title="基准图集", is_sample=True,
                                       data_date="2026-01-01", workers=a.workers)
        t_render, c_render = time.perf_counter() - t1, cpu_s() - c1
        size_kb = out.stat().st_size / 1024
    total_wall, total_cpu = time.perf_counter() - t0, cpu_s() - c0
    peak = rss_mb()
    load1 = os.getloadavg()[0]
    roads = sum(len(s.roads) for s in sheets) / len(sheets)
    pois = sum(len(s.facilities) + len(s.shelters) + len(s.fire_stations) for s in sheets) / len(sheets)
    rows_md = [
        ("gather (DB + context + STRtrees)", f"{len(rows)} grids", t_gather, c_gather, "", f"{rss_gather:.0f}"),
        ("render + write PDF", f"{n_pages} pages ({n_index} index)", t_render, c_render,
         f"{t_render / n_pages * 1000:.0f} ms wall, {c_render / n_pages * 1000:.0f} ms CPU", ""),
        ("**total**", f"{size_kb / 1024:.1f} MB, {size_kb / n_pages:.1f} KB/page", total_wall, total_cpu, "",
         f"{peak:.0f}"),
    ]
    lines = ["| step | size | wall (s) | CPU (s) | per page | peak RSS (MB) |", "|---|---|---:|---:|---|---:|"]
    lines += [f"| {a_} | {b} | {c:.1f} | {d:.1f} | {e} | {f} |" for a_, b, c, d, e, f in rows_md]
    table = "\n".join(lines)
    print(table)
    checks = {"time": total_wall < 60, "memory": peak < 1024, "size": size_kb / n_pages < 150}
    verdict = ("meets all" if all(checks.values()) else
               "misses " + ", ".join(k for k, ok in checks.items() if not ok) + "; meets "
               + (", ".join(k for k, ok in checks.items() if ok) or "none") + " of")
    section = f"""## Atlas

`benchmarks/bench_atlas.py`, {time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores ({platform.processor() or platform.machine()}),
Python {platform.python_version()}, matplotlib {matplotlib.__version__}, shapely {shapely.__version__}; database
`{django.conf.settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}`. A4 atlas of the first {len(rows)} demo grids
by code ({orient['portrait']} portrait, {orient['landscape']} landscape pages; per page on average {roads:.1f} roads and
{pois:.1f} facilities/shelters/fire stations in view), vector PDF; rendered by {workers} process(es) in parts of ≤ {part} sheets, joined with pypdf (each part embeds its
own TrueType font subset). Peak RSS is the largest single process (this one or a worker).
1-minute load average {load0:.1f} at the start, {load1:.1f} at the end (other jobs share the 2 cores; CPU time
is what this process used). Targets: < 60 s, < 1 GB, < 150 KB/page — this run **{verdict}** them.

{table}
"""
    print(section)
    if not a.no_write:
        path = ROOT / "benchmarks" / "RESULTS.md"
        text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
        if re.search(r"^## Atlas\n", text, flags=re.M):
            text = re.sub(r"^## Atlas\n.*?(?=^## |\Z)", section.rstrip() + "\n\n", text, flags=re.M | re.S)
        else:
            text = text.rstrip() + "\n\n" + section
        path.write_text(text.rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
