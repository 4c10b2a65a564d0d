"""Which coordinate reference system a file is in, and whether its coordinates make sense for China.

Pure (pyproj, numpy, shapely; no Django), so every rule here is tested without a database.

The storage CRS is ``settings.GIS_SRID`` (EPSG:4547). Files arrive in CGCS2000 lon/lat, its 3-degree and
6-degree Gauss-Kruger zones (with the zone number in front of the easting or without), the older Xian 1980
and Beijing 1954 zones, WGS84 and Web Mercator. We read the CRS from the file, accept an override only as
an EPSG integer from :data:`ALLOWED_SRIDS`, and never guess a projected CRS: when none is given and the
coordinates are not plausible lon/lat in China, the import is refused with a message that says what to do
(and which zone the eastings point to). China's longitudes (73.5-135.1) and latitudes (3.8-53.6) do not
overlap, so swapped axes are detected for certain.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

# China's extent in lon/lat (mainland, Hainan, the South China Sea islands and Taiwan), degrees.
CHINA_LON = (73.5, 135.1)
CHINA_LAT = (3.8, 53.6)

WGS84 = 4326
CGCS2000 = 4490
WEB_MERCATOR = 3857


def _span(first: int, last: int) -> range:
    return range(first, last + 1)


# EPSG families (names checked in tests/importers/test_crs.py against pyproj's database).
CGCS2000_3DEG_ZONE = _span(4513, 4533)   # zones 25..45, easting prefixed with the zone number
CGCS2000_3DEG_CM = _span(4534, 4554)     # CM 75E..135E, no prefix
CGCS2000_6DEG_ZONE = _span(4491, 4501)   # zones 13..23
CGCS2000_6DEG_CM = _span(4502, 4512)     # CM 75E..135E
XIAN80_3DEG_ZONE = _span(2349, 2369)
XIAN80_3DEG_CM = _span(2370, 2390)
XIAN80_6DEG_ZONE = _span(2327, 2337)
XIAN80_6DEG_CM = _span(2338, 2348)
BEIJING54_3DEG_ZONE = _span(2401, 2421)
BEIJING54_3DEG_CM = _span(2422, 2442)
BEIJING54_6DEG_ZONE = _span(21413, 21423)
BEIJING54_6DEG_CM = _span(21453, 21463)

#: EPSG codes accepted for ``--srid`` (and recognised in files).
ALLOWED_SRIDS: frozenset[int] = frozenset(
    [WGS84, CGCS2000, WEB_MERCATOR, 4610, 4214]
    + [c for r in (CGCS2000_3DEG_ZONE, CGCS2000_3DEG_CM, CGCS2000_6DEG_ZONE, CGCS2000_6DEG_CM,
                   XIAN80_3DEG_ZONE, XIAN80_3DEG_CM, XIAN80_6DEG_ZONE, XIAN80_6DEG_CM,
                   BEIJING54_3DEG_ZONE, BEIJING54_3DEG_CM, BEIJING54_6DEG_ZONE, BEIJING54_6DEG_CM)
       for c in r])


class CRSProblem(ValueError):
    """The CRS is missing, not allowed, or does not fit the coordinates. ``str()`` says what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ResolvedCRS:
    """The source CRS of a file: ``srid`` when pyproj knows its EPSG code, ``wkt`` always."""

    srid: int | None
    wkt: str
    name: str
    how: str  # "override" | "file" | "assumed_lonlat"
    geographic: bool


