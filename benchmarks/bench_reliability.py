"""Reliability and security figures (issue 9), on SpatiaLite and on a private PostGIS; loopback only.

    .venv/bin/python benchmarks/bench_reliability.py [--no-write] [--skip-postgis] [--outage-s 3]

1. Runs ``tests/security`` once per backend (pytest, ``GISPORTAL_RELIABILITY_FIGURES`` set) and collects
   the figures the tests count: bad-input cases tried and refused, canary connections, sentinel touches,
   fault cases survived, import runs and jobs reaped after a kill, disk-full imports, concurrent imports,
   concurrency races, backups verified.
2. Runs the permission matrix (tests/gisportal/test_permissions.py, when present) and reads its
   "unexpected allows" line.
3. Database outage (PostGIS): a client loop requests ``/layers/districts.geojson`` through the real
   middleware stack (with gisportal.security) while the cluster is stopped (``pg_ctl -m immediate``) for
   ``--outage-s`` seconds and started again: the 5xx responses during the outage by status (503 expected,
   no 500) and the time from the restart to the first 200.
Then prints a table and replaces the ``## Reliability`` section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
PG_BIN = "/usr/lib/postgresql/15/bin"


def run_suite(db_url: str | None) -> tuple[dict, str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"GISPORTAL_DEV_KEY": "1", "DJANGO_DEBUG": "0", "GISPORTAL_RELIABILITY_FIGURES": out})
    if db_url:
        env["DATABASE_URL"] = db_url
    t0 = time.perf_counter()
    proc = subprocess.run([PY, "-m", "pytest", "-q", "tests/security", "-p", "no:cacheprovider"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    summary = next((ln for ln in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", ln)), "?")
    try:
        doc = json.loads(Path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = {"figures": {}}
    Path(out).unlink(missing_ok=True)
    figs = dict(doc.get("figures", {}))
    figs["_accepted"] = "; ".join(doc.get("detail", {}).get("canary_accepted", []))
    return figs, summary.strip("= "), wall


def permission_matrix(db_url: str | None) -> str:
    test = ROOT / "tests" / "gisportal" / "test_permissions.py"
    if not test.exists():
        return "n/a (no permission test)"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"GISPORTAL_DEV_KEY": "1"})
    if db_url:
        env["DATABASE_URL"] = db_url
    proc = subprocess.run([PY, "-m", "pytest", "-q", "-s", f"{test}::test_permission_matrix", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    m = re.search(r"unexpected allows: (\d+)", proc.stdout)
    n = re.search(r"permission matrix: (\d+) requests", proc.stdout)
    if not m:
        return f"not measured (test exit {proc.returncode})"
    return f"{m.group(1)} (of {n.group(1) if n else '?'} requests)"


OUTAGE = r"""
import io, os, sys, time, json, django
os.environ["DJANGO_SETTINGS_MODULE"] = "gisportal.settings"
django.setup()
from django.conf import settings
from django.core.management import call_command
from wsgiref.util import setup_testing_defaults
call_command("migrate", verbosity=0)
settings.MIDDLEWARE = ["gisportal.security.DatabaseUnavailableMiddleware", *settings.MIDDLEWARE,
                       "gisportal.security.ContentSecurityPolicyMiddleware"]
settings.ALLOWED_HOSTS = ["127.0.0.1"]
from django.core.wsgi import get_wsgi_application
app = get_wsgi_application()   # the real WSGI handler: request_started/finished close broken connections
log = []
t_end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < t_end:
    env = {"PATH_INFO": "/layers/districts.geojson", "HTTP_HOST": "127.0.0.1", "wsgi.errors": io.StringIO()}
    setup_testing_defaults(env)
    got = {}
    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = int(status.split()[0]), dict(headers)
    t = time.monotonic()
    body = app(env, start_response)
    b"".join(body)
    if hasattr(body, "close"):
        body.close()
    log.append((t, got["status"], got["headers"].get("Retry-After")))
    time.sleep(0.05)
