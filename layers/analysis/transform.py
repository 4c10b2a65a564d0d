"""Cached coordinate transformations.

Building a ``pyproj.Transformer`` costs ~100 ms of CPU (PROJ looks the operation up in its database), and a
GEOS ``transform(srid)`` through GDAL pays the same on every call. Per request that dominated the GeoJSON
endpoints (benchmarks/RESULTS.md, ## Load: 85-125 ms of ~350 ms). Transformers are immutable and, since
pyproj 3.1, safe to share between threads, so one per (source, target) pair is kept for the process.
"""
from __future__ import annotations

import functools

import numpy as np
import shapely
from pyproj import CRS, Transformer

__all__ = ["crs_from_epsg", "transformer", "transform_xy", "transform_geoms", "bbox_polygon"]


def _key(crs) -> object:
    if isinstance(crs, CRS):
        return crs.to_wkt()
    return crs


@functools.lru_cache(maxsize=64)
def crs_from_epsg(code: int) -> CRS:
    """``pyproj.CRS.from_epsg``, cached (CRS objects are immutable)."""
    return CRS.from_epsg(int(code))


@functools.lru_cache(maxsize=64)
def _cached(src, dst) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def transformer(src, dst) -> Transformer:
    """An ``always_xy`` Transformer from ``src`` to ``dst`` (EPSG ints, ``"EPSG:n"``, WKT or
    ``pyproj.CRS``), built once per pair and process.

    >>> t = transformer(4326, 4547)
    >>> t is transformer("EPSG:4326", "EPSG:4547") or t is transformer(4326, 4547)
    True
    >>> [round(v) for v in t.transform(114.0, 0.0)]
    [500000, 0]
    """
    return _cached(_key(src), _key(dst))


def transform_xy(src, dst, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of x, y from ``src`` to ``dst``."""
    return transformer(src, dst).transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def transform_geoms(src, dst, geoms):
    """Shapely geometries (one or an array) from ``src`` to ``dst``, vectorised."""
    t = transformer(src, dst)
    return shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def bbox_polygon(src, dst, xmin: float, ymin: float, xmax: float, ymax: float, *, densify: int = 16):
    """The box ``(xmin, ymin, xmax, ymax)`` of ``src`` as a polygon in ``dst``, with ``densify`` points per
    side so the curved edges of the projected box are followed (a lon/lat box is not a rectangle in a
    Gauss-Krüger projection).

    >>> p = bbox_polygon(4326, 4547, 114.0, 40.0, 115.0, 41.0)
    >>> len(p.exterior.coords), round(p.area / 1e6)
    (65, 9413)
    """
    t = np.linspace(0.0, 1.0, densify, endpoint=False)
    xs = np.concatenate([xmin + (xmax - xmin) * t, np.full(densify, xmax),
                         xmax - (xmax - xmin) * t, np.full(densify, xmin)])
    ys = np.concatenate([np.full(densify, ymin), ymin + (ymax - ymin) * t,
                         np.full(densify, ymax), ymax - (ymax - ymin) * t])
    x, y = transform_xy(src, dst, xs, ys)
    return shapely.Polygon(np.column_stack([x, y]))
