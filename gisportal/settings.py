"""gisportal settings, 12-factor: everything that differs between machines comes from the environment.

DJANGO_SECRET_KEY  required unless DJANGO_DEBUG=1 (then a per-checkout key is generated under var/)
DJANGO_DEBUG       1/0 (default 0)
DJANGO_ALLOWED_HOSTS  comma-separated (default 127.0.0.1,localhost)
DATABASE_URL       postgis://user:pass@host:port/db ; default: SpatiaLite file var/gisportal.sqlite3
GIS_SRID           storage SRID, metric (default 4547, CGCS2000 / 3-degree GK CM 114E)
GISPORTAL_BASEMAP  none (default) | osm | tianditu | local | gaode ; TIANDITU_KEY, GISPORTAL_LOCAL_TILES,
                   GISPORTAL_BASEMAP_CRS (gcj02: overlays are shifted onto GCJ-02 tiles)
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GISPORTAL_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


DEBUG = _env_bool("DJANGO_DEBUG")


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    if not DEBUG and not _env_bool("GISPORTAL_DEV_KEY"):
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for development).")
    # Development only: a random key kept per checkout, never committed (var/ is ignored).
    path = VAR_DIR / "dev_secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
                 if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.gis",
    "rest_framework",
    "rest_framework.authtoken",
    "rest_framework_gis",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc assets served from our static files (no CDN)
    "django_tasks",
    "django_tasks_db",
    "gisportal",
    "layers",
    "importers",
]

MIDDLEWARE = [
    "gisportal.security.DatabaseUnavailableMiddleware",  # database down: 503 + Retry-After, not 500
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "gisportal.middleware.ChineseFirstMiddleware",  # ignore Accept-Language: 简体中文 unless switched
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gisportal.security.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "gisportal.urls"
WSGI_APPLICATION = "gisportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "gisportal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SpatiaLite by default (a file under var/); PostGIS with DATABASE_URL=postgis://...
DATABASES = {
    "default": dj_database_url.config(
        default=f"spatialite:///{(VAR_DIR / 'gisportal.sqlite3').as_posix()}",
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "0")),
    )
}
if "postgis" in DATABASES["default"]["ENGINE"]:
    # Keep connections for a minute: a new PostgreSQL backend pays ~170-200 ms building PROJ for its first
    # ST_Transform (benchmarks/RESULTS.md, ## Load). Health checks make a connection that died with a
    # database restart be replaced at the next request instead of failing it.
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DJANGO_CONN_MAX_AGE", "60"))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # JIT compiled some spatial queries for ~0.9 s each on every review once tables had statistics.
    # A statement that runs past a minute is a runaway (or hostile) query: cancel it.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off -c statement_timeout=60000"
if DATABASES["default"]["ENGINE"].endswith("spatialite"):
    # Wait for a concurrent writer instead of failing at once (SQLite allows one writer).
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Take the write lock at BEGIN: a read-then-write transaction cannot be upgraded while another
    # writer waits, so deferred transactions fail at once with "database is locked" under concurrency.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's ModelBackend reading a user's roles and permissions in one query per request.
AUTHENTICATION_BACKENDS = ["gisportal.auth_backend.ModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("简体中文")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "gisportal" / "locale"]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("GISPORTAL_MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
                    if not DEBUG else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# Upload limits (OWASP file upload): large files stream to disk, requests are bounded.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
GISPORTAL_MAX_UPLOAD_BYTES = int(os.environ.get("GISPORTAL_MAX_UPLOAD_BYTES", 512 * 1024 * 1024))

# Security headers; the HTTPS-only ones apply when DJANGO_HTTPS=1 (behind a TLS-terminating proxy).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"  # the map pages our own pages embed say SAMEORIGIN themselves
SESSION_COOKIE_HTTPONLY = True
if _env_bool("DJANGO_HTTPS"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# GDAL < 3.9 (Debian 12 ships 3.6.2) triggers gis.W001 on every command; GeoDjango works with it for
# everything we use. Silenced deliberately so `check --deploy --fail-level WARNING` stays meaningful.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
}

# --- API and background jobs ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous or bad-token request gets 401 with "WWW-Authenticate: Token".
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # enforces CSRF on unsafe methods
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_token": "20/min"},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "gisportal API",
    "DESCRIPTION": "Layers (GeoJSON, EPSG:4326), housing project reviews, coverage and siting runs, "
                   "exports and imports as background jobs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"JobKindEnum": "layers.models.Job.Kind", "JobStatusEnum": "layers.models.Job.Status",
                            "ProjectStatusEnum": "layers.models.HousingProject.Status",
                            "LayerKindEnum": "layers.registry.LAYERS"},
}

# Django's task interface (backport). Default: jobs are rows in our database, run by
# `manage.py db_worker` (no extra server). A bureau with several workers can switch the backend to a
# broker-based one (e.g. django-tasks-rq with Redis) here; the task functions do not change.
TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]},
}


# --- GIS ----------------------------------------------------------------------------------------
# Every geometry is stored in one metric CRS so distances and areas are plain metres on SpatiaLite
# and PostGIS alike (DESIGN.md, Coordinates). EPSG:4547 = CGCS2000 / 3-degree GK CM 114E.
GIS_SRID = int(os.environ.get("GIS_SRID", "4547"))

# Basemap: none by default, so the map works offline (DEVELOPERS.md, Offline first).
GISPORTAL_BASEMAP = os.environ.get("GISPORTAL_BASEMAP", "none").strip().lower()
GISPORTAL_BASEMAP_CRS = os.environ.get("GISPORTAL_BASEMAP_CRS", "").strip().lower()  # "" or "gcj02"
# Per-process cache of layer features' GeoJSON text (MB of text; 0 = off) and the largest table whose
# geometries each process indexes in memory for map bbox requests (rows; 0 = always ask the database).
# Both stay valid only while the table's revision token is unchanged (layers.geojson_cache).
GISPORTAL_GEOJSON_CACHE_MB = float(os.environ.get("GISPORTAL_GEOJSON_CACHE_MB", "64"))
GISPORTAL_GEOJSON_INDEX_FEATURES = int(os.environ.get("GISPORTAL_GEOJSON_INDEX_FEATURES", "100000"))
# Reviews read tables up to this many rows from per-process snapshots (layers.snapshots; 0 = the database).
GISPORTAL_SNAPSHOT_ROWS = int(os.environ.get("GISPORTAL_SNAPSHOT_ROWS", "20000"))
TIANDITU_KEY = os.environ.get("TIANDITU_KEY", "")
GISPORTAL_LOCAL_TILES = os.environ.get("GISPORTAL_LOCAL_TILES", "")  # e.g. /tiles/{z}/{x}/{y}.png

# Planning rules (STANDARDS.md). Changeable per city without code; reports record the version.
GISPORTAL_RULES = {
    "version": "zjk-2026.1",
    "persons_per_household": 2.62,  # 2020 census average household size
    "shelter_per_capita_m2": {"emergency": 1.0, "fixed_short": 2.0, "fixed_medium": 3.0,
                              "fixed_long": 4.5, "central": 4.5},
    "shelter_service_distance_m": {"emergency": 500.0, "fixed_short": 1000.0, "fixed_medium": 1500.0,
                                   "fixed_long": 2500.0, "central": 2500.0},
    "fire_response_distance_m": 500.0,
    "facility_area_m2_per_100_households": 30.0,
    "shelter_reach_m": 500.0,  # SHELTER-REACH: GB 50413-2007 §8.2.10
    "fire_station_kinds": ["community_micro"],  # FIRE-REACH counts community micro stations
    "community_service_kinds": ["community_service", "community_service_centre"],
    # LIFE-CIRCLE walking distances, GB 50180-2018 appendix B ("check" in STANDARDS.md; health 300 m is ours)
    "life_circle_m": {"community_service_centre": 300.0, "kindergarten": 300.0, "elderly_care": 300.0,
                      "health_station": 300.0, "culture_sport": 500.0},
    "area_tolerance_m2": 1.0,
    "distance_tolerance_m": 0.5,
    "distance_method": "euclidean",
    "reach_method": "euclidean",  # "network": SHELTER-REACH / FIRE-REACH along the roads once roads are loaded
}
