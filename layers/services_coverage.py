"""Coverage runs: who is within reach of a shelter, a fire station or a service facility (issue 5).

The one path that the command (``manage.py coverage``), the page (``gisportal/views_coverage.py``) and
the API call. It maps rows to arrays, calls the pure engine (:mod:`layers.analysis.coverage`,
:mod:`layers.analysis.raster`, :mod:`layers.analysis.network`), and records the run as a
:class:`layers.models.Job` (kind ``coverage``) with its parameters, the data versions it read and the
result document, so a run can be reproduced and compared with an earlier one.

Demand
    ``raster``: the cells of the active :class:`~layers.models.PopulationSurface` holding people,
    as points at their centres; each cell belongs to the grid containing its centre. ``grids`` (or
    no active raster): grid polygons with their population spread evenly; the covered population
    of a grid is population × (share of its area within reach). For the network method and the
    capacity LP, grid demand becomes a lattice of points (``GRID_SAMPLE_M`` apart, at least one
    per grid) carrying equal parts of the grid's population.
Facilities
    shelters (site polygons, optionally one level), fire stations (points, optionally one kind),
    service facilities (footprint polygon when drawn, else the point; optionally one kind). The
    distance to a polygon is to its nearest point (0 inside).
Service distance
    ``radius_m`` of the run when given (``--radius-m``), else the facility's own
    ``service_radius_m`` when set, else the rule set (``settings.GISPORTAL_RULES``): per shelter
    level, ``fire_response_distance_m`` for fire stations, ``life_circle_m`` per facility kind.
Distance
    ``euclidean`` in ``GIS_SRID``; ``network`` along the roads layer (built once per roads version
    and cached in-process). A polygon site is entered anywhere on its boundary: the boundary is
    sampled every ``GATE_SPACING_M`` and a demand point reaches the site when it reaches one of
    those gates (or lies inside the site).
Capacity (shelters)
    The exact transportation LP (:func:`layers.analysis.coverage.capacitated_coverage`), shelter
    capacity from :attr:`layers.models.Shelter.capacity`.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse
import shapely
import shapely.geometry
from django.conf import settings

from . import models, services
from .analysis.errors import BilingualError
from .analysis import coverage as cov
from .analysis import network as net_mod
from .analysis import raster as ras
from .analysis.rules import RuleSet

__all__ = [
    "KINDS", "METHODS", "DEMANDS", "CoverageInputError", "coverage_check", "coverage_compute", "coverage_geometries",
    "result_csv", "result_grid_features", "result_facility_features", "result_gpkg", "result_pdf",
    "network_cached",
]

KINDS = ("shelters", "fire_stations", "facilities")
METHODS = ("euclidean", "network")
DEMANDS = ("raster", "grids")

#: Lattice spacing of the points that stand for grid demand on the network and in the LP.
GRID_SAMPLE_M = 100.0
#: Spacing of the boundary samples ("gates") through which a polygon site is reached by road.
GATE_SPACING_M = 50.0
#: Road ends closer than this are joined when the network is built.
ROAD_SNAP_TOL_M = 1.0

ProgressFn = Callable[[float, str], None]


class CoverageInputError(BilingualError):
    """Bad input for a coverage run (the command exits 2 with :meth:`message`)."""



# --------------------------------------------------------------------------------------------
# in-process caches (network per roads version, demand points per raster and grid version)
# --------------------------------------------------------------------------------------------
class _LRU:
    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


_NETWORKS = _LRU(4)
_DEMAND = _LRU(4)
_SNAPS = _LRU(8)


def network_cached(lines) -> tuple[str, net_mod.RoadNetwork]:
    """(roads version key, network) for road lines, built once per version (in-process LRU)."""
    key = net_mod.network_version_key(lines)
    return key, _NETWORKS.get(key, lambda: net_mod.build_network(lines, ROAD_SNAP_TOL_M))


# --------------------------------------------------------------------------------------------
# rows -> arrays
# --------------------------------------------------------------------------------------------
def _shapely(geoms) -> np.ndarray:
    wkb = [bytes(g.wkb) for g in geoms]
    return shapely.from_wkb(wkb) if wkb else np.empty(0, dtype=object)


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Sites:
    pks: np.ndarray
    codes: list
    names: list
    labels: list          # level or kind
    geoms: np.ndarray     # shapely
    radius_m: np.ndarray
    capacity: np.ndarray | None
    version: str
    #: where each site's radius came from: "run" (radius_m given), "facility" (its own), "rules"
    radius_source: tuple = ()
    #: the rule set's radius per site (NaN where the rules have none for its level/kind)
    rule_radius_m: np.ndarray | None = None


@dataclass(frozen=True)
class Grids:
    codes: list
    population: np.ndarray
    geoms: np.ndarray
    community: list       # (code, name) per grid
    street: list
    district: list
    version: str


@dataclass(frozen=True)
class Demand:
    mode: str             # "raster", "grids" (lattice) or "grid_points" (one per grid)
    xy: np.ndarray
    pop: np.ndarray
    grid_idx: np.ndarray
    key: str
    surface: dict | None


def rules_current() -> RuleSet:
    return RuleSet.from_settings(settings.GISPORTAL_RULES)


def _choices(model_choices) -> list[str]:
    return [value for value, _label in model_choices]


def sites_load(kind: str, level: str | None, facility_kind: str | None, radius_m: float | None,
                capacity: bool, rs: RuleSet) -> Sites:
    if kind == "shelters":
        if facility_kind:
            raise CoverageInputError("facility_kind", "--facility-kind 不适用于避难场所，请用 --level",
                                     "--facility-kind does not apply to shelters; use --level")
        levels = _choices(models.Shelter.Level.choices)
        if level and level not in levels:
            raise CoverageInputError("level", f"未知的避难场所级别 {level}（可选：{', '.join(levels)}）",
                                     f"unknown shelter level {level!r} (one of: {', '.join(levels)})")
        qs = models.Shelter.objects.all()
        if level:
            qs = qs.filter(level=level)
        rows = list(qs.order_by("code"))
        labels = [s.level for s in rows]
        geoms = _shapely([s.geom for s in rows])
        cap = np.array([float(s.capacity) for s in rows], dtype=np.float64)
        own = [s.service_radius_m for s in rows]
        attrs = [(s.pk, s.code, s.level, s.effective_area_m2, s.capacity_persons, s.service_radius_m)
                 for s in rows]
        rule = [rs.shelter_service_distance_m.get(lv) for lv in labels]
        if radius_m is None:
            missing = sorted({lv for lv, o, r in zip(labels, own, rule) if o is None and r is None})
            if missing:
                raise CoverageInputError("radius", f"规则中没有级别 {', '.join(missing)} 的服务半径，请给出 --radius-m",
                                         f"no service distance for level {', '.join(missing)}; give --radius-m")
    else:
        if level:
            raise CoverageInputError("level", "--level 只适用于避难场所（shelters）",
                                     "--level applies to shelters only")
        if capacity:
            raise CoverageInputError("capacity", "--capacity 只适用于避难场所（shelters）",
                                     "--capacity applies to shelters only")
        model = models.FireStation if kind == "fire_stations" else models.ServiceFacility
        kinds = _choices(model.Kind.choices)
        if facility_kind and facility_kind not in kinds:
            raise CoverageInputError("facility_kind", f"未知的设施类型 {facility_kind}（可选：{', '.join(kinds)}）",
                                     f"unknown {kind} kind {facility_kind!r} (one of: {', '.join(kinds)})")
        qs = model.objects.all()
        if facility_kind:
            qs = qs.filter(kind=facility_kind)
        rows = list(qs.order_by("code"))
        labels = [r.kind for r in rows]
        own = [r.service_radius_m for r in rows]
        if kind == "facilities":
            geoms = _shapely([r.footprint if r.footprint is not None else r.geom for r in rows])
            attrs = [(r.pk, r.code, r.kind, r.status, r.service_radius_m) for r in rows]
            rule = [rs.life_circle_m.get(k) for k in labels]
        else:
            geoms = _shapely([r.geom for r in rows])
            attrs = [(r.pk, r.code, r.kind, r.service_radius_m) for r in rows]
            rule = [rs.fire_response_distance_m] * len(rows)
        cap = None
        if radius_m is None:
            missing = sorted({k for k, o, r in zip(labels, own, rule) if o is None and r is None})
            if missing:
                raise CoverageInputError(
                    "radius", f"规则中没有设施类型 {', '.join(missing)} 的服务半径，请给出 --radius-m",
                    f"no service distance for facility kind {', '.join(missing)}; give --radius-m")
    if not rows:
        what = {"shelters": ("避难场所", "shelters"), "fire_stations": ("消防站", "fire stations"),
                "facilities": ("服务设施", "facilities")}[kind]
        raise CoverageInputError("no_facilities", f"没有符合条件的{what[0]}", f"no {what[1]} match the filter")
    rule_radius = np.array([np.nan if r is None else float(r) for r in rule], dtype=np.float64)
    if radius_m is not None:  # the run's distance beats every facility's own
        radius = np.full(len(rows), float(radius_m))
        source = ("run",) * len(rows)
    else:
        radius = np.array([float(o) if o is not None else r for o, r in zip(own, rule_radius)], dtype=np.float64)
        source = tuple("facility" if o is not None else "rules" for o in own)
    version = digest(services.data_version(qs), attrs)
    return Sites(pks=np.array([r.pk for r in rows], dtype=np.int64), codes=[r.code for r in rows],
                  names=[r.name for r in rows], labels=labels, geoms=geoms, radius_m=radius,
                  capacity=cap, version=version, radius_source=source, rule_radius_m=rule_radius)


def grids_load() -> Grids:
    rows = list(models.Grid.objects.order_by("code").values_list(
        "pk", "code", "population", "community__code", "community__name", "community__street__code",
        "community__street__name", "community__street__district__code", "community__street__district__name",
        "geom"))
    geoms = _shapely([r[-1] for r in rows])
    version = digest(services.data_version(models.Grid.objects.all()), [(r[0], r[1], r[2], r[3]) for r in rows])
    return Grids(codes=[r[1] for r in rows], population=np.array([r[2] for r in rows], dtype=np.float64),
                  geoms=geoms, community=[(r[3], r[4]) for r in rows], street=[(r[5], r[6]) for r in rows],
                  district=[(r[7], r[8]) for r in rows], version=version)


def demand_from_raster(surface: models.PopulationSurface, grids: Grids) -> Demand:
    import rasterio

    key = f"raster:{surface.pk}:{surface.sha256}:{grids.version}"

    def make():
        with rasterio.open(surface.file.path) as src:
            band = src.read(1).astype(np.float64)
            transform, nodata = src.transform, src.nodata
        xy, pop = ras.cells_to_points(band, transform, nodata)
        grid_idx = ras.points_in_polygons(xy, grids.geoms)
        for a in (xy, pop, grid_idx):
            a.setflags(write=False)
        return xy, pop, grid_idx

    xy, pop, grid_idx = _DEMAND.get(key, make)
    info = {"id": surface.pk, "name": surface.name, "sha256": surface.sha256,
            "resolution_m": surface.resolution_m, "cells": int(len(xy))}
    return Demand("raster", xy, pop, grid_idx, key, info)


def demand_from_grids_lattice(grids: Grids) -> Demand:
    """Grid demand as points: a lattice GRID_SAMPLE_M apart, each grid's population split evenly
    over its lattice points (a grid no lattice point falls in gets its representative point)."""
    key = f"grids:{grids.version}:{GRID_SAMPLE_M}"

    def make():
        if len(grids.geoms) == 0:
            return np.empty((0, 2)), np.empty(0), np.empty(0, dtype=np.int64)
        s = GRID_SAMPLE_M
        x0, y0, x1, y1 = shapely.total_bounds(grids.geoms)
        xs = (np.floor(x0 / s) + 0.5 + np.arange(int(np.ceil((x1 - x0) / s)) + 2)) * s
        ys = (np.floor(y0 / s) + 0.5 + np.arange(int(np.ceil((y1 - y0) / s)) + 2)) * s
        gx, gy = np.meshgrid(xs, ys)
        pts = np.column_stack([gx.ravel(), gy.ravel()])
        idx = ras.points_in_polygons(pts, grids.geoms)
        keep = idx >= 0
        pts, idx = pts[keep], idx[keep]
        empty = np.setdiff1d(np.arange(len(grids.geoms)), idx)
        if empty.size:
            rep = shapely.get_coordinates(shapely.point_on_surface(grids.geoms[empty]))
            pts = np.concatenate([pts, rep])
            idx = np.concatenate([idx, empty])
        n = np.bincount(idx, minlength=len(grids.geoms))
        pop = grids.population[idx] / n[idx]
        for a in (pts, pop, idx):
            a.setflags(write=False)
        return pts, pop, idx

    xy, pop, idx = _DEMAND.get(key, make)
    return Demand("grids", xy, pop, idx, key, None)


def demand_from_grid_points(grids: Grids) -> Demand:
    """Grid demand as one point per grid: its representative point (``shapely.point_on_surface``,
    always inside the grid) carrying the grid's whole population. Grids without residents are left
    out. Mode ``"grid_points"``: the unit of 网格化管理 itself, far fewer points than the raster."""
    key = f"grid_points:{grids.version}"

    def make():
        if len(grids.geoms) == 0:
            return np.empty((0, 2)), np.empty(0), np.empty(0, dtype=np.int64)
        idx = np.flatnonzero(np.asarray(grids.population, dtype=np.float64) > 0).astype(np.int64)
        pts = shapely.get_coordinates(shapely.point_on_surface(grids.geoms[idx])).reshape(-1, 2)
        pop = np.asarray(grids.population, dtype=np.float64)[idx]
        for a in (pts, pop, idx):
            a.setflags(write=False)
        return pts, pop, idx

    xy, pop, idx = _DEMAND.get(key, make)
    return Demand("grid_points", xy, pop, idx, key, None)


def roads_load():
    geoms = list(models.Road.objects.values_list("geom", flat=True))
    return _shapely(geoms)


# --------------------------------------------------------------------------------------------
# coverage matrices
# --------------------------------------------------------------------------------------------
def _is_point(geoms: np.ndarray) -> bool:
    return bool(len(geoms)) and bool((shapely.get_type_id(geoms) == 0).all())


def cover_euclidean(demand: Demand, sites: Sites) -> scipy.sparse.csr_array:
    if _is_point(sites.geoms):
        return cov.coverage_matrix(demand.xy, shapely.get_coordinates(sites.geoms), sites.radius_m)
    return cov.coverage_matrix_geoms(demand.xy, sites.geoms, sites.radius_m)


def _gates(sites: Sites) -> tuple[np.ndarray, np.ndarray]:
    """Points through which each site is entered from the road: the point itself, or samples of
    a polygon's boundary every GATE_SPACING_M. Returns (gate_xy, gate_site_idx)."""
    g = sites.geoms
    is_pt = shapely.get_type_id(g) == 0
    shapes = np.where(is_pt, g, shapely.segmentize(shapely.boundary(np.where(is_pt, None, g)), GATE_SPACING_M))
    xy, owner = shapely.get_coordinates(shapes, return_index=True)
    # rings repeat their first vertex; drop exact duplicates per site
    _, first = np.unique(np.column_stack([owner, xy]), axis=0, return_index=True)
    first.sort()
    return xy[first], owner[first].astype(np.int64)


