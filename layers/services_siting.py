"""Siting runs: where new shelters or micro fire stations should go (issue 6).

The one path that the command (``manage.py site``), the page (``gisportal/views_siting.py``) and the
API call. It loads demand, existing facilities and candidate sites as arrays, builds the sparse
coverage matrix (straight-line or along roads), calls the pure solvers in
:mod:`layers.analysis.siting`, and records the run as a :class:`layers.models.Job` (kind ``siting``)
with its parameters, the data versions it read and the result document.

Demand, distances and existing facilities come from the coverage service
(:mod:`layers.services_coverage`), so both analyses see the same people and the same roads:
the cells of the active population raster (else grid polygons as a 100 m lattice of points), and
existing shelters (site polygons, distance to the nearest point) or fire stations (points).

Objectives
    ``lscp`` the fewest new sites so that every coverable demand point is covered; ``mclp`` the best
    ``p`` new sites by population covered; ``cmclp`` (shelters) the best ``p`` new sites by population
    *served* within reach without exceeding any shelter's capacity (existing shelters keep theirs).
Existing facilities
    With ``existing=True`` (default) the existing facilities of the KIND (optionally one shelter level
    or fire-station kind) cover the demand within ``radius_m`` and are never candidates; with
    ``existing=False`` they are ignored. Candidates on the land of an existing shelter, or within
    ``EXCLUDE_NEAR_M`` of an existing facility point, are always dropped (SITE-NO-SHELTER).
Candidates
    ``None``: a square lattice ``spacing_m`` apart inside the grids of ``area`` (or of the whole
    city); ``"layer"``: the ``candidates`` layer (:class:`layers.models.CandidateSite`); a path: a
    GeoJSON file of lon/lat points (RFC 7946) with optional ``code``, ``name``, ``capacity_persons``
    and ``effective_area_m2`` properties. ``exclude``: a GeoJSON file of lon/lat (Multi)Polygons
    (water, protected or private land, hazards); candidates inside them are dropped too.
Demand
    ``"raster"`` (default): the populated cells of the active population raster, else (no raster)
    the grids as a 100 m lattice of points; ``"grids"``: that lattice even when a raster is active;
    ``"grid_points"``: one point per populated grid (its representative point, the grid's whole
    population), the unit of 网格化管理: "every grid within reach", far fewer points.
Area
    District, street, community or grid codes (6, 9, 12 or 15 digits). Demand is restricted to the
    grids whose codes start with one of them, and generated candidates lie inside those grids.
Capacity (cmclp)
    A candidate's ``capacity_persons``, else its ``effective_area_m2`` ÷ the emergency shelter
    per-capita area (``GISPORTAL_RULES``), else ``capacity`` (persons), else
    ``DEFAULT_CANDIDATE_CAPACITY``: GB 21734-2008's recommended 2,000 m² emergency site at 1 m² a
    person (GB 50413-2007).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from xml.sax.saxutils import escape

import numpy as np
import scipy.sparse
import shapely
from django.conf import settings
from .analysis.transform import transformer

from .analysis.errors import BilingualError
from . import models, services
from . import services_coverage as cov_svc
from .analysis import siting

__all__ = [
    "KINDS", "OBJECTIVES", "METHODS", "DEMANDS", "SitingInputError", "siting_compute", "candidates_read",
    "candidates_lattice", "result_geojson", "result_csv", "result_kml", "result_gpkg",
]

KINDS = ("shelters", "fire_stations")
OBJECTIVES = ("lscp", "mclp", "cmclp")
METHODS = ("euclidean", "network")
DEMANDS = ("raster", "grids", "grid_points")

DEFAULT_SPACING_M = 200.0
#: More candidates than this are refused (choose an area or a wider spacing).
MAX_CANDIDATES = 60_000
#: A candidate this close to an existing facility point is that facility: never a new site.
EXCLUDE_NEAR_M = 1.0
#: GB 21734-2008 recommends emergency shelter sites of at least 2,000 m²; at GB 50413-2007's
#: 1 m² a person that holds 2,000 persons.
DEFAULT_CANDIDATE_CAPACITY = 2000.0
#: Largest candidates file read (bytes).
MAX_CANDIDATES_FILE = 50 * 1024 * 1024
#: China's lon/lat box (STANDARDS.md, Coordinates): a point outside it is not lon/lat in China.
CHINA_LON = (73.5, 135.1)
CHINA_LAT = (3.8, 53.6)

ProgressFn = Callable[[float, str], None]


class SitingInputError(BilingualError):
    """Bad input for a siting run (the command exits 2 with :meth:`message`)."""



@dataclass(frozen=True)
class _Candidates:
    source: str             # "generated", "layer" or "file"
    codes: list
    names: list
    xy: np.ndarray          # (n, 2) GIS_SRID
    capacity: np.ndarray    # persons; NaN where the candidate gives none
    excluded: int           # dropped as existing shelter land / existing facility points
    version: str
    excluded_zone: int = 0  # of those, dropped because they lie in an exclusion zone


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _number(value, name: str, zh: str, *, integer: bool = False, positive: bool = True):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SitingInputError(name, f"{zh}应为数字：{value}", f"{name} must be a number: {value!r}") from None
    if not math.isfinite(x):
        raise SitingInputError(name, f"{zh}不能为无穷：{value}", f"{name} must be finite: {value!r}")
    if integer:
        if x != int(x):
            raise SitingInputError(name, f"{zh}应为整数：{value}", f"{name} must be an integer: {value!r}")
        x = int(x)
    if positive and x <= 0:
        raise SitingInputError(name, f"{zh}应大于 0：{value}", f"{name} must be > 0: {value!r}")
    return x


def _validate(kind, objective, radius_m, p, spacing_m, method, time_limit_s, curve_k, capacity,
              level, facility_kind, demand="raster"):
    if kind not in KINDS:
        raise SitingInputError("kind", f"未知的设施类别 {kind}（可选：{', '.join(KINDS)}）",
                               f"unknown KIND {kind!r} (one of: {', '.join(KINDS)})")
    if objective not in OBJECTIVES:
        raise SitingInputError("objective", f"未知的目标 {objective}（可选：lscp、mclp、cmclp）",
                               f"unknown objective {objective!r} (lscp, mclp or cmclp)")
    if method not in METHODS:
        raise SitingInputError("method", f"未知的距离方法 {method}（可选：euclidean、network）",
                               f"unknown method {method!r} (euclidean or network)")
    if demand not in DEMANDS:
        raise SitingInputError("demand", f"未知的需求类型 {demand}（可选：{'、'.join(DEMANDS)}）",
                               f"unknown demand {demand!r} (one of: {', '.join(DEMANDS)})")
    if radius_m is None:
        raise SitingInputError("radius", "请给出服务半径 --radius-m", "give the service distance --radius-m")
    radius = _number(radius_m, "radius", "服务半径")
    if objective == "cmclp" and kind != "shelters":
        raise SitingInputError("objective", "cmclp（容量约束）只适用于避难场所（shelters）",
                               "cmclp (capacities) applies to shelters only")
    if objective in ("mclp", "cmclp"):
        if p is None:
            raise SitingInputError("p", f"{objective} 需要给出新增数量 --p", f"{objective} needs --p (sites to add)")
        p = _number(p, "p", "新增数量 p", integer=True)
    elif p is not None:
        raise SitingInputError("p", "--p 只适用于 mclp 和 cmclp", "--p applies to mclp and cmclp only")
    spacing = _number(spacing_m, "spacing", "候选点间距")
    limit = _number(time_limit_s, "time_limit", "时间限制")
    k = _number(curve_k, "curve", "曲线最大新增数 K", integer=True) if curve_k is not None else None
    cap = _number(capacity, "capacity", "候选容量") if capacity is not None else None
    if capacity is not None and objective != "cmclp":
        raise SitingInputError("capacity", "候选容量只适用于 cmclp", "a candidate capacity applies to cmclp only")
    if kind == "shelters" and facility_kind:
        raise SitingInputError("facility_kind", "--facility-kind 不适用于避难场所，请用 --level",
                               "--facility-kind does not apply to shelters; use --level")
    if kind == "fire_stations" and level:
        raise SitingInputError("level", "--level 只适用于避难场所（shelters）", "--level applies to shelters only")
    return radius, p, spacing, limit, k, cap


_AREA_MODELS = {6: models.District, 9: models.Street, 12: models.Community, 15: models.Grid}  # by code length


def _area_codes(area) -> list[str]:
    if area is None or area == "" or area == []:
        return []
    raw = area.split(",") if isinstance(area, str) else list(area)
    codes = sorted({str(c).strip() for c in raw if str(c).strip()})
    for code in codes:
        model = _AREA_MODELS.get(len(code))
        if model is None or not code.isdigit() or not model.objects.filter(code=code).exists():
            raise SitingInputError("area", f"未知的区域代码 {code}（区县 6 位、街道 9 位、社区 12 位、网格 15 位）",
                                   f"unknown area code {code!r} (district 6, street 9, community 12, grid 15 digits)")
    return codes


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------
def _to_srid():
    return transformer(4326, settings.GIS_SRID)


def _to_lonlat():
    return transformer(settings.GIS_SRID, 4326)


def _cap_of(props: dict, per_capita_m2: float) -> float:
    for key in ("capacity_persons", "capacity"):
        v = props.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            return float(v)
    v = props.get("effective_area_m2")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v) / per_capita_m2
    return float("nan")


def _read_features(path: str | Path, code: str, zh: str, en: str) -> list:
    """The features of a GeoJSON file (a FeatureCollection or one Feature), at most
    ``MAX_CANDIDATES_FILE`` bytes; :class:`SitingInputError` ``code`` naming the file (``zh`` / ``en``:
    what the file is, e.g. 候选文件 / candidates file) when it cannot be read or holds no features."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CANDIDATES_FILE:
            raise SitingInputError(code, f"{zh}过大（{size} 字节）", f"{en} too large ({size} bytes)")
        doc = json.loads(p.read_bytes().decode("utf-8-sig"))
    except SitingInputError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SitingInputError(code, f"无法读取{zh} {p.name}：{type(exc).__name__}",
                               f"cannot read {en} {p.name}: {exc}") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    else:
        feats = None
    if not isinstance(feats, list) or not feats:
        raise SitingInputError(code, f"{p.name} 不是含要素的 GeoJSON FeatureCollection",
                               f"{p.name} is not a GeoJSON FeatureCollection with features")
    return feats


