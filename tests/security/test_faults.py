"""Faults, all or nothing (issue 9, 4).

* An exception injected at the first, middle and last feature of an import's write: no row of that import.
* SIGKILL of ``manage.py import_layer`` in its write phase (SpatiaLite file database; PostGIS database when
  DATABASE_URL is set): no row, no orphan temp files, ``PRAGMA integrity_check`` ok on SQLite.
* PostGIS: the importing session terminated (``pg_terminate_backend``) mid-write: no row; a statement
  timeout cancels a hostile geometry query and the connection stays usable.
* Database unreachable during a request: 503 with Retry-After (gisportal.security), then recovery.
"""
from __future__ import annotations

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
from django.db.models.query import QuerySet
from django.db.utils import OperationalError
from django.urls import reverse

from importers import services as import_services
from importers.models import ImportRun
from layers import models

from .conftest import PY, ROOT, SEED, backend, count
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
    real = QuerySet.bulk_create

    def bulk_create(self, objs, *a, **kw):
        if self.model is models.ServiceFacility:
            if written["n"] + len(objs) >= fail_at:
                raise RuntimeError(f"injected fault at feature {fail_at}")
            written["n"] += len(objs)
        return real(self, objs, *a, **kw)

    monkeypatch.setattr(import_services, "WRITE_BATCH", 1)   # one INSERT per feature: k-1 rows precede the fault
    monkeypatch.setattr(QuerySet, "bulk_create", bulk_create)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runs_before = ImportRun.objects.count()
    with pytest.raises(RuntimeError, match="injected"):
        import_services.import_file("facilities", path)
    assert written["n"] == fail_at - 1
    assert models.ServiceFacility.objects.filter(code__startswith="999J").count() == 0
    assert ImportRun.objects.count() == runs_before   # the OK run record rolled back with the rows
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("gisportal-")] == []
    # the same file imports cleanly once the fault is gone
    monkeypatch.setattr(QuerySet, "bulk_create", real)
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
