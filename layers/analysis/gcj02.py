"""GCJ-02 ("Mars coordinates"), the shifted lon/lat of AMap/Tencent maps, to and from WGS84/CGCS2000.

GCJ-02 is never stored (DESIGN.md, Coordinates): it is converted at the edges, on import with ``--gcj02``
and on export with ``--crs gcj02``. The forward transform is the published obfuscation polynomial on the
Krasovsky ellipsoid; the inverse has no closed form and is solved by fixed-point iteration, which converges
to well under a millimetre (the issue asks for < 0.5 m). WGS84 and CGCS2000 are treated as equal at map scale.

Points outside China's rough bounding box are returned unchanged, as the apps that use GCJ-02 do.
"""
from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

_A = 6378245.0  # Krasovsky 1940 semi-major axis, as used by the GCJ-02 algorithm
_EE = 0.00669342162296594323  # its first eccentricity squared

__all__ = ["wgs84_to_gcj02", "gcj02_to_wgs84", "geometry_gcj02_to_wgs84", "geometry_wgs84_to_gcj02",
           "out_of_china"]


def out_of_china(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """True where a point lies outside the box in which GCJ-02 applies.

    >>> out_of_china([114.89, 2.35], [40.77, 48.85]).tolist()
    [False, True]
    """
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def _delta(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    x = lon - 105.0
    y = lat - 35.0
    pi = np.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x)) + common
            + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x)) + common
            + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0)
    radlat = lat / 180.0 * pi
    magic = 1.0 - _EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * pi)
    outside = out_of_china(lon, lat)
    return np.where(outside, 0.0, dlon), np.where(outside, 0.0, dlat)


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Shift WGS84/CGCS2000 lon/lat to GCJ-02 (vectorised).

    In Zhangjiakou the shift is about 515 m east and 140 m north:

    >>> glon, glat = wgs84_to_gcj02(114.89, 40.77)
    >>> round(float(glon) - 114.89, 5), round(float(glat) - 40.77, 5)
    (0.00611, 0.00128)
    """
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    dlon, dlat = _delta(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike, *, tol_deg: float = 1e-11,
                   max_iter: int = 30) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Invert :func:`wgs84_to_gcj02` by fixed-point iteration (vectorised).

    The iteration ``w <- w - (f(w) - g)`` contracts fast because the shift varies slowly; 1e-11 degrees is
    about a micrometre.

    >>> lon, lat = gcj02_to_wgs84(*wgs84_to_gcj02(114.89, 40.77))
    >>> abs(float(lon) - 114.89) < 1e-9, abs(float(lat) - 40.77) < 1e-9
    (True, True)
    """
    glon = np.asarray(lon, dtype=float)
    glat = np.asarray(lat, dtype=float)
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(max_iter):
        flon, flat = wgs84_to_gcj02(wlon, wlat)
        elon, elat = flon - glon, flat - glat
        wlon = wlon - elon
        wlat = wlat - elat
        if np.all(np.abs(elon) < tol_deg) and np.all(np.abs(elat) < tol_deg):
            break
    return wlon, wlat


def _on_geometry(geom, func):
    def apply(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        lon, lat = func(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])
    return shapely.transform(geom, apply)


def geometry_gcj02_to_wgs84(geom):
    """Convert every vertex of a shapely geometry (or array of them) from GCJ-02 to WGS84 lon/lat."""
    return _on_geometry(geom, gcj02_to_wgs84)


def geometry_wgs84_to_gcj02(geom):
    """Convert every vertex of a shapely geometry (or array of them) from WGS84 lon/lat to GCJ-02."""
    return _on_geometry(geom, wgs84_to_gcj02)