def cover_network(demand: Demand, sites: Sites, lines) -> tuple[scipy.sparse.csr_array, str]:
    key, net = network_cached(lines)
    snap = _SNAPS.get((key, demand.key), lambda: net_mod.snap_points(net, demand.xy))
    gate_xy, owner = _gates(sites)
    m = net_mod.network_coverage_matrix(net, demand.xy, gate_xy, sites.radius_m[owner], demand_snap=snap)
    to_site = scipy.sparse.csr_array((np.ones(len(owner)), (np.arange(len(owner)), owner)),
                                     shape=(len(owner), len(sites.geoms)))
    reach = scipy.sparse.csr_array(m.astype(np.float64) @ to_site)
    if not _is_point(sites.geoms):  # points inside a site polygon reach it without a road
        reach = reach + cov.coverage_matrix_geoms(demand.xy, sites.geoms, 0.0).astype(np.float64)
    out = scipy.sparse.csr_array((reach > 0).astype(np.uint8))
    out.eliminate_zeros()
    out.sort_indices()
    return out, key


def _grid_site_population(grids: Grids, sites: Sites, quad_segs: int = cov.DEFAULT_QUAD_SEGS) -> np.ndarray:
    """People within reach of each site when grid populations are spread evenly (overlaps count at
    every site): sum over grids of population × area(grid ∩ buffer) / area(grid)."""
    buffers = shapely.buffer(sites.geoms, sites.radius_m, quad_segs=quad_segs)
    out = np.zeros(len(sites.geoms))
    if len(grids.geoms) == 0:
        return out
    site_idx, grid_idx = shapely.STRtree(grids.geoms).query(buffers, predicate="intersects")
    if site_idx.size:
        share = shapely.area(shapely.intersection(grids.geoms[grid_idx], buffers[site_idx])) / \
            shapely.area(grids.geoms[grid_idx])
        np.add.at(out, site_idx, grids.population[grid_idx] * np.clip(share, 0, 1))
    return out


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _areas(grids: Grids, pop: np.ndarray, covered: np.ndarray, served: np.ndarray | None) -> dict:
    out = {}
    for level, keys in (("districts", grids.district), ("streets", grids.street),
                        ("communities", grids.community)):
        codes = sorted({k for k in keys if k[0] is not None})
        pos = {k: i for i, k in enumerate(codes)}
        idx = np.array([pos.get(k, -1) for k in keys], dtype=np.int64)
        p = cov.group_sums(pop, idx, len(codes)) if len(idx) else np.zeros(0)
        c = cov.group_sums(covered, idx, len(codes)) if len(idx) else np.zeros(0)
        s = cov.group_sums(served, idx, len(codes)) if served is not None and len(idx) else None
        rows = []
        for i, (code, name) in enumerate(codes):
            row = {"code": code, "name": name, "population": _r(p[i]), "covered": _r(c[i]),
                   "share": _r(c[i] / p[i] if p[i] > 0 else 0.0, 6)}
            if s is not None:
                row["served"] = _r(s[i])
            rows.append(row)
        out[level] = rows
    return out


