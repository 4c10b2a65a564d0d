"""Settings for the test suite: the production settings with a development key (never a real secret)."""
import os

os.environ.setdefault("GISPORTAL_DEV_KEY", "1")

from .settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins only

# Tests run tasks in the request (ImmediateBackend); the "database" alias is for the test that starts a
# real `db_worker` subprocess, which needs a test database a second process can open (a file, not memory).
TASKS = {
    "default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]},
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]},
}
if DATABASES["default"]["ENGINE"].endswith("spatialite"):  # noqa: F405
    # One file per test run (parallel runs must not share it); subprocesses inherit the name.
    os.environ.setdefault("GISPORTAL_TEST_DB", str(VAR_DIR / f"test_gisportal_{os.getpid()}.sqlite3"))  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": os.environ["GISPORTAL_TEST_DB"]}  # noqa: F405
