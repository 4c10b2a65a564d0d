"""Speed under load (issue 8) and a database outage under load (issue 9); loopback only, < 6 minutes.

    .venv/bin/python benchmarks/bench_load.py [--duration 20] [--outage-s 5] [--no-write]

1. Starts a private PostgreSQL 15 + PostGIS cluster (``scripts/pg.sh start DIR``), migrates, loads the demo
   (``load_demo``, ``create_demo_users`` with fixed passwords from ``GISPORTAL_DEMO_PASSWORD_<ROLE>``) and
   serves it with gunicorn as ``scripts/serve.sh`` does (2 workers x 4 threads, ``DJANGO_DEBUG=0``,
   ``GISPORTAL_DEV_KEY=1``) on 127.0.0.1 and a free port, without the access log.
2. Load test 1: ``/layers/roads.geojson?bbox=...`` with a bbox found by bisection on the live server so
   that the response holds 1,000 +- 100 features: a short concurrency ramp, then ``--duration`` seconds at
   the best concurrency (the highest rate with p95 < 100 ms, else the highest rate); the same bbox through
   ``/api/v1/layers/roads/?bbox=...&page_size=1000`` (token) for a shorter run. Target >= 200 req/s,
   p95 < 100 ms, 0 errors. A short in-process profile splits one request into its parts.
3. Load test 2: ``POST /api/v1/reviews/`` (a GeoJSON submission, ``save: false``, token of the demo planner)
   by 20 users with ~1 s think time, then 20 connections back to back; ``GET /api/v1/reviews/<pk>/`` too.
   Target p95 < 300 ms, 0 errors.
4. Load test 3: 6 client threads request ``/`` (the home page: one count query per layer) while the cluster
   is stopped with ``pg_ctl -m immediate`` for ``--outage-s`` seconds and started again: 5xx while down by
   status (503 expected, no 500), Retry-After, and the time from the restart to the first 200.

wrk (Debian ``apt-get install wrk``, C, 2 threads) drives tests 1 and 2 (Lua: percentiles, think time);
test 3 uses a small threaded Python client (needs a per-response timeline). CPU seconds of the client,
of the gunicorn workers and of the whole machine are recorded per run (the machine is shared).
Prints a table and replaces the ``## Load`` section of benchmarks/RESULTS.md. Every process and
directory it starts is removed at the end, also on errors and Ctrl-C.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
PG_BIN = "/usr/lib/postgresql/15/bin"
PASSWORDS = {role: f"{role}-load-bench-1" for role in ("planner", "emergency_official", "field_staff", "admin")}
SUBMISSION = ROOT / "fixtures" / "review" / "good_qiaodong.geojson"
RUNAS = ["su", "postgres", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]

WRK_LUA = r"""
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body_file = os.getenv("WRK_BODY_FILE")
if body_file and body_file ~= "" then
  local f = io.open(body_file, "rb"); wrk.body = f:read("*a"); f:close()
  wrk.headers["Content-Type"] = "application/json"
