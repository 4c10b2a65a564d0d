"""Concurrency (issue 9, 5): 2, 5 and 20 reviewers decide on one project at the same moment.

Each decision is a real POST to ``review_decide`` (gisportal/views_review.py) from its own thread with its
own database connection, against a file SpatiaLite database or a PostGIS database, all released by one
barrier and all carrying the same ``version``. The view's optimistic lock (``UPDATE … WHERE version = v``)
must let exactly one win (302), refuse the rest (409), and keep the winner's decision: the final status is
the winner's, there is exactly one new history row and it carries the winner's comment (no lost update).

Two ``manage.py import_layer`` processes at once (the first paused inside its write): on SQLite the second
waits for the write lock (busy timeout, settings) and succeeds after the first commits, or — when the first
holds the lock past the timeout — exits 2 with "数据库正忙，请稍后重试 / database is busy, try again" and no
traceback, having written nothing. On PostGIS imports of different files both succeed; of the same codes the
second fails cleanly on the unique constraint ("code_conflict"), nothing half-written.
"""
import json
import os
import select
import signal
import subprocess
import time

import pytest

from .conftest import PY, ROOT, SEED, backend, count
from .test_faults import _pg, _rows_pg, _rows_sqlite, _run_until_write, facilities_csv

pytestmark = [pytest.mark.slow]

RACE = SEED + r"""
import json, threading
from django.db import connection
from django.test import Client
from layers.models_review import ReviewDecision
out = {}
for n in (2, 5, 20):
    proj = M.HousingProject.objects.create(name=f"race{n}", developer="d", households=10, status="in_review",
                                           district=d, geom=p.geom)
    clients = []
    for i in range(n):
        c = Client()
        c.force_login(admin)
        clients.append(c)
    barrier = threading.Barrier(n)
    res = [None] * n
    def go(i):
        try:
            action = "approved" if i % 2 == 0 else "rejected"
            barrier.wait()
            r = clients[i].post(f"/review/projects/{proj.pk}/decide/",
                                {"action": action, "comment": f"reviewer {i}", "version": "1"})
            res[i] = (r.status_code, action, f"reviewer {i}")
        except Exception as exc:   # reported, and fails the test below
            res[i] = (repr(exc)[:300], action, f"reviewer {i}")
        finally:
            connection.close()
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    proj.refresh_from_db()
    rows = list(ReviewDecision.objects.filter(project=proj).values_list("action", "comment"))
    out[n] = {"results": res, "status": proj.status, "version": proj.version, "decisions": rows}
print("RACE" + json.dumps(out))
"""


def test_parallel_decisions_exactly_one_wins(scratch_db):
    out = scratch_db.shell(RACE, timeout=300)
    doc = json.loads(next(line for line in out.splitlines() if line.startswith("RACE"))[4:])
    for n in ("2", "5", "20"):
        d = doc[n]
        codes = sorted((r[0] for r in d["results"]), key=str)
        assert codes == [302] + [409] * (int(n) - 1), (n, codes)
        winner = next(r for r in d["results"] if r[0] == 302)
        assert d["version"] == 2
        assert d["status"] == winner[1]                       # the winner's decision stands ...
        assert d["decisions"] == [[winner[1], winner[2]]]     # ... with its comment, and nothing else
        count("concurrency_races")
        count("concurrency_conflicts", int(n) - 1)
        count(f"concurrency_{n}_{backend()}_one_winner")


# ------------------------------------------------------------------ two imports at the same moment
# The first import is paused (SIGSTOP) inside its write transaction, holding the write lock (SQLite) or its
# uncommitted codes (PostGIS), while the second one runs; then it is resumed (SIGCONT).
TIMEOUT_PROBE = "from django.db import connection; print('TIMEOUT', connection.settings_dict['OPTIONS'].get('timeout', 5))"
RUNS = r"""
import json
from importers.models import ImportRun
print("RUNS" + json.dumps([[r.status, r.file_name, r.error, r.created, r.started_at.isoformat(),
                            r.finished_at.isoformat() if r.finished_at else None]
                           for r in ImportRun.objects.order_by("pk")], ensure_ascii=False))
"""


