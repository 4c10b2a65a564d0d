"""manage.py backup PATH: a consistent copy of the database and the media folder in one .tar.gz.

SpatiaLite: SQLite's online backup API (``sqlite3.Connection.backup``), safe while the portal runs —
readers and writers carry on, the copy is one consistent snapshot. PostGIS: ``pg_dump -Fc`` (one
snapshot transaction). Media (uploads, job files, population rasters): ``MEDIA_ROOT`` as it is.

The archive holds ``manifest.json`` (engine, time, versions, and the row count and a SHA-256 of the
geometries' WKB per spatial table, see :func:`inventory`), ``db.sqlite3`` or ``db.pgdump``, and
``media/``. It is written to ``PATH.partial`` and renamed, so a crash never leaves a half archive
under PATH. ``manage.py restore PATH`` puts it back and checks the inventory.

Exit status 0 on success, 2 on failure (the reason on stderr).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import django
from django.apps import apps
from django.conf import settings
from django.contrib.gis.db.models import GeometryField
from django.core.management.base import BaseCommand
from django.db import connection

FORMAT_VERSION = 1


def is_postgres(conn=connection) -> bool:
    return conn.vendor == "postgresql"


def spatial_models() -> list:
    """Every installed model with at least one geometry field, sorted by label."""
    out = []
    for model in apps.get_models():
        if any(isinstance(f, GeometryField) for f in model._meta.concrete_fields):
            out.append(model)
    return sorted(out, key=lambda m: m._meta.label)


def inventory() -> dict[str, dict]:
    """{model label: {"rows": n, "geom_sha256": hex}} for every spatial table.

    The digest runs over (pk, WKB of each geometry field, in field order) ordered by pk; WKB is
    written by GEOS, so the same geometries give the same digest on SpatiaLite and PostGIS.
    """
    out = {}
    for model in spatial_models():
        fields = [f.name for f in model._meta.concrete_fields if isinstance(f, GeometryField)]
        h = hashlib.sha256()
        n = 0
        for row in model.objects.order_by("pk").values_list("pk", *fields).iterator(chunk_size=2000):
            n += 1
            h.update(str(row[0]).encode())
            for g in row[1:]:
                h.update(b"\x00" if g is None else bytes(g.wkb))
        out[model._meta.label] = {"rows": n, "geom_sha256": h.hexdigest()}
    return out


def pg_env(settings_dict: dict) -> dict:
    """libpq environment for pg_dump/pg_restore (no password on the command line)."""
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD"),
                     ("NAME", "PGDATABASE")):
        if settings_dict.get(key):
            env[var] = str(settings_dict[key])
    return env


def pg_tool(name: str) -> str:
    """The newest installed ``pg_dump``/``pg_restore`` (Debian keeps one per major version)."""
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        versions = sorted((p for p in base.iterdir() if (p / "bin" / name).exists()),
                          key=lambda p: int(p.name) if p.name.isdigit() else 0)
        if versions:
            return str(versions[-1] / "bin" / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found (install postgresql-client)")
    return found


def dump_database(dest_dir: Path) -> str:
    """Write the database into ``dest_dir``; returns the file name used."""
    connection.ensure_connection()
    if is_postgres():
        out = dest_dir / "db.pgdump"
        proc = subprocess.run([pg_tool("pg_dump"), "-Fc", "--no-owner", "--no-privileges", "-f", str(out)],
                              env=pg_env(connection.settings_dict), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {proc.stderr.strip()}")
        return out.name
    name = connection.settings_dict["NAME"]
    out = dest_dir / "db.sqlite3"
    dst = sqlite3.connect(out)
    try:
        if str(name).startswith("file:") or str(name) == ":memory:":
            connection.connection.backup(dst)   # in-memory (test) databases: through Django's connection
        else:
            src = sqlite3.connect(f"file:{Path(name).as_posix()}?mode=ro", uri=True, timeout=30)
            try:
                src.backup(dst, pages=1024)
            finally:
                src.close()
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise RuntimeError(f"backup copy failed the integrity check: {ok}")
    finally:
        dst.close()
    return out.name


def make_backup(path, *, media: bool = True) -> dict:
    """Write the archive to ``path`` (atomically); returns the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gisportal-backup-", dir=path.parent) as tmp:
        tmp = Path(tmp)
        db_file = dump_database(tmp)
        manifest = {
            "format": FORMAT_VERSION, "engine": "postgis" if is_postgres() else "spatialite",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "django": django.get_version(),
            "gis_srid": settings.GIS_SRID, "db_file": db_file, "media": bool(media),
            "inventory": inventory(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(tmp / "manifest.json", arcname="manifest.json")
            tar.add(tmp / db_file, arcname=db_file)
            media_root = Path(settings.MEDIA_ROOT)
            if media and media_root.is_dir():
                tar.add(media_root, arcname="media", recursive=True)
        os.replace(partial, path)
    manifest["elapsed_s"] = round(time.perf_counter() - t0, 2)
    manifest["bytes"] = path.stat().st_size
    return manifest


class Command(BaseCommand):
    help = "Back up the database (SpatiaLite online backup / PostGIS pg_dump -Fc) and the media folder."

    def add_arguments(self, parser):
        parser.add_argument("path", help="the archive to write (.tar.gz)")
        parser.add_argument("--no-media", action="store_true", help="leave MEDIA_ROOT out")

    def handle(self, *args, **o):
        try:
            m = make_backup(o["path"], media=not o["no_media"])
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            sys.stderr.write(f"error: backup failed: {exc}\n")
            sys.exit(2)
        rows = sum(v["rows"] for v in m["inventory"].values())
        self.stdout.write(f"backup {o['path']}: {m['engine']}, {len(m['inventory'])} spatial tables, {rows:,} "
                          f"spatial rows, {m['bytes']:,} bytes, {m['elapsed_s']} s")