def candidates_read(path: str | Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Read a GeoJSON file of lon/lat candidate points: (codes, names, xy in GIS_SRID, capacity).

    ``capacity`` is persons per candidate (NaN where the file gives none): ``capacity_persons`` or
    ``capacity``, else ``effective_area_m2`` ÷ the emergency shelter per-capita area. Raises
    :class:`SitingInputError` for an unreadable file, non-point features, coordinates that are not
    lon/lat in China (swapped axes are named as such) or duplicate codes.
    """
    feats = _read_features(path, "candidates_file", "候选文件", "candidates file")
    if len(feats) > MAX_CANDIDATES:
        raise SitingInputError("candidates_file", f"候选点过多（{len(feats)} > {MAX_CANDIDATES}）",
                               f"too many candidates ({len(feats)} > {MAX_CANDIDATES})")
    per_capita = float(settings.GISPORTAL_RULES["shelter_per_capita_m2"]["emergency"])
    codes, names, lonlat, caps = [], [], [], []
    for i, f in enumerate(feats):
        geom = f.get("geometry") if isinstance(f, dict) else None
        coords = geom.get("coordinates") if isinstance(geom, dict) else None
        if not isinstance(geom, dict) or geom.get("type") != "Point" or not isinstance(coords, list) \
                or len(coords) < 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                              for c in coords[:2]):
            raise SitingInputError("candidates_file", f"第 {i + 1} 个要素不是点（Point）",
                                   f"feature {i + 1} is not a Point")
        lon, lat = float(coords[0]), float(coords[1])
        if not (CHINA_LON[0] <= lon <= CHINA_LON[1] and CHINA_LAT[0] <= lat <= CHINA_LAT[1]):
            if CHINA_LON[0] <= lat <= CHINA_LON[1] and CHINA_LAT[0] <= lon <= CHINA_LAT[1]:
                raise SitingInputError("candidates_file", f"第 {i + 1} 个点的坐标顺序似乎为（纬度，经度），应为（经度，纬度）",
                                       f"feature {i + 1}: coordinates look like (lat, lon); GeoJSON wants (lon, lat)")
            raise SitingInputError("candidates_file", f"第 {i + 1} 个点不是中国境内的经纬度：{lon}, {lat}",
                                   f"feature {i + 1}: ({lon}, {lat}) is not lon/lat in China (RFC 7946)")
        props = f.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        code = props.get("code", props.get("id"))
        codes.append(str(code) if code not in (None, "") else f"C{i + 1:03d}")
        names.append(str(props.get("name") or ""))
        lonlat.append((lon, lat))
        caps.append(_cap_of(props, per_capita))
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise SitingInputError("candidates_file", f"候选编码重复：{', '.join(dup[:5])}",
                               f"duplicate candidate codes: {', '.join(dup[:5])}")
    ll = np.asarray(lonlat, dtype=np.float64)
    x, y = _to_srid().transform(ll[:, 0], ll[:, 1])
    return codes, names, np.column_stack([x, y]), np.asarray(caps, dtype=np.float64)


def exclusion_read(path: str | Path):
    """Read a GeoJSON file of lon/lat (Multi)Polygons where no new site may go (water, protected or
    private land, hazards): their union in GIS_SRID. Raises :class:`SitingInputError` naming the
    feature for an unreadable file, a non-polygon, coordinates that are not lon/lat in China
    (swapped axes are named as such) or an invalid polygon (with GEOS's reason)."""
    feats = _read_features(path, "exclude_file", "排除区域文件", "exclusion file")
    to_srid = _to_srid()
    polys = []
    for i, f in enumerate(feats):
        geom = f.get("geometry") if isinstance(f, dict) else None
        try:
            g = shapely.from_geojson(json.dumps(geom)) if isinstance(geom, dict) else None
        except (shapely.errors.GEOSException, ValueError, TypeError):
            g = None
        if g is None or g.geom_type not in ("Polygon", "MultiPolygon") or g.is_empty:
            raise SitingInputError("exclude_file", f"第 {i + 1} 个要素不是面（Polygon/MultiPolygon）",
                                   f"feature {i + 1} is not a Polygon or MultiPolygon")
        ll = shapely.get_coordinates(g)
        lon, lat = ll[:, 0], ll[:, 1]
        in_china = (CHINA_LON[0] <= lon) & (lon <= CHINA_LON[1]) & (CHINA_LAT[0] <= lat) & (lat <= CHINA_LAT[1])
        if not in_china.all():
            swapped = (CHINA_LON[0] <= lat) & (lat <= CHINA_LON[1]) & (CHINA_LAT[0] <= lon) & (lon <= CHINA_LAT[1])
            if swapped.all():
                raise SitingInputError(
                    "exclude_file", f"第 {i + 1} 个面的坐标顺序似乎为（纬度，经度），应为（经度，纬度）",
                    f"feature {i + 1}: coordinates look like (lat, lon); GeoJSON wants (lon, lat)")
            raise SitingInputError("exclude_file", f"第 {i + 1} 个面不是中国境内的经纬度",
                                   f"feature {i + 1}: not lon/lat in China (RFC 7946)")
        if not g.is_valid:
            reason = shapely.is_valid_reason(g)
            raise SitingInputError("exclude_file", f"第 {i + 1} 个面无效：{reason}",
                                   f"feature {i + 1}: invalid polygon: {reason}")
        polys.append(shapely.transform(g, lambda c: np.column_stack(to_srid.transform(c[:, 0], c[:, 1]))))
    return shapely.union_all(polys)


def candidates_lattice(region, spacing_m: float) -> np.ndarray:
    """Points of the square lattice ``spacing_m`` apart (centred on multiples of the spacing) that lie
    inside the shapely geometry ``region``; (n, 2) in the region's CRS, west to east, south to north."""
    if region is None or shapely.is_empty(region):
        return np.empty((0, 2))
    s = float(spacing_m)
    x0, y0, x1, y1 = shapely.bounds(region)
    nx = int(np.ceil((x1 - x0) / s)) + 2
    ny = int(np.ceil((y1 - y0) / s)) + 2
    if nx * ny > 50 * MAX_CANDIDATES:
        raise SitingInputError("spacing", f"候选点间距 {s:g} 米过小：请加大间距或选择区域",
                               f"candidate spacing {s:g} m is too small for the area; widen it or choose an area")
    xs = (np.floor(x0 / s) + 0.5 + np.arange(nx)) * s
    ys = (np.floor(y0 / s) + 0.5 + np.arange(ny)) * s
    gx, gy = np.meshgrid(xs, ys)
    x, y = gx.ravel(), gy.ravel()
    shapely.prepare(region)
    inside = shapely.contains_xy(region, x, y)
    return np.column_stack([x[inside], y[inside]])


def _zone_mask(xy: np.ndarray, zone) -> np.ndarray:
    """True where a candidate lies in the exclusion ``zone`` (shapely, GIS_SRID; boundary included)."""
    if zone is None or not len(xy) or shapely.is_empty(zone):
        return np.zeros(len(xy), dtype=bool)
    shapely.prepare(zone)
    return np.asarray(shapely.intersects_xy(zone, xy[:, 0], xy[:, 1]), dtype=bool)


def _exclusion_mask(xy: np.ndarray) -> np.ndarray:
    """True where a candidate lies on an existing shelter site or at an existing facility point."""
    out = np.zeros(len(xy), dtype=bool)
    if not len(xy):
        return out
    shelters = cov_svc._shapely(list(models.Shelter.objects.values_list("geom", flat=True)))
    pts = shapely.points(xy)
    if len(shelters):
        idx, _ = shapely.STRtree(shelters).query(pts, predicate="intersects")
        out[idx] = True
    stations = cov_svc._shapely(list(models.FireStation.objects.values_list("geom", flat=True)))
    if len(stations):
        idx, _ = shapely.STRtree(stations).query(pts, predicate="dwithin", distance=EXCLUDE_NEAR_M)
        out[idx] = True
    return out


def _load_candidates(source, spacing_m: float, region, area: list[str], zone=None) -> _Candidates:
    per_capita = float(settings.GISPORTAL_RULES["shelter_per_capita_m2"]["emergency"])
    if source is None:
        xy = candidates_lattice(region, spacing_m)
        kind = "generated"
        prefix = "G" + (area[0] if len(area) == 1 else "")
        codes = [f"{prefix}-{int(round(x))}-{int(round(y))}" for x, y in xy]
        names = [""] * len(xy)
        caps = np.full(len(xy), np.nan)
        version = cov_svc.digest("lattice", spacing_m, area)
    elif source == "layer":
        rows = list(models.CandidateSite.objects.order_by("code").values_list(
            "code", "name", "capacity_persons", "effective_area_m2", "geom"))
        if not rows:
            raise SitingInputError("candidates", "候选选址图层（candidates）为空", "the candidates layer is empty")
        kind = "layer"
        codes = [r[0] for r in rows]
        names = [r[1] for r in rows]
        xy = np.array([r[4].coords[:2] for r in rows], dtype=np.float64).reshape(-1, 2)
        caps = np.array([float(r[2]) if r[2] is not None else
                         (float(r[3]) / per_capita if r[3] is not None else np.nan) for r in rows])
        version = services.data_version(models.CandidateSite.objects.all())
    else:
        path = Path(source)
        codes, names, xy, caps = candidates_read(path)
        kind = "file"
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    drop = _exclusion_mask(xy)
    in_zone = _zone_mask(xy, zone) & ~drop
    drop |= in_zone
    keep = np.flatnonzero(~drop)
    if len(xy) and not keep.size:
        raise SitingInputError("candidates", "所有候选点都位于现有设施处或排除区域内，没有可选的新址",
                               "every candidate lies at an existing facility or in an exclusion zone; "
                               "nothing to choose")
    if len(keep) > MAX_CANDIDATES:
        raise SitingInputError("candidates", f"候选点过多（{len(keep)} > {MAX_CANDIDATES}）：请加大间距或选择区域",
                               f"too many candidates ({len(keep)} > {MAX_CANDIDATES}); widen the spacing or choose an area")
    if not keep.size:
        raise SitingInputError("candidates", "没有候选点（区域内没有网格？）", "no candidates (no grids in the area?)")
    return _Candidates(kind, [codes[i] for i in keep], [names[i] for i in keep], xy[keep], caps[keep],
                       int(drop.sum()), version, int(in_zone.sum()))


# --------------------------------------------------------------------------------------------
# demand and existing facilities (the coverage service's loaders)
# --------------------------------------------------------------------------------------------
def _demand(grids, area: list[str], demand: str = "raster"):
    surface = models.PopulationSurface.objects.filter(active=True).order_by("-created_at").first() \
        if demand == "raster" else None
    if demand == "grid_points" and len(grids.codes):
        dem = cov_svc.demand_from_grid_points(grids)
    elif surface is not None:
        dem = cov_svc.demand_from_raster(surface, grids)
    elif len(grids.codes) and demand != "grid_points":
        dem = cov_svc.demand_from_grids_lattice(grids)
    else:
        raise SitingInputError("no_demand", "没有需求数据：既没有启用的人口栅格，也没有网格",
                               "no demand: no active population raster and no grids")
    if not area:
        return dem, surface
    in_area = np.array([any(c.startswith(a) for a in area) for c in grids.codes], dtype=bool)
    mask = (dem.grid_idx >= 0) & in_area[np.maximum(dem.grid_idx, 0)]
    sub = cov_svc.Demand(dem.mode, dem.xy[mask], dem.pop[mask], dem.grid_idx[mask],
                          f"{dem.key}:area:{','.join(area)}", dem.surface)
    return sub, surface


def _existing(kind: str, radius: float, level, facility_kind):
    try:
        return cov_svc.sites_load(kind, level, facility_kind, radius, False, cov_svc.rules_current())
    except cov_svc.CoverageInputError as exc:
        if exc.code == "no_facilities":
            return None
        raise SitingInputError(exc.code, exc.zh, exc.en) from None


def _cover(dem, sites, method: str, lines) -> scipy.sparse.csr_array:
    if method == "network":
        m, _key = cov_svc.cover_network(dem, sites, lines)
        return m
    return cov_svc.cover_euclidean(dem, sites)


def _point_sites(cands: _Candidates, radius: float):
    n = len(cands.codes)
    return cov_svc.Sites(pks=np.arange(n), codes=cands.codes, names=cands.names, labels=["candidate"] * n,
                          geoms=shapely.points(cands.xy), radius_m=np.full(n, radius), capacity=None,
                          version=cands.version)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _r(x, nd: int = 3):
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def siting_compute(*, kind: str, objective: str, radius_m: float, p: int | None = None,
                   candidates: str | Path | None = None, spacing_m: float = DEFAULT_SPACING_M,
                   area: str | Sequence[str] | None = None, existing: bool = True,
                   capacity: float | None = None, method: str = "euclidean", time_limit_s: float = 60.0,
                   curve_k: int | None = None, level: str | None = None, facility_kind: str | None = None,
                   demand: str = "raster", exclude: str | Path | None = None, user=None,
                   progress: ProgressFn | None = None) -> dict:
    """Choose new sites for shelters or fire stations, record the run as a Job, return the document.

    Parameters
    ----------
    kind : {"shelters", "fire_stations"}
    objective : {"lscp", "mclp", "cmclp"}
        ``cmclp`` for shelters only.
    radius_m : float
        Service distance (> 0) of new and existing sites alike.
    p : int, optional
        New sites to add (``mclp``, ``cmclp``; not allowed with ``lscp``).
    candidates : None, "layer" or path
        Generated lattice, the ``candidates`` layer, or a GeoJSON file of lon/lat points.
    spacing_m : float
        Lattice spacing of generated candidates.
    area : str or sequence of str, optional
        District/street/community/grid codes (comma-separated in a string): demand and generated
        candidates are restricted to their grids.
    existing : bool
        Existing facilities cover (and are never chosen); ``False`` ignores them.
    capacity : float, optional
        ``cmclp``: persons per candidate lacking its own capacity.
    method : {"euclidean", "network"}
    time_limit_s : float
        For the solver, and again for the curve.
    curve_k : int, optional
        Also compute the population covered with k = 1..curve_k new sites.
    level, facility_kind : str, optional
        Count only existing shelters of this level / fire stations of this kind.
    demand : {"raster", "grids", "grid_points"}
        Raster cells (default; the grid lattice when no raster is active), the grid lattice, or one
        representative point per populated grid (see the module docstring).
    exclude : path, optional
        A GeoJSON file of lon/lat (Multi)Polygons: candidates inside them (boundary included) are
        dropped (``candidates.excluded_zone`` counts them), whatever the candidate source.
    user : User, optional
    progress : callable(fraction, message), optional

    Returns
    -------
    dict
        ``objective, radius_m, p, existing, selected[{code, name, x, y, lon, lat, added_population}],
        count, population_total, population_covered, share_covered, uncoverable_population, status,
        gap, seconds, curve[{k, population_covered, bound, status}]`` (``curve_measure``: ``"covered"``, the
        people within reach, or for ``cmclp`` ``"served"``, within the capacities, as the run itself;
        ``curve_base`` is the k = 0 value), and ``kind, method`` (distance),
        ``solver`` (milp/heuristic), ``objective_value`` and ``bound`` (sites for LSCP, newly covered
        population for MCLP, served population for CMCLP; the bound is proven), ``population_existing``
        (before), ``share_existing``, ``existing_sites``, ``candidates{source, count, excluded,
        spacing_m, excluded_zone}``, ``demand{mode, requested, points}``, ``area``, ``extent_lonlat``
        (the demand points' [west, south, east, north]), ``exclude_zones`` (only with ``exclude``: their
        union as a lon/lat GeoJSON geometry, for the map), ``reduced_shape``, ``seconds_total``,
        ``job_id``, ``data_version``, ``rules_version``. ``gap`` is null when undefined (objective 0).
        For ``cmclp`` also ``population_served_existing`` (what existing sites serve in the solution)
        and ``population_served_before`` (what they serve alone, before any new site).

    Raises
    ------
    SitingInputError
        Bad input (before any Job is recorded).
    layers.services.JobCancelled
        When the Job's cancellation was requested.
    """
    t0 = time.perf_counter()
    radius, p, spacing, limit, curve_k, cap_default = _validate(
        kind, objective, radius_m, p, spacing_m, method, time_limit_s, curve_k, capacity, level, facility_kind,
        demand)
    area_codes = _area_codes(area)
    existing = bool(existing)
    grids = cov_svc.grids_load()
    dem, surface = _demand(grids, area_codes, demand)
    if len(dem.xy) == 0:
        raise SitingInputError("no_demand", "所选区域内没有人口", "no population in the chosen area")
    region = None
    if candidates is None:
        if area_codes:
            in_area = [i for i, c in enumerate(grids.codes) if any(c.startswith(a) for a in area_codes)]
            region = shapely.union_all(grids.geoms[in_area])
        else:
            region = shapely.union_all(grids.geoms)
    zone, zone_version = None, None
    if exclude is not None:
        zone = exclusion_read(exclude)
        zone_version = hashlib.sha256(Path(exclude).read_bytes()).hexdigest()[:16]
    cands = _load_candidates(candidates, spacing, region, area_codes, zone)
    sites = _existing(kind, radius, level, facility_kind) if existing else None
    lines = None
    if method == "network":
        lines = cov_svc.roads_load()
        if len(lines) == 0:
            raise SitingInputError("no_roads", "道路图层为空，无法按路网计算距离",
                                   "the roads layer is empty; cannot use the network method")
    rs = cov_svc.rules_current()
    data = {"grids": grids.version, "existing": sites.version if sites is not None else None,
            "candidates": cands.version, "population_surface": surface.sha256 if surface is not None else None,
            "roads": cov_svc.net_mod.network_version_key(lines)[:16] if lines is not None else None}
    if zone_version is not None:  # (only then: the versions of runs without one stay as they were)
        data["exclude"] = zone_version
    version = cov_svc.digest(sorted(data.items()))
    params = {"kind": kind, "objective": objective, "radius_m": radius, "p": p,
              "candidates": cands.source if candidates in (None, "layer") else f"file:{Path(candidates).name}",
              "spacing_m": spacing if candidates is None else None, "area": area_codes, "existing": existing,
              "capacity": cap_default, "method": method, "time_limit_s": limit, "curve_k": curve_k,
              "level": level, "facility_kind": facility_kind, "demand": demand,
              "exclude": f"file:{Path(exclude).name}" if exclude is not None else None,
              "rules_version": rs.version,
              "data": data}
    job = services.job_start(models.Job.Kind.SITING, params, user=user, data_version=version)

    with services.job_recording(job, progress) as step:
        step(0.1, "data loaded")
        with siting.interruptible(services.job_stop_poll(job)):  # a cancel stops the solver within seconds
            doc = _compute(objective, radius, p, dem, cands, sites, method, lines, limit, curve_k, cap_default,
                           step)
        doc = {"kind": kind, "objective": objective, "radius_m": radius, "p": p, "existing": existing,
               "method": method, **doc,
               "candidates": {"source": cands.source, "count": len(cands.codes), "excluded": cands.excluded,
                              "spacing_m": spacing if candidates is None else None,
                              "excluded_zone": cands.excluded_zone},
               "demand": {"mode": dem.mode, "requested": demand, "points": int(len(dem.xy))},
               "area": area_codes, "extent_lonlat": _extent_lonlat(dem.xy),
               "level": level, "facility_kind": facility_kind, "rules_version": rs.version,
               "data_version": version, "job_id": job.pk, "seconds_total": _r(time.perf_counter() - t0)}
        if zone is not None:  # for the map: where no site could go (lon/lat, simplified to ~1 m)
            doc["exclude_zones"] = _zones_lonlat(zone)
        services.job_finish(job, result=doc)
    if progress is not None:
        progress(1.0, "done")
    return doc


def _extent_lonlat(xy: np.ndarray) -> list[float] | None:
    """[west, south, east, north] in lon/lat of the demand points (the study area the map shows)."""
    if len(xy) == 0:
        return None
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    lon, lat = _to_lonlat().transform(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]))
    return [_r(min(lon), 6), _r(min(lat), 6), _r(max(lon), 6), _r(max(lat), 6)]