def _validate(kind, radius_m, method, demand) -> float | None:
    if kind not in KINDS:
        raise CoverageInputError("kind", f"未知的设施类别 {kind}（可选：{', '.join(KINDS)}）",
                                 f"unknown KIND {kind!r} (one of: {', '.join(KINDS)})")
    if method not in METHODS:
        raise CoverageInputError("method", f"未知的距离方法 {method}（可选：euclidean、network）",
                                 f"unknown method {method!r} (euclidean or network)")
    if demand not in DEMANDS:
        raise CoverageInputError("demand", f"未知的需求类型 {demand}（可选：raster、grids）",
                                 f"unknown demand {demand!r} (raster or grids)")
    if radius_m is None:
        return None
    try:
        r = float(radius_m)
    except (TypeError, ValueError):
        raise CoverageInputError("radius", f"服务半径应为数字：{radius_m}",
                                 f"radius must be a number: {radius_m!r}") from None
    if not math.isfinite(r) or r < 0:
        raise CoverageInputError("radius", f"服务半径不能为负数或无穷：{radius_m}",
                                 f"radius must be finite and >= 0: {radius_m!r}")
    return r


def coverage_check(*, kind: str, radius_m: float | None = None, level: str | None = None,
                   facility_kind: str | None = None, method: str = "euclidean", demand: str = "raster",
                   capacity: bool = False) -> None:
    """The input checks of :func:`coverage_compute` that need no computing (names, distance, filter,
    a service distance for every site, at least one site): raise :class:`CoverageInputError` before a
    Job is queued, so the page can show the problem on its form. Records nothing."""
    radius = _validate(kind, radius_m, method, demand)
    sites_load(kind, level, facility_kind, radius, capacity, rules_current())


