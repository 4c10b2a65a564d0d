"""Gates (issue 9, 1): deploy checks, version floors, upload limits, security headers, dependency audit."""
from __future__ import annotations

import importlib.util
import json
import re
import secrets
import string
import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import reverse

from .conftest import ROOT, base_env, count, manage

pytestmark = pytest.mark.django_db


def production_env(**extra) -> dict:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    key = "".join(secrets.choice(alphabet) for _ in range(50))
    env = base_env(DJANGO_SECRET_KEY=key, DJANGO_DEBUG="0", DJANGO_HTTPS="1",
                   DJANGO_ALLOWED_HOSTS="gis.example.cn", **extra)
    env.pop("GISPORTAL_DEV_KEY")
    return env


# ------------------------------------------------------------------ check --deploy
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    proc = manage(["check", "--deploy", "--fail-level", "WARNING"], production_env(GISPORTAL_VAR_DIR=tmp_path),
                  check=False, timeout=180)
    report = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and "no issues" in report, report


# ------------------------------------------------------------------ version floors
def _v(text) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text))[:3])


def test_version_floors():
    """Floors, each the oldest release we accept, and why:

    * Django 5.2.19: the 5.2 LTS release carrying the 2026 GeoDjango security fixes (requirements.txt).
    * GDAL 3.6.2 as GeoDjango loads it: Debian 12's libgdal32 (security-patched by Debian), the oldest
      GDAL the suite runs on; GeoDjango itself accepts 3.1+ (gis.W001 is silenced for 3.6 in settings).
    * GEOS 3.11.1 (GeoDjango) and PROJ 9.1.1 (the spatial database's): Debian 12's, likewise.
    * rasterio's bundled GDAL >= 3.9 and shapely's GEOS >= 3.13, pyproj's PROJ >= 9.4: what the pinned wheels
      bundle (1.4.x / 2.2.x / 3.7.x). A lower one means a source build linked against the system
      libraries — the mixed-library crash layers/apps.py works around — or an older, unpinned wheel.
    * PostGIS 3.3 (PostGIS pass only): Debian 12's postgresql-15-postgis-3.
    """
    import django
    import pyproj
    import rasterio
    import shapely
    from django.contrib.gis.gdal import GDAL_VERSION
    from django.contrib.gis.geos.libgeos import geos_version_tuple
    from django.db import connection

    assert django.VERSION[:3] >= (5, 2, 19), django.get_version()
    assert GDAL_VERSION[:3] >= (3, 6, 2), GDAL_VERSION
    assert geos_version_tuple()[:3] >= (3, 11, 1), geos_version_tuple()
    if connection.vendor == "postgresql":
        proj = connection.ops.postgis_proj_version()
        assert _v(connection.ops.postgis_lib_version()) >= (3, 3, 0)
    else:
        proj = connection.ops.proj_version()
    assert _v(proj) >= (9, 1, 1), proj
    assert _v(rasterio.__gdal_version__) >= (3, 9, 0), rasterio.__gdal_version__
    assert tuple(shapely.geos_version) >= (3, 13, 0), shapely.geos_version
    assert _v(pyproj.proj_version_str) >= (9, 4, 0), pyproj.proj_version_str