print("LOG" + json.dumps(log))
"""


def outage(outage_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gisportal-bench-pg-") as pgdir:
        url = subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", pgdir], capture_output=True, text=True,
                             check=True).stdout.strip()
        try:
            env = dict(os.environ, DATABASE_URL=url, GISPORTAL_DEV_KEY="1", GISPORTAL_VAR_DIR=pgdir + "/var",
                       PYTHONPATH=str(ROOT))
            total = outage_s + 12
            proc = subprocess.Popen([PY, "-c", OUTAGE, "x", str(total)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            time.sleep(8)   # django start-up, migrate, then a few good requests
            runas = ["su", "postgres", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
            t_stop = time.monotonic()
            subprocess.run(runas + [f"{PG_BIN}/pg_ctl -D '{pgdir}/data' -m immediate -w stop"], check=True,
                           capture_output=True)
            time.sleep(outage_s)
            port = url.rsplit(":", 1)[1].split("/")[0]
            subprocess.run(runas + [f"{PG_BIN}/pg_ctl -D '{pgdir}/data' -l '{pgdir}/log' -w -o \"-p {port} -k '{pgdir}' "
                                    f"-c listen_addresses=127.0.0.1\" start"], check=True, capture_output=True)
            t_start = time.monotonic()
            out, _ = proc.communicate(timeout=total + 60)
            log = json.loads(next(ln for ln in out.splitlines() if ln.startswith("LOG"))[3:])
        finally:
            subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", pgdir], capture_output=True)
    during = [s for t, s, _ in log if t_stop <= t < t_start]
    first_ok = next((t for t, s, _ in log if t >= t_start and s == 200), None)
    by_status = {}
    for s in during:
        by_status[s] = by_status.get(s, 0) + 1
    return {"requests": len(log), "during": len(during), "by_status": by_status,
            "retry_after": all(ra for t, s, ra in log if s == 503),
            "recovery_s": None if first_ok is None else round(first_ok - t_start, 2),
            "after_errors": sum(1 for t, s, _ in log if t >= t_start and s != 200 and (first_ok is None or t > first_ok))}


def write_section(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = "## Reliability\n\n" + text.strip() + "\n"
    m = re.search(r"^## Reliability\n.*?(?=^## |\Z)", old, flags=re.M | re.S)
    if m:
        new = old[:m.start()] + block + ("\n" if old[m.end():] else "") + old[m.end():]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--skip-postgis", action="store_true")
    ap.add_argument("--outage-s", type=float, default=3.0)
    ap.add_argument("--note", default="", help="a paragraph added under the table")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    results = {"spatialite": run_suite(None)}
    perms = {"spatialite": permission_matrix(None)}
    out = None
    if not args.skip_postgis:
        with tempfile.TemporaryDirectory(prefix="gisportal-bench-pg-") as pgdir:
            url = subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", pgdir], capture_output=True, text=True,
                                 check=True).stdout.strip()
            try:
                results["postgis"] = run_suite(url)
                perms["postgis"] = permission_matrix(url)
            finally:
                subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", pgdir], capture_output=True)
        out = outage(args.outage_s)
    backends = list(results)

    def fig(name):
        return " | ".join(str(results[b][0].get(name, 0)) for b in backends)

    def sum_of(prefix):
        return " | ".join(str(sum(v for k, v in results[b][0].items() if k.startswith(prefix))) for b in backends)

    import django
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    lines = [
        f"`benchmarks/bench_reliability.py`, {time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, Django {django.get_version()}; 1-minute load average {load0:.1f} at "
        f"the start (a shared machine). Figures are counted by `tests/security` (part of `make test`); "
        f"everything on loopback.",
        "",
        "| figure | " + " | ".join(backends) + " | target |",
        "|---|" + "---:|" * len(backends) + "---|",
        f"| tests/security result | {' | '.join(results[b][1] for b in backends)} | all pass |",
        f"| tests/security wall time (s) | {' | '.join(f'{results[b][2]:.0f}' for b in backends)} | < 180 |",
        f"| bad-input cases tried (canary + limits) | {fig('canary_cases')} | |",
        f"| of which refused cleanly (4xx / report refused / SubmissionError) | {fig('canary_refused')} | "
        f"all but harmless searches |",
        f"| handled without refusal (text searches: admin, API ?code/?search) | {fig('canary_accepted')} | harmless only |",
        f"| canary connections accepted | {fig('canary_connections')} | 0 |",
        f"| sentinel file read or changed | {fig('sentinel_touched')} | 0 |",
        f"| XSS sinks checked (map, home, review x2, GeoJSON, KML, CSV) / payloads | "
        f"{' | '.join(str(results[b][0].get('xss_sinks_checked', 0)) + ' / ' + str(results[b][0].get('xss_payloads', 0)) for b in backends)} | all escaped |",
        f"| fault cases survived, zero partial rows | {fig('faults_survived')} | all |",
        f"| killed import runs / jobs failed by the reaper (\"进程中断\"); live ones kept running | "
        f"{' | '.join(str(results[b][0].get('runs_reaped', 0)) + ' / ' + str(results[b][0].get('jobs_reaped', 0)) for b in backends)} | 2 / 2 |",
        f"| disk full mid-import refused cleanly (SQLite max_page_count + tmpfs; PostGIS tablespace on tmpfs) | "
        f"{sum_of('disk_full_')} | 2 / 1 |",
        f"| two imports at once, clean outcome (SQLite: waited then ok, busy refused; PostGIS: both ok, "
        f"same codes one refused) | {fig('concurrency_imports')} | 2 |",
        f"| of which the same codes were caught by the unique constraint (not at validation) | "
        f"{fig('concurrency_import_unique_conflict_postgis')} | - / 1 |",
        f"| parallel decision races (2, 5, 20): one winner each | {fig('concurrency_races')} | 3 |",
        f"| conflicts returned (409) | {fig('concurrency_conflicts')} | 24 |",
        f"| backup -> restore round trips verified (tables) | "
        f"{' | '.join(str(results[b][0].get('backup_round_trips', 0)) + ' (' + str(results[b][0].get('backup_tables_verified', 0)) + ')' for b in backends)} | 1 |",
        f"| unexpected allows in the permission matrix | {' | '.join(perms[b] for b in backends)} | 0 |",
    ]
    if out:
        st = ", ".join(f"{k}: {v}" for k, v in sorted(out["by_status"].items()))
        lines += ["", f"Database outage (PostGIS stopped with `pg_ctl -m immediate` for {args.outage_s:g} s, "
                      f"then started): {out['requests']} requests in all; during the outage {out['during']} "
                      f"responses ({st or 'none'}; Retry-After on every 503: {out['retry_after']}); "
                      f"first 200 {out['recovery_s']} s after the restart, {out['after_errors']} errors after "
                      f"that, no manual step."]
    if args.note:
        lines += ["", args.note]
    lines += ["", f"Whole benchmark: {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