def coverage_compute(*, kind: str, radius_m: float | None = None, level: str | None = None,
                     facility_kind: str | None = None, method: str = "euclidean", demand: str = "raster",
                     capacity: bool = False, user=None, progress: ProgressFn | None = None) -> dict:
    """Run a coverage analysis, record it as a Job, and return the result document.

    Parameters
    ----------
    kind : {"shelters", "fire_stations", "facilities"}
    radius_m : float, optional
        Service distance for every site (beats each facility's own ``service_radius_m``); default:
        the facility's own distance when set, else the rule set per level / kind.
    level : str, optional
        Shelter level (``Shelter.Level``), shelters only.
    facility_kind : str, optional
        ``FireStation.Kind`` or ``ServiceFacility.Kind``.
    method : {"euclidean", "network"}
    demand : {"raster", "grids"}
        ``raster`` falls back to ``grids`` when no population raster is active (the document's
        ``demand`` says which was used).
    capacity : bool
        Capacity-aware coverage (shelters): the exact transportation LP.
    user : User, optional
        Recorded on the Job.
    progress : callable(fraction, message), optional
        Called as the run advances (after the Job's own progress is stored).

    Returns
    -------
    dict
        ``kind, radius_m, method, demand, population_total, population_covered, share_covered,
        grids[{code, population, covered, share}], facilities[{code, name, capacity, served, load}]``,
        with ``capacity``: ``population_served, population_short, population_unreachable`` (and
        ``served`` per grid). Also ``areas`` (districts / streets / communities), ``job_id``,
        ``data_version``, ``rules_version``. ``radius_m`` is a number when every site has the same
        service distance, else ``{level or kind: metres}``. Per facility, ``population_in_reach`` is
        the people within its service distance (overlaps count at every site); ``served`` is that
        figure without ``capacity`` and the LP's assignment with it; ``load = served / capacity``
        (null for sites without a capacity).
        Each facility also carries the ``radius_m`` it was measured with and ``radius_source``
        (``run``, ``facility`` or ``rules``); ``facility_radius_overrides`` counts the sites measured
        with their own distance.

    Raises
    ------
    CoverageInputError
        Bad input (before any Job is recorded).
    layers.services.JobCancelled
        When the Job's cancellation was requested; the Job is marked cancelled.
    """
    radius = _validate(kind, radius_m, method, demand)
    rs = rules_current()
    sites = sites_load(kind, level, facility_kind, radius, capacity, rs)
    grids = grids_load()
    surface = models.PopulationSurface.objects.filter(active=True).order_by("-created_at").first() \
        if demand == "raster" else None
    if surface is not None:
        dem = demand_from_raster(surface, grids)
    else:
        if len(grids.codes) == 0:
            raise CoverageInputError("no_demand", "没有需求数据：既没有启用的人口栅格，也没有网格",
                                     "no demand: no active population raster and no grids")
        dem = None  # grid polygons; points made only when needed
    if dem is not None and len(dem.xy) == 0:
        raise CoverageInputError("no_demand", "人口栅格中没有人口", "the population raster holds no people")
    lines = None
    if method == "network":
        lines = roads_load()
        if len(lines) == 0:
            raise CoverageInputError("no_roads", "道路图层为空，无法按路网计算距离",
                                     "the roads layer is empty; cannot use the network method")
    demand_used = "raster" if surface is not None else "grids"

    data = {"grids": grids.version, "facilities": sites.version,
            "population_surface": dem.surface["sha256"] if dem is not None else None}
    roads_key = net_mod.network_version_key(lines) if lines is not None else None
    data["roads"] = roads_key[:16] if roads_key else None
    version = digest(sorted(data.items()))
    radius_doc = _radius_doc(sites, radius)
    params = {"kind": kind, "radius_m": radius, "level": level, "facility_kind": facility_kind,
              "method": method, "demand": demand, "demand_used": demand_used, "capacity": bool(capacity),
              "rules_version": rs.version, "data": data}
    job = services.job_start(models.Job.Kind.COVERAGE, params, user=user, data_version=version)

    with services.job_recording(job, progress) as step:
        step(0.1, "data loaded")
        doc = _compute(kind, sites, grids, dem, method, lines, capacity, step)
        doc = {"kind": kind, "radius_m": radius_doc, "method": method, "demand": demand_used, **doc,
               "level": level, "facility_kind": facility_kind, "rules_version": rs.version,
               "data_version": version, "job_id": job.pk}
        if demand_used != demand:
            doc["demand_note"] = "no active population raster; grid polygons used"
        services.job_finish(job, result=doc)
    if progress is not None:
        progress(1.0, "done")
    return doc