def lonlat_geojson(geom, tolerance_m: float, grid_deg: float | None = None) -> dict:
    """A shapely geometry in GIS_SRID as a GeoJSON geometry in lon/lat, simplified to ``tolerance_m``
    first (one pyproj call for all its coordinates), optionally snapped to a ``grid_deg`` grid."""
    to_ll = _to_lonlat()
    g = shapely.simplify(geom, tolerance_m)
    g = shapely.transform(g, lambda c: np.column_stack(to_ll.transform(c[:, 0], c[:, 1])))
    if grid_deg is not None:
        g = shapely.set_precision(g, grid_deg)
    return json.loads(shapely.to_geojson(g))


def _zones_lonlat(zone) -> dict:
    """The exclusion zones' union (GIS_SRID) in lon/lat, simplified to 1 m and rounded to 1e-6 degrees
    (about 0.1 m), so the map draws what the run excluded."""
    return lonlat_geojson(zone, 1.0, 1e-6)


def area_outline(codes: Sequence[str]) -> dict | None:
    """The outline of a run's ``area`` (district, street, community or grid codes) in lon/lat,
    simplified to 5 m; None for the whole city (no codes) or when none of the units exists any more."""
    wkb = []
    for code in codes:
        model = _AREA_MODELS.get(len(code))
        if model is not None:
            wkb += [bytes(g.wkb) for g in model.objects.filter(code=code).values_list("geom", flat=True)]
    return lonlat_geojson(shapely.union_all(shapely.from_wkb(wkb)), 5.0) if wkb else None


