"""Benchmark: ``manage.py import_layer`` against ``ogr2ogr`` loading the same file into the same database.

    .venv/bin/python benchmarks/bench_import.py [--n 100000] [--no-write] [--only grids|facilities]
    DATABASE_URL=postgis://... .venv/bin/python benchmarks/bench_import.py     # adds the PostGIS rows

Generates (seeded) 100,000 grid polygons (100 m squares, 15-digit codes) as a GeoPackage in EPSG:4326 and
100,000 facility points as a CSV (lon/lat, Chinese headers). For each file and each database (a fresh
SpatiaLite file under a temporary ``GISPORTAL_VAR_DIR``; PostGIS when ``DATABASE_URL`` is set) it creates a
synthetic district 999901 > 20 streets > 400 communities that the grids tile, runs OUR import
(``manage.py import_layer KIND FILE --json`` in a subprocess) and ``ogr2ogr`` (``-update -append -nln bench_x
-t_srs EPSG:4547``) into the same database, and reports wall and CPU time, features/s and peak RSS of each child
(``os.wait4``: the child's own ``ru_maxrss``), side by side with the ratio. The table replaces the
``## Import`` section of benchmarks/RESULTS.md (unless ``--no-write``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
if not Path(PY).exists():
    PY = sys.executable
SEED = 20261127
LAST_CPU = [0.0]

# Synthetic city (EPSG:4547 metres), west of the demo city: 20 x 20 communities of 10 x 25 grids of 100 m.
X0, Y0 = 430000.0, 4410000.0
GRID_M = 100.0
COMM_NX, COMM_NY = 10, 25            # grids per community (E-W, N-S) -> 250 grids, 1 km x 2.5 km
CITY_NX, CITY_NY = 20, 20            # communities; one street per column of 20 communities
DISTRICT = "999901"


# --- data -----------------------------------------------------------------------------------------

def _community_origin(c: int) -> tuple[float, float]:
    col, row = divmod(c, CITY_NY)      # street = column
    return X0 + col * COMM_NX * GRID_M, Y0 + row * COMM_NY * GRID_M


def community_code(c: int) -> str:
    col, row = divmod(c, CITY_NY)
    return f"{DISTRICT}{col + 1:03d}{row + 1:03d}"


def make_grids_gpkg(path: Path, n: int, tmp: Path) -> int:
    """``n`` grid squares (community-major order) as a GeoPackage layer ``grids`` in EPSG:4326."""
    import numpy as np
    from pyproj import Transformer

    rng = np.random.default_rng(SEED)
    per = COMM_NX * COMM_NY
    n = min(n, per * CITY_NX * CITY_NY)
    k = np.arange(n)
    c, g = divmod(k, per)
    cols, rows = divmod(c, CITY_NY)
    gx, gy = g % COMM_NX, g // COMM_NX
    x0 = X0 + cols * COMM_NX * GRID_M + gx * GRID_M
    y0 = Y0 + rows * COMM_NY * GRID_M + gy * GRID_M
    tr = Transformer.from_crs(4547, 4326, always_xy=True)
    # corners (shared by neighbours, so the same input gives the same lon/lat: the squares tile exactly)
    xs = np.stack([x0, x0 + GRID_M, x0 + GRID_M, x0, x0], axis=1)
    ys = np.stack([y0, y0, y0 + GRID_M, y0 + GRID_M, y0], axis=1)
    lon, lat = tr.transform(xs, ys)
    pop = rng.integers(0, 600, n)
    workers = np.array(["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊"])[rng.integers(0, 6, n)]
    csv_path = tmp / "grids_wkt.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write("wkt,网格编码,户数,人口,网格员\n")
        for i in range(n):
            ring = ", ".join(f"{lon[i, j]:.9f} {lat[i, j]:.9f}" for j in range(5))
            fh.write(f'"POLYGON (({ring}))",{community_code(int(c[i]))}{int(g[i]) + 1:03d},'
                     f"{round(int(pop[i]) / 2.62)},{int(pop[i])},{workers[i]}\n")
    (tmp / "grids_wkt.csvt").write_text("WKT,String,Integer,Integer,String\n")
    if path.exists():
        path.unlink()
    subprocess.run(["ogr2ogr", "-q", "-f", "GPKG", str(path), str(csv_path), "-nln", "grids", "-a_srs", "EPSG:4326",
                    "-nlt", "POLYGON", "-lco", "GEOMETRY_NAME=geom"], check=True)
    csv_path.unlink()
    return n


def make_facilities_csv(path: Path, n: int) -> int:
    """``n`` points uniformly inside the synthetic district, lon/lat, Chinese headers."""
    import numpy as np
    from pyproj import Transformer

    rng = np.random.default_rng(SEED + 1)
    w, h = CITY_NX * COMM_NX * GRID_M, CITY_NY * COMM_NY * GRID_M
    x = rng.uniform(X0 + 1, X0 + w - 1, n)
    y = rng.uniform(Y0 + 1, Y0 + h - 1, n)
    lon, lat = Transformer.from_crs(4547, 4326, always_xy=True).transform(x, y)
    kinds = np.array(["社区综合服务设施", "文化体育设施", "社区卫生服务站", "养老服务设施", "幼儿园"])[rng.integers(0, 5, n)]
    status = np.array(["建成", "规划", "已验收"])[rng.integers(0, 3, n)]
    area = rng.uniform(50, 3000, n)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("编码,名称,类型,建筑面积,状态,经度,纬度\n")
        for i in range(n):
            fh.write(f"F9{i:07d},设施{i},{kinds[i]},{area[i]:.1f},{status[i]},{lon[i]:.8f},{lat[i]:.8f}\n")
    return n


# --- child: synthetic parents in the database (run with the backend's environment) ---------------------

def setup_parents() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gisportal.settings")
    import django

    django.setup()
    from django.contrib.gis.geos import MultiPolygon, Polygon
    from django.db import transaction

    from layers import models

    def mp(x0, y0, x1, y1):
        return MultiPolygon(Polygon.from_bbox((x0, y0, x1, y1)), srid=4547)

    cw, ch = COMM_NX * GRID_M, COMM_NY * GRID_M
    with transaction.atomic():
        models.Grid.objects.filter(code__startswith=DISTRICT).delete()
        models.ServiceFacility.objects.filter(code__startswith="F9").delete()
        models.Community.objects.filter(code__startswith=DISTRICT).delete()
        models.Street.objects.filter(code__startswith=DISTRICT).delete()
        models.District.objects.filter(code=DISTRICT).delete()
        d = models.District.objects.create(code=DISTRICT, name="基准测试区", source="bench_import",
                                           geom=mp(X0, Y0, X0 + CITY_NX * cw, Y0 + CITY_NY * ch))
        streets = models.Street.objects.bulk_create([
            models.Street(code=f"{DISTRICT}{col + 1:03d}", name=f"基准街道{col + 1}", district=d,
                          geom=mp(X0 + col * cw, Y0, X0 + (col + 1) * cw, Y0 + CITY_NY * ch))
            for col in range(CITY_NX)])
        comms = []
        for c in range(CITY_NX * CITY_NY):
            x, y = _community_origin(c)
            comms.append(models.Community(code=community_code(c), name=f"基准社区{c + 1}",
                                          street=streets[c // CITY_NY], geom=mp(x, y, x + cw, y + ch)))
        models.Community.objects.bulk_create(comms)


# --- measuring ----------------------------------------------------------------------------------------

def run_measured(cmd: list[str], env: dict) -> tuple[float, float, int, str, str]:
    """(wall s, peak RSS MB of that child, return code, stdout, stderr); the child's CPU time (user +
    system, ``os.wait4``) is kept in ``LAST_CPU[0]``: wall time is noisy on a shared machine."""
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, cwd=ROOT)
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    LAST_CPU[0] = ru.ru_utime + ru.ru_stime
    p.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    return wall, ru.ru_maxrss / 1024, p.returncode, out_f.read().decode(errors="replace"), \
        err_f.read().decode(errors="replace")


def pg_dsn(url: str) -> str:
    u = urlparse(url)
    parts = [f"host={u.hostname}", f"port={u.port or 5432}", f"dbname={u.path.lstrip('/')}"]
    if u.username:
        parts.append(f"user={unquote(u.username)}")
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    return "PG:" + " ".join(parts)


def backend_env(backend: str, var_dir: Path) -> dict:
    env = dict(os.environ, GISPORTAL_DEV_KEY="1", DJANGO_SETTINGS_MODULE="gisportal.settings",
               GISPORTAL_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    if backend == "spatialite":
        env.pop("DATABASE_URL", None)
    return env


def ogr_target(backend: str, var_dir: Path) -> list[str]:
    if backend == "spatialite":
        return ["-f", "SQLite", "-update", "-append", str(var_dir / "gisportal.sqlite3")]
    return ["-f", "PostgreSQL", "-update", "-append", pg_dsn(os.environ["DATABASE_URL"])]


def ogr_source(kind: str, path: Path) -> list[str]:
    if kind == "grids":
        return [str(path), "grids", "-nlt", "MULTIPOLYGON"]
    return [str(path), "-oo", "X_POSSIBLE_NAMES=经度", "-oo", "Y_POSSIBLE_NAMES=纬度", "-oo", "AUTODETECT_TYPE=YES",
            "-s_srs", "EPSG:4326", "-nlt", "POINT"]


def bench_one(backend: str, kind: str, path: Path, n: int, var_dir: Path, dry: bool) -> list[dict]:
    env = backend_env(backend, var_dir)
    if backend == "spatialite":
        for f in var_dir.glob("gisportal.sqlite3*"):
            f.unlink()
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], env=env, cwd=ROOT, check=True)
    if backend == "postgis":
        subprocess.run(["ogrinfo", "-q", pg_dsn(os.environ["DATABASE_URL"]), "-sql",
                        f"DROP TABLE IF EXISTS bench_{kind}"], env=env, check=True, capture_output=True)
    subprocess.run([PY, __file__, "--setup-parents"], env=env, cwd=ROOT, check=True)
    rows = []
    ours = [PY, "manage.py", "import_layer", kind, str(path), "--json"]
    # the fixed cost of one command: Django start-up + the system checks (which import the whole URLconf)
    # + an import that stops at once (no such file)
    wall, rss, rc, out, _err = run_measured(ours[:3] + [kind, str(path.with_name("missing.gpkg")), "--json"], env)
    rows.append(dict(backend=backend, kind=kind, tool="start-up", wall=wall, rss=rss, n=n,
                     ok='"file_missing"' in out, note="", cpu=LAST_CPU[0]))
    wall, rss, rc, _out, _err = run_measured([PY, "manage.py", "import_layer", "--help"], env)
    rows.append(dict(backend=backend, kind=kind, tool="help", wall=wall, rss=rss, n=n, ok=rc == 0, note="",
                     cpu=LAST_CPU[0]))
    if dry:
        wall, rss, rc, out, err = run_measured(ours + ["--dry-run"], env)
        rep = json.loads(out) if out.strip().startswith("{") else {}
        rows.append(dict(backend=backend, kind=kind, tool="ours --dry-run", wall=wall, rss=rss, n=n,
                         ok=rc == 0 and rep.get("status") == "dry_run", note=rep.get("status", err[-300:]),
                         cpu=LAST_CPU[0]))
    wall, rss, rc, out, err = run_measured(ours, env)
    rep = json.loads(out) if out.strip().startswith("{") else {}
    ok = rc == 0 and rep.get("created") == n
    if not ok:
        errs = [i.get("text") for i in rep.get("issues", []) if i.get("level") == "error"][:5]
        print(f"  OUR IMPORT FAILED rc={rc}: {errs or err[-1500:]}", file=sys.stderr)
    warn = len([i for i in rep.get("issues", []) if i.get("level") == "warning"])
    rows.append(dict(backend=backend, kind=kind, tool="ours", wall=wall, rss=rss, n=n, ok=ok, cpu=LAST_CPU[0],
                     note=f"created {rep.get('created')}, warnings {warn}, in-process {rep.get('elapsed_s')} s"))
    cmd = ["ogr2ogr", *ogr_target(backend, var_dir), *ogr_source(kind, path), "-t_srs", "EPSG:4547",
           "-nln", f"bench_{kind}"]
    wall, rss, rc, out, err = run_measured(cmd, env)
    if rc != 0:
        print(f"  OGR2OGR FAILED rc={rc}: {err[-1500:]}", file=sys.stderr)
    rows.append(dict(backend=backend, kind=kind, tool="ogr2ogr", wall=wall, rss=rss, n=n, ok=rc == 0,
                     cpu=LAST_CPU[0], note="defaults (-gt 100000" + (", COPY" if backend == "postgis" else "") + ")"))
    for r in rows:
        print(f"  {backend:10s} {kind:10s} {r['tool']:15s} {r['wall']:8.2f} s (CPU {r['cpu']:6.2f} s) "
              f"{n / r['wall']:9,.0f}/s "
              f"{r['rss']:7.0f} MB {'ok' if r['ok'] else 'FAILED'}", flush=True)
    return rows


# --- report -------------------------------------------------------------------------------------------

def versions(var_dir: Path) -> str:
    import django
    out = [f"Python {platform.python_version()}", f"Django {django.__version__}"]
    gdal = subprocess.run(["ogr2ogr", "--version"], capture_output=True, text=True).stdout.strip()
    out.append(gdal.split(",")[0])
    code = ("import django;django.setup();from django.db import connection as c;"
            "cur=c.cursor();"
            "q='SELECT spatialite_version()' if c.vendor=='sqlite' else 'SELECT postgis_full_version()';"
            "cur.execute(q);print(c.vendor, cur.fetchone()[0])")
    for backend in ["spatialite"] + (["postgis"] if os.environ.get("DATABASE_URL") else []):
        env = backend_env(backend, var_dir)
        r = subprocess.run([PY, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
        line = r.stdout.strip()
        if backend == "spatialite":
            out.append(f"SpatiaLite {line.split()[-1] if line else '?'}")
        else:
            m = re.search(r'POSTGIS="([^"]+)"', line)
            pg = subprocess.run([PY, "-c", code.replace("postgis_full_version()", "version()")], env=env, cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
            pgv = re.search(r"PostgreSQL (\S+)", pg)
            out.append(f"PostGIS {m.group(1) if m else '?'} (PostgreSQL {pgv.group(1) if pgv else '?'})")
    return ", ".join(out)


def table(rows: list[dict]) -> list[str]:
    lines = ["| file | database | ours (s) | ours CPU (s) | ours (features/s) | ours peak RSS (MB) | ogr2ogr (s) | "
             "ogr2ogr CPU (s) | ogr2ogr (features/s) | ogr2ogr peak RSS (MB) | ours / ogr2ogr |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    label = {"grids": "grids.gpkg (polygons)", "facilities": "facilities.csv (points)"}
    by = {(r["backend"], r["kind"], r["tool"]): r for r in rows}
    for (backend, kind, tool), r in by.items():
        if tool != "ours":
            continue
        o = by.get((backend, kind, "ogr2ogr"))
        d = by.get((backend, kind, "ours --dry-run"))
        su = by.get((backend, kind, "start-up"))
        hp = by.get((backend, kind, "help"))
        name = "SpatiaLite" if backend == "spatialite" else "PostGIS"
        fail = "" if r["ok"] else " (FAILED)"
        lines.append(f"| {label[kind]}, {r['n']:,} | {name} | {r['wall']:.1f}{fail} | {r['cpu']:.1f} | "
                     f"{r['n'] / r['wall']:,.0f} | {r['rss']:.0f} | {o['wall']:.1f} | {o['cpu']:.1f} | "
                     f"{o['n'] / o['wall']:,.0f} | {o['rss']:.0f} | **{r['wall'] / o['wall']:.1f}x** |")
        if d:
            lines.append(f"|   same, ours `--dry-run` | {name} | {d['wall']:.1f} | {d['cpu']:.1f} | "
                         f"{d['n'] / d['wall']:,.0f} | {d['rss']:.0f} | | | | | {d['wall'] / o['wall']:.1f}x |")
        if su:
            lines.append(f"|   of which fixed cost (start-up + system checks; `import_layer KIND missing-file`) | "
                         f"{name} | {su['wall']:.1f} | {su['cpu']:.1f} | | {su['rss']:.0f} | | | | | |")
        if hp:
            lines.append(f"|   of which Django start-up alone (`import_layer --help`, no system checks) | {name} | "
                         f"{hp['wall']:.1f} | {hp['cpu']:.1f} | | {hp['rss']:.0f} | | | | | |")
    return lines


def write_section(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = "## Import\n\n" + text.strip() + "\n"
    m = re.search(r"^## Import\n.*?(?=^## |\Z)", old, flags=re.M | re.S)
    if m:
        new = old[:m.start()] + block + ("\n" if old[m.end():] else "") + old[m.end():]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--only", choices=["grids", "facilities"])
    ap.add_argument("--no-dry-run", action="store_true", help="skip the --dry-run rows")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--note", default="", help="a sentence added under the table")
    ap.add_argument("--setup-parents", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.setup_parents:
        setup_parents()
        return
    if not shutil.which("ogr2ogr"):
        sys.exit("ogr2ogr not found (Debian: apt-get install gdal-bin)")
    t_all = time.perf_counter()
    load0 = os.getloadavg()
    backends = ["spatialite"] + (["postgis"] if os.environ.get("DATABASE_URL") else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmp = Path(tmp)
        var_dir = tmp / "var"
        var_dir.mkdir()
        files = {}
        t = time.perf_counter()
        if args.only in (None, "grids"):
            files["grids"] = (tmp / "grids.gpkg", make_grids_gpkg(tmp / "grids.gpkg", args.n, tmp))
        if args.only in (None, "facilities"):
            files["facilities"] = (tmp / "facilities.csv", make_facilities_csv(tmp / "facilities.csv", args.n))
        t_gen = time.perf_counter() - t
        print(f"generated {', '.join(f'{k} {v[1]:,} ({v[0].stat().st_size / 1e6:.1f} MB)' for k, v in files.items())}"
              f" in {t_gen:.1f} s", flush=True)
        for backend in backends:
            for kind, (path, n) in files.items():
                rows += bench_one(backend, kind, path, n, var_dir, dry=not args.no_dry_run)
        vers = versions(var_dir)
    load1 = os.getloadavg()
    lines = table(rows)
    print("\n".join(lines))
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    head = (f"`benchmarks/bench_import.py`, {time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores ({cpu}); "
            f"{vers}. 1-minute load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end "
            f"(machine shared with other jobs; times are one run each and include process start-up).")
    body = (f"{head}\n\nFiles (seed {SEED}): grids.gpkg = 100 m squares in EPSG:4326 tiling 400 synthetic communities "
            f"(district {DISTRICT}, 20 streets; 15-digit codes, parent by code prefix); facilities.csv = points "
            f"with 经度/纬度 and Chinese headers (parent community by containment). Ours = `manage.py import_layer "
            f"KIND FILE --json` (read, every validation, one atomic write: executemany of INSERT … GeomFromWKB on "
            f"SpatiaLite, COPY with hex EWKB on PostGIS; ImportRun record); ogr2ogr = "
            f"`ogr2ogr -update -append -t_srs EPSG:4547 -nln bench_KIND` into the same database (no validation). "
            f"Each database is fresh (SpatiaLite: new file + migrate; PostGIS: the `DATABASE_URL` database, "
            f"bench rows removed first). Peak RSS is each child process's own `ru_maxrss` (`os.wait4`); the "
            f"PostgreSQL server's memory is not counted for either. Target: ours within 2x of ogr2ogr, "
            f"peak < 500 MB.\n\n" + "\n".join(lines) + "\n")
    if args.note:
        body += "\n" + args.note.strip() + "\n"
    body += f"\nWhole benchmark: {time.perf_counter() - t_all:.0f} s.\n"
    if not args.no_write:
        write_section(body)
        print("wrote ## Import in benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