def _radius_doc(sites: Sites, override: float | None):
    """The run-level service distance: the override, else the rule set's per level/kind of the sites
    (a facility's own ``service_radius_m`` shows in its ``facilities`` entry, not here)."""
    if override is not None:
        return override
    if sites.rule_radius_m is not None and not np.isnan(sites.rule_radius_m).all():
        pairs = [(lab, r) for lab, r in zip(sites.labels, sites.rule_radius_m.tolist()) if not math.isnan(r)]
    else:  # every site has its own distance and the rules have none for their kinds
        pairs = list(zip(sites.labels, sites.radius_m.tolist()))
    values = sorted({r for _lab, r in pairs})
    if len(values) == 1:
        return values[0]
    return {lab: float(r) for lab, r in sorted(set(pairs))}


def _compute(kind, sites: Sites, grids: Grids, dem: Demand | None, method, lines, capacity, step) -> dict:
    n_grids, n_sites = len(grids.codes), len(sites.codes)
    cap_result = None
    served_grid = None
    network_key = None
    if dem is None and method == "euclidean":
        # grid polygons, exact area shares
        share = cov.polygon_coverage_shares(grids.geoms, sites.geoms, sites.radius_m)
        step(0.5, "area shares computed")
        pop_grid = grids.population.copy()
        cov_grid = pop_grid * share
        in_reach = _grid_site_population(grids, sites)
        total, covered_total = float(pop_grid.sum()), float(cov_grid.sum())
        outside = 0.0
        n_points = 0
        if capacity:
            # the LP needs points: the lattice; per-site figures then come from the same points
            dem = demand_from_grids_lattice(grids)
            cover = cover_euclidean(dem, sites)
            in_reach = cov.coverage_of_points(dem.pop, cover).site_population
            step(0.7, "coverage matrix built")
    else:
        if dem is None:
            dem = demand_from_grids_lattice(grids)
        if method == "euclidean":
            cover = cover_euclidean(dem, sites)
        else:
            cover, network_key = cover_network(dem, sites, lines)
        step(0.6, "coverage matrix built")
        res = cov.coverage_of_points(dem.pop, cover)
        pop_grid = cov.group_sums(dem.pop, dem.grid_idx, n_grids)
        cov_grid = cov.group_sums(np.where(res.covered_mask, dem.pop, 0.0), dem.grid_idx, n_grids)
        in_reach = res.site_population
        total, covered_total = res.population_total, res.population_covered
        outside = float(dem.pop[dem.grid_idx < 0].sum())
        n_points = len(dem.xy)
    if capacity:
        cap_result = cov.capacitated_coverage(dem.pop, cover, sites.capacity)
        served_grid = cov.group_sums(cap_result.served, dem.grid_idx, n_grids)
        step(0.9, "capacity LP solved")

    grid_rows = []
    for i in range(n_grids):
        p, c = pop_grid[i], cov_grid[i]
        row = {"code": grids.codes[i], "population": _r(p), "covered": _r(c),
               "share": _r(c / p if p > 0 else 0.0, 6)}
        if served_grid is not None:
            row["served"] = _r(served_grid[i])
        grid_rows.append(row)
    fac_rows = []
    for j in range(n_sites):
        capj = float(sites.capacity[j]) if sites.capacity is not None else None
        served = float(cap_result.load[j]) if cap_result is not None else float(in_reach[j])
        load = (served / capj if capj else None) if capj is not None else None
        fac_rows.append({"code": sites.codes[j], "name": sites.names[j], "capacity": capj, "served": _r(served),
                         "load": _r(load, 6) if load is not None else None,
                         "population_in_reach": _r(in_reach[j]), "radius_m": float(sites.radius_m[j]),
                         "radius_source": sites.radius_source[j] if sites.radius_source else "rules",
                         ("level" if kind == "shelters" else "kind"): sites.labels[j]})
    doc = {"population_total": _r(total), "population_covered": _r(covered_total),
           "share_covered": _r(covered_total / total if total > 0 else 0.0, 6),
           "grids": grid_rows, "facilities": fac_rows,
           "facility_radius_overrides": sum(1 for src in sites.radius_source if src == "facility")}
    if cap_result is not None:
        doc.update(population_served=_r(cap_result.population_served),
                   population_short=_r(cap_result.population_short),
                   population_unreachable=_r(cap_result.population_unreachable),
                   share_served=_r(cap_result.share_served, 6), lp_status=cap_result.status,
                   lp_groups=cap_result.n_groups)
    doc["population_outside_grids"] = _r(outside)
    doc["demand_points"] = n_points
    doc["areas"] = _areas(grids, pop_grid, cov_grid, served_grid)
    if network_key:
        doc["network"] = {"version": network_key[:16], "snap_tol_m": ROAD_SNAP_TOL_M,
                          "gate_spacing_m": GATE_SPACING_M}
    return doc


