"""Helpers for the reliability and security tests (issue 9).

* ``security_middleware``: the settings' MIDDLEWARE plus ``gisportal.security``'s two middleware when the
  settings do not list them yet (so the header and 503 tests exercise the real classes either way).
* ``scratch_db``: a private, migrated database for subprocesses (SIGKILL, concurrency, backups) — a
  SpatiaLite file under tmp, or a fresh PostGIS database on the DATABASE_URL server — with the env to
  reach it. Migrated once per session; every test gets its own copy.
* ``FIGURES``: counters the tests fill in; printed at the end of the session, and written as JSON to
  ``$GISPORTAL_RELIABILITY_FIGURES`` when set (benchmarks/bench_reliability.py reads it).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FIGURES: dict = defaultdict(int)
FIGURES_DETAIL: dict = defaultdict(list)

SECURITY_MIDDLEWARE_FIRST = "gisportal.security.DatabaseUnavailableMiddleware"
SECURITY_MIDDLEWARE_LAST = "gisportal.security.ContentSecurityPolicyMiddleware"


def backend() -> str:
    return "postgis" if os.environ.get("DATABASE_URL", "").startswith(("postgis", "postgres")) else "spatialite"


def count(name: str, n: int = 1, detail: str | None = None) -> None:
    FIGURES[name] += n
    if detail:
        FIGURES_DETAIL[name].append(detail)


def pytest_sessionfinish(session, exitstatus):
    if not FIGURES:
        return
    doc = {"backend": backend(), "figures": dict(FIGURES), "detail": {k: v for k, v in FIGURES_DETAIL.items()}}
    out = os.environ.get("GISPORTAL_RELIABILITY_FIGURES")
    if out:
        Path(out).write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    lines = [f"  {k}: {v}" for k, v in sorted(FIGURES.items())]
    sys.stderr.write(f"\nreliability figures ({backend()}):\n" + "\n".join(lines) + "\n")


def with_security_middleware(middleware: list[str]) -> list[str]:
    mw = list(middleware)
    if SECURITY_MIDDLEWARE_FIRST not in mw:
        mw.insert(0, SECURITY_MIDDLEWARE_FIRST)
    if SECURITY_MIDDLEWARE_LAST not in mw:
        mw.append(SECURITY_MIDDLEWARE_LAST)
    return mw


@pytest.fixture
def security_middleware(settings):
    settings.MIDDLEWARE = with_security_middleware(settings.MIDDLEWARE)
    return settings.MIDDLEWARE


# ------------------------------------------------------------------ subprocesses on a private database
def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_", "DATABASE_URL"))}
    env.update({"DJANGO_SETTINGS_MODULE": "gisportal.settings", "GISPORTAL_DEV_KEY": "1", "DJANGO_DEBUG": "0",
                "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONPATH": str(ROOT)})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(args: list[str], env: dict, *, timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _pg_admin(url: str):
    import psycopg

    u = urlsplit(url)
    return psycopg.connect(host=u.hostname, port=u.port, user=u.username, password=u.password, dbname="postgres",
                           autocommit=True)


class ScratchDB:
    """One private database (and its var/media folders) for subprocesses."""

    def __init__(self, root: Path, env: dict, url: str | None, name: str | None):
        self.root, self.env, self.url, self.name = root, env, url, name

    @property
    def sqlite_path(self) -> Path:
        return Path(self.env["GISPORTAL_VAR_DIR"]) / "gisportal.sqlite3"

    def shell(self, code: str, timeout: float = 120) -> str:
        return manage(["shell", "-c", code], self.env, timeout=timeout).stdout


class _ScratchFactory:
    def __init__(self, tmp_root: Path):
        self.tmp_root = tmp_root
        self.url = os.environ.get("DATABASE_URL") if backend() == "postgis" else None
        self.template_dir = tmp_root / "template"
        self.template_db = f"gisportal_sec_tpl_{secrets.token_hex(3)}" if self.url else None
        self.created: list[str] = []
        self._ready = False

    def _url_for(self, dbname: str) -> str:
        u = urlsplit(self.url)
        return u._replace(path=f"/{dbname}").geturl()

    def _prepare(self):
        if self._ready:
            return
        self.template_dir.mkdir(parents=True, exist_ok=True)
        if self.url:
            with _pg_admin(self.url) as c:
                c.execute(f'CREATE DATABASE "{self.template_db}"')
            self.created.append(self.template_db)
            env = base_env(GISPORTAL_VAR_DIR=self.template_dir, DATABASE_URL=self._url_for(self.template_db))
        else:
            env = base_env(GISPORTAL_VAR_DIR=self.template_dir)
        manage(["migrate", "--noinput", "-v", "0"], env)
        self._ready = True

    def new(self, label: str) -> ScratchDB:
        self._prepare()
        root = self.tmp_root / f"{label}-{secrets.token_hex(3)}"
        var = root / "var"
        var.mkdir(parents=True)
        media = root / "media"
        media.mkdir()
        tmpdir = root / "tmp"
        tmpdir.mkdir()
        extra = {"GISPORTAL_VAR_DIR": var, "GISPORTAL_MEDIA_ROOT": media, "TMPDIR": tmpdir}
        if self.url:
            name = f"gisportal_sec_{label}_{secrets.token_hex(3)}"
            with _pg_admin(self.url) as c:
                c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template_db}"')
            self.created.append(name)
            url = self._url_for(name)
            return ScratchDB(root, base_env(DATABASE_URL=url, **extra), url, name)
        shutil.copy(self.template_dir / "gisportal.sqlite3", var / "gisportal.sqlite3")
        shutil.copy(self.template_dir / "dev_secret_key", var / "dev_secret_key")
        return ScratchDB(root, base_env(**extra), None, None)

    def empty(self, label: str) -> ScratchDB:
        """A database with nothing in it (not migrated): the target of a restore."""
        root = self.tmp_root / f"{label}-{secrets.token_hex(3)}"
        (root / "var").mkdir(parents=True)
        (root / "media").mkdir()
        extra = {"GISPORTAL_VAR_DIR": root / "var", "GISPORTAL_MEDIA_ROOT": root / "media"}
        if self.url:
            name = f"gisportal_sec_{label}_{secrets.token_hex(3)}"
            with _pg_admin(self.url) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            url = self._url_for(name)
            return ScratchDB(root, base_env(DATABASE_URL=url, **extra), url, name)
        return ScratchDB(root, base_env(**extra), None, None)

    def cleanup(self):
        if not self.url:
            return
        with _pg_admin(self.url) as c:
            for name in reversed(self.created):
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
                c.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def scratch_factory(tmp_path_factory):
    f = _ScratchFactory(tmp_path_factory.mktemp("scratch"))
    yield f
    f.cleanup()


@pytest.fixture
def scratch_db(scratch_factory, request):
    return scratch_factory.new(request.node.name.split("[")[0][-20:].strip("_"))


# A small city in a subprocess: district 999001 > street > 2 communities > 2 grids, 3 facilities, a
# shelter, a housing project; the same test square as tests/importers (115.05E 40.60N, 0.02 deg).
SEED = r"""
import numpy as np, shapely
from shapely.geometry import box, MultiPolygon, Point
from pyproj import Transformer
from django.contrib.gis.geos import GEOSGeometry
from django.contrib.auth import get_user_model
from layers import models as M
tr = Transformer.from_crs(4326, 4547, always_xy=True)
def g(s, multi=True):
    s = shapely.transform(s, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    if multi and s.geom_type == "Polygon":
        s = MultiPolygon([s])
    return GEOSGeometry(memoryview(shapely.to_wkb(s)), srid=4547)
L, B, S = 115.05, 40.60, 0.02
d = M.District.objects.create(code="999001", name="测试区", geom=g(box(L, B, L + S, B + S)))
st = M.Street.objects.create(code="999001001", name="测试街道", district=d, geom=g(box(L, B, L + S, B + S)))
c1 = M.Community.objects.create(code="999001001001", name="西社区", street=st, geom=g(box(L, B, L + S / 2, B + S)))
c2 = M.Community.objects.create(code="999001001002", name="东社区", street=st, geom=g(box(L + S / 2, B, L + S, B + S)))
M.Grid.objects.create(code="999001001001001", community=c1, households=100, population=262, worker_name="张三",
                      geom=g(box(L, B, L + S / 2, B + S)))
M.Grid.objects.create(code="999001001002001", community=c2, households=80, population=210, worker_name="李四",
                      geom=g(box(L + S / 2, B, L + S, B + S)))
for i in range(3):
    M.ServiceFacility.objects.create(code=f"999F90{i}", name=f"设施{i}", community=c1,
                                     geom=g(Point(L + 0.002 + 0.001 * i, B + 0.005), multi=False))
M.Shelter.objects.create(code="999S901", name="公园", level="emergency", effective_area_m2=5000,
                         geom=g(box(L + 0.011, B + 0.011, L + 0.013, B + 0.013)))
U = get_user_model()
admin = U.objects.create_superuser("sec_admin", "a@example.cn", "x")
p = M.HousingProject.objects.create(name="并发测试项目", developer="测试", households=100, status="in_review",
                                    district=d, geom=g(box(L + 0.001, B + 0.001, L + 0.003, B + 0.003)))
print("PROJECT", p.pk, p.version)
"""
