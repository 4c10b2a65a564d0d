import importlib

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# SQLite loads mod_spatialite with RTLD_GLOBAL, which puts Debian's GEOS/PROJ/GDAL symbols in the global
# namespace. A wheel that bundles its own copies (shapely, pyproj, rasterio, pyogrio) and is loaded *after*
# that binds to the system symbols of another version and segfaults (seen: shapely.contains_xy after the
# first SpatiaLite query). Loading the wheels first, before any database connection, keeps them on their own.
_BUNDLED_NATIVE = ("shapely", "shapely.lib", "pyproj", "rasterio", "rasterio.features", "rasterio.warp",
                   "pyogrio")


def preload_native_wheels() -> None:
    for name in _BUNDLED_NATIVE:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def sqlite_busy_timeout(sender, connection, **kwargs) -> None:
    """Re-apply ``OPTIONS["timeout"]`` as SQLite's busy timeout on every new connection: GeoDjango's
    SpatiaLite backend loads mod_spatialite after Python's sqlite3 has set it, and the extension's init
    leaves it at 5 s, so the configured wait never took effect (measured: a second writer gave up after
    5.4 s instead of ~20 s)."""
    if connection.vendor != "sqlite":
        return
    timeout = connection.settings_dict.get("OPTIONS", {}).get("timeout")
    if timeout:
        connection.connection.execute(f"PRAGMA busy_timeout = {int(float(timeout) * 1000)}")


class LayersConfig(AppConfig):
    name = "layers"
    verbose_name = _("空间图层")

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        preload_native_wheels()
        connection_created.connect(sqlite_busy_timeout, dispatch_uid="gisportal_sqlite_busy_timeout")