end
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
wrk.headers["Accept-Encoding"] = os.getenv("WRK_ENCODING") or "identity"
local think = tonumber(os.getenv("WRK_THINK_MS") or "0")
local paths_file = os.getenv("WRK_PATHS_FILE")
if paths_file and paths_file ~= "" then   -- one path per line, picked at random per request
  local paths = {}
  for line in io.lines(paths_file) do paths[#paths + 1] = line end
  request = function() return wrk.format(nil, paths[math.random(#paths)]) end
end
if think > 0 then
  function delay() return math.random(math.floor(think / 2), math.floor(think * 3 / 2)) end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
"""

# What-if servers (no app file is edited): the same WSGI app with a patch applied at import time.
#   "cached": pyproj Transformer.from_crs cached per argument (pyproj >= 3.1 transformers are thread-safe:
#             each thread lazily gets its own PJ), i.e. functools.lru_cache on layers.selectors._to_lonlat and
#             on the transformers in layers.analysis.submission.
#   "db":     "cached" + the GeoJSON view's selector reading the geometry as GeoJSON text from the database
#             (AsGeoJSON(Transform(geom, 4326), precision=7)): no GEOS object, WKB, pyproj or shapely per request.
WHATIF = r"""
import functools, json, os
from gisportal.wsgi import application  # noqa: F401  (django.setup)
import pyproj
from layers import selectors

_orig_from_crs = pyproj.Transformer.from_crs


@functools.lru_cache(maxsize=32)
def _cached(a, b, always_xy=False):
    return _orig_from_crs(a, b, always_xy=always_xy)


def from_crs(crs_from, crs_to, always_xy=False, **kw):
    if kw:
        return _orig_from_crs(crs_from, crs_to, always_xy=always_xy, **kw)
    key = lambda c: c.to_wkt() if isinstance(c, pyproj.CRS) else c
    return _cached(key(crs_from), key(crs_to), always_xy)


pyproj.Transformer.from_crs = staticmethod(from_crs)

if os.environ.get("GISPORTAL_WHATIF") == "db":
    from django.contrib.gis.db.models.functions import AsGeoJSON, Transform
    from layers.registry import layer_get

    _orig_layer_geojson = selectors.layer_geojson_bytes

    def layer_geojson(kind, *, bbox=None, limit=None, escape_html=False, simplify=False, queryset=None):
        if escape_html or simplify:
            return _orig_layer_geojson(kind, bbox=bbox, limit=limit, escape_html=escape_html, simplify=simplify,
                                       queryset=queryset)
        layer = layer_get(kind)
        qs = layer.model.objects.all() if queryset is None else queryset
        if bbox is not None:
            qs = qs.in_bbox(*bbox)
        if limit is not None:
            qs = qs[:limit]
        rows = qs.annotate(_gj=AsGeoJSON(Transform("geom", 4326), precision=7)).values_list(
            "pk", "is_sample", "_gj", *layer.fields)
        features = []
        for pk, is_sample, gj, *values in rows:
            props = {"id": pk, "is_sample": is_sample}
            for field, value in zip(layer.fields, values):
                props[field] = selectors._display(value)
            features.append({"type": "Feature", "id": pk, "properties": props, "geometry": json.loads(gj)})
        return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()

    selectors.layer_geojson_bytes = layer_geojson
"""

# ------------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg() -> tuple[float, float, float]:
    return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pids) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tck
    return total


def proc_tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children (cutime/cstime) and its live children: for the
    postmaster, the whole cluster including the backends that already exited."""
    tck = os.sysconf("SC_CLK_TCK")
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / tck + proc_cpu_s(children(pid))


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def top_others(exclude: set[int], n: int = 5) -> list[str]:
    """The busiest other processes right now (ps), to say honestly what shared the machine."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,etime,comm", "--sort=-pcpu", "--no-headers"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and int(parts[0]) not in exclude and float(parts[1]) >= 5.0:
            rows.append(f"{parts[3]} {parts[1]}%")
        if len(rows) >= n:
            break
    return rows


# ------------------------------------------------------------------------------------------ services
_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s, load {loadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Portal:
    """A private PostGIS cluster + migrated demo + gunicorn; ``close()`` removes all of it."""

    def __init__(self, workers: int = 2, threads: int = 4):
        self.pgdir = tempfile.mkdtemp(prefix="gisportal-load-pg-")
        self.var = tempfile.mkdtemp(prefix="gisportal-load-var-")
        self.server = None
        self.times = {}
        t = time.perf_counter()
        self.url = subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", self.pgdir], capture_output=True,
                                  text=True, check=True, timeout=120).stdout.strip().splitlines()[-1]
        self.times["pg.sh start"] = time.perf_counter() - t
        self.pg_port = int(urllib.parse.urlparse(self.url).port)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "DATABASE_URL"))}
        self.env.update(DATABASE_URL=self.url, GISPORTAL_VAR_DIR=self.var, GISPORTAL_DEV_KEY="1", DJANGO_DEBUG="0",
                        DJANGO_SETTINGS_MODULE="gisportal.settings", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
        self.env.update({f"GISPORTAL_DEMO_PASSWORD_{r.upper()}": p for r, p in PASSWORDS.items()})
        for cmd in (["migrate", "--noinput", "-v", "0"], ["load_demo"], ["create_demo_users"]):
            t = time.perf_counter()
            proc = subprocess.run([PY, "manage.py", *cmd], cwd=ROOT, env=self.env, capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode:
                raise RuntimeError(f"manage.py {cmd[0]} failed:\n{proc.stderr[-3000:]}")
            self.times[cmd[0]] = time.perf_counter() - t
        self.workers, self.threads = workers, threads
        self.start_server()

    def start_server(self, app: str = "gisportal.wsgi", extra_env: dict | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.gunicorn_cmd = [GUNICORN, app, "--bind", f"127.0.0.1:{self.port}", "--workers",
                             str(self.workers), "--threads", str(self.threads), "--timeout", "300",
                             "--error-logfile", str(Path(self.var) / "gunicorn.log")]
        t = time.perf_counter()
        self.server = subprocess.Popen(self.gunicorn_cmd, cwd=ROOT, env=dict(self.env, **(extra_env or {})),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(600):
            try:
                if get(self.base + "/")[0] == 200:
                    break
            except OSError:
                pass
            if self.server.poll() is not None:
                raise RuntimeError("gunicorn exited: " + self.log_tail())
            time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not answer: " + self.log_tail())
        self.times.setdefault("gunicorn ready", time.perf_counter() - t)

    def postmaster_pid(self) -> int:
        try:
            return int(Path(self.pgdir, "data", "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return -1

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (Path(self.var) / "gunicorn.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        return children(self.server.pid) if self.server else []

    def pg_stop_immediate(self) -> None:
        subprocess.run(RUNAS + [f"{PG_BIN}/pg_ctl -D '{self.pgdir}/data' -m immediate -w stop"], check=True,
                       capture_output=True, timeout=60)

    def pg_start(self) -> None:
        # the options of scripts/pg.sh start
        subprocess.run(RUNAS + [f"{PG_BIN}/pg_ctl -D '{self.pgdir}/data' -l '{self.pgdir}/log' -w -o \"-p "
                                f"{self.pg_port} -k '{self.pgdir}' -c listen_addresses=127.0.0.1 -c fsync=off "
                                f"-c synchronous_commit=off -c full_page_writes=off\" start"],
                       check=True, capture_output=True, timeout=120)

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)  # gunicorn master: quick shutdown of its workers
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=10)
        self.server = None

    def close(self) -> None:
        self.stop_server()
        subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", self.pgdir], capture_output=True, timeout=120)
        shutil.rmtree(self.pgdir, ignore_errors=True)
        shutil.rmtree(self.var, ignore_errors=True)


def drain(portal: "Portal", max_s: float = 30.0) -> float:
    """Wait until the gunicorn workers are idle (a closed-loop run leaves queued requests behind)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        workers = portal.worker_pids()
        c0 = proc_cpu_s(workers)
        time.sleep(0.5)
        if proc_cpu_s(workers) - c0 < 0.05:
            break
    return time.monotonic() - t0


def get(url: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None,
        timeout: float = 30) -> tuple[int, dict, bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ wrk
class Wrk:
    def __init__(self, portal: Portal, tmp: str):
        self.portal = portal
        self.script = Path(tmp) / "bench.lua"
        self.script.write_text(WRK_LUA, encoding="utf-8")
        self.tmp = tmp

    def run(self, path: str, *, conns: int, seconds: float, auth: str = "", body: bytes | None = None,
            think_ms: int = 0, threads: int = 2, encoding: str = "identity", paths: list[str] | None = None) -> dict:
        env = dict(os.environ, WRK_METHOD="POST" if body is not None else "GET", WRK_AUTH=auth,
                   WRK_THINK_MS=str(think_ms), WRK_BODY_FILE="", WRK_ENCODING=encoding, WRK_PATHS_FILE="")
        if paths:
            pf = Path(self.tmp) / "paths.txt"
            pf.write_text("\n".join(paths) + "\n", encoding="utf-8")
            env["WRK_PATHS_FILE"] = str(pf)
        if body is not None:
            bf = Path(self.tmp) / "body.json"
            bf.write_bytes(body)
            env["WRK_BODY_FILE"] = str(bf)
        drain(self.portal)
        workers, pm = self.portal.worker_pids(), self.portal.postmaster_pid()
        cpu0, busy0, t0 = proc_cpu_s(workers), machine_busy_s(), time.perf_counter()
        pg0 = proc_tree_cpu_s(pm)
        proc = subprocess.Popen(["wrk", "-t", str(min(threads, conns)), "-c", str(conns), "-d", f"{max(1, round(seconds))}s",
                                 "--timeout", "10s", "-s", str(self.script), self.portal.base + path],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=seconds + 60)
        # the child is reaped by communicate; its rusage comes from RUSAGE_CHILDREN deltas
        wall = time.perf_counter() - t0
        m = re.search(r"^WRKJSON (\{.*\})$", out, flags=re.M)
        if not m:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]} {err[-2000:]}")
        r = json.loads(m.group(1))
        r.update(path=path, conns=conns, seconds=r["duration_us"] / 1e6, think_ms=think_ms,
                 server_cpu_s=proc_cpu_s(workers) - cpu0, machine_cpu_s=machine_busy_s() - busy0, wall=wall,
                 pg_cpu_s=proc_tree_cpu_s(pm) - pg0)
        r["rps"] = r["requests"] / r["seconds"] if r["seconds"] else 0.0
        r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        done = max(r["requests"] - r["timeout"], 1)
        r["cpu_ms_req"] = 1000 * (r["server_cpu_s"] + r["pg_cpu_s"]) / done
        return r


def users_run(portal: "Portal", path: str, *, auth: str, body: bytes, users: int = 20, seconds: float = 20.0,
              think_ms: int = 1000, stagger_s: float = 1.0) -> dict:
    """``users`` Python client threads, each on its own keep-alive connection: POST, then think a uniform
    ``think_ms/2 .. 3*think_ms/2`` (as the wrk Lua), its first request after a uniform 0 .. ``stagger_s`` wait.

    wrk sends the first request of every connection at once (its ``delay()`` applies only after a response), so
    its think-time row starts with all 20 users clicking in the same millisecond; that one burst queues ~20
    reviews and makes most of its p99. This row is the same users arriving over the first second instead.
    Latencies are recorded from the request's send to the end of its body; only requests started before the
    end of ``seconds`` count."""
    import random

    base = urllib.parse.urlparse(portal.base)
    lat, errors = [], [0]
    lock = threading.Lock()
    drain(portal)
    workers, pm = portal.worker_pids(), portal.postmaster_pid()
    cpu0, busy0, t0 = proc_cpu_s(workers), machine_busy_s(), time.perf_counter()
    pg0 = proc_tree_cpu_s(pm)
    t_end = t0 + seconds

    def user(i: int) -> None:
        rnd = random.Random(1000 + i)
        time.sleep(rnd.uniform(0.0, stagger_s))
        conn = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
        try:
            while time.perf_counter() < t_end:
                t = time.perf_counter()
                try:
                    conn.request("POST", path, body, {"Authorization": auth, "Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except OSError:
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
                with lock:
                    lat.append(time.perf_counter() - t)
                    errors[0] += not ok
                time.sleep(rnd.uniform(think_ms / 2000.0, think_ms * 3 / 2000.0))
        finally:
            conn.close()

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.perf_counter() - t0
    us = sorted(1e6 * x for x in lat)

    def pct(q):
        return us[min(len(us) - 1, int(q * len(us)))] if us else 0.0

    r = {"requests": len(us), "seconds": wall, "conns": users, "think_ms": think_ms, "errors": errors[0],
         "p50": pct(0.50), "p90": pct(0.90), "p95": pct(0.95), "p99": pct(0.99), "max": us[-1] if us else 0.0,
         "server_cpu_s": proc_cpu_s(workers) - cpu0, "machine_cpu_s": machine_busy_s() - busy0, "wall": wall,
         "pg_cpu_s": proc_tree_cpu_s(pm) - pg0}
    r["rps"] = r["requests"] / wall if wall else 0.0
    r["cpu_ms_req"] = 1000 * (r["server_cpu_s"] + r["pg_cpu_s"]) / max(r["requests"], 1)
    return r


def wrk_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------------------------------ tests
def gzip_size(base: str, path: str) -> int:
    """Bytes on the wire when the client accepts gzip (checks that the body is gzip and decodes)."""
    import gzip

    status, headers, out = get(base + path, {"Accept-Encoding": "gzip"})
    if status != 200 or {k.lower(): v for k, v in headers.items()}.get("content-encoding") != "gzip":
        raise RuntimeError(f"no gzip: HTTP {status} {headers}")
    json.loads(gzip.decompress(out))
    return len(out)


def n_features(base: str, path: str, headers: dict | None = None) -> tuple[int, int]:
    status, _, body = get(base + path, headers)
    if status != 200:
        raise RuntimeError(f"{path}: HTTP {status} {body[:300]!r}")
    return len(json.loads(body)["features"]), len(body)


def find_bbox(portal: Portal, kind: str = "roads", table: str = "layers_road", target: int = 1000,
              tol: int = 100) -> tuple[str, int, int]:
    """A square lon/lat bbox around the layer's median start vertex holding target +- tol features:
    bisection on its half-size counted in SQL (same predicate as ``in_bbox``: intersects the box
    transformed to the storage SRID), then the count checked on the live endpoint."""
    import psycopg

    with psycopg.connect(urllib.parse.urlparse(portal.url)._replace(scheme="postgresql").geturl()) as c:
        cx, cy, w = c.execute(
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ST_X(p)), "
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY ST_Y(p)), "
            f"greatest(max(ST_X(p)) - min(ST_X(p)), max(ST_Y(p)) - min(ST_Y(p))) FROM "
            f"(SELECT ST_Transform(ST_StartPoint(ST_GeometryN(geom, 1)), 4326) AS p FROM {table}) q").fetchone()
        srid = c.execute(f"SELECT ST_SRID(geom) FROM {table} LIMIT 1").fetchone()[0]
        lo, hi = 0.0, float(w)
        for _ in range(40):
            h = (lo + hi) / 2
            bbox = f"{cx - h:.5f},{cy - h:.5f},{cx + h:.5f},{cy + h:.5f}"
            n = c.execute(f"SELECT count(*) FROM {table} WHERE ST_Intersects(geom, ST_Transform("
                          f"ST_MakeEnvelope({bbox}, 4326), {srid}))").fetchone()[0]
            if abs(n - target) <= tol // 10:
                break
            lo, hi = (h, hi) if n < target else (lo, h)
    n, size = n_features(portal.base, f"/layers/{kind}.geojson?bbox={bbox}")
    if abs(n - target) > tol:
        raise RuntimeError(f"bbox {bbox}: {n} features, not {target} +- {tol}")
    return bbox, n, size


def viewports(bbox: str, n: int, seed: int = 8) -> list[str]:
    """``n`` GeoJSON paths for boxes of ``bbox``'s size, their centres moved at random by up to half the
    box's width / height (a map being panned around the main view)."""
    import random

    rng = random.Random(seed)
    x0, y0, x1, y1 = (float(v) for v in bbox.split(","))
    w, h = x1 - x0, y1 - y0
    out = []
    for _ in range(n):
        dx, dy = rng.uniform(-w / 2, w / 2), rng.uniform(-h / 2, h / 2)
        out.append(f"/layers/roads.geojson?bbox={x0 + dx:.5f},{y0 + dy:.5f},{x1 + dx:.5f},{y1 + dy:.5f}")
    return out


PROFILE = r"""
import gzip, json, os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "gisportal.settings"
import django
django.setup()
import shapely
from django.contrib.gis.db.models.functions import AsGeoJSON, Transform
from django.test import RequestFactory
from django.utils.text import compress_string
from layers import selectors
from layers.registry import LAYERS
from gisportal import views
kind, bbox = sys.argv[1], tuple(float(v) for v in sys.argv[2].split(","))
layer = LAYERS[kind]
rf = RequestFactory()
def best(fn, n=5):
    ts = []
    for _ in range(n):
        t = time.process_time(); out = fn(); ts.append(time.process_time() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1000, out
req = rf.get(f"/layers/{kind}.geojson", {"bbox": sys.argv[2]})
from django.contrib.auth.models import AnonymousUser
req.user = AnonymousUser()
res = {}
from layers import geojson_cache
def cold():
    geojson_cache.clear()
    return views.layer_geojson(req, kind)
res["view, cold cache (whole, in process; identity)"], resp = best(cold)
views.layer_geojson(req, kind)
res["view, warm cache: every feature's text kept (as served)"], resp = best(lambda: views.layer_geojson(req, kind))
res["  of which the keys query (pk + table token)"], _ = best(lambda: list(geojson_cache.keyed(
    layer.model.objects.all().in_bbox(*bbox)[:5000])))
rows_fn = lambda: selectors._layer_rows(kind, bbox=bbox, limit=5000, queryset=None)
res["SQL + rows, geometry as WKB (AsWKB)"], rows = best(rows_fn)
qs = layer.model.objects.all().in_bbox(*bbox)[:5000]
res["  of which SQL only (no geometry column)"], _ = best(lambda: list(qs.values_list("pk", "is_sample", *layer.fields)))
wkb = [r[2] for r in rows]
res["from_wkb + transform (geoms_to_lonlat, cached transformer)"], ll = best(lambda: selectors.geoms_to_lonlat(wkb))
res["set_precision + to_geojson"], gj = best(lambda: shapely.to_geojson(shapely.set_precision(ll, 1e-7)))
res["features_json (all of the above after SQL + properties + splice)"], text = best(
    lambda: selectors.features_json(layer.fields, rows))
res["  before issue 8: json.loads per feature"], _ = best(lambda: [json.loads(g) for g in gj])
data = json.loads(text)
res["  before issue 8: json.dumps of the dict (JsonResponse)"], _ = best(lambda: json.dumps(data, ensure_ascii=False))
body = resp.content
res[f"gzip level 6 of the body ({len(body):,} -> {len(compress_string(body)):,} bytes), only if asked"], _ = best(
    lambda: compress_string(body))
qs2 = qs.annotate(_gj=AsGeoJSON(Transform("geom", 4326), precision=7))
res["alternative: SQL AsGeoJSON(Transform(geom, 4326)) rows (+ DB CPU, not counted here)"], _ = best(
    lambda: list(qs2.values_list("pk", "is_sample", "_gj", *layer.fields)))
print("PROFILE" + json.dumps({k: round(v, 2) for k, v in res.items()}))
"""


def profile(portal: Portal, kind: str, bbox: str) -> dict:
    proc = subprocess.run([PY, "-c", PROFILE, kind, bbox], cwd=ROOT, env=dict(portal.env, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=180)
    m = re.search(r"^PROFILE(\{.*\})$", proc.stdout, flags=re.M)
    if not m:
        return {"error": proc.stderr[-1500:]}
    return json.loads(m.group(1))


def compare_fc(a: bytes, b: bytes) -> str:
    """Same features (ids) and the largest coordinate difference between two FeatureCollections."""
    import numpy as np

    fa = {f["id"]: f for f in json.loads(a)["features"]}
    fb = {f["id"]: f for f in json.loads(b)["features"]}
    if set(fa) != set(fb):
        return f"DIFFERENT features: {len(fa)} vs {len(fb)}"
    worst = 0.0
    for k, f in fa.items():
        ca = np.asarray(_flat(f["geometry"]["coordinates"]))
        cb = np.asarray(_flat(fb[k]["geometry"]["coordinates"]))
        if ca.shape != cb.shape or f["properties"] != fb[k]["properties"]:
            return f"DIFFERENT feature {k}"
        worst = max(worst, float(np.abs(ca - cb).max()) if ca.size else 0.0)
    return f"same {len(fa)} features, max coordinate difference {worst:.1e} deg"


def _flat(c):
    return [c] if not isinstance(c[0], list) else [p for sub in c for p in _flat(sub)]


def token(portal: Portal) -> str:
    body = json.dumps({"username": "planner_demo", "password": PASSWORDS["planner"]}).encode()
    status, _, out = get(portal.base + "/api/v1/auth/token/", {"Content-Type": "application/json"}, "POST", body)
    if status != 200:
        raise RuntimeError(f"token: HTTP {status} {out[:300]!r}")
    return json.loads(out)["token"]


def outage(portal: Portal, outage_s: float, threads: int = 6, before_s: float = 5.0, after_s: float = 10.0) -> dict:
    """Steady load on ``/`` while PostgreSQL is killed (-m immediate) and restarted."""
    log: list[tuple[float, float, int, bool]] = []   # (sent, received, status, retry-after present)
    stop = threading.Event()
    lock = threading.Lock()

    def client():
        conn = None
        while not stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=30)
            t = time.monotonic()
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                st, ra = r.status, r.getheader("Retry-After") is not None
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                st, ra = -1, False   # connection error
                conn.close()
                conn = None
            with lock:
                log.append((t, time.monotonic(), st, ra))
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    cpu0 = wrk_cpu_s()
    ts = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for th in ts:
        th.start()
    t_begin = time.monotonic()
    time.sleep(before_s)
    t_stop = time.monotonic()
    portal.pg_stop_immediate()
    t_down = time.monotonic()
    time.sleep(outage_s)
    t_start = time.monotonic()
    portal.pg_start()
    t_ready = time.monotonic()
    time.sleep(after_s)
    stop.set()
    for th in ts:
        th.join(timeout=40)
    t_end = time.monotonic()
    del cpu0

    def count(rows):
        by = {}
        for _, _, s, _ in rows:
            by[s] = by.get(s, 0) + 1
        return by

    # "while down": sent after pg_ctl stop returned, answered before the start was issued
    down = [r for r in log if r[0] >= t_down and r[1] <= t_start]
    after = [r for r in log if r[0] >= t_ready]
    first_ok = next((r[1] for r in sorted(log, key=lambda r: r[1]) if r[0] >= t_start and r[2] == 200), None)
    fives = [r for r in log if r[2] >= 500 or r[2] == -1]
    before = [r for r in log if r[1] < t_stop]
    return {"threads": threads, "requests": len(log), "seconds": t_end - t_begin,
            "before": count(before), "down": count(down), "down_n": len(down),
            "all": count(log), "n500": sum(1 for r in log if r[2] == 500),
            "conn_errors": sum(1 for r in log if r[2] == -1),
            "retry_after": all(r[3] for r in log if r[2] == 503),
            "stop_s": t_down - t_stop, "outage_s": t_start - t_down, "start_s": t_ready - t_start,
            "recovery_from_ready_s": None if first_ok is None else first_ok - t_ready,
            "recovery_from_start_s": None if first_ok is None else first_ok - t_start,
            "after_non200": sum(1 for r in after if r[2] != 200 and (first_ok is None or r[0] > first_ok)),
            "fives_n": len(fives),
            "before_p95_ms": _p([1000 * (r[1] - r[0]) for r in before], 95),
            "down_p95_ms": _p([1000 * (r[1] - r[0]) for r in down], 95)}


def _p(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


# ------------------------------------------------------------------------------------------ report
def versions(portal: Portal) -> dict:
    import django
    import gunicorn

    out = {"Python": platform.python_version(), "Django": django.get_version(), "gunicorn": gunicorn.__version__}
    try:
        import psycopg

        with psycopg.connect(urllib.parse.urlparse(portal.url)._replace(scheme="postgresql").geturl()) as c:
            out["PostgreSQL"] = c.execute("SHOW server_version").fetchone()[0].split()[0]
            out["PostGIS"] = c.execute("SELECT postgis_lib_version()").fetchone()[0]
    except Exception as exc:  # noqa: BLE001 - versions are informative only
        out["PostgreSQL"] = f"? ({exc.__class__.__name__})"
    try:
        out["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    except (OSError, IndexError):
        out["wrk"] = "?"
    return out


def fmt_ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def fmt_s(v) -> str:
    return "never" if v is None else f"{v:.2f} s"


def ms(us) -> str:
    return f"{us / 1000:.1f}"


def row(name, r, target, met):
    none = r["requests"] == 0
    lat = (["none completed"] + ["n/a"] * 2) if none else [ms(r["p50"]), ms(r["p95"]), ms(r["p99"])]
    return [name, str(r["conns"]) + (f" (think {r['think_ms']} ms)" if r["think_ms"] else ""),
            f"{r['seconds']:.0f}", f"{r['requests']:,}", f"{r['rps']:.1f}", *lat,
            str(r["errors"]), "n/a" if none else f"{r['cpu_ms_req']:.0f}",
            "n/a" if none else f"{(os.cpu_count() or 2) * 1000 / max(r['cpu_ms_req'], 1e-3):.0f}",
            target, ("yes" if met else "**no**") if target else ""]

def met1(r):
    return r["requests"] > 0 and r["rps"] >= 200 and r["p95"] < 100_000 and r["errors"] == 0

def met2(r):
    return r["requests"] > 0 and r["p95"] < 300_000 and r["errors"] == 0



WHATIF_HEADING = "### What-if: the fixes measured (patched servers)"


def run_whatif(portal, wrk, tmp, path1, auth, body, duration, left) -> dict:
    Path(tmp, "bench_load_whatif.py").write_text(WHATIF, encoding="utf-8")
    _, _, ref_body = get(portal.base + path1)
    wdur = max(5.0, duration / 3)
    whatif = {}
    for variant in ("cached", "db", "db_conn"):
        if left() < 35:
            break
        progress(f"what-if {variant}")
        portal.stop_server()
        extra = {"PYTHONPATH": tmp, "GISPORTAL_WHATIF": variant.split("_")[0]}
        if variant == "db_conn":
            extra["DJANGO_CONN_MAX_AGE"] = "60"
        portal.start_server("bench_load_whatif:application", extra)
        _, _, body_v = get(portal.base + path1)
        res = {"same": compare_fc(ref_body, body_v)}
        wrk.run(path1, conns=8, seconds=3)   # every thread of both workers builds its per-thread PJ once
        res["geojson"] = [wrk.run(path1, conns=c, seconds=wdur) for c in (4, 8)]
        if variant == "cached":
            res["review_think"] = wrk.run("/api/v1/reviews/", conns=20, seconds=wdur, auth=auth, body=body,
                                          think_ms=1000)
            res["review_closed"] = wrk.run("/api/v1/reviews/", conns=20, seconds=wdur, auth=auth, body=body)
        whatif[variant] = res
        progress(f"what-if {variant}: {[(r['conns'], round(r['rps'], 1)) for r in res['geojson']]}")
    return whatif


def whatif_text(whatif: dict, path1: str, load: tuple, cmd: str) -> str:
    labels = {"cached": "A (pyproj transformer cached)", "db": "B (A + geometry as GeoJSON from the database)",
              "db_conn": "C (B + DJANGO_CONN_MAX_AGE=60)"}
    rows = []
    for variant, res in whatif.items():
        for r in res["geojson"]:
            split = (f"app {1000 * r['server_cpu_s'] / max(r['requests'], 1):.0f} + db "
                     f"{1000 * r['pg_cpu_s'] / max(r['requests'], 1):.0f} CPU ms/req")
            rows.append(row(f"{labels[variant]}: GET {path1} ({res['same']}; {split})", r,
                            ">= 200 req/s, p95 < 100 ms, 0 errors", met1(r)))
        if "review_think" in res:
            rows.append(row(f"{labels[variant]}: POST /api/v1/reviews/", res["review_think"],
                            "20 users, p95 < 300 ms, 0 errors", met2(res["review_think"])))
            rows.append(row(f"{labels[variant]}: same, back to back", res["review_closed"],
                            "p95 < 300 ms, 0 errors", met2(res["review_closed"])))
    return "\n".join([
        WHATIF_HEADING, "",
        f"`{cmd}`, {time.strftime('%Y-%m-%d')}; 1-minute load average {load[0]:.2f} -> {load[1]:.2f}. Not the "
        "committed code: the same database and gunicorn settings, the app patched at import time by a module in "
        "the temp dir (`WHATIF` in this script; no app file is edited). A = `pyproj.Transformer.from_crs` cached "
        "per (from, to, always_xy) -- in the app that is `@functools.lru_cache(maxsize=1)` on "
        "`layers.selectors._to_lonlat` plus module-level cached transformers in `layers.analysis.submission` "
        "(pyproj >= 3.1 transformers are thread-safe: each thread lazily builds its own PJ). B = A + the GeoJSON "
        "selector reading `AsGeoJSON(Transform('geom', 4326), precision=7)` from the database instead of GEOS -> "
        "WKB -> pyproj -> shapely per request. C = B + persistent database connections (PostGIS caches its "
        "PROJ transformation per backend; with a new backend per request every `ST_Transform` searches again). "
        "Short runs (a third of --duration, at least 5 s) on a machine at "
        f"load ~{load[0]:.0f}: rough figures; the in-process CPU profile above is the steadier measure.",
        "", *table_lines(rows)])


def table_lines(rows) -> list[str]:
    header = ["endpoint", "concurrency", "duration (s)", "requests", "req/s", "p50 (ms)", "p95 (ms)", "p99 (ms)",
              "errors", "CPU ms/req (app+db)", "idle-machine req/s bound", "target", "met?"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * 9 + ["---", "---"]) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def write_whatif(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text(encoding="utf-8")
    m = re.search(r"^## Load\n.*?(?=^## |\Z)", old, flags=re.M | re.S)
    if not m:
        raise SystemExit("no ## Load section yet: run without --whatif-only first")
    sec = old[m.start():m.end()]
    notes = re.search(r"^### Notes.*?(?=^## |^### |\Z)", sec, flags=re.M | re.S)
    sec = re.sub(r"^### (What-if|Notes).*?(?=^## |^### |\Z)", "", sec, flags=re.M | re.S).rstrip("\n")
    sec += "\n\n" + text.strip() + "\n" + ("\n" + notes.group(0).strip() + "\n" if notes else "")
    path.write_text(old[:m.start()] + sec + ("\n" if old[m.end():] else "") + old[m.end():], encoding="utf-8")


def write_section(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = "## Load\n\n" + text.strip() + "\n"
    m = re.search(r"^## Load\n.*?(?=^## |\Z)", old, flags=re.M | re.S)
    if m:
        new = old[:m.start()] + block + ("\n" if old[m.end():] else "") + old[m.end():]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each main run (default 20)")
    ap.add_argument("--outage-s", type=float, default=5.0)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--budget", type=float, default=340.0,
                    help="seconds for the whole run; optional phases (profile, what-if) are skipped to fit")
    ap.add_argument("--whatif-only", action="store_true",
                    help="setup + the patched what-if servers only; replaces the what-if subsection of ## Load")
    ap.add_argument("--no-whatif", action="store_true", help="skip the patched what-if servers")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    t_all = time.perf_counter()

    def left() -> float:
        return args.budget - (time.perf_counter() - t_all)
    load0 = loadavg()
    busy_before = top_others({os.getpid()})
    portal = None
    tmp = tempfile.mkdtemp(prefix="gisportal-load-")
    rows = []
    wtext = ""
    try:
        progress("starting PostgreSQL, migrate, load_demo, create_demo_users, gunicorn")
        portal = Portal()
        ver = versions(portal)
        wrk = Wrk(portal, tmp)
        base = portal.base

        # ---------------------------------------------------------------- test 1: GeoJSON layer, bbox
        progress(f"setup done: {portal.times}; finding the bbox")
        bbox, nfeat, size = find_bbox(portal)
        path1 = f"/layers/roads.geojson?bbox={bbox}"
        tok = token(portal)
        auth = f"Token {tok}"
        api1 = f"/api/v1/layers/roads/?bbox={bbox}&page_size=1000"
        nfeat_api, size_api = n_features(base, api1, {"Authorization": auth})
        sub = json.loads(SUBMISSION.read_text(encoding="utf-8"))
        body = json.dumps({"submission": sub, "save": False}, ensure_ascii=False).encode()
        if args.whatif_only:
            lw = loadavg()
            whatif = run_whatif(portal, wrk, tmp, path1, auth, body, args.duration, left)
            wtext = whatif_text(whatif, path1, (lw[0], loadavg()[0]),
                                " ".join(["benchmarks/bench_load.py", *sys.argv[1:]]))
            return 0
        # warm up: every gunicorn thread opens its database connection, each worker builds the features' texts
        # once (layers.geojson_cache); the cold cost of a request is the profile's "cold cache" row
        wrk.run(path1, conns=8, seconds=3)
        progress(f"bbox {bbox}: {nfeat} features; ramp")
        ramp = []
        for c in (1, 2, 4, 8, 16):
            ramp.append(wrk.run(path1, conns=c, seconds=4))
            if len(ramp) > 1 and ramp[-1]["rps"] < 1.1 * ramp[-2]["rps"]:
                break   # saturated: more connections only queue
        ok = [r for r in ramp if r["requests"] and r["p95"] < 100_000 and r["errors"] == 0]
        pick = max(ok or ramp, key=lambda r: (r["rps"], -r["conns"]))
        c1 = pick["conns"]
        progress(f"ramp {[(r['conns'], round(r['rps'], 1), r['p95'] // 1000) for r in ramp]}; main run at {c1}")
        w0 = wrk_cpu_s()
        main1 = wrk.run(path1, conns=c1, seconds=args.duration)
        main1["client_cpu_s"] = wrk_cpu_s() - w0
        w0 = wrk_cpu_s()
        api_run = wrk.run(api1, conns=c1, seconds=max(5.0, args.duration / 2), auth=auth)
        api_run["client_cpu_s"] = wrk_cpu_s() - w0
        views = viewports(bbox, 200)
        counts = [n_features(base, v)[0] for v in views[:20]]
        w0 = wrk_cpu_s()
        vp_run = wrk.run(path1, conns=c1, seconds=max(5.0, args.duration / 2), paths=views)
        vp_run["client_cpu_s"] = wrk_cpu_s() - w0
        vp_run["features"] = (min(counts), round(sum(counts) / len(counts)), max(counts))
        gz_size = gzip_size(base, path1)
        w0 = wrk_cpu_s()
        gz_run = wrk.run(path1, conns=c1, seconds=max(5.0, args.duration / 2), encoding="gzip")
        gz_run["client_cpu_s"] = wrk_cpu_s() - w0
        progress(f"main {main1['rps']:.1f} req/s, p95 {main1['p95'] / 1000:.0f} ms; API {api_run['rps']:.1f} req/s; profile")
        prof = profile(portal, "roads", bbox) if left() > 150 else {"skipped (time budget)": 0}
        progress("review API")

        # ---------------------------------------------------------------- test 2: review API
        status, _, out = get(base + "/api/v1/reviews/", {"Authorization": auth, "Content-Type": "application/json"},
                             "POST", body)
        if status != 200:
            raise RuntimeError(f"review POST: HTTP {status} {out[:500]!r}")
        verdict = json.loads(out)["review"]["verdict"]
        saved = json.dumps({"submission": sub, "save": True}, ensure_ascii=False).encode()
        status, _, out = get(base + "/api/v1/reviews/", {"Authorization": auth, "Content-Type": "application/json"},
                             "POST", saved)
        report_pk = json.loads(out)["report"]
        # warm-up (not measured): saving a report wrote layer rows, so each worker rebuilds its table snapshots
        # (layers.snapshots) on its next review; the steady state is what the rows below measure
        wrk.run("/api/v1/reviews/", conns=8, seconds=3, auth=auth, body=body)
        w0 = wrk_cpu_s()
        rev_think = wrk.run("/api/v1/reviews/", conns=20, seconds=args.duration, auth=auth, body=body,
                            think_ms=1000)
        rev_think["client_cpu_s"] = wrk_cpu_s() - w0
        rev_users = users_run(portal, "/api/v1/reviews/", auth=auth, body=body, users=20, seconds=args.duration)
        w0 = wrk_cpu_s()
        rev_closed = wrk.run("/api/v1/reviews/", conns=20, seconds=max(5.0, args.duration / 2), auth=auth,
                             body=body)
        rev_closed["client_cpu_s"] = wrk_cpu_s() - w0
        w0 = wrk_cpu_s()
        rev_get = wrk.run(f"/api/v1/reviews/{report_pk}/", conns=20, seconds=max(5.0, args.duration / 3), auth=auth)
        rev_get["client_cpu_s"] = wrk_cpu_s() - w0

        # ---------------------------------------------------------------- test 3: outage under load
        progress(f"review: think p95 {rev_think['p95'] / 1000:.0f} ms, closed p95 {rev_closed['p95'] / 1000:.0f} ms; outage")
        drained = drain(portal, 60)
        load_mid = loadavg()
        out3 = outage(portal, args.outage_s)
        load1 = loadavg()
        busy_after = top_others({os.getpid(), *(portal.worker_pids()), portal.server.pid})

        # ---------------------------------------------------------------- what-if servers (patched at import)
        whatif = {}
        progress(f"outage: {out3['down']} recovery {out3['recovery_from_ready_s']}")
        if args.no_whatif or left() < 75:
            progress("what-if servers skipped" + ("" if args.no_whatif else " (time budget)"))
        else:
            whatif = run_whatif(portal, wrk, tmp, path1, auth, body, args.duration, left)
        load2 = loadavg()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # let the clean-up finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        progress("cleaning up")
        if portal is not None:
            portal.close()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if wtext:
            print(wtext)
            if not args.no_write:
                write_whatif(wtext)
    total = time.perf_counter() - t_all

    rows.append(row(f"GET {path1} ({nfeat:,} features, {size / 1024:.0f} KiB)", main1,
                    ">= 200 req/s, p95 < 100 ms, 0 errors", met1(main1)))
    rows.append(row(f"GET /api/v1/layers/roads/?bbox=(same)&page_size=1000 ({nfeat_api:,} features, "
                    f"{size_api / 1024:.0f} KiB; token)", api_run, ">= 200 req/s, p95 < 100 ms, 0 errors",
                    met1(api_run)))
    rows.append(row(f"  same GeoJSON, client sends Accept-Encoding: gzip ({gz_size / 1024:.0f} KiB on the wire)",
                    gz_run, ">= 200 req/s, p95 < 100 ms, 0 errors", met1(gz_run)))
    lo, mean, hi = vp_run["features"]
    rows.append(row(f"  GeoJSON, 200 viewports of the same size panned around the main one, one at random per "
                    f"request ({lo:,}-{hi:,} features, mean {mean:,} over 20 of them)", vp_run,
                    ">= 200 req/s, p95 < 100 ms, 0 errors", met1(vp_run)))
    for r in ramp:
        rows.append(row(f"  ramp: same GeoJSON, {r['seconds']:.0f} s", r, "", met1(r)))
    rows.append(row(f"POST /api/v1/reviews/ (good_qiaodong.geojson, save=false, verdict {verdict}; token)",
                    rev_think, "20 users, p95 < 300 ms, 0 errors", met2(rev_think)))
    rows.append(row("  same, 20 users as Python client threads whose first requests are spread over 1 s (wrk starts"
                    " all 20 in the same millisecond)", rev_users, "20 users, p95 < 300 ms, 0 errors", met2(rev_users)))
    rows.append(row("  same, 20 connections back to back (no think time)", rev_closed, "p95 < 300 ms, 0 errors",
                    met2(rev_closed)))
    rows.append(row(f"GET /api/v1/reviews/{report_pk}/ (a saved report; token)", rev_get, "p95 < 300 ms, 0 errors",
                    met2(rev_get)))
    table = table_lines(rows)

    def cpu_line(name, r):
        return (f"{name}: wrk {r.get('client_cpu_s', float('nan')):.1f} CPU-s, gunicorn workers "
                f"{r['server_cpu_s']:.1f} CPU-s, PostgreSQL {r['pg_cpu_s']:.1f} CPU-s, whole machine {r['machine_cpu_s']:.1f} CPU-s of "
                f"{2 * r['wall']:.0f} available in {r['wall']:.0f} s "
                f"({1000 * r['server_cpu_s'] / max(r['requests'], 1):.1f} ms of worker CPU per request)")


    st = ", ".join(f"{k}: {v}" for k, v in sorted(out3["down"].items()))
    allst = ", ".join(f"{k}: {v}" for k, v in sorted(out3["all"].items()))
    outage_met = out3["n500"] == 0 and out3["conn_errors"] == 0 and out3["recovery_from_ready_s"] is not None \
        and set(out3["down"]) <= {503}
    o_rows = [
        "| figure | value | target | met? |", "|---|---:|---|---|",
        f"| requests in all ({out3['threads']} client threads, {out3['seconds']:.0f} s) | {out3['requests']:,} "
        f"({allst}) | | |",
        f"| responses while PostgreSQL was down ({out3['outage_s']:.1f} s) | {out3['down_n']:,} ({st or 'none'}) "
        f"| all 503 | {'yes' if set(out3['down']) <= {503} and out3['down_n'] else '**no**'} |",
        f"| 500 responses (whole run) | {out3['n500']} | 0 | {'yes' if out3['n500'] == 0 else '**no**'} |",
        f"| connection errors / resets (whole run) | {out3['conn_errors']} | 0 | "
        f"{'yes' if out3['conn_errors'] == 0 else '**no**'} |",
        f"| Retry-After on every 503 | {out3['retry_after']} | yes | {'yes' if out3['retry_after'] else '**no**'} |",
        f"| `pg_ctl start -w` (crash recovery) | {out3['start_s']:.2f} s | | |",
        f"| first 200 after `pg_ctl start` returned | {fmt_s(out3['recovery_from_ready_s'])} | "
        f"< 2 s | {'yes' if (out3['recovery_from_ready_s'] or 99) < 2 else '**no**'} |",
        f"| first 200 after the start was issued | {fmt_s(out3['recovery_from_start_s'])} | | |",
        f"| non-200 after the first 200 | {out3['after_non200']} | 0 | "
        f"{'yes' if out3['after_non200'] == 0 else '**no**'} |",
        f"| p95 latency of `/` before / while down | {fmt_ms(out3['before_p95_ms'])} / "
        f"{fmt_ms(out3['down_p95_ms'])} | | |",
    ]

    lines = [
        f"`{' '.join(['benchmarks/bench_load.py', *sys.argv[1:]])}`, {time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores ({cpu_model()}); "
        + ", ".join(f"{k} {v}" for k, v in ver.items()) + ". Loopback only: a private PostgreSQL cluster "
        "(`scripts/pg.sh`, fsync off), the demo (`load_demo`: roads 4,505, grids 1,029, ...), gunicorn as in "
        "`scripts/serve.sh` (2 workers x 4 threads, `DJANGO_DEBUG=0`, no access log, `DJANGO_CONN_MAX_AGE` unset "
        "= persistent database connections for 60 s on PostGIS; `gc.freeze()` of the start-up heap in "
        "`gisportal/wsgi.py`), client `wrk` (C, 2 threads, closed loop, Lua for percentiles and "
        "think time) on the same 2 cores.",
        "",
        f"Machine shared: 1-minute load average {load0[0]:.2f} before the run, {load_mid[0]:.2f} before the "
        f"outage test, {load1[0]:.2f} at the end; busiest other processes at the start: "
        f"{', '.join(busy_before) or 'none above 5% CPU'}; at the end: {', '.join(busy_after) or 'none above 5% CPU'}. "
        "Other helpers run tests on this machine at the same time, so the figures are pessimistic and vary between runs.",
        "",
        "Setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in portal.times.items()) + ". "
        f"The bbox `{bbox}` was found by bisection in SQL (the same intersects predicate) and checked on the live endpoint (target 1,000 +- 100): {nfeat:,} features, "
        f"{size:,} bytes uncompressed (wrk asks for identity; the view gzips only when the client accepts it, see "
        f"the gzip row). "
        f"Concurrency of the GeoJSON main run: {c1} (the ramp's best rate with p95 < 100 ms, else its best rate).",
        "",
        *table,
        "",
        "CPU (who used the 2 cores): " + "; ".join([cpu_line("GeoJSON main", main1), cpu_line("API layer", api_run),
                                                     cpu_line("review, think time", rev_think),
                                                     cpu_line("review, back to back", rev_closed)]) + ".",
        "",
        "Profile of one GeoJSON request, in process (median of 5, CPU ms of the Django process -- less sensitive to the machine's load than wall time; PostgreSQL's own work is not in it; `benchmarks/bench_load.py` PROFILE):",
        "",
        "| part | ms |", "|---|---:|",
        *[f"| {k} | {v} |" for k, v in prof.items()],
        "",
        f"Database outage under load (issue 9): {out3['threads']} Python client threads request `/` (home page: one "
        f"count query per layer) back to back; PostgreSQL stopped with `pg_ctl -m immediate` (took "
        f"{out3['stop_s']:.2f} s), kept down {out3['outage_s']:.1f} s, started again with `pg_ctl start -w`. "
        f"'While down' = sent after the stop returned and answered before the start was issued. "
        f"Before the outage the script waited "
        f"{drained:.0f} s for the workers to finish the requests queued by the previous closed-loop run.",
        "",
        *o_rows,
        "",
        f"Whole benchmark: {total:.0f} s.",
    ]
    # keep the hand-written "### Notes" and (unless re-measured now) the "### What-if" subsection of an earlier run
    old_res = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8") \
        if (ROOT / "benchmarks" / "RESULTS.md").exists() else ""
    old_sec = re.search(r"^## Load\n.*?(?=^## |\Z)", old_res, flags=re.M | re.S)
    keep = {} if old_sec is None else {m.group(1): m.group(0).strip() for m in re.finditer(
        r"^### (What-if|Notes).*?(?=^## |^### |\Z)", old_sec.group(0), flags=re.M | re.S)}
    if whatif:
        keep["What-if"] = whatif_text(whatif, path1, (load1[0], load2[0]),
                                      " ".join(["benchmarks/bench_load.py", *sys.argv[1:]]))
    lines += [x for k in ("What-if", "Notes") if k in keep for x in ("", keep[k])]
    text = "\n".join(lines)
    print(text)
    print("\nALL TARGETS MET" if all(r[-1] == "yes" for r in rows if r[-2]) and outage_met else "\nSOME TARGETS MISSED")
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
