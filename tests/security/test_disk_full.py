"""Disk full (issue 9, 4): an import that runs out of space mid-write fails cleanly.

* SQLite, ``PRAGMA max_page_count`` a few pages above the current size (the import runs in a subprocess
  on a scratch file database): the import's report carries the bilingual ``disk_full`` error, no row of it
  is stored, ``PRAGMA integrity_check`` is ok and its ImportRun is ``failed`` with the reason.
* SQLite on a real full filesystem (a small tmpfs; needs root): ``manage.py import_layer`` exits 2 with the
  message on stderr and no traceback; same checks.
* PostGIS: the facilities table and its indexes moved to a tablespace on a small tmpfs (needs root and the
  server on this host): the import fails with SQLSTATE 53100 as ``disk_full``; nothing half-written.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from importers.services import DISK_FULL

from .conftest import SEED, count, manage
from .test_faults import _pg, _rows_pg, facilities_csv

pytestmark = [pytest.mark.slow]

IMPORT_WITH_PAGE_LIMIT = r"""
import json
from django.db import connection
from importers import services
from importers.models import ImportRun
with connection.cursor() as c:
    c.execute("PRAGMA page_count")
    pages = c.fetchone()[0]
    c.execute("PRAGMA max_page_count = %d" % (pages + {margin}))
rep = services.import_file("facilities", {path!r})
run = ImportRun.objects.filter(pk=rep.run_id).values("status", "error", "created").first()
print("OUT" + json.dumps({{"status": rep.status, "errors": [[i.code, i.message] for i in rep.errors],
                          "created": rep.created, "run": run}}, ensure_ascii=False))
"""

RUN_STATUS = r"""
import json
from importers.models import ImportRun
print("OUT" + json.dumps(list(ImportRun.objects.values("status", "error", "created")), ensure_ascii=False))
"""


def _line(out: str) -> dict | list:
    return json.loads(next(line for line in out.splitlines() if line.startswith("OUT"))[3:])


def _sqlite_check(db_path, prefix: str) -> tuple[int, str]:
    con = sqlite3.connect(db_path)
    try:
        n = con.execute("SELECT count(*) FROM layers_servicefacility WHERE code LIKE ?", [prefix + "%"]).fetchone()[0]
        return n, con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _assert_disk_full(errors: list) -> None:
    assert [e[0] for e in errors] == ["disk_full"], errors
    assert "磁盘已满" in errors[0][1] and "database or disk is full" in errors[0][1]


def test_sqlite_max_page_count_disk_full(scratch_db):
    if scratch_db.url:
        pytest.skip("SQLite only (PRAGMA max_page_count)")
    db = scratch_db
    db.shell(SEED)
    csv_path = db.root / "f.csv"
    facilities_csv(csv_path, 5000, "999D")
    out = _line(db.shell(IMPORT_WITH_PAGE_LIMIT.format(margin=12, path=str(csv_path)), timeout=300))
    assert out["status"] == "failed" and out["created"] == 0, out
    _assert_disk_full(out["errors"])
    assert out["run"]["status"] == "failed" and "full" in out["run"]["error"], out["run"]
    assert _sqlite_check(db.sqlite_path, "999D") == (0, "ok")
    # with room again, the same file imports
    assert "created 5000" in manage(["import_layer", "facilities", str(csv_path)], db.env, timeout=300).stdout
    count("faults_survived")
    count("disk_full_spatialite_pragma")


# ------------------------------------------------------------------ a real small filesystem (tmpfs)
@pytest.fixture
def small_fs():
    """``make(size_bytes, owner=None) -> Path``: a tmpfs of that size (skips the test where mount fails),
    mounted under /tmp itself so that another user (the PostgreSQL server) can reach it."""
    mounted = []

    def make(size_bytes: int, owner: str | None = None):
        where = Path(tempfile.mkdtemp(prefix="gisportal-smallfs-", dir="/tmp"))
        where.chmod(0o755)
        opts = f"size={size_bytes}"
        if owner:
            pw = pwd.getpwnam(owner)
            opts += f",uid={pw.pw_uid},gid={pw.pw_gid},mode=0700"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if proc.returncode != 0:
            where.rmdir()
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()[:200]}")
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def test_sqlite_on_a_full_filesystem_cli(scratch_db, small_fs):
    if scratch_db.url:
        pytest.skip("SQLite only")
    db = scratch_db
    db.shell(SEED)
    size = db.sqlite_path.stat().st_size
    fs = small_fs(size + 256 * 1024)
    for name in ("gisportal.sqlite3", "dev_secret_key"):
        shutil.copy(db.sqlite_path.parent / name, fs / name)
    env = dict(db.env, GISPORTAL_VAR_DIR=str(fs))
    csv_path = db.root / "f.csv"
    facilities_csv(csv_path, 8000, "999E")
    proc = manage(["import_layer", "facilities", str(csv_path)], env, timeout=300, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "磁盘已满" in proc.stderr and "database or disk is full" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _sqlite_check(fs / "gisportal.sqlite3", "999E") == (0, "ok")
    assert [p.name for p in fs.iterdir() if p.name.endswith(("-journal", "-wal"))] == []
    runs = _line(manage(["shell", "-c", RUN_STATUS], env).stdout)
    assert [(r["status"], r["created"]) for r in runs] == [("failed", 0)] and "full" in runs[0]["error"], runs
    count("faults_survived")
    count("disk_full_spatialite_tmpfs")


def test_postgis_tablespace_full(scratch_db, small_fs):
    if not scratch_db.url:
        pytest.skip("PostGIS only (DATABASE_URL)")
    u = urlsplit(scratch_db.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the PostgreSQL server is not on this host: no small tablespace can be made for it")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user owns the server here")
    db = scratch_db
    db.shell(SEED)
    fs = small_fs(1024 * 1024, owner="postgres")
    ts = f"gisportal_small_{db.name[-6:]}"
    with _pg(db.url, "postgres") as c:
        c.execute(f"CREATE TABLESPACE {ts} LOCATION '{fs}'")
    table = "layers_servicefacility"
    indexes: list[str] = []
    try:
        with _pg(db.url) as c:
            indexes = [r[0] for r in c.execute(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass", [table])]
            c.execute(f"ALTER TABLE {table} SET TABLESPACE {ts}")
            for ix in indexes:
                c.execute(f"ALTER INDEX {ix} SET TABLESPACE {ts}")
        csv_path = db.root / "f.csv"
        facilities_csv(csv_path, 12000, "999P")
        proc = manage(["import_layer", "facilities", str(csv_path)], db.env, timeout=300, check=False)
        assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
        assert DISK_FULL[1] in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert _rows_pg(db.url, "999P") == 0
        runs = _line(manage(["shell", "-c", RUN_STATUS], db.env).stdout)
        assert [(r["status"], r["created"]) for r in runs] == [("failed", 0)], runs
        assert "DiskFull" in runs[0]["error"] or "space" in runs[0]["error"], runs
        with _pg(db.url) as c:
            assert c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 3   # the seed's, readable
        count("faults_survived")
        count("disk_full_postgis_tablespace")
    finally:
        with _pg(db.url) as c:
            c.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
            for ix in indexes:
                c.execute(f"ALTER INDEX {ix} SET TABLESPACE pg_default")
        with _pg(db.url, "postgres") as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db.name])
            c.execute(f"DROP TABLESPACE IF EXISTS {ts}")
        os.sync()
