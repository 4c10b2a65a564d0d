"""Backups (issue 9, 7): ``manage.py backup`` then ``manage.py restore`` into a fresh, empty database; the
row count and a SHA-256 of every geometry's WKB per spatial table must match, media files included.

Each side runs in one subprocess against its own database (SpatiaLite file, or a PostGIS database on the
DATABASE_URL server), calling the real commands with ``call_command``.
"""
import io
import json
import tarfile

import pytest

from .conftest import SEED, backend, count

pytestmark = [pytest.mark.slow]

BACKUP = SEED + r"""
import json, pathlib
from django.conf import settings
from django.core.management import call_command
from layers.management.commands.backup import inventory
jobs = pathlib.Path(settings.MEDIA_ROOT) / "jobs"; jobs.mkdir(parents=True, exist_ok=True)
(jobs / "report.txt").write_text("报告 1", encoding="utf-8")
call_command("backup", "{archive}")
print("INV" + json.dumps(inventory()))
"""

RESTORE = r"""
import json
from django.core.management import call_command
from layers.management.commands.backup import inventory
def run(*a):
    try:
        call_command("restore", *a)
        return 0
    except SystemExit as e:
        return e.code
print("FIRST", run("{archive}"))
print("INV" + json.dumps(inventory()))
call_command("migrate", "--check", verbosity=0)   # the restored schema is complete
print("SECOND", run("{archive}"))
"""


def _tagged(out: str, tag: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(tag))[len(tag):].strip()


@pytest.fixture(scope="module")
def archive(scratch_factory):
    src = scratch_factory.new("bk_src")
    path = src.root / "out" / "backup.tar.gz"
    out = src.shell(BACKUP.replace("{archive}", str(path)))
    return path, json.loads(_tagged(out, "INV"))


def test_backup_restore_round_trip(scratch_factory, archive):
    path, before = archive
    assert before["layers.Grid"]["rows"] == 2 and before["layers.ServiceFacility"]["rows"] == 3
    assert not path.with_name(path.name + ".partial").exists()
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert {"manifest.json", manifest["db_file"], "media/jobs/report.txt"} <= names
    assert manifest["engine"] == backend() and manifest["inventory"] == before

    dst = scratch_factory.empty("bk_dst")
    out = dst.shell(RESTORE.replace("{archive}", str(path)))
    assert _tagged(out, "FIRST") == "0", out
    after = json.loads(_tagged(out, "INV"))
    assert after == before          # row counts and geometry digests, table by table
    assert (dst.root / "media" / "jobs" / "report.txt").read_text(encoding="utf-8") == "报告 1"
    assert _tagged(out, "SECOND") == "2"   # a restore over a non-empty database is refused without --force
    count("backup_round_trips")
    count("backup_tables_verified", len(after))


def test_restore_detects_a_tampered_geometry(scratch_factory, archive, tmp_path):
    """The digest is not decorative: a restore whose data differ from the manifest fails (exit 2)."""
    path, _before = archive
    tampered = tmp_path / "t.tar.gz"
    with tarfile.open(path) as tar, tarfile.open(tampered, "w:gz") as out:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else None
            if m.name == "manifest.json":
                doc = json.loads(data)
                doc["inventory"]["layers.Grid"]["geom_sha256"] = "0" * 64
                data = json.dumps(doc).encode()
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    dst = scratch_factory.empty("bk_tamper")
    out = dst.shell(RESTORE.replace("{archive}", str(tampered)))
    assert _tagged(out, "FIRST") == "2"