def _start_import(db, csv_path):
    return subprocess.Popen([PY, str(ROOT / "manage.py"), "import_layer", "facilities", str(csv_path)], env=db.env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _finish_paused(proc, master) -> None:
    proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:   # keep the pty drained
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                os.read(master, 4096)
            except OSError:
                break
    proc.wait(10)
    os.close(master)


def _runs(db) -> list:
    out = db.shell(RUNS)
    return json.loads(next(line for line in out.splitlines() if line.startswith("RUNS"))[4:])


def _count(db, prefix: str) -> int:
    return _rows_pg(db.url, prefix) if db.url else _rows_sqlite(db.sqlite_path, prefix)[0]


def _pause_first_in_write(db, n: int, prefix: str):
    first_csv = db.root / "first.csv"
    facilities_csv(first_csv, n, prefix)
    proc, master, _seen = _run_until_write(db, first_csv)
    proc.send_signal(signal.SIGSTOP)
    return proc, master


def test_sqlite_second_import_waits_for_the_first_then_succeeds(scratch_db):
    if scratch_db.url:
        pytest.skip("SQLite only")
    db = scratch_db
    db.shell(SEED)
    first, master = _pause_first_in_write(db, 3000, "999A")
    second_csv = db.root / "second.csv"
    facilities_csv(second_csv, 200, "999B")
    t0 = time.monotonic()
    second = _start_import(db, second_csv)
    time.sleep(4)                         # the second starts, reads, and waits for the write lock
    assert second.poll() is None, second.communicate()
    _finish_paused(first, master)
    out, err = second.communicate(timeout=120)
    waited = time.monotonic() - t0
    assert first.returncode == 0
    assert second.returncode == 0 and "Traceback" not in err, (second.returncode, out, err[-2000:])
    assert (_count(db, "999A"), _count(db, "999B")) == (3000, 200)
    assert _rows_sqlite(db.sqlite_path, "999")[1] == "ok"
    runs = _runs(db)
    assert [(r[0], r[1], r[3]) for r in runs] == [("ok", "first.csv", 3000), ("ok", "second.csv", 200)], runs
    # the second committed after the first (its ImportRun's started_at is taken before it waits for the lock,
    # so it can be earlier than the first's end: the wait itself is shown by poll() above and `waited`)
    assert runs[1][5] >= runs[0][5]
    assert waited >= 4
    count("concurrency_imports")
    count("concurrency_import_waited_spatialite")


def test_sqlite_second_import_busy_beyond_the_timeout_fails_cleanly(scratch_db):
    if scratch_db.url:
        pytest.skip("SQLite only")
    db = scratch_db
    db.shell(SEED)
    timeout_s = float(next(ln.split()[1] for ln in db.shell(TIMEOUT_PROBE).splitlines() if ln.startswith("TIMEOUT")))
    first, master = _pause_first_in_write(db, 3000, "999A")
    second_csv = db.root / "second.csv"
    facilities_csv(second_csv, 200, "999B")
    t0 = time.monotonic()
    second = _start_import(db, second_csv)
    try:
        out, err = second.communicate(timeout=timeout_s + 120)   # the first stays paused longer than that
    finally:
        _finish_paused(first, master)
    waited = time.monotonic() - t0
    assert second.returncode == 2, (second.returncode, out, err[-2000:])
    assert "数据库正忙，请稍后重试" in err and "database is busy, try again" in err, err[-2000:]
    assert "Traceback" not in err
    assert waited >= timeout_s
    assert first.returncode == 0
    assert (_count(db, "999A"), _count(db, "999B")) == (3000, 0)   # the second wrote nothing
    assert _rows_sqlite(db.sqlite_path, "999")[1] == "ok"
    runs = _runs(db)
    assert [(r[0], r[1]) for r in runs if r[0] != "failed"] == [("ok", "first.csv")], runs
    assert all(r[3] == 0 for r in runs if r[0] == "failed"), runs
    count("concurrency_imports")
    count("concurrency_import_busy_refused_spatialite")


def test_postgis_two_imports_of_different_files_both_succeed(scratch_db):
    if not scratch_db.url:
        pytest.skip("PostGIS only (DATABASE_URL)")
    db = scratch_db
    db.shell(SEED)
    first, master = _pause_first_in_write(db, 3000, "999A")
    second_csv = db.root / "second.csv"
    facilities_csv(second_csv, 200, "999B")
    second = _start_import(db, second_csv)
    try:
        out, err = second.communicate(timeout=120)   # no lock between different rows: it does not wait
    finally:
        _finish_paused(first, master)
    assert second.returncode == 0, (out, err[-2000:])
    assert first.returncode == 0
    assert (_count(db, "999A"), _count(db, "999B")) == (3000, 200)
    assert sorted((r[0], r[1]) for r in _runs(db)) == [("ok", "first.csv"), ("ok", "second.csv")]
    count("concurrency_imports")
    count("concurrency_import_both_ok_postgis")


def test_postgis_two_imports_of_the_same_codes_one_fails_cleanly(scratch_db):
    if not scratch_db.url:
        pytest.skip("PostGIS only (DATABASE_URL)")
    db = scratch_db
    db.shell(SEED)
    n = 500   # one write batch: the paused first holds every code of the file, uncommitted
    first, master = _pause_first_in_write(db, n, "999S")
    second_csv = db.root / "second.csv"
    facilities_csv(second_csv, n, "999S")
    second = _start_import(db, second_csv)
    # the second validates (the first's rows are invisible), records its run, writes, and waits on the
    # unique index: resume the first once the second's run is recorded (its write follows at once)
    deadline = time.monotonic() + 120
    with _pg(db.url) as c:
        while time.monotonic() < deadline and second.poll() is None and not c.execute(
                "SELECT count(*) FROM importers_importrun WHERE file_name = 'second.csv'").fetchone()[0]:
            time.sleep(0.2)
    time.sleep(1.0)
    _finish_paused(first, master)
    out, err = second.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 2 and "Traceback" not in err, (second.returncode, out, err[-2000:])
    conflict = "同时写入的数据重复" in err
    assert conflict or "已在数据库中" in err, err[-2000:]   # else it saw the first's commit while validating
    assert _count(db, "999S") == n                            # the first's rows, once each
    runs = _runs(db)
    assert [(r[0], r[1], r[3]) for r in runs][0] == ("ok", "first.csv", n), runs
    assert [(r[0], r[3]) for r in runs][1] in (("failed", 0), ("refused", 0)), runs
    count("concurrency_imports")
    count("concurrency_import_same_codes_postgis")
    if conflict:
        count("concurrency_import_unique_conflict_postgis")
