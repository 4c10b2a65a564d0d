"""A real portal for browser tests: its own database (SpatiaLite file, or a fresh PostGIS database when
DATABASE_URL is set), migrated and loaded with the demo, served by a real `manage.py runserver`, and
Debian's Chromium driven by Playwright (never a downloaded browser)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# Fixed passwords for the throw-away portal's demo users (create_demo_users reads them from the env).
DEMO_PASSWORDS = {role: f"{role}-browser-test-1" for role in
                  ("planner", "emergency_official", "field_staff", "admin")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_postgis(url: str) -> tuple[str, callable]:
    import psycopg

    name = f"gisportal_browser_{os.getpid()}"
    parsed = urlparse(url)
    admin = parsed._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return parsed._replace(path=f"/{name}").geturl(), drop


@pytest.fixture(scope="session")
def portal(tmp_path_factory):
    """(base_url, env) of a running portal with the demo loaded."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    var = tmp_path_factory.mktemp("portal-var")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(GISPORTAL_VAR_DIR=str(var), GISPORTAL_DEV_KEY="1", DJANGO_DEBUG="0",
               DJANGO_SETTINGS_MODULE="gisportal.settings")
    env.update({f"GISPORTAL_DEMO_PASSWORD_{role.upper()}": password for role, password in DEMO_PASSWORDS.items()})
    cleanup = None
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"], cleanup = _fresh_postgis(os.environ["DATABASE_URL"])
    manage = [sys.executable, str(ROOT / "manage.py")]
    for cmd in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"],
                ["load_demo"], ["create_demo_users"]):
        subprocess.run(manage + cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    port = _free_port()
    worker = subprocess.Popen(manage + ["db_worker", "--interval", "0.5"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # background jobs
    server = subprocess.Popen(manage + ["runserver", f"127.0.0.1:{port}", "--noreload"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120   # a loaded 2-core machine can take a while to import everything
    while server.poll() is None and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/", timeout=5)
            break
        except OSError:
            time.sleep(0.3)
    else:
        server.kill()
        worker.kill()
        raise RuntimeError("runserver did not start: " + server.stderr.read().decode(errors="replace")[-2000:])
    yield base, env, var
    for proc in (server, worker):
        proc.terminate()
        proc.wait(timeout=10)
    if cleanup:
        cleanup()


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module, closed after it (see tests/conftest.py: browser tests run last)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def offline_page(browser, portal):
    """A page whose every request to anything but the portal is blocked and recorded (network cut off)."""
    base = portal[0]
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    blocked, errors = [], []

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith(("data:", "blob:", "about:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()
    context.route("**/*", route)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.blocked, page.js_errors, page.base = blocked, errors, base
    yield page
    context.close()