# --------------------------------------------------------------------------------------------
# geometry and exports of a result document (the page, GeoJSON / CSV downloads)
# --------------------------------------------------------------------------------------------
#: Grid outlines are simplified this much (metres) for the web map; invisible at city scale.
MAP_SIMPLIFY_M = 5.0
#: Service areas are drawn for at most this many sites (one Dijkstra per gate on the network).
MAX_SERVICE_AREA_SITES = 400


def _to_lonlat(geoms: np.ndarray) -> np.ndarray:
    from .analysis.transform import transformer

    tr = transformer(settings.GIS_SRID, 4326)

    def fn(xy):
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])
    return shapely.transform(geoms, fn)


def _feature(geom, props: dict, fid=None) -> dict:
    return {"type": "Feature", "id": fid, "properties": props,
            "geometry": shapely.geometry.mapping(geom) if geom is not None and not geom.is_empty else None}


def _site_model(kind: str):
    return {"shelters": models.Shelter, "fire_stations": models.FireStation,
            "facilities": models.ServiceFacility}[kind]


def _doc_sites(doc: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """(codes, shapely geoms in GIS_SRID, radius_m) of the result's facilities that still exist."""
    model = _site_model(doc["kind"])
    radius = {f["code"]: f.get("radius_m") for f in doc["facilities"]}
    fields = ("code", "geom", "footprint") if model is models.ServiceFacility else ("code", "geom")
    rows = list(model.objects.filter(code__in=list(radius)).order_by("code").values_list(*fields))
    geoms = _shapely([r[2] if len(r) > 2 and r[2] is not None else r[1] for r in rows])
    r = np.array([float(radius[row[0]] or 0.0) for row in rows], dtype=np.float64)
    return [row[0] for row in rows], geoms, r


def result_grid_features(doc: dict, *, lonlat: bool = True, simplify_m: float = 0.0) -> dict:
    """The result's grids as a GeoJSON FeatureCollection (coverage figures as properties).

    Geometry is today's grid outline joined by code (the Job stores figures, not geometry).
    ``lonlat``: EPSG:4326 (RFC 7946); else GIS_SRID with a ``crs`` member.
    """
    rows = dict(models.Grid.objects.filter(code__in=[g["code"] for g in doc["grids"]])
                .values_list("code", "geom"))
    codes = [g["code"] for g in doc["grids"] if g["code"] in rows]
    geoms = _shapely([rows[c] for c in codes])
    if simplify_m and len(geoms):
        geoms = shapely.simplify(geoms, simplify_m, preserve_topology=True)
    if lonlat and len(geoms):
        geoms = _to_lonlat(geoms)
    by_code = dict(zip(codes, geoms))
    feats = [_feature(by_code.get(g["code"]), dict(g), g["code"]) for g in doc["grids"]]
    out = {"type": "FeatureCollection", "features": feats}
    if not lonlat:
        out["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{settings.GIS_SRID}"}}
    return out


