"""Parse a housing project submission (GeoJSON) into a :class:`layers.analysis.rules.Project`.

Pure (json / numpy / shapely / pyproj; no Django). Refuses a bad submission with a
:class:`SubmissionError` that says why, in Chinese and English; it never fetches anything (a
``crs`` of type ``link`` is refused, a ``crs`` name that looks like a URL is only read as text).

The submission (issue 4): a FeatureCollection with exactly one feature of ``role: site`` (Polygon or
MultiPolygon; ``name``, ``developer``, ``households`` > 0, optional ``population``) and any number of
``role: facility`` (Point or Polygon footprint; ``kind`` default ``community_service``,
``floor_area_m2`` > 0). Coordinates are lon/lat (EPSG:4326 / 4490, RFC 7946 axis order) unless a
``crs`` member or the ``srid`` argument (which wins) names another EPSG code. China's longitudes
(73.5-135.1) and latitudes (3.8-53.6) do not overlap, so swapped axes are caught by a box check
(STANDARDS.md, Coordinates).

Shapefile / GeoPackage / DXF submissions go through the importers; they hand the features to
:func:`project_from_features` (the hook), which applies the same checks.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import shapely
from shapely.geometry import shape

from .errors import BilingualError
from .transform import crs_from_epsg, transformer
from .rules import Project, ProjectFacility

__all__ = ["SubmissionError", "Submission", "parse_submission", "project_from_features",
           "FACILITY_KINDS", "LONLAT_SRIDS"]

#: Geographic CRSs read as lon/lat (CGCS2000 and WGS84 are equal at map scale, DESIGN.md).
LONLAT_SRIDS = frozenset({4326, 4490, 4490, 4610, 4214, 4479})
#: Facility kinds a submission may use (ServiceFacility kinds plus the submission's default).
FACILITY_KINDS = ("community_service", "community_service_centre", "culture_sport", "health_station",
                  "elderly_care", "kindergarten", "other")
CHINA_LON = (73.5, 135.1)
CHINA_LAT = (3.8, 53.6)
MAX_BYTES = 20_000_000
MAX_FEATURES = 10_000
MAX_VERTICES = 500_000

_EPSG_RE = re.compile(r"EPSG(?::{1,2}|/0/|/)(\d{4,6})$", re.IGNORECASE)
_CRS84_RE = re.compile(r"CRS:?84$", re.IGNORECASE)


class SubmissionError(BilingualError):
    """A refused submission: ``code`` (machine-readable), ``message_zh``, ``message_en``."""

    @property
    def message_zh(self) -> str:
        return self.zh

    @property
    def message_en(self) -> str:
        return self.en


@dataclass(frozen=True)
class Submission:
    """A parsed submission: the project in the storage CRS and the EPSG code it was read in."""

    project: Project
    source_srid: int


def _err(code: str, zh: str, en: str) -> SubmissionError:
    return SubmissionError(code, zh, en)


def _crs_from_member(crs: Any) -> int | None:
    if crs is None:
        return None
    if not isinstance(crs, Mapping):
        raise _err("crs", "crs 成员格式无法识别", "the crs member is not an object")
    if crs.get("type") == "link":
        raise _err("crs", "不支持链接形式的 crs（不会访问网址），请用 --srid 指定坐标系",
                   "a crs of type link is not followed (no URL is fetched); give --srid")
    name = (crs.get("properties") or {}).get("name") if isinstance(crs.get("properties"), Mapping) else None
    if crs.get("type") != "name" or not isinstance(name, str):
        raise _err("crs", "crs 成员格式无法识别，请用 --srid 指定坐标系",
                   "the crs member is not understood; give --srid")
    name = name.strip()
    if _CRS84_RE.search(name):
        return 4326
    m = _EPSG_RE.search(name)
    if not m:
        raise _err("crs", f"无法识别的坐标系 {name[:80]}，请用 --srid 指定",
                   f"unknown crs {name[:80]!r}; give --srid")
    return int(m.group(1))


def _count_and_check_coords(coords: Any, depth: int, budget: list[int]) -> None:
    """Coordinates nested exactly ``depth`` lists deep, finite numbers, within the vertex budget."""
    if depth == 0:
        if (not isinstance(coords, (list, tuple)) or len(coords) < 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords)
                or not all(math.isfinite(v) for v in coords)):
            raise _err("geometry", "坐标必须是有限数值", "coordinates must be finite numbers")
        budget[0] -= 1
        if budget[0] < 0:
            raise _err("too_large", "顶点数过多", "too many vertices")
        return
    if not isinstance(coords, (list, tuple)):
        raise _err("geometry", "几何坐标结构错误", "malformed geometry coordinates")
    for c in coords:
        _count_and_check_coords(c, depth - 1, budget)


_DEPTH = {"Point": 0, "Polygon": 2, "MultiPolygon": 3}


def _geometry(feature: Mapping, allowed: tuple[str, ...], label_zh: str, label_en: str, budget) -> Any:
    g = feature.get("geometry")
    if not isinstance(g, Mapping) or g.get("type") not in allowed:
        got = g.get("type") if isinstance(g, Mapping) else None
        raise _err("geometry", f"{label_zh}的几何类型应为 {'/'.join(allowed)}，实际为 {got}",
                   f"{label_en} geometry must be {'/'.join(allowed)}, got {got}")
    _count_and_check_coords(g.get("coordinates"), _DEPTH[g["type"]], budget)
    try:
        geom = shape(g)
    except Exception as exc:  # shapely raises on rings with too few points etc.
        raise _err("invalid_polygon", f"{label_zh}几何无效：{exc}", f"{label_en} geometry is invalid: {exc}") \
            from None
    if geom.is_empty:
        raise _err("geometry", f"{label_zh}几何为空", f"{label_en} geometry is empty")
    return geom


def _positive_int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if not re.fullmatch(r"\d+", v):
            return None
        v = int(v)
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            return None
        v = int(v)
    if isinstance(v, int) and v > 0:
        return v
    return None


def _positive_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
        return float(v)
    return None


def _check_lonlat(xy: np.ndarray) -> None:
    x, y = xy[:, 0], xy[:, 1]
    in_lon = (x >= CHINA_LON[0]) & (x <= CHINA_LON[1])
    in_lat = (y >= CHINA_LAT[0]) & (y <= CHINA_LAT[1])
    if in_lon.all() and in_lat.all():
        return
    sw_lon = (y >= CHINA_LON[0]) & (y <= CHINA_LON[1])
    sw_lat = (x >= CHINA_LAT[0]) & (x <= CHINA_LAT[1])
    if (sw_lon & sw_lat).all():
        raise _err("swapped_axes", "坐标的经纬度顺序颠倒（应为 经度, 纬度）",
                   "latitude and longitude are swapped (GeoJSON wants lon, lat)")
    if (np.abs(x) <= 180).all() and (np.abs(y) <= 90).all():
        raise _err("outside_china", "经纬度坐标不在中国范围内", "the lon/lat coordinates lie outside China")
    raise _err("crs", "坐标不是经纬度，且未给出坐标系：请在 crs 成员或 --srid 中指定",
               "the coordinates are not lon/lat and no crs was given; give a crs member or --srid")


def project_from_features(features: Iterable[Mapping], *, source_srid: int, storage_srid: int = 4547,
                          max_vertices: int = MAX_VERTICES) -> Submission:
    """The checks and the transform for GeoJSON-like features (``{"geometry", "properties"}``) in
    ``source_srid``; the hook for the Shapefile / GeoPackage / DXF importers (their ``site`` layer
    features get ``role: site``, their ``facility`` layer ``role: facility``).
    """
    budget = [max_vertices]
    try:
        src = crs_from_epsg(int(source_srid))
    except Exception:
        raise _err("crs", f"未知的坐标系 EPSG:{source_srid}", f"unknown crs EPSG:{source_srid}") from None
    sites, facilities = [], []
    for n, f in enumerate(features, start=1):
        if not isinstance(f, Mapping) or f.get("type", "Feature") != "Feature":
            raise _err("structure", f"第 {n} 个要素不是 Feature", f"item {n} is not a Feature")
        props = f.get("properties") or {}
        if not isinstance(props, Mapping):
            raise _err("structure", f"第 {n} 个要素的 properties 不是对象", f"feature {n}: properties is not an object")
        role = props.get("role")
        if role == "site":
            sites.append((n, f, props))
        elif role == "facility":
            facilities.append((n, f, props))
        else:
            raise _err("role", f"第 {n} 个要素的 role 应为 site 或 facility，实际为 {role!r}",
                       f"feature {n}: role must be site or facility, got {role!r}")
    if not sites:
        raise _err("no_site", "缺少 role 为 site 的项目用地要素", "no feature with role site")
    if len(sites) > 1:
        raise _err("two_sites", f"应只有一个项目用地要素，实际 {len(sites)} 个",
                   f"exactly one site feature expected, got {len(sites)}")
    n, f, props = sites[0]
    site = _geometry(f, ("Polygon", "MultiPolygon"), "项目用地", "the site", budget)
    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _err("name", "项目用地缺少项目名称 name", "the site has no name")
    developer = props.get("developer", "")
    if developer is None:
        developer = ""
    if not isinstance(developer, str):
        raise _err("developer", "建设单位 developer 应为文本", "developer must be text")
    households = _positive_int(props.get("households"))
    if households is None:
        raise _err("households", f"户数 households 缺失或不是正整数（{props.get('households')!r}）",
                   f"households missing or not a positive integer ({props.get('households')!r})")
    population = None
    if props.get("population") not in (None, ""):
        population = _positive_int(props.get("population"))
        if population is None:
            raise _err("population", f"人口 population 应为正整数（{props.get('population')!r}）",
                       f"population must be a positive integer ({props.get('population')!r})")
    facs = []
    for n, f, props in facilities:
        geom = _geometry(f, ("Point", "Polygon"), f"第 {n} 个要素（设施）", f"feature {n} (facility)", budget)
        kind = props.get("kind") or "community_service"
        if kind not in FACILITY_KINDS:
            raise _err("kind", f"第 {n} 个要素的设施类型 {kind!r} 无效（可用：{', '.join(FACILITY_KINDS)}）",
                       f"feature {n}: unknown facility kind {kind!r} (one of {', '.join(FACILITY_KINDS)})")
        area = _positive_float(props.get("floor_area_m2"))
        if area is None:
            raise _err("facility_area", f"第 {n} 个要素（设施）缺少建筑面积 floor_area_m2 或不是正数",
                       f"feature {n} (facility): floor_area_m2 missing or not positive")
        fname = props.get("name") if isinstance(props.get("name"), str) else ""
        facs.append((kind, area, geom, fname))

    # coordinates: lon/lat in China, or a projected CRS whose numbers are not lon/lat
    all_xy = np.vstack([shapely.get_coordinates(site)] + [shapely.get_coordinates(g) for _, _, g, _ in facs])
    if src.is_geographic:
        _check_lonlat(all_xy)
    elif (np.abs(all_xy[:, 0]) <= 180).all() and (np.abs(all_xy[:, 1]) <= 90).all():
        raise _err("crs", f"坐标看起来是经纬度，但坐标系为投影坐标 EPSG:{source_srid}",
                   f"the coordinates look like lon/lat but the crs is the projected EPSG:{source_srid}")
    if int(source_srid) != int(storage_srid):
        tr = transformer(int(source_srid), int(storage_srid))   # cached (building one costs ~100 ms)

        def fwd(xy):
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        site = shapely.transform(site, fwd)
        facs = [(k, a, shapely.transform(g, fwd), nm) for k, a, g, nm in facs]
        if not np.isfinite(shapely.get_coordinates(site)).all():
            raise _err("crs", "坐标无法转换到存储坐标系", "the coordinates cannot be transformed")
        if not src.is_geographic:
            back = transformer(int(storage_srid), 4326)
            lon, lat = back.transform(*shapely.get_coordinates(site).T)
            _check_lonlat(np.column_stack([lon, lat]))
    if not site.is_valid:
        reason = shapely.is_valid_reason(site)
        raise _err("invalid_polygon", f"项目用地多边形无效：{reason}", f"the site polygon is invalid: {reason}")
    if site.area <= 0:
        raise _err("invalid_polygon", "项目用地面积为零", "the site has zero area")
    for i, (_, _, g, _) in enumerate(facs):
        if g.geom_type == "Polygon" and (not g.is_valid or g.area <= 0):
            raise _err("invalid_polygon", f"设施占地多边形无效：{shapely.is_valid_reason(g)}",
                       f"a facility footprint is invalid: {shapely.is_valid_reason(g)}")
    if site.geom_type == "Polygon":
        site = shapely.MultiPolygon([site])
    project = Project(name=name.strip(), developer=developer.strip(), households=households, site=site,
                      facilities=tuple(ProjectFacility(k, a, g, nm) for k, a, g, nm in facs),
                      population_declared=population)
    return Submission(project, int(source_srid))


def parse_submission(data: bytes | str | Mapping, *, srid: int | None = None, storage_srid: int = 4547,
                     max_bytes: int = MAX_BYTES) -> Submission:
    """Parse GeoJSON text (or an already-decoded dict) into a :class:`Submission`.

    Parameters
    ----------
    data : bytes, str or dict
        The FeatureCollection.
    srid : int, optional, keyword-only
        EPSG code of the coordinates; overrides the ``crs`` member. Default: the ``crs`` member,
        else lon/lat (EPSG:4326).
    storage_srid : int, keyword-only
        The storage CRS (``settings.GIS_SRID``).

    Raises
    ------
    SubmissionError
        With the reason (``code``, ``message_zh``, ``message_en``).

    Examples
    --------
    >>> fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
    ...     "role": "site", "name": "A", "households": 100}, "geometry": {"type": "Polygon",
    ...     "coordinates": [[[114.9, 40.8], [114.901, 40.8], [114.901, 40.801], [114.9, 40.8]]]}}]}
    >>> parse_submission(fc).project.households
    100
    >>> fc["features"][0]["properties"]["households"] = 0
    >>> parse_submission(fc)
    Traceback (most recent call last):
    ...
    layers.analysis.submission.SubmissionError: households missing or not a positive integer (0)
    """
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise _err("too_large", "文件过大", "the file is too large")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _err("encoding", "文件不是 UTF-8 编码的 GeoJSON", "the file is not UTF-8 GeoJSON") from None
    if isinstance(data, str):
        if len(data) > max_bytes:
            raise _err("too_large", "文件过大", "the file is too large")
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise _err("json", f"不是有效的 JSON：{exc}", f"not valid JSON: {exc}") from None
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        raise _err("structure", "应为 GeoJSON FeatureCollection", "a GeoJSON FeatureCollection is expected")
    features = data.get("features")
    if not isinstance(features, list):
        raise _err("structure", "FeatureCollection 缺少 features 数组", "the FeatureCollection has no features array")
    if len(features) > MAX_FEATURES:
        raise _err("too_large", "要素过多", "too many features")
    member = _crs_from_member(data.get("crs"))
    source = int(srid) if srid is not None else (member if member is not None else 4326)
    return project_from_features(features, source_srid=source, storage_srid=storage_srid)