def _compute(objective, radius, p, dem, cands: _Candidates, sites, method, lines, limit, curve_k,
             cap_default, step) -> dict:
    A = _cover(dem, _point_sites(cands, radius), method, lines)
    E = _cover(dem, sites, method, lines) if sites is not None else None
    existing_mask = np.asarray(E.sum(axis=1)).reshape(-1) > 0 if E is not None else np.zeros(len(dem.xy), bool)
    step(0.3, "coverage matrices built")
    if objective == "lscp":
        res = siting.lscp(A, existing_mask, limit, pop=dem.pop)
    elif objective == "mclp":
        res = siting.mclp(A, dem.pop, p, existing_mask, limit)
    else:
        caps = np.where(np.isnan(cands.capacity),
                        cap_default if cap_default is not None else DEFAULT_CANDIDATE_CAPACITY, cands.capacity)
        if sites is not None:
            res = siting.cmclp(A, dem.pop, p, caps, existing_capacity=np.asarray(sites.capacity, dtype=float),
                               existing_A=E, time_limit_s=limit)
        else:
            res = siting.cmclp(A, dem.pop, p, caps, time_limit_s=limit)
    step(0.7 if curve_k else 0.9, f"{objective} solved ({res.status})")
    to_ll = _to_lonlat()
    sel = np.asarray(res.selected_idx, dtype=np.intp)
    lon, lat = to_ll.transform(cands.xy[sel, 0], cands.xy[sel, 1]) if sel.size else ([], [])
    selected = [{"code": cands.codes[j], "name": cands.names[j], "x": _r(cands.xy[j, 0], 2),
                 "y": _r(cands.xy[j, 1], 2), "lon": _r(lo, 7), "lat": _r(la, 7),
                 "added_population": _r(a)}
                for j, lo, la, a in zip(sel.tolist(), np.atleast_1d(lon).tolist(), np.atleast_1d(lat).tolist(),
                                        res.added_population.tolist())]
    if objective == "cmclp":
        cap_of = {cands.codes[j]: _r(caps[j]) for j in sel.tolist()}
        for s in selected:
            s["capacity"] = cap_of[s["code"]]
    curve = []
    curve_base = float(dem.pop[existing_mask].sum())
    served_before = None

    def curve_step(k: int, k_max: int) -> None:  # progress per k; raises JobCancelled when asked to stop
        step(0.7 + 0.2 * k / k_max, f"curve: k = {k} of {k_max}")

    if curve_k and objective == "cmclp":  # served with capacities, like the run itself
        c = siting.capacitated_curve(A, dem.pop, curve_k, caps,
                                     existing_capacity=None if sites is None else np.asarray(sites.capacity, float),
                                     existing_A=E, time_limit_s=limit, progress=curve_step)
        curve_base = served_before = c.population_existing
    elif objective == "cmclp":  # what the existing sites serve alone (p = 0: one assignment LP)
        served_before = 0.0 if sites is None else siting.cmclp(
            A, dem.pop, 0, caps, existing_capacity=np.asarray(sites.capacity, dtype=float), existing_A=E,
            time_limit_s=limit).objective
    elif curve_k:
        c = siting.coverage_curve(A, dem.pop, curve_k, existing_mask, limit, progress=curve_step)
    if curve_k:
        curve = [{"k": int(k), "population_covered": _r(v), "bound": _r(b), "status": st}
                 for k, v, b, st in zip(c.k.tolist(), c.population_covered.tolist(), c.bound.tolist(), c.status)]
        step(0.9, "curve computed")
    total = res.population_total
    before = float(dem.pop[existing_mask].sum())
    doc = {"selected": selected, "count": res.count, "population_total": _r(total),
           "population_existing": _r(before),
           "population_covered": _r(res.population_covered),
           "share_existing": _r(before / total if total > 0 else 0.0, 6),
           "share_covered": _r(res.population_covered / total if total > 0 else 0.0, 6),
           "uncoverable_population": _r(res.uncoverable_population),
           "status": res.status, "solver": res.method, "objective_value": _r(res.objective),
           "bound": _r(res.bound), "gap": _r(res.gap, 6), "seconds": _r(res.seconds),
           "curve": curve, "curve_measure": "served" if objective == "cmclp" else "covered",
           "curve_base": _r(curve_base), "existing_sites": int(E.shape[1]) if E is not None else 0,
           "reduced_shape": [int(v) for v in res.reduced_shape], "message": res.message}
    if objective == "cmclp":
        doc["population_served_existing"] = _r(res.population_existing)
        doc["population_served_before"] = _r(served_before)
        doc["capacity_default"] = cap_default if cap_default is not None else DEFAULT_CANDIDATE_CAPACITY
    return doc


