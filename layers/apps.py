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


class LayersConfig(AppConfig):
    name = "layers"
    verbose_name = _("空间图层")

    def ready(self) -> None:
        preload_native_wheels()
