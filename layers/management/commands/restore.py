"""manage.py restore PATH: put back an archive written by ``manage.py backup``.

The target database must be empty (freshly created, or never migrated) unless ``--force``: a restore
replaces everything. SpatiaLite: the archived file is copied page by page into the configured
database with SQLite's backup API (one step; a reader never sees half a database). PostGIS:
``pg_restore --single-transaction`` (all or nothing; ``--force`` adds ``--clean --if-exists``).
Media files are extracted into ``MEDIA_ROOT`` (regular files and folders only, no links, no ``..``).

Afterwards the row count and geometry digest of every spatial table are compared with the
manifest; any difference is an error (exit status 2).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from .backup import inventory, is_postgres, pg_env, pg_tool


class RestoreError(Exception):
    pass


def _database_is_empty() -> bool:
    with connection.cursor() as cur:
        tables = [t for t in connection.introspection.table_names(cur)
                  if t not in ("spatial_ref_sys", "geometry_columns", "geography_columns")
                  and not t.startswith(("spatialite_", "sql_", "views_geometry", "virts_geometry", "spatial_",
                                        "SE_", "KNN", "data_licenses", "ElementaryGeometries",
                                        "geometry_columns", "idx_", "vector_layers", "rl2map"))]
    return not tables


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    out = []
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
            raise RestoreError(f"unsafe archive member {m.name!r}")
        out.append(m)
    return out


def _restore_sqlite(db_file: Path) -> None:
    name = connection.settings_dict["NAME"]
    src = sqlite3.connect(f"file:{db_file.as_posix()}?mode=ro", uri=True)
    try:
        if src.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise RestoreError("the archived database fails PRAGMA integrity_check")
        connection.ensure_connection()
        if str(name).startswith("file:") or str(name) == ":memory:":
            src.backup(connection.connection)
        else:
            connection.close()
            dst = sqlite3.connect(name, timeout=30)
            try:
                src.backup(dst)
            finally:
                dst.close()
    finally:
        src.close()
    connection.close()


def _restore_postgres(db_file: Path, force: bool) -> None:
    args = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
            "-d", connection.settings_dict["NAME"]]
    if force:
        args[1:1] = ["--clean", "--if-exists"]
    connection.close()
    proc = subprocess.run(args + [str(db_file)], env=pg_env(connection.settings_dict), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RestoreError(f"pg_restore failed: {proc.stderr.strip()[-2000:]}")


def restore_backup(path, *, force: bool = False, media: bool = True) -> dict:
    """Restore the archive at ``path``; returns {"manifest": ..., "inventory": ..., "media_files": n}."""
    path = Path(path)
    with tarfile.open(path, "r:gz") as tar, tempfile.TemporaryDirectory(prefix="gisportal-restore-") as tmp:
        tmp = Path(tmp)
        members = _safe_members(tar)
        names = {m.name for m in members}
        if "manifest.json" not in names:
            raise RestoreError("not a gisportal backup (no manifest.json)")
        manifest = json.loads(tar.extractfile("manifest.json").read())
        engine = "postgis" if is_postgres() else "spatialite"
        if manifest["engine"] != engine:
            raise RestoreError(f"the archive is a {manifest['engine']} backup; this database is {engine}")
        if not force and not _database_is_empty():
            raise RestoreError("the target database is not empty (use --force to replace it)")
        db_name = manifest["db_file"]
        tar.extract(db_name, tmp)
        if engine == "spatialite":
            _restore_sqlite(tmp / db_name)
        else:
            _restore_postgres(tmp / db_name, force)
        n_media = 0
        if media:
            media_root = Path(settings.MEDIA_ROOT)
            for m in members:
                if not m.name.startswith("media/") or m.isdir():
                    continue
                dest = media_root / PurePosixPath(m.name).relative_to("media")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                n_media += 1
    got = inventory()
    want = manifest["inventory"]
    diff = [f"{label}: archived {want[label]} restored {got.get(label)}" for label in want if got.get(label) != want[label]]
    if diff:
        raise RestoreError("restored data differ from the archive: " + "; ".join(diff))
    return {"manifest": manifest, "inventory": got, "media_files": n_media}


class Command(BaseCommand):
    help = "Restore a backup archive (manage.py backup) into an empty database, then verify it."

    def add_arguments(self, parser):
        parser.add_argument("path", help="the archive (.tar.gz) written by manage.py backup")
        parser.add_argument("--force", action="store_true", help="replace a database that is not empty")
        parser.add_argument("--no-media", action="store_true", help="do not extract media files")

    def handle(self, *args, **o):
        try:
            r = restore_backup(o["path"], force=o["force"], media=not o["no_media"])
        except (RestoreError, OSError, RuntimeError, sqlite3.Error, tarfile.TarError, KeyError) as exc:
            sys.stderr.write(f"error: restore failed: {exc}\n")
            sys.exit(2)
        rows = sum(v["rows"] for v in r["inventory"].values())
        self.stdout.write(f"restore {o['path']}: {r['manifest']['engine']} backup of {r['manifest']['created']}; "
                          f"{len(r['inventory'])} spatial tables, {rows:,} spatial rows verified "
                          f"(counts and geometry digests match); {r['media_files']} media files")