# --------------------------------------------------------------------------------------------
# exports of the chosen sites
# --------------------------------------------------------------------------------------------
_SITE_FIELDS = ("rank", "code", "name", "added_population", "capacity", "lon", "lat", "x", "y")


def _site_rows(doc: dict):
    for i, s in enumerate(doc.get("selected", []), start=1):
        yield {"rank": i, **{k: s.get(k) for k in _SITE_FIELDS if k != "rank"}}


def result_geojson(doc: dict) -> dict:
    """The chosen sites as a FeatureCollection (EPSG:4326, RFC 7946) with the run's parameters."""
    feats = [{"type": "Feature", "properties": {k: v for k, v in row.items() if k not in ("lon", "lat")},
              "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]}} for row in _site_rows(doc)]
    meta = {k: doc.get(k) for k in ("kind", "objective", "radius_m", "p", "existing", "method", "status",
                                     "population_total", "population_existing", "population_covered",
                                     "job_id", "data_version")}
    return {"type": "FeatureCollection", "name": f"siting-{doc.get('kind')}-{doc.get('objective')}",
            "siting": meta, "features": feats}


def result_gpkg(doc: dict, path) -> int:
    """Write the chosen sites as a GeoPackage at ``path`` (layer ``sites``, points in lon/lat EPSG:4326
    like every other export, the fields of the CSV); returns the rows written. An empty selection
    still gives the layer, with no rows."""
    import pyogrio.raw

    rows = list(_site_rows(doc))
    keys = [k for k in _SITE_FIELDS if k not in ("lon", "lat")]
    _, data = cov_svc._ogr_columns([{k: r[k] for k in keys} for r in rows] or [{k: None for k in keys}])
    if not rows:
        data = [d[:0] for d in data]
    wkb = np.array([shapely.to_wkb(shapely.Point(r["lon"], r["lat"])) for r in rows], dtype=object)
    pyogrio.raw.write(str(path), wkb, data, keys, driver="GPKG", layer="sites", crs="EPSG:4326",
                      geometry_type="Point")
    return len(rows)


def _csv_cell(v):
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # against formula injection
    return "" if v is None else v


def result_csv(doc: dict) -> str:
    """The chosen sites as CSV (lon/lat EPSG:4326 and x/y in GIS_SRID)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(_SITE_FIELDS)
    for row in _site_rows(doc):
        w.writerow([_csv_cell(row[k]) for k in _SITE_FIELDS])
    return buf.getvalue()


def result_kml(doc: dict) -> str:
    """The chosen sites as KML 2.2 placemarks (lon/lat)."""
    title = f"siting {doc.get('kind')} {doc.get('objective')} {doc.get('radius_m')} m"
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<kml xmlns="http://www.opengis.net/kml/2.2"><Document>',
           f"<name>{escape(title)}</name>"]
    for row in _site_rows(doc):
        data = "".join(f'<Data name="{escape(k)}"><value>{escape("" if row[k] is None else str(row[k]))}</value></Data>'
                       for k in _SITE_FIELDS if k not in ("lon", "lat"))
        out.append(f"<Placemark><name>{escape(str(row['code']))}</name><ExtendedData>{data}</ExtendedData>"
                   f"<Point><coordinates>{row['lon']},{row['lat']}</coordinates></Point></Placemark>")
    out.append("</Document></kml>")
    return "\n".join(out)