# ------------------------------------------------------------------ upload limits
def test_upload_limits_are_bounded_and_enforced(client, settings):
    assert 0 < settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 10 * 1024 * 1024
    assert 0 < settings.DATA_UPLOAD_MAX_NUMBER_FIELDS <= 5000
    assert 0 < settings.FILE_UPLOAD_MAX_MEMORY_SIZE <= 10 * 1024 * 1024
    assert 0 < settings.GISPORTAL_MAX_UPLOAD_BYTES <= 1024 ** 3
    # a body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused before any view reads it
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = client.post(reverse("login"), data="username=" + "a" * 2000, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 400
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 20
    r = client.post(reverse("login"), data={f"f{i}": "x" for i in range(50)})
    assert r.status_code == 400
    count("bad_input_refused", 2)


def test_import_page_refuses_a_file_over_the_upload_limit(admin_client, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.GISPORTAL_MAX_UPLOAD_BYTES = 1000
    f = SimpleUploadedFile("big.geojson", b'{"type":"FeatureCollection","features":[]}' + b" " * 2000)
    r = admin_client.post(reverse("import"), {"file": f, "kind": "districts", "mode": "append", "dry_run": "on"})
    assert r.status_code == 400 and "超过上限" in r.content.decode()
    count("bad_input_refused")


# ------------------------------------------------------------------ security headers
def _inline_scripts(html: str) -> list[str]:
    """<script> elements that would run inline code (no src, not a JSON data block)."""
    out = []
    for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I):
        attrs, body = m.group(1), m.group(2)
        if "src=" in attrs or re.search(r'type=["\']application/(ld\+)?json', attrs):
            continue
        if body.strip():
            out.append(body.strip()[:80])
    return out


def test_security_headers_on_real_responses(client, admin_client, security_middleware, settings):
    settings.X_FRAME_OPTIONS = "DENY"   # what check --deploy asks for; map routes opt back into SAMEORIGIN
    pages = [(client, reverse("home")), (client, reverse("login")), (admin_client, reverse("review")),
             (admin_client, reverse("import")), (admin_client, reverse("coverage")),
             (admin_client, reverse("admin:index"))]
    for c, url in pages:
        r = c.get(url)
        assert r.status_code == 200, url
        assert r["X-Content-Type-Options"] == "nosniff"
        assert r["Referrer-Policy"] == "same-origin"
        assert r["X-Frame-Options"] == "DENY", url
        csp = r["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], url
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        # the strict policy does not break the page: no inline script in it
        assert _inline_scripts(r.content.decode()) == [], url
    r = client.get(reverse("map_frame"))
    assert r.status_code == 200
    assert r["X-Frame-Options"] == "SAMEORIGIN"
    csp = r["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in csp and "frame-ancestors 'self'" in csp
    assert _inline_scripts(r.content.decode())   # folium's map really is inline script (why the exception)


def test_session_cookie_is_httponly(client, django_user_model):
    django_user_model.objects.create_user("sec_cookie", password="pw-123-abc")
    r = client.post(reverse("login"), {"username": "sec_cookie", "password": "pw-123-abc"})
    assert r.status_code == 302
    assert r.cookies[settings.SESSION_COOKIE_NAME]["httponly"]


HTTPS_SCRIPT = r"""
import django
django.setup()
from django.test import Client
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", verbosity=0)
get_user_model().objects.create_user("sec_https", password="pw-123-abc")
c = Client(HTTP_HOST="gis.example.cn")
r = c.get("/accounts/login/")
print("PLAIN", r.status_code, r.get("Location", ""))
c = Client(HTTP_HOST="gis.example.cn", HTTP_X_FORWARDED_PROTO="https")
r = c.get("/accounts/login/")
print("HSTS", r.status_code, r.get("Strict-Transport-Security", ""))
print("CSRFCOOKIE", r.cookies["csrftoken"]["secure"] if "csrftoken" in r.cookies else "none")
r = c.post("/accounts/login/", {"username": "sec_https", "password": "pw-123-abc"})
s = r.cookies.get("sessionid")
print("SESSION", r.status_code, bool(s and s["secure"]), bool(s and s["httponly"]))
r = Client(HTTP_HOST="evil.example.com", HTTP_X_FORWARDED_PROTO="https").get("/accounts/login/")
print("BADHOST", r.status_code)
"""


def test_https_production_headers_and_cookies(tmp_path):
    env = production_env(GISPORTAL_VAR_DIR=tmp_path, GISPORTAL_MEDIA_ROOT=tmp_path / "media")
    proc = subprocess.run([sys.executable, "-c", HTTPS_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert out["PLAIN"] == "301 https://gis.example.cn/accounts/login/"
    status, hsts = out["HSTS"].split(" ", 1)
    assert status == "200" and hsts == "max-age=31536000; includeSubDomains; preload"
    assert out["CSRFCOOKIE"] in ("True", "none")   # the login page sets it only once a token is used
    assert out["SESSION"] == "302 True True"
    assert out["BADHOST"] == "400"


# ------------------------------------------------------------------ dependency audit
@pytest.mark.slow
def test_pip_audit_of_pinned_requirements():
    if importlib.util.find_spec("pip_audit") is None:
        pytest.skip("pip-audit is not installed in the venv (pin: pip-audit==2.10.1 in requirements-dev.txt)")
    reqs = [str(ROOT / "requirements.txt"), str(ROOT / "requirements-dev.txt")]
    args = [sys.executable, "-m", "pip_audit", "--no-deps", "--disable-pip", "--progress-spinner", "off",
            "--format", "json"]
    for r in reqs:
        args += ["-r", r]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("pip-audit: advisory database did not answer within 240 s")
    err = proc.stderr.lower()
    if proc.returncode not in (0, 1) or any(s in err for s in ("connection", "timed out", "name resolution",
                                                                "max retries", "temporary failure")):
        if proc.returncode != 1 or not proc.stdout.strip().startswith("{"):
            pytest.skip(f"pip-audit: advisory database unreachable ({proc.stderr.strip()[-200:]})")
    doc = json.loads(proc.stdout)
    vulns = [(d["name"], d["version"], v["id"]) for d in doc.get("dependencies", []) for v in d.get("vulns", [])]
    assert vulns == [], vulns


def test_csp_scoping(settings):
    """'unsafe-inline' scripts only on the folium routes and the POSTed review result (srcdoc map)."""
    from gisportal.security import MAP_ROUTES, csp_for

    def script_src(csp):
        return next(d for d in csp.split("; ") if d.startswith("script-src"))

    for name in MAP_ROUTES:
        assert script_src(csp_for(name)) == "script-src 'self' 'unsafe-inline'"
        assert "frame-ancestors 'self'" in csp_for(name)
    assert script_src(csp_for("review", "POST")) == "script-src 'self' 'unsafe-inline'"
    for name, method in (("review", "GET"), ("home", "GET"), ("import", "POST"), (None, "GET"),
                         ("review_project", "GET"), ("admin:index", "GET")):
        assert script_src(csp_for(name, method)) == "script-src 'self'", name
        assert "frame-ancestors 'none'" in csp_for(name, method)
    settings.GISPORTAL_BASEMAP = "osm"
    assert "https://tile.openstreetmap.org" in csp_for("map_frame")
    settings.GISPORTAL_BASEMAP = "none"
    assert "openstreetmap" not in csp_for("map_frame")