@lru_cache(maxsize=64)
def _crs_from_wkt(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


def srid_override(value: int | str) -> int:
    """Check an ``--srid`` override: an integer EPSG code from :data:`ALLOWED_SRIDS`.

    >>> srid_override("4547")
    4547
    >>> srid_override("EPSG:4547")
    Traceback (most recent call last):
    ...
    importers.crs.CRSProblem: --srid 需要整数 EPSG 代码（例如 4547），收到 'EPSG:4547'
    """
    try:
        srid = int(str(value).strip())
    except ValueError:
        raise CRSProblem("srid_not_int", f"--srid 需要整数 EPSG 代码（例如 4547），收到 {value!r}") from None
    if srid not in ALLOWED_SRIDS:
        raise CRSProblem("srid_not_allowed",
                         f"--srid {srid} 不在允许的坐标系列表中（CGCS2000、西安80、北京54 的经纬度与高斯-克吕格"
                         f"投影带，WGS84 EPSG:4326，Web 墨卡托 EPSG:3857）")
    return srid


def from_srid(srid: int, how: str = "override") -> ResolvedCRS:
    crs = CRS.from_epsg(srid)
    return ResolvedCRS(srid, crs.to_wkt(), crs.name, how, crs.is_geographic)


def from_wkt(wkt: str, how: str = "file") -> ResolvedCRS:
    """A CRS from WKT (a .prj, GDAL's layer SRS), its EPSG code found by pyproj when it has one.

    >>> r = from_wkt(CRS.from_epsg(4547).to_wkt())
    >>> r.srid, r.geographic
    (4547, False)
    """
    try:
        crs = _crs_from_wkt(wkt)
    except CRSError as exc:
        raise CRSProblem("crs_unreadable", f"无法识别文件中的坐标系定义：{exc}") from None
    srid = crs.to_epsg(min_confidence=70)
    if srid is None and crs.is_geographic:
        # ESRI names such as GCS_China_Geodetic_Coordinate_System_2000 without an authority.
        name = crs.name.lower()
        if "2000" in name and "china" in name:
            srid = CGCS2000
        elif "wgs" in name and "84" in name:
            srid = WGS84
    return ResolvedCRS(srid, crs.to_wkt(), crs.name, how, crs.is_geographic)


@lru_cache(maxsize=64)
def transformer(src_wkt: str, dst_srid: int) -> Transformer:
    return Transformer.from_crs(_crs_from_wkt(src_wkt), CRS.from_epsg(dst_srid), always_xy=True)


@lru_cache(maxsize=64)
def to_lonlat(src_wkt: str) -> Transformer:
    return Transformer.from_crs(_crs_from_wkt(src_wkt), CRS.from_epsg(WGS84), always_xy=True)


def in_china_mask(lon, lat) -> np.ndarray:
    """True where (lon, lat) lies in China's lon/lat box.

    >>> in_china_mask([114.9, 40.8], [40.8, 114.9]).tolist()
    [True, False]
    """
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    return ((lon >= CHINA_LON[0]) & (lon <= CHINA_LON[1]) & (lat >= CHINA_LAT[0]) & (lat <= CHINA_LAT[1]))


def looks_swapped(x, y) -> bool:
    """True when every point is (lat, lon) in China rather than (lon, lat): the ranges do not overlap.

    >>> looks_swapped([40.8, 40.7], [114.9, 115.0])
    True
    >>> looks_swapped([114.9], [40.8])
    False
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    return bool(x.size) and bool(in_china_mask(y, x).all()) and not bool(in_china_mask(x, y).any())


def suggest_for_projected(x, y) -> str:
    """What to tell the user when projected-looking coordinates come without a CRS.

    A Gauss-Kruger easting with the zone number in front (e.g. 38 512 345 m) names its zone: 13-23 are
    6-degree zones, 25-45 are 3-degree zones.

    >>> "EPSG:4526" in suggest_for_projected([38512345.0], [4512345.0])
    True
    >>> "EPSG:4547" in suggest_for_projected([512345.0], [4512345.0])
    True
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    zones = np.unique(np.floor(x / 1e6).astype(np.int64)) if x.size else np.array([], dtype=np.int64)
    if zones.size == 1 and 25 <= zones[0] <= 45 and (y > 0).all() and (y < 6.5e6).all():
        z = int(zones[0])
        return (f"东坐标带有 3 度带号 {z}（中央经线 {3 * z}°E）：若为 CGCS2000 请用 --srid {4513 + z - 25}"
                f"（EPSG:{4513 + z - 25}），西安80 用 --srid {2349 + z - 25}，北京54 用 --srid {2401 + z - 25}")
    if zones.size == 1 and 13 <= zones[0] <= 23 and (y > 0).all() and (y < 6.5e6).all():
        z = int(zones[0])
        return (f"东坐标带有 6 度带号 {z}（中央经线 {6 * z - 3}°E）：若为 CGCS2000 请用 --srid {4491 + z - 13}"
                f"（EPSG:{4491 + z - 13}），西安80 用 --srid {2327 + z - 13}，北京54 用 --srid {21413 + z - 13}")
    if x.size and (x > 1e5).all() and (x < 9e5).all() and (y > 3e5).all() and (y < 6.5e6).all():
        return ("坐标像是不带带号的高斯-克吕格投影（米）：张家口一般为 CGCS2000 3 度带中央经线 114°E，"
                "请用 --srid 4547（EPSG:4547）；若为 6 度带中央经线 117°E 用 --srid 4508")
    if x.size and (np.abs(x) > 8e6).all() and (np.abs(x) < 2.0037e7).all():
        return "坐标像是 Web 墨卡托（米）：请用 --srid 3857"
    return "请在文件中附带坐标系（.prj）或用 --srid 指定 EPSG 代码（例如 4547 或 4490）"


def resolve(file_crs_wkt: str | None, sample_x, sample_y, *, srid: int | None = None,
            gcj02: bool = False) -> ResolvedCRS:
    """Decide the source CRS of a file from its own CRS, the override and a sample of its coordinates.

    ``sample_x``/``sample_y`` are coordinates as stored in the file (x first). Raises :class:`CRSProblem`
    when there is no CRS and the coordinates are not lon/lat in China, when lon/lat look swapped, or when
    ``--gcj02`` is asked for data that is not lon/lat.

    >>> resolve(None, [114.9], [40.8]).how
    'assumed_lonlat'
    >>> resolve(None, [40.8], [114.9])
    Traceback (most recent call last):
    ...
    importers.crs.CRSProblem: 坐标的经纬度顺序颠倒了（看起来是 纬度, 经度）：请交换经度/纬度列或字段后再导入
    """
    x = np.asarray(sample_x, dtype=float)
    y = np.asarray(sample_y, dtype=float)
    if srid is not None:
        resolved = from_srid(srid_override(srid))
    elif file_crs_wkt:
        resolved = from_wkt(file_crs_wkt)
    else:
        resolved = None
    if resolved is None or resolved.geographic:
        if looks_swapped(x, y):
            raise CRSProblem("swapped_axes",
                             "坐标的经纬度顺序颠倒了（看起来是 纬度, 经度）：请交换经度/纬度列或字段后再导入")
    if resolved is None:
        ok, swapped = in_china_mask(x, y), in_china_mask(y, x)
        # lon/lat in China, apart from some swapped points (reported feature by feature later)
        if x.size and ok.any() and (ok | swapped).all():
            resolved = ResolvedCRS(WGS84, CRS.from_epsg(WGS84).to_wkt(), "WGS 84", "assumed_lonlat", True)
        else:
            raise CRSProblem("crs_missing", "文件没有坐标系，坐标也不是中国范围内的经纬度。"
                             + suggest_for_projected(x, y))
    if gcj02 and not resolved.geographic:
        raise CRSProblem("gcj02_not_lonlat", f"--gcj02 只适用于经纬度数据，而文件坐标系是 {resolved.name}")
    return resolved
