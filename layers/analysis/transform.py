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

__all__ = ["crs_from_epsg", "transformer", "transform_xy", "transform_geoms", "bbox_polygon", "inner_rectangle"]


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


def bbox_polygon(src, dst, xmin: float, ymin: float, xmax: float, ymax: float, *,
                 densify: int | None = None, tolerance: float = 0.1):
    """The box ``(xmin, ymin, xmax, ymax)`` of ``src`` as a polygon in ``dst``, with ``densify`` points per
    side so the curved edges of the projected box are followed (a lon/lat box is not a rectangle in a
    Gauss-Krüger projection).

    ``densify=None`` (default) chooses the points per side from the curvature: the projected midpoint
    of each side is compared with the middle of its chord, and the sides get ``ceil(sqrt(d /
    tolerance))`` points (a chord's error falls with the square of the number of pieces), at most 64,
    so a map-sized box stays a 5-vertex ring (cheap in a spatial filter) and a region-sized one
    follows its edges to within about ``tolerance`` (``dst`` units).

    >>> p = bbox_polygon(4326, 4547, 114.0, 40.0, 115.0, 41.0, densify=16)
    >>> len(p.exterior.coords), round(p.area / 1e6)
    (65, 9413)
    >>> len(bbox_polygon(4326, 4547, 114.88, 40.79, 114.89, 40.80).exterior.coords)
    5
    >>> len(bbox_polygon(4326, 4547, 114.0, 40.0, 115.0, 41.0).exterior.coords) > 65
    True
    """
    if densify is None:
        cx = np.array([xmin, xmax, xmax, xmin, xmin])
        cy = np.array([ymin, ymin, ymax, ymax, ymin])
        mx, my = (cx[:-1] + cx[1:]) / 2, (cy[:-1] + cy[1:]) / 2
        px, py = transform_xy(src, dst, np.concatenate([cx, mx]), np.concatenate([cy, my]))
        chord_x, chord_y = (px[:4] + px[1:5]) / 2, (py[:4] + py[1:5]) / 2
        dev = float(np.max(np.hypot(px[5:] - chord_x, py[5:] - chord_y)))
        densify = int(min(64, max(1, np.ceil(np.sqrt(dev / tolerance))))) if np.isfinite(dev) else 16
    t = np.linspace(0.0, 1.0, densify, endpoint=False)
    xs = np.concatenate([xmin + (xmax - xmin) * t, np.full(densify, xmax),
                         xmax - (xmax - xmin) * t, np.full(densify, xmin)])
    ys = np.concatenate([np.full(densify, ymin), ymin + (ymax - ymin) * t,
                         np.full(densify, ymax), ymax - (ymax - ymin) * t])
    x, y = transform_xy(src, dst, xs, ys)
    return shapely.Polygon(np.column_stack([x, y]))


def inner_rectangle(polygon, margin: float = 1e-6) -> tuple[float, float, float, float] | None:
    """An axis-aligned rectangle ``(xmin, ymin, xmax, ymax)`` inside a box-like polygon (a projected
    :func:`bbox_polygon`), or None when there is none worth having: the innermost coordinate of
    each side's vertices (in :func:`bbox_polygon`'s order: bottom, right, top, left), shrunk by
    ``margin`` relative to the size, and checked with shapely.

    >>> inner_rectangle(shapely.Polygon([(0, 0), (10, 1), (11, 10), (1, 9)]))
    (1.000011, 1.000011, 9.999989, 8.999989)
    >>> inner_rectangle(shapely.Polygon([(0, 0), (2, 0), (2, 1), (0, 1)]), margin=0)
    (0.0, 0.0, 2.0, 1.0)

    Whatever the polygon, the answer is inside it (checked), or None.
    """
    xy = np.asarray(polygon.exterior.coords)[:-1]
    if len(xy) < 4 or len(xy) % 4:
        return None
    n = len(xy) // 4   # bbox_polygon's order: bottom, right, top, left, n vertices each
    bottom, right, top, left = xy[:n + 1], xy[n:2 * n + 1], xy[2 * n:3 * n + 1], np.vstack([xy[3 * n:], xy[:1]])
    pad = margin * max(float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1])), 1.0)
    rect = (float(left[:, 0].max() + pad), float(bottom[:, 1].max() + pad),
            float(right[:, 0].min() - pad), float(top[:, 1].min() - pad))
    if rect[0] >= rect[2] or rect[1] >= rect[3] or not polygon.contains(shapely.box(*rect)):
        return None
    return tuple(round(v, 10) for v in rect)