def result_facility_features(doc: dict, *, lonlat: bool = True) -> dict:
    """The result's facilities as GeoJSON points (representative points of site polygons)."""
    codes, geoms, _r = _doc_sites(doc)
    pts = shapely.point_on_surface(geoms) if len(geoms) else geoms
    if lonlat and len(pts):
        pts = _to_lonlat(pts)
    by_code = dict(zip(codes, pts))
    feats = [_feature(by_code.get(f["code"]), dict(f), f["code"]) for f in doc["facilities"]]
    out = {"type": "FeatureCollection", "features": feats}
    if not lonlat:
        out["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{settings.GIS_SRID}"}}
    return out


def result_csv(doc: dict, layer: str = "grids") -> str:
    """The result's grids (or facilities, or areas: districts/streets/communities) as CSV text."""
    import csv
    import io

    if layer == "facilities":
        rows = doc["facilities"]
    elif layer in ("districts", "streets", "communities"):
        rows = doc["areas"][layer]
    else:
        rows = doc["grids"]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys or ["code"], extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    return buf.getvalue()


def coverage_geometries(doc: dict, *, service_areas: bool = True) -> dict:
    """Shapes for the map of a result, in EPSG:4326: ``uncovered`` (parts of grids out of reach of
    every site, straight-line only; a shapely geometry or None) and ``service_areas`` (GeoJSON
    FeatureCollection, or None when there are more than MAX_SERVICE_AREA_SITES sites).

    Straight line: buffers of the sites; network: the walkable roads within reach (buffered 50 m) of
    each site's representative point, plus the site itself — for drawing, not for measuring (the
    figures use every gate of a site polygon, so they can cover a little more than drawn).
    """
    codes, geoms, radius = _doc_sites(doc)
    grid_geoms = _shapely(list(models.Grid.objects.values_list("geom", flat=True)))
    if len(geoms) == 0 or len(grid_geoms) == 0:
        return {"uncovered": None, "service_areas": None}
    areas = None
    if doc["method"] == "network":
        if service_areas and len(codes) <= MAX_SERVICE_AREA_SITES:
            lines = roads_load()
            if len(lines):
                _key, net = network_cached(lines)
                # one walk per site from its representative point (every gate would take ~10x longer)
                rep = shapely.get_coordinates(shapely.point_on_surface(geoms))
                polys = net_mod.service_area_polygons(net, rep, radius)
                areas = shapely.union(geoms, np.array(polys, dtype=object))
        # No "uncovered" overlay: the drawn road bands are narrower than what the figures count
        # (a cell reaches a road by its access leg), so grids minus bands would overstate the holes;
        # the grid choropleth (red = nobody covered) shows them instead.
        uncovered = None
    else:
        uncovered = cov.uncovered_geometry(grid_geoms, geoms, radius, quad_segs=8)
        if service_areas and len(codes) <= MAX_SERVICE_AREA_SITES:
            areas = shapely.buffer(geoms, radius, quad_segs=8)
    if uncovered is not None and not uncovered.is_empty:
        uncovered = _to_lonlat(np.array([shapely.simplify(uncovered, MAP_SIMPLIFY_M)], dtype=object))[0]
    else:
        uncovered = None
    fc = None
    if service_areas and areas is not None:
        ll = _to_lonlat(shapely.simplify(areas, MAP_SIMPLIFY_M))
        fc = {"type": "FeatureCollection", "features": [
            _feature(g, {"code": c, "radius_m": float(r)}, c) for c, g, r in zip(codes, ll, radius)]}
    return {"uncovered": uncovered, "service_areas": fc}


