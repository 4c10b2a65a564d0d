"""Settings for the test suite: the production settings with a development key (never a real secret)."""
import os

os.environ.setdefault("GISPORTAL_DEV_KEY", "1")

from .settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins only
