"""Faults, all or nothing (issue 9, 4).

* An exception injected at the first, middle and last feature of an import's write: no row of that import.
* SIGKILL of ``manage.py import_layer`` in its write phase (SpatiaLite file database; PostGIS database when
  DATABASE_URL is set): no row, no orphan temp files, ``PRAGMA integrity_check`` ok on SQLite.
* PostGIS: the importing session terminated (``pg_terminate_backend``) mid-write: no row; a statement
  timeout cancels a hostile geometry query and the connection stays usable.
* Database unreachable during a request: 503 with Retry-After (gisportal.security), then recovery.
* After a SIGKILL the import's run says ``running``; ``manage.py reap_jobs`` (and the next import) fails it
  with "进程中断 / interrupted (process died)", and likewise a Job whose db_worker died; live ones stay.
"""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

import pytest
from django.db import connection, transaction
from django.db.utils import OperationalError
from django.urls import reverse

from importers import services as import_services
from importers.models import ImportRun
from layers import models

from .conftest import PY, ROOT, SEED, backend, count, manage
from .test_hostile import B, L, city  # noqa: F401  (fixture)

HEADER = "编码,名称,类型,面积,经度,纬度\n"


def facilities_csv(path, n: int, prefix: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(HEADER)
        for i in range(n):
            fh.write(f"{prefix}{i:06d},设施{i},elderly_care,{100 + i % 50},{L + 0.0005 + (i % 190) * 0.0001:.7f},"
                     f"{B + 0.0005 + (i // 190 % 190) * 0.0001:.7f}\n")


# ------------------------------------------------------------------ injected exceptions
@pytest.mark.django_db
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_exception_at_a_feature_writes_nothing(city, tmp_path, monkeypatch, where):  # noqa: F811
    n = 30
    path = tmp_path / "f.csv"
    facilities_csv(path, n, "999J")
    fail_at = {"first": 1, "middle": n // 2, "last": n}[where]
    written = {"n": 0}
    real = import_services._RowInserter.__call__

    def insert(self, records):
        if self.spec.model is models.ServiceFacility:
            if written["n"] + len(records) >= fail_at:
                raise RuntimeError(f"injected fault at feature {fail_at}")
            written["n"] += len(records)
        return real(self, records)

    monkeypatch.setattr(import_services, "WRITE_BATCH", 1)   # one INSERT per feature: k-1 rows precede the fault
    monkeypatch.setattr(import_services._RowInserter, "__call__", insert)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runs_before = set(ImportRun.objects.values_list("pk", flat=True))
    with pytest.raises(RuntimeError, match="injected"):
        import_services.import_file("facilities", path)
    assert written["n"] == fail_at - 1
    assert models.ServiceFacility.objects.filter(code__startswith="999J").count() == 0
    # no OK record (it rolled back with the rows): the run is failed, with the reason
    runs = list(ImportRun.objects.exclude(pk__in=runs_before).values_list("status", "error", "created"))
    assert runs == [("failed", f"RuntimeError: injected fault at feature {fail_at}", 0)], runs
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("gisportal-")] == []
    # the same file imports cleanly once the fault is gone
    monkeypatch.setattr(import_services._RowInserter, "__call__", real)
    assert import_services.import_file("facilities", path).created == n
    count("faults_survived")
    count(f"fault_injected_{where}")


# ------------------------------------------------------------------ a killed import process
def _rows_sqlite(db_path, prefix: str) -> tuple[int, str]:
    con = sqlite3.connect(db_path)
    try:
        n = con.execute("SELECT count(*) FROM layers_servicefacility WHERE code LIKE ?", [prefix + "%"]).fetchone()[0]
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        con.execute("CREATE TABLE _gisportal_probe (x)")   # the database takes writes again
        con.execute("DROP TABLE _gisportal_probe")
        con.commit()
    finally:
        con.close()
    return n, ok


def _pg(url: str, dbname: str | None = None):
    import psycopg

    u = urlsplit(url)
    return psycopg.connect(host=u.hostname, port=u.port, user=u.username, password=u.password,
                           dbname=dbname or u.path.lstrip("/"), autocommit=True)


def _rows_pg(url: str, prefix: str) -> int:
    with _pg(url) as c:
        return c.execute("SELECT count(*) FROM layers_servicefacility WHERE code LIKE %s", [prefix + "%"]).fetchone()[0]


def _run_until_write(db, csv_path, timeout: float = 150.0):
    """Start import_layer with stderr on a pty (so it reports progress); return once it is writing."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([PY, str(ROOT / "manage.py"), "import_layer", "facilities", str(csv_path)],
                            env=db.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            seen += chunk
            if b"write:" in seen:
                return proc, master, seen
        if proc.poll() is not None:
            break
    proc.kill()
    os.close(master)
    raise AssertionError(f"import never reached its write phase: {seen[-500:]!r}")


@pytest.mark.slow
def test_sigkill_mid_import_writes_nothing(scratch_db):
    db = scratch_db
    db.shell(SEED)
    csv_path = db.root / "big.csv"
    facilities_csv(csv_path, 12_000, "999K")
    proc, master, seen = _run_until_write(db, csv_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    os.close(master)
    assert proc.returncode == -signal.SIGKILL
    if db.url:
        assert _rows_pg(db.url, "999K") == 0
    else:
        n, ok = _rows_sqlite(db.sqlite_path, "999K")
        assert (n, ok) == (0, "ok")
        leftovers = [p.name for p in db.sqlite_path.parent.iterdir() if p.name.endswith(("-journal", "-wal"))]
        assert leftovers == []   # the hot journal was rolled back and removed
    assert [p.name for p in (db.root / "tmp").iterdir()] == []   # no orphan temp files
    count("faults_survived")
    count(f"sigkill_{backend()}")


@pytest.mark.slow
def test_pg_terminate_backend_mid_import_writes_nothing(scratch_db):
    if not scratch_db.url:
        pytest.skip("PostGIS only (DATABASE_URL)")
    db = scratch_db
    db.shell(SEED)
    csv_path = db.root / "big.csv"
    facilities_csv(csv_path, 12_000, "999T")
    proc, master, _seen = _run_until_write(db, csv_path)
    with _pg(db.url, "postgres") as c:
        killed = c.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                           [db.name]).fetchone()[0]
    proc.wait(60)
    os.close(master)
    assert killed >= 1 and proc.returncode != 0
    assert _rows_pg(db.url, "999T") == 0
    assert [p.name for p in (db.root / "tmp").iterdir()] == []
    count("faults_survived")
    count("pg_terminate_postgis")


@pytest.mark.django_db
def test_statement_timeout_cancels_a_hostile_query():
    if connection.vendor != "postgresql":
        pytest.skip("PostGIS only")
    t0 = time.perf_counter()
    with pytest.raises(OperationalError):   # psycopg QueryCanceled
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = 300")
                cur.execute("SELECT ST_NPoints(ST_Buffer(ST_GeomFromText('POINT(0 0)', 4547), 1000, 4000000))")
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, elapsed
    assert models.District.objects.filter(code="nonexistent").count() == 0   # the connection is still usable
    count("faults_survived")
    count("statement_timeout_postgis")


# ------------------------------------------------------------------ database down during a request
@pytest.mark.django_db
def test_database_down_gives_503_with_retry_after_then_recovers(client, security_middleware, monkeypatch):
    from django.db.backends import utils as db_utils

    real = db_utils.CursorWrapper.execute

    def down(self, *a, **kw):
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(db_utils.CursorWrapper, "execute", down)
    r = client.get(reverse("home"))
    assert r.status_code == 503 and int(r["Retry-After"]) > 0
    r = client.get(reverse("layer_geojson", kwargs={"kind": "districts"}))
    assert r.status_code == 503
    monkeypatch.setattr(db_utils.CursorWrapper, "execute", real)
    assert client.get(reverse("home")).status_code == 200       # no manual step: the next request works
    count("faults_survived")


def test_database_down_in_a_middleware_gives_503():
    """An OperationalError raised outside the view (Django has built its 500 already) still becomes 503."""
    from django.core.handlers.base import BaseHandler
    from django.test import RequestFactory, override_settings

    from .conftest import with_security_middleware

    with override_settings(MIDDLEWARE=with_security_middleware([
            "tests.security.test_faults.BrokenSessionMiddleware"]), DEBUG_PROPAGATE_EXCEPTIONS=False):
        h = BaseHandler()
        h.load_middleware()
        r = h.get_response(RequestFactory().get("/"))
    assert r.status_code == 503 and r["Retry-After"]


class BrokenSessionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise OperationalError("server closed the connection unexpectedly")


# ------------------------------------------------------------------ after the kill: the run is failed
REAP_SETUP = r"""
import json, socket
from datetime import timedelta
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from importers.models import ImportRun
from layers.models import Job
dead = ImportRun.objects.get(status="running").worker
live, host = {live!r}, socket.gethostname()
now = timezone.now()
def run(worker, age_h=0):
    r = ImportRun.objects.create(kind="facilities", file_name="x.csv", sha256="0" * 64, status="running",
                                 worker=worker)
    ImportRun.objects.filter(pk=r.pk).update(started_at=now - timedelta(hours=age_h))
    return r.pk
def job(worker=None, age_h=0):
    j = Job.objects.create(kind="coverage", status="running", params={{}}, started_at=now - timedelta(hours=age_h))
    if worker:
        DBTaskResult.objects.create(args_kwargs={{"args": [j.pk], "kwargs": {{}}}}, task_path="gisportal.tasks.coverage_job",
                                    backend_name="default", queue_name="default", run_after=now, status="RUNNING",
                                    worker_ids=[worker], exception_class_path="", traceback="")
    return j.pk
ids = {{"run_live": run(live), "run_other_host_new": run("elsewhere:1:1"), "run_other_host_old": run("elsewhere:1:1", 7),
        "job_dead": job(dead), "job_live": job(live), "job_random_worker_new": job("a" * 32),
        "job_no_task_old": job(None, 7)}}
print("IDS" + json.dumps(ids))
"""

REAP_READ = r"""
import json
from django_tasks_db.models import DBTaskResult
from importers.models import ImportRun
from layers.models import Job
out = {"runs": {r.pk: [r.status, r.error] for r in ImportRun.objects.all()},
       "jobs": {j.pk: [j.status, j.error] for j in Job.objects.all()},
       "tasks": {t.args_kwargs["args"][0]: t.status for t in DBTaskResult.objects.all()}}
print("OUT" + json.dumps(out, ensure_ascii=False))
"""


def _line(out: str, tag: str):
    return json.loads(next(line for line in out.splitlines() if line.startswith(tag))[len(tag):])


@pytest.mark.slow
def test_sigkilled_import_run_is_failed_by_the_reaper(scratch_db):
    from layers.services_reap import REASON_DIED, REASON_STALE, worker_id

    db = scratch_db
    db.shell(SEED)
    csv_path = db.root / "big.csv"
    facilities_csv(csv_path, 12_000, "999R")
    proc, master, _seen = _run_until_write(db, csv_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    os.close(master)
    killed = _line(db.shell(REAP_READ), "OUT")["runs"]
    assert [v for v in killed.values()] == [["running", ""]]    # what a killed import leaves behind
    ids = _line(db.shell(REAP_SETUP.format(live=worker_id())), "IDS")   # "live": this pytest process
    out = manage(["reap_jobs"], db.env).stdout
    assert "2 job(s) failed" in out and "2 import run(s) failed" in out, out
    doc = _line(db.shell(REAP_READ), "OUT")
    runs, jobs, tasks = doc["runs"], doc["jobs"], doc["tasks"]
    (killed_pk,) = killed
    stale = REASON_STALE.format(hours=6)
    assert runs[killed_pk] == ["failed", REASON_DIED]
    assert "进程中断" in REASON_DIED and "interrupted (process died)" in REASON_DIED
    assert runs[str(ids["run_live"])] == ["running", ""]                 # a live import is left alone
    assert runs[str(ids["run_other_host_new"])] == ["running", ""]       # cannot tell, too young to judge
    assert runs[str(ids["run_other_host_old"])] == ["failed", stale]
    assert jobs[str(ids["job_dead"])] == ["failed", REASON_DIED]
    assert tasks[str(ids["job_dead"])] == "FAILED"                       # its django-tasks row too
    assert jobs[str(ids["job_live"])] == ["running", ""]
    assert tasks[str(ids["job_live"])] == "RUNNING"
    assert jobs[str(ids["job_random_worker_new"])] == ["running", ""]
    assert jobs[str(ids["job_no_task_old"])] == ["failed", stale]
    # the next import reaps by itself, and succeeds; the failed rows keep their reason
    manage(["shell", "-c", "from importers.models import ImportRun; ImportRun.objects.filter(status='failed')"
            ".update(status='running', error='')"], db.env)
    small = db.root / "small.csv"
    facilities_csv(small, 30, "999Q")
    manage(["import_layer", "facilities", str(small)], db.env, timeout=300)
    runs = _line(db.shell(REAP_READ), "OUT")["runs"]
    assert runs[killed_pk] == ["failed", REASON_DIED]
    assert runs[str(ids["run_live"])] == ["running", ""]
    assert sorted(v[0] for v in runs.values()).count("ok") == 1
    count("faults_survived")
    count("runs_reaped", 2)
    count("jobs_reaped", 2)
    count(f"sigkill_reaped_{backend()}")



# ------------------------------------------------------------------ which database faults become user errors
def test_db_fault_classifies_database_errors():
    import sqlite3 as sq

    from django.db import utils as dbu

    def wrapped(django_cls, inner):
        exc = django_cls(*inner.args)
        exc.__cause__ = inner
        return exc

    class PgError(Exception):
        def __init__(self, msg, sqlstate):
            super().__init__(msg)
            self.sqlstate = sqlstate

    f = import_services.db_fault
    assert f(wrapped(dbu.OperationalError, sq.OperationalError("database or disk is full"))) == import_services.DISK_FULL
    assert f(wrapped(dbu.OperationalError, sq.OperationalError("database is locked"))) == import_services.BUSY
    assert f(wrapped(dbu.IntegrityError, sq.IntegrityError("UNIQUE constraint failed: x.code"))) == \
        import_services.CONFLICT
    assert f(wrapped(dbu.OperationalError, PgError("could not extend file: No space left on device", "53100"))) == \
        import_services.DISK_FULL
    assert f(wrapped(dbu.OperationalError, PgError("deadlock detected", "40P01"))) == import_services.BUSY
    assert f(wrapped(dbu.IntegrityError, PgError("duplicate key value violates unique constraint", "23505"))) == \
        import_services.CONFLICT
    # anything else stays an exception (a bug must not pass for a user error)
    assert f(wrapped(dbu.OperationalError, sq.OperationalError("no such table: x"))) is None
    assert f(wrapped(dbu.IntegrityError, sq.IntegrityError("NOT NULL constraint failed: x.name"))) is None
    assert f(wrapped(dbu.ProgrammingError, PgError("syntax error", "42601"))) is None
    for code, msg in (import_services.DISK_FULL, import_services.BUSY, import_services.CONFLICT):
        assert any("\u4e00" <= ch <= "\u9fff" for ch in msg) and "(" in msg.replace("（", "(")   # zh + en


def test_worker_alive_on_this_host(tmp_path):
    from layers.services_reap import worker_alive, worker_id

    me = worker_id()
    assert worker_alive(me) is True
    child = subprocess.Popen([PY, "-c", "pass"])
    child.wait()
    dead = worker_id(child.pid)   # start time unknown once gone: host:pid: -> judged by the pid alone
    assert worker_alive(dead) is False
    host, pid, start = me.split(":")
    assert worker_alive(f"{host}:{pid}:{int(start) + 1}") is False    # the pid was reused by another process
    assert worker_alive(f"{host}x:{pid}:{start}") is None             # another host: cannot tell
    assert worker_alive("a" * 32) is None                             # django-tasks' random worker id


# ------------------------------------------------------------------ a killed db_worker: its Job is failed
#: How scripts/serve.sh starts the worker: ``exec`` keeps the shell's pid, so the worker id names the
#: worker process itself (host:pid:start time), and the reaper can tell when it is gone.
WORKER_CMD = ('exec "$0" manage.py db_worker --no-startup-delay --interval 0.2 '
              '--worker-id "$(hostname | cut -c1-40):$$:$(cut -d" " -f22 /proc/$$/stat)"')

QUEUE_IMPORT = r"""
import shutil
from pathlib import Path
from django.conf import settings
from gisportal.tasks import job_enqueue, job_queue
folder = Path("uploads") / "reaptest"
(Path(settings.MEDIA_ROOT) / folder).mkdir(parents=True)
shutil.copy({csv!r}, Path(settings.MEDIA_ROOT) / folder / "big.csv")
job = job_queue("import", {{"kind": "facilities", "upload": str(folder / "big.csv"), "file_name": "big.csv"}})
job_enqueue(job)
print("JOB", job.pk)
"""

STATE = r"""
import json
from django_tasks_db.models import DBTaskResult
from importers.models import ImportRun
from layers.models import Job
print("OUT" + json.dumps({"jobs": [[j.pk, j.status, j.error] for j in Job.objects.order_by("pk")],
                          "runs": [[r.status, r.error, r.worker] for r in ImportRun.objects.order_by("pk")],
                          "tasks": [[t.status, t.worker_ids] for t in DBTaskResult.objects.all()]},
                         ensure_ascii=False))
"""


def _run_statuses(db) -> list[str]:
    """ImportRun statuses read directly (no Django start-up: polled while an import writes)."""
    sql = "SELECT status FROM importers_importrun ORDER BY id"
    if db.url:
        with _pg(db.url) as c:
            return [r[0] for r in c.execute(sql)]
    con = sqlite3.connect(db.sqlite_path, timeout=5)
    try:
        return [r[0] for r in con.execute(sql)]
    finally:
        con.close()


@pytest.mark.slow
def test_sigkilled_db_worker_job_is_failed_by_reap_jobs(scratch_db):
    from layers.services_reap import REASON_DIED

    db = scratch_db
    db.shell(SEED)
    csv_path = db.root / "big.csv"
    facilities_csv(csv_path, 60_000, "999W")
    out = db.shell(QUEUE_IMPORT.format(csv=str(csv_path)))
    job_pk = int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("JOB")))
    worker = subprocess.Popen(["bash", "-c", WORKER_CMD, PY], env=db.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:   # wait for the import's running row: its write has begun
            statuses = _run_statuses(db)
            if statuses:
                break
            assert worker.poll() is None, "the worker died"
            time.sleep(0.1)
        assert statuses == ["running"], f"the import job never reached its write: {statuses}"
        time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    state = _line(db.shell(STATE), "OUT")
    assert state["jobs"] == [[job_pk, "running", ""]] and state["tasks"][0][0] == "RUNNING", state
    assert state["tasks"][0][1] == [state["runs"][0][2]]   # the worker id is the process the import recorded
    assert "1 job(s) failed" in manage(["reap_jobs", "--max-age-hours", "0"], db.env).stdout
    state = _line(db.shell(STATE), "OUT")
    assert state["jobs"] == [[job_pk, "failed", REASON_DIED]], state
    assert [r[:2] for r in state["runs"]] == [["failed", REASON_DIED]], state
    assert state["tasks"][0][0] == "FAILED"
    assert (_rows_pg(db.url, "999W") if db.url else _rows_sqlite(db.sqlite_path, "999W")[0]) == 0
    count("faults_survived")
    count("jobs_reaped")
    count("runs_reaped")
    count(f"worker_sigkill_reaped_{backend()}")