def _ogr_columns(rows: list[dict]) -> tuple[list[str], list[np.ndarray]]:
    """Columns for pyogrio from result rows: numbers (and nulls) as float64 (NaN = NULL), the rest as text."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    data = []
    for k in keys:
        vals = [row.get(k) for row in rows]
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in vals):
            data.append(np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64))
        else:
            data.append(np.array(["" if v is None else str(v) for v in vals], dtype=object))
    return keys, data


def result_gpkg(doc: dict, path) -> dict:
    """Write the result as a GeoPackage at ``path``: layer ``grids`` (outlines with the figures) and layer
    ``facilities`` (representative points), in lon/lat EPSG:4326 like every other export
    (``importers/exports.py``). Returns ``{layer: rows written}``."""
    import pyogrio.raw

    grids = result_grid_features(doc)
    sites = result_facility_features(doc)
    counts = {}
    for layer, fc, gtype in (("grids", grids, "MultiPolygon"), ("facilities", sites, "Point")):
        rows = [f["properties"] for f in fc["features"]]
        keys, data = _ogr_columns(rows)
        geoms = [shapely.geometry.shape(f["geometry"]) if f["geometry"] else None for f in fc["features"]]
        if gtype == "MultiPolygon":
            geoms = [shapely.MultiPolygon([g]) if g is not None and g.geom_type == "Polygon" else g for g in geoms]
        wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geoms], dtype=object)
        pyogrio.raw.write(str(path), wkb, data, keys or ["code"], driver="GPKG", layer=layer, crs="EPSG:4326",
                          geometry_type=gtype, append=layer != "grids")
        counts[layer] = len(rows)
    return counts


def result_pdf(doc: dict, *, job_id: int | None = None, created_at: str = "", user: str = "",
               data_version: str = "", lang: str = "zh") -> bytes:
    """The A4 PDF summary of a result (:func:`layers.analysis.coverage_pdf.coverage_pdf`): today's grid
    outlines and sites joined by code, in GIS_SRID metres."""
    from .analysis import coverage_pdf as cpdf

    rows = dict(models.Grid.objects.filter(code__in=[g["code"] for g in doc["grids"]])
                .values_list("code", "geom"))
    present = [g for g in doc["grids"] if g["code"] in rows]
    geoms = _shapely([rows[g["code"]] for g in present])
    if len(geoms):
        geoms = shapely.simplify(geoms, MAP_SIMPLIFY_M / 2, preserve_topology=True)
    share = np.array([g["share"] if g["population"] > 0 else np.nan for g in present], dtype=np.float64)
    _codes, site_geoms, radius = _doc_sites(doc)
    cmap = cpdf.CoverageMap(geoms, share, site_geoms, radius)
    return cpdf.coverage_pdf(doc, cmap, job_id=job_id, created_at=created_at, user=user,
                             data_version=data_version, lang=lang)
