"""The housing project approval check (regulation art. 12; STANDARDS.md, "Housing project approval").

Pure: shapely / numpy / scipy in, frozen dataclasses out; no Django. The service
(``layers/services_review.py``) reads ``settings.GISPORTAL_RULES`` and the nearby layers from the
database, builds a :class:`ReviewContext` of arrays in ``GIS_SRID`` metres and calls :func:`review`.

* :class:`RuleSet` -- the versioned thresholds, built by :meth:`RuleSet.from_settings` from the
  settings dict; every :class:`Rule` carries code, threshold, unit and basis (standard + clause).
* ``check_*`` -- one pure function per rule, each returning a frozen :class:`Check` with status
  ``pass`` / ``fail`` / ``warn`` / ``n/a``, the measured and required values, a sentence in Chinese
  and English, the basis and the evidence geometry (drawn on the review map).
* :func:`farthest_distance` -- the largest distance from a region to the nearest of some targets,
  with a proven error bound; the reach rules (SHELTER-REACH, FIRE-REACH, LIFE-CIRCLE) and FAC-IN-SITE
  for facility footprints rest on it.
* :func:`shelter_spare_capacity` -- the exact spare capacity of the shelters within reach of a
  site, from the capacity-aware coverage engine (:func:`layers.analysis.coverage.added_demand_capacity`:
  integer max-flow for whole persons, :func:`~layers.analysis.coverage.capacitated_coverage`'s LP otherwise).

Distances are straight-line in the storage CRS by default. The rule-set setting ``reach_method``
(``"euclidean"`` default, or ``"network"``) switches the reach rules (SHELTER-REACH, FIRE-REACH) to
road-network distance once roads are loaded (:func:`network_reach_distances`, on the coverage engine's
:mod:`layers.analysis.network`); with no roads they fall back to straight lines and say so.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import Voronoi, cKDTree

from .coverage import added_demand_capacity
from .network import RoadNetwork, network_distance_to_nearest

__all__ = [
    "RULE_CODES",
    "REACH_METHODS",
    "NETWORK_SAMPLE_M",
    "NETWORK_GATE_SPACING_M",
    "Rule",
    "RuleSet",
    "Check",
    "Farthest",
    "ProjectFacility",
    "Project",
    "Areas",
    "ReviewContext",
    "Review",
    "SpareCapacity",
    "farthest_distance",
    "area_shares",
    "shelter_spare_capacity",
    "dwithin_pairs",
    "reach_samples",
    "network_reach_distances",
    "check_inside_city",
    "check_district",
    "check_fac_declared",
    "check_fac_in_site",
    "check_fac_area",
    "check_shelter_reach",
    "check_shelter_capacity",
    "check_fire_reach",
    "check_life_circle",
    "check_site_no_shelter",
    "review",
]

PASS, FAIL, WARN, NA = "pass", "fail", "warn", "n/a"

#: Rule codes in report order.
RULE_CODES = ("LOC-INSIDE-CITY", "LOC-DISTRICT", "FAC-DECLARED", "FAC-IN-SITE", "FAC-AREA",
              "SHELTER-REACH", "SHELTER-CAPACITY", "FIRE-REACH", "LIFE-CIRCLE", "SITE-NO-SHELTER")

#: ``RuleSet.reach_method`` values: straight line, or along the roads (when roads are loaded).
REACH_METHODS = ("euclidean", "network")
#: Spacing (m) of the site samples for network reach: boundary densified to it, plus an interior lattice.
NETWORK_SAMPLE_M = 25.0
#: Spacing (m) of the gates through which a polygon target (a shelter) is entered from the road; the
#: coverage engine's ``layers.services_coverage.GATE_SPACING_M``.
NETWORK_GATE_SPACING_M = 50.0

#: Facility kinds that count as the community service facility of art. 12. ``community_service``
#: is the submission spelling, ``community_service_centre`` the ServiceFacility kind.
DEFAULT_COMMUNITY_SERVICE_KINDS = ("community_service", "community_service_centre")

#: Life-circle walking distances per facility kind (GB 50180-2018 §2.0.2-2.0.4 and appendix B;
#: STANDARDS.md marks the appendix B assignments "check"). Settings key ``life_circle_m``.
DEFAULT_LIFE_CIRCLE_M = {"community_service_centre": 300.0, "kindergarten": 300.0,
                         "elderly_care": 300.0, "health_station": 300.0, "culture_sport": 500.0}

_BASIS = {
    "LOC-INSIDE-CITY": "张家口市行政区域（区县/管理区图层）",
    "LOC-DISTRICT": "条例第十二条、第十八条 (art. 12, art. 18)",
    "FAC-DECLARED": "条例第十二条 (art. 12)：应要求建设单位标明社区综合服务设施具体位置和面积",
    "FAC-IN-SITE": "条例第十二条 (art. 12)",
    "FAC-AREA": "《“十四五”城乡社区服务体系建设规划》(NDRC 2022)；住建部/民政部 完整社区 2022：每百户不低于30平方米",
    "SHELTER-REACH": "GB 50413-2007 §8.2.10；GB 51143-2015 (check)",
    "SHELTER-CAPACITY": "GB 51143-2015 §5.2.4（容量不小于责任区疏散人口）",
    "FIRE-REACH": "《社区微型消防站建设标准(试行)》公消〔2015〕301号：3分钟到场；(3−1) min × 15 km/h = 500 m（本系统换算）",
    "LIFE-CIRCLE": "GB 50180-2018 §2.0.2–2.0.4，附录B (check)",
    "SITE-NO-SHELTER": "GB 51143-2015",
}
_TITLE = {
    "LOC-INSIDE-CITY": ("项目用地位于市域内", "site inside the city"),
    "LOC-DISTRICT": ("项目用地所在区县", "district of the site"),
    "FAC-DECLARED": ("标明社区综合服务设施", "community service facility declared"),
    "FAC-IN-SITE": ("服务设施位于项目用地内", "facility inside the site"),
    "FAC-AREA": ("服务设施面积每百户不少于30平方米", "facility area per 100 households"),
    "SHELTER-REACH": ("应急避难场所服务半径覆盖", "within reach of an emergency shelter"),
    "SHELTER-CAPACITY": ("避难场所剩余容量", "spare shelter capacity"),
    "FIRE-REACH": ("社区微型消防站响应距离覆盖", "within reach of a micro fire station"),
    "LIFE-CIRCLE": ("生活圈设施步行距离（建议）", "life-circle facilities within walking distance (advisory)"),
    "SITE-NO-SHELTER": ("不占用现有避难场所用地", "takes no shelter land"),
}


# --------------------------------------------------------------------------------------------
# rule set
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One rule of the rule set: code, threshold (None when it has none), unit, basis, titles."""

    code: str
    threshold: float | None
    unit: str
    basis: str
    title_zh: str
    title_en: str
    advisory: bool = False


def _frozen_map(d: Mapping[str, Any], cast=float) -> Mapping[str, Any]:
    return MappingProxyType({str(k): cast(v) for k, v in dict(d).items()})


@dataclass(frozen=True, eq=False)
class RuleSet:
    """A versioned rule set (DESIGN.md, Rules). Build it with :meth:`from_settings`.

    Examples
    --------
    >>> rs = RuleSet.from_settings({"version": "t-1", "facility_area_m2_per_100_households": 30})
    >>> rs.version, rs.rule("FAC-AREA").threshold, rs.rule("SHELTER-REACH").threshold
    ('t-1', 30.0, 500.0)
    """

    version: str
    persons_per_household: float = 2.62
    facility_area_m2_per_100_households: float = 30.0
    facility_outside_tolerance_m: float = 0.0
    community_service_kinds: tuple[str, ...] = DEFAULT_COMMUNITY_SERVICE_KINDS
    shelter_reach_m: float = 500.0
    shelter_service_distance_m: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(
        {"emergency": 500.0, "fixed_short": 1000.0, "fixed_medium": 1500.0, "fixed_long": 2500.0,
         "central": 2500.0}))
    shelter_per_capita_m2: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(
        {"emergency": 1.0, "fixed_short": 2.0, "fixed_medium": 3.0, "fixed_long": 4.5, "central": 4.5}))
    fire_response_distance_m: float = 500.0
    fire_station_kinds: tuple[str, ...] = ("community_micro",)
    life_circle_m: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict(DEFAULT_LIFE_CIRCLE_M)))
    area_tolerance_m2: float = 1.0
    distance_tolerance_m: float = 0.5
    distance_method: str = "euclidean"
    reach_method: str = "euclidean"

    @classmethod
    def from_settings(cls, rules: Mapping[str, Any]) -> "RuleSet":
        """Build from ``settings.GISPORTAL_RULES`` (passed in: this module imports no Django).

        Keys: ``version`` (required), ``persons_per_household``, ``facility_area_m2_per_100_households``,
        ``shelter_service_distance_m`` and ``shelter_per_capita_m2`` (per level),
        ``fire_response_distance_m``; optional ``shelter_reach_m`` (default: the emergency service
        distance), ``fire_station_kinds``, ``community_service_kinds``, ``life_circle_m`` (kind -> m),
        ``facility_outside_tolerance_m``, ``area_tolerance_m2``, ``distance_tolerance_m``,
        ``distance_method`` (only ``"euclidean"`` so far), ``reach_method`` (``"euclidean"`` default or
        ``"network"``: SHELTER-REACH and FIRE-REACH along the roads once roads are loaded).
        """
        r = dict(rules)
        if not r.get("version"):
            raise ValueError("the rule set needs a version")
        kw: dict[str, Any] = {"version": str(r["version"])}
        for key in ("persons_per_household", "facility_area_m2_per_100_households",
                    "facility_outside_tolerance_m", "fire_response_distance_m", "area_tolerance_m2",
                    "distance_tolerance_m"):
            if key in r:
                kw[key] = float(r[key])
        for key in ("shelter_service_distance_m", "shelter_per_capita_m2", "life_circle_m"):
            if key in r:
                kw[key] = _frozen_map(r[key])
        for key in ("fire_station_kinds", "community_service_kinds"):
            if key in r:
                kw[key] = tuple(str(k) for k in r[key])
        if "shelter_reach_m" in r:
            kw["shelter_reach_m"] = float(r["shelter_reach_m"])
        elif "shelter_service_distance_m" in r and "emergency" in r["shelter_service_distance_m"]:
            kw["shelter_reach_m"] = float(r["shelter_service_distance_m"]["emergency"])
        if "distance_method" in r:
            kw["distance_method"] = str(r["distance_method"])
        if "reach_method" in r:
            kw["reach_method"] = str(r["reach_method"])
        rs = cls(**kw)
        if rs.reach_method not in REACH_METHODS:
            raise ValueError(f"reach_method {rs.reach_method!r} must be one of {', '.join(REACH_METHODS)}")
        if rs.distance_method != "euclidean":
            raise ValueError(f"distance_method {rs.distance_method!r} is not implemented; use 'euclidean'")
        for name in ("persons_per_household", "facility_area_m2_per_100_households",
                     "shelter_reach_m", "fire_response_distance_m", "distance_tolerance_m"):
            if not (getattr(rs, name) > 0 and math.isfinite(getattr(rs, name))):
                raise ValueError(f"{name} must be a positive number")
        for name in ("shelter_service_distance_m", "shelter_per_capita_m2", "life_circle_m"):
            if any(not (v > 0 and math.isfinite(v)) for v in getattr(rs, name).values()):
                raise ValueError(f"{name} values must be positive numbers")
        return rs

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in report order, with this set's thresholds."""
        thr: dict[str, tuple[float | None, str]] = {
            "LOC-INSIDE-CITY": (1.0, "share"),
            "LOC-DISTRICT": (1.0, "districts"),
            "FAC-DECLARED": (1.0, "count"),
            "FAC-IN-SITE": (self.facility_outside_tolerance_m, "m"),
            "FAC-AREA": (self.facility_area_m2_per_100_households, "m2/100 households"),
            "SHELTER-REACH": (self.shelter_reach_m, "m"),
            "SHELTER-CAPACITY": (None, "persons"),
            "FIRE-REACH": (self.fire_response_distance_m, "m"),
            "LIFE-CIRCLE": (None, "m"),
            "SITE-NO-SHELTER": (0.0, "m2"),
        }
        return tuple(Rule(c, thr[c][0], thr[c][1], _BASIS[c], *_TITLE[c], advisory=c == "LIFE-CIRCLE")
                     for c in RULE_CODES)

    def rule(self, code: str) -> Rule:
        """The rule with this code (KeyError otherwise)."""
        for r in self.rules:
            if r.code == code:
                return r
        raise KeyError(code)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able description (stored with a report)."""
        return {
            "version": self.version, "persons_per_household": self.persons_per_household,
            "facility_area_m2_per_100_households": self.facility_area_m2_per_100_households,
            "facility_outside_tolerance_m": self.facility_outside_tolerance_m,
            "community_service_kinds": list(self.community_service_kinds),
            "shelter_reach_m": self.shelter_reach_m,
            "shelter_service_distance_m": dict(self.shelter_service_distance_m),
            "shelter_per_capita_m2": dict(self.shelter_per_capita_m2),
            "fire_response_distance_m": self.fire_response_distance_m,
            "fire_station_kinds": list(self.fire_station_kinds),
            "life_circle_m": dict(self.life_circle_m), "area_tolerance_m2": self.area_tolerance_m2,
            "distance_tolerance_m": self.distance_tolerance_m, "distance_method": self.distance_method,
            "reach_method": self.reach_method,
        }


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Check:
    """The outcome of one rule. ``evidence`` is a shapely geometry in the storage CRS or None.

    ``method`` is the distance method a reach check used (``"network"`` or ``"euclidean"``) when the rule
    set asks for road-network reach; None otherwise (and then absent from :meth:`as_dict`).
    """

    code: str
    status: str
    value: Any
    required: Any
    unit: str
    message_zh: str
    message_en: str
    basis: str
    evidence: Any = None
    method: str | None = None

    def as_dict(self, lang: str = "zh") -> dict[str, Any]:
        """``{code, status, value, required, unit, message, basis}`` (the command contract), plus
        ``method`` for a reach check under ``reach_method="network"``."""
        out = {"code": self.code, "status": self.status, "value": _jsonable(self.value),
               "required": _jsonable(self.required), "unit": self.unit,
               "message": self.message_en if lang.startswith("en") else self.message_zh,
               "basis": self.basis}
        if self.method is not None:
            out["method"] = self.method
        return out


def _jsonable(v):
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _check(rs: RuleSet, code: str, status: str, value, required, zh: str, en: str,
           evidence=None, unit: str | None = None, method: str | None = None) -> Check:
    rule = rs.rule(code)
    if evidence is not None and getattr(evidence, "is_empty", False):
        evidence = None
    return Check(code, status, value, required, unit or rule.unit, zh, en, rule.basis, evidence, method)


@dataclass(frozen=True)
class ProjectFacility:
    """A facility of the submission: kind, floor area and a Point or Polygon footprint (storage CRS)."""

    kind: str
    floor_area_m2: float
    geom: Any
    name: str = ""


@dataclass(frozen=True)
class Project:
    """The submission in the storage CRS: one site (Polygon/MultiPolygon) and its facilities."""

    name: str
    developer: str
    households: int
    site: Any
    facilities: tuple[ProjectFacility, ...] = ()
    population_declared: int | None = None

    def population(self, persons_per_household: float) -> int:
        """Declared population, else households x persons per household, rounded."""
        if self.population_declared:
            return int(self.population_declared)
        return int(round(self.households * persons_per_household))


@dataclass(frozen=True, eq=False)
class Areas:
    """Administrative areas near the site: codes, names and polygons (aligned, ``geoms`` object array)."""

    codes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    geoms: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))

    def __post_init__(self):
        g = np.asarray(self.geoms, dtype=object).reshape(-1)
        object.__setattr__(self, "geoms", g)
        if not (len(self.codes) == len(g) and len(self.names) in (0, len(g))):
            raise ValueError("codes, names and geoms must have the same length")


@dataclass(frozen=True, eq=False)
class ReviewContext:
    """Everything near the site that the rules need, as arrays in the storage CRS.

    ``districts`` etc. need only hold the areas intersecting the site; the city is the union of the
    districts given. Shelters, fire stations and facilities need only those within reach (the
    service fetches them with spatial-index queries). ``demand_xy``/``demand_pop`` are the demand
    points (grid representative points with their population) for the capacity LP.

    ``road_network`` (a :class:`layers.analysis.network.RoadNetwork` of the roads near the site) and
    ``roads_loaded`` serve ``reach_method="network"``: no network and ``roads_loaded`` false means no
    roads at all, so the reach rules use straight lines; ``roads_loaded`` true without a network means
    roads exist but none near the site (a network implies ``roads_loaded``).
    """

    districts: Areas = field(default_factory=Areas)
    streets: Areas = field(default_factory=Areas)
    communities: Areas = field(default_factory=Areas)
    grids: Areas = field(default_factory=Areas)
    shelter_geoms: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    shelter_levels: tuple[str, ...] = ()
    shelter_capacity: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    fire_geoms: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    fire_kinds: tuple[str, ...] = ()
    facility_geoms: NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    facility_kinds: tuple[str, ...] = ()
    demand_xy: NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 2)))
    demand_pop: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    road_network: RoadNetwork | None = None
    roads_loaded: bool | None = None

    def __post_init__(self):
        object.__setattr__(self, "roads_loaded", bool(self.roads_loaded) or self.road_network is not None)
        for name in ("shelter_geoms", "fire_geoms", "facility_geoms"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=object).reshape(-1))
        object.__setattr__(self, "shelter_capacity",
                           np.asarray(self.shelter_capacity, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "demand_xy", np.asarray(self.demand_xy, dtype=np.float64).reshape(-1, 2))
        object.__setattr__(self, "demand_pop", np.asarray(self.demand_pop, dtype=np.float64).reshape(-1))
        if not (len(self.shelter_geoms) == len(self.shelter_levels) == len(self.shelter_capacity)):
            raise ValueError("shelter_geoms, shelter_levels and shelter_capacity must align")
        if len(self.fire_geoms) != len(self.fire_kinds):
            raise ValueError("fire_geoms and fire_kinds must align")
        if len(self.facility_geoms) != len(self.facility_kinds):
            raise ValueError("facility_geoms and facility_kinds must align")
        if len(self.demand_xy) != len(self.demand_pop):
            raise ValueError("demand_xy and demand_pop must align")


@dataclass(frozen=True, eq=False)
class Review:
    """The report: verdict, rule-set version, location shares and the checks in rule order."""

    verdict: str
    rule_set: str
    project: Project
    population: int
    location: Mapping[str, tuple]
    checks: tuple[Check, ...]

    def check(self, code: str) -> Check:
        for c in self.checks:
            if c.code == code:
                return c
        raise KeyError(code)

    @property
    def statuses(self) -> dict[str, str]:
        return {c.code: c.status for c in self.checks}

    def as_dict(self, lang: str = "zh") -> dict[str, Any]:
        """The ``review_project --json`` document."""
        return {
            "verdict": self.verdict, "rule_set": self.rule_set,
            "project": {"name": self.project.name, "households": int(self.project.households),
                        "population": int(self.population)},
            "location": {k: [_jsonable(dict(x)) for x in v] for k, v in self.location.items()},
            "checks": [c.as_dict(lang) for c in self.checks],
        }


# --------------------------------------------------------------------------------------------
# geometry: farthest distance with an error bound
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Farthest:
    """The largest distance from a region to the nearest target.

    ``distance_m`` is the distance at a real point ``point_xy`` of the region (so a lower bound of
    the true maximum); ``upper_m`` is a proven upper bound, ``upper_m - distance_m <= tol_m``.
    ``inf`` when there is no target.
    """

    distance_m: float
    upper_m: float
    point_xy: tuple[float, float] | None


def _ring_segments(geom) -> NDArray[np.float64]:
    """(m, 4) array x0, y0, x1, y1 of the segments of all rings of a (multi)polygon."""
    segs = []
    for poly in shapely.get_parts(geom):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        for ring in [poly.exterior, *poly.interiors]:
            c = np.asarray(ring.coords)[:, :2]
            if len(c) >= 2:
                segs.append(np.hstack([c[:-1], c[1:]]))
    return np.vstack(segs) if segs else np.zeros((0, 4))


def _segment_crossings(a: NDArray, b: NDArray) -> NDArray[np.float64]:
    """Intersection points of every segment in ``a`` (m, 4) with every segment in ``b`` (k, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2))
    out = []
    # chunk so that m * k stays bounded in memory
    step = max(1, 2_000_000 // max(len(b), 1))
    for s in range(0, len(a), step):
        p = a[s:s + step, None, :2]
        r = a[s:s + step, None, 2:] - p
        q = b[None, :, :2]
        sv = b[None, :, 2:] - q
        den = r[..., 0] * sv[..., 1] - r[..., 1] * sv[..., 0]
        qp = q - p
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (qp[..., 0] * sv[..., 1] - qp[..., 1] * sv[..., 0]) / den
            u = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / den
        ok = (den != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
        i, j = np.nonzero(ok)
        if i.size:
            out.append(p[i, 0] + t[i, j, None] * r[i, 0])
    return np.vstack(out) if out else np.zeros((0, 2))


def farthest_distance(region, targets: ArrayLike, *, tol_m: float = 0.5) -> Farthest:
    """Max over the points of ``region`` of the distance to the nearest target, within ``tol_m``.

    Method (exact up to ``tol_m``, with a proof). Let T be the union of the targets and
    f(x) = d(x, T). The maximum of f over the region R is attained in R' = closure(R \\ T)
    (f = 0 in T), where f(x) = d(x, boundary of T). Replace the boundary of T by sample points S
    on it with spacing h = 2 tol_m (the vertices of ``shapely.segmentize``; point targets are
    their own samples, h = 0) and let g(x) = d(x, S). Then f <= g <= f + h/2 on R'.

    g restricted to one Voronoi cell of S is the distance to one point, a convex function, so
    its maximum over (cell ∩ R') -- a polygon -- is attained at a vertex of that polygon: a
    vertex of R', a Voronoi vertex inside R', or a crossing of the boundary of R' with a Voronoi
    edge. These candidates C (computed with scipy's Qhull Voronoi, four far dummy points keeping
    every real cell bounded) contain the maximiser of g, hence

        max_C f  <=  max_R f  <=  max_R g  =  max_C g  <=  max_C f + h/2.

    The function returns ``max_C f`` (evaluated exactly with GEOS at a real point of R) and
    ``max_C g`` as the upper bound. The maximum of a distance over a polygon is *not* always on
    its boundary (a site in the gap between two shelters peaks at a Voronoi vertex inside it),
    which is why the interior Voronoi vertices are candidates.

    Speed: R' is cut into cells (:func:`_relevant_samples`). A cell whose centre c has
    f(c) + r < L (r its half-diagonal, L = the largest f at a real point of R': its vertices, the
    centres inside it) cannot hold the maximum, since f is 1-Lipschitz; the candidates in such
    cells are dropped. Only the samples that can be nearest to some point of R' in the other cells
    go into the Voronoi diagram (with its proof); the diagram within those cells, so C and g on C
    there, is the same as with all of S (up to Qhull's last-bit rounding of the vertex coordinates).
    The maximiser of f among the candidates lies in a kept cell, so the answer is unchanged.

    Parameters
    ----------
    region : shapely Polygon, MultiPolygon or Point
        In a metric CRS.
    targets : (n,) array of shapely geometries
        Points, lines or polygons in the same CRS.
    tol_m : float, keyword-only
        Maximum error (> 0).

    Returns
    -------
    Farthest

    Examples
    --------
    A 300 m x 400 m site with a point shelter at one corner: the farthest corner is 500 m away.

    >>> r = farthest_distance(shapely.box(0, 0, 300, 400), [shapely.Point(0, 0)])
    >>> round(r.distance_m, 6), r.point_xy
    (500.0, (300.0, 400.0))

    Two point targets at the ends of a 1000 x 10 strip: the farthest point is in the middle.

    >>> r = farthest_distance(shapely.box(0, 0, 1000, 10), [shapely.Point(0, 0), shapely.Point(1000, 0)])
    >>> round(r.distance_m, 3)
    500.1
    """
    if tol_m <= 0:
        raise ValueError("tol_m must be > 0")
    t = np.asarray(targets, dtype=object).reshape(-1)
    t = t[~(shapely.is_missing(t) | shapely.is_empty(t))] if t.size else t
    if region is None or region.is_empty:
        return Farthest(0.0, 0.0, None)
    if t.size == 0:
        return Farthest(math.inf, math.inf, None)
    if region.geom_type in ("Point", "MultiPoint"):
        pts = shapely.get_coordinates(region)
        d = shapely.distance(shapely.union_all(t), shapely.points(pts))
        k = int(np.argmax(d))
        return Farthest(float(d[k]), float(d[k]), (float(pts[k, 0]), float(pts[k, 1])))

    tunion = shapely.union_all(t)
    rest = shapely.difference(region, tunion)
    rest = shapely.make_valid(rest) if not rest.is_valid else rest
    rest_poly = shapely.union_all([p for p in shapely.get_parts(rest) if p.geom_type == "Polygon"]) \
        if not rest.is_empty else rest
    if rest_poly.is_empty:
        # the region lies inside the targets (possibly up to lines/points of measure zero)
        c = shapely.get_coordinates(region)[0]
        return Farthest(0.0, 0.0, (float(c[0]), float(c[1])))

    all_points = all(g.geom_type in ("Point", "MultiPoint") for g in t)
    if all_points:
        samples = _unique_rows(shapely.get_coordinates(t)[:, :2])
        if len(samples) <= FEW_POINTS:
            return _farthest_few_points(rest_poly, samples)
        return _farthest_on_samples(rest_poly, samples, 0.0, tunion)
    # only the fine samples that can be nearest to a point of R' (:func:`_relevant_samples`): the
    # Voronoi diagram restricted to R' -- hence every candidate of the proof and g on them -- is unchanged.
    h = 2.0 * tol_m
    samples, cells = _relevant_samples(rest_poly, tunion, h, prune=True)
    return _farthest_on_samples(rest_poly, samples, h, tunion, cells)


#: :func:`_relevant_samples`: the bounding box of R' is cut into about this many cells.
RELEVANT_CELLS = 64


#: :func:`_relevant_samples` with ``prune``: cells are halved this many times (where they may hold the maximum).
PRUNE_LEVELS = 3


@dataclass(frozen=True)
class _Cells:
    """The boxes of :func:`_relevant_samples` that may hold the maximum of f: centres (k, 2), half sizes."""

    cxy: NDArray[np.float64]
    hx: float
    hy: float

    def hold(self, xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each point lies in one of the boxes (closed, plus 1e-9 relative for rounding)."""
        ex = self.hx * (1 + 1e-9) + 1e-9
        ey = self.hy * (1 + 1e-9) + 1e-9
        out = np.zeros(len(xy), dtype=bool)
        for k in range(0, len(self.cxy), 64):  # bounded (n, 64) temporaries
            c = self.cxy[k:k + 64]
            out |= ((np.abs(xy[:, None, 0] - c[None, :, 0]) <= ex)
                    & (np.abs(xy[:, None, 1] - c[None, :, 1]) <= ey)).any(axis=1)
        return out


def _relevant_samples(rest_poly, tunion, h: float, n_cells: int = RELEVANT_CELLS, *, prune: bool = False,
                      levels: int = PRUNE_LEVELS):
    """The samples S of :func:`_target_samples` (boundary of the targets ``tunion``, spacing <= h) that
    can be the nearest sample to some point of ``rest_poly`` (R'), in their order.

    Proof. For x in R' (outside the open targets) the nearest point of the targets lies on their
    boundary, within h/2 of a sample, so g(x) = d(x, S) <= f(x) + h/2 with f = d(., targets). A sample
    s nearest to x has |x - s| = g(x) <= f(x) + h/2. Cover the bounding box of R' by cells of centre c
    and half-diagonal r: in a cell, |x - s| >= |c - s| - r and f(x) <= f(c) + r (f is 1-Lipschitz), so
    s can be nearest to a point of that cell only if |c - s| - f(c) <= 2 r + h/2. A sample failing this
    in every cell is nearest to no point of R'; dropping it leaves the nearest sample of every x in R'
    -- so the Voronoi cells, vertices and edges of S within R' and g on R' -- as they were. A margin of
    1e-6 m (plus 1e-9 relative) covers the rounding of the arithmetic.

    With ``prune``, returns ``(samples, cells)`` for only the cells that may hold the maximum of f over
    R': a cell with f(c) + r < L, L the largest f at a real point of R' (its vertices, the cell centres
    inside it), cannot (f <= f(c) + r in it). The kept cells are halved in x and y and pruned again,
    ``levels`` times (L can only grow); only the samples that can be nearest to a point of R' in the
    kept cells are returned -- by the same proof, the diagram within them is unchanged.
    """
    x0, y0, x1, y1 = rest_poly.bounds
    w, hh = x1 - x0, y1 - y0
    # cells about square, about n_cells of them
    nx = max(1, int(round(math.sqrt(n_cells * w / hh)))) if hh > 0 else n_cells
    ny = max(1, int(round(n_cells / nx)))
    dx, dy = w / nx, hh / ny
    cx = x0 + dx * (np.arange(nx) + 0.5)
    cy = y0 + dy * (np.arange(ny) + 0.5)
    gx, gy = np.meshgrid(cx, cy, indexing="ij")
    cxy = np.column_stack([gx.ravel(), gy.ravel()])
    r = 0.5 * math.hypot(dx, dy)
    fc = shapely.distance(tunion, shapely.points(cxy))
    cells = None
    if prune and dx > 0 and dy > 0:
        lower = float(shapely.distance(tunion, shapely.points(shapely.get_coordinates(rest_poly))).max())
        hx, hy = dx / 2.0, dy / 2.0
        for level in range(levels + 1):
            if level:  # halve the kept cells
                q = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]) * (hx / 2.0, hy / 2.0)
                cxy = (cxy[:, None, :] + q[None, :, :]).reshape(-1, 2)
                hx, hy, r = hx / 2.0, hy / 2.0, r / 2.0
                fc = shapely.distance(tunion, shapely.points(cxy))
            inside = shapely.contains(rest_poly, shapely.points(cxy))
            if inside.any():
                lower = max(lower, float(fc[inside].max()))
            alive = fc + r + (1e-6 + 1e-9 * (lower + r)) >= lower
            if alive.any():  # (always: the point giving L lies in a cell that stays)
                cxy, fc = cxy[alive], fc[alive]
        cells = _Cells(cxy, hx, hy)
        x0, y0 = float(cxy[:, 0].min()) - hx, float(cxy[:, 1].min()) - hy
        x1, y1 = float(cxy[:, 0].max()) + hx, float(cxy[:, 1].max()) + hy
    top = float(fc.max()) + r + h / 2.0
    eps = 1e-6 + 1e-9 * top
    # a relevant sample is within max f(c) + r + h/2 of the box (cheap first cut, before np.unique)
    b = top + eps
    samples = _target_samples(tunion, h, (x0 - b, y0 - b, x1 + b, y1 + b))
    if len(samples) > 8:
        # the samples within f(c) + 2 r + h/2 of some cell centre c (a k-d tree's ball queries)
        lists = cKDTree(samples).query_ball_point(cxy, fc + (2.0 * r + h / 2.0 + eps), return_sorted=False)
        ok = np.zeros(len(samples), dtype=bool)
        ok[np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64)] = True
        samples = samples[ok]
    return (samples, cells) if prune else samples


def _target_samples(tunion, h: float, box: tuple[float, float, float, float] | None = None
                    ) -> NDArray[np.float64]:
    """Points on the boundary of the target union with spacing <= h (vertices kept), distinct and
    sorted (x, then y); only those in ``box`` (x0, y0, x1, y1, closed) when given."""
    out = []
    for p in shapely.get_parts(tunion):
        if p.geom_type == "Point":
            out.append(shapely.get_coordinates(p))
        elif p.geom_type == "LineString":
            out.append(shapely.get_coordinates(shapely.segmentize(p, h)))
        elif p.geom_type == "Polygon":
            out.append(shapely.get_coordinates(shapely.segmentize(shapely.boundary(p), h)))
        else:  # nested collections
            out.append(_target_samples(p, h))
    xy = np.vstack(out)[:, :2]
    if box is not None:
        xy = xy[(xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1]) & (xy[:, 1] <= box[3])]
    return _unique_rows(xy)


def _unique_rows(xy: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.unique(xy, axis=0)`` for finite (n, 2) float rows (sorted by x, then y), 5-10x faster.

    Same rows in the same order (-0.0 and 0.0 count as one value in both; which sign is kept may differ).
    """
    if len(xy) == 0:
        return xy.reshape(0, 2).copy()
    s = xy[np.lexsort((xy[:, 1], xy[:, 0]))]
    new = np.ones(len(s), dtype=bool)
    new[1:] = (s[1:, 0] != s[:-1, 0]) | (s[1:, 1] != s[:-1, 1])
    return s[new]


#: :func:`farthest_distance`: up to this many point targets go to :func:`_farthest_few_points` (no Qhull).
FEW_POINTS = 12


def _farthest_few_points(rest_poly, pts: NDArray[np.float64]) -> Farthest:
    """max over the polygon ``rest_poly`` of the distance to the nearest of a few distinct points ``pts``.

    The candidates of :func:`farthest_distance`'s proof (h = 0) are vertices of the region, Voronoi
    vertices inside it and crossings of Voronoi edges with its boundary. Every Voronoi vertex is the
    circumcentre of three of the points and every Voronoi edge lies on the bisector of two, so the
    region's vertices, the circumcentres of all triples inside it and the crossings of all bisectors
    with its boundary are a superset -- of real points of the region, so its maximum is the same. For a
    handful of points this is cheaper than a Qhull diagram (about 0.1 instead of 0.5 ms).
    """
    verts = shapely.get_coordinates(rest_poly)
    segs = _ring_segments(rest_poly)
    n = len(pts)
    cands = [verts]
    o = pts.mean(axis=0)  # circumcentres and bisectors in local coordinates (less cancellation)
    q = pts - o
    if n >= 3:
        i, j, k = np.array(list(itertools.combinations(range(n), 3)), dtype=np.intp).T
        a, b, c = q[i], q[j], q[k]
        d = 2.0 * (a[:, 0] * (b[:, 1] - c[:, 1]) + b[:, 0] * (c[:, 1] - a[:, 1]) + c[:, 0] * (a[:, 1] - b[:, 1]))
        ok = d != 0.0  # collinear triples have no circumcentre
        a2, b2, c2 = (a * a).sum(axis=1), (b * b).sum(axis=1), (c * c).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ux = (a2 * (b[:, 1] - c[:, 1]) + b2 * (c[:, 1] - a[:, 1]) + c2 * (a[:, 1] - b[:, 1])) / d
            uy = (a2 * (c[:, 0] - b[:, 0]) + b2 * (a[:, 0] - c[:, 0]) + c2 * (b[:, 0] - a[:, 0])) / d
        cc = np.column_stack([ux, uy])[ok] + o
        bx0, by0, bx1, by1 = rest_poly.bounds
        cc = cc[(cc[:, 0] >= bx0) & (cc[:, 0] <= bx1) & (cc[:, 1] >= by0) & (cc[:, 1] <= by1)]
        if len(cc):
            shapely.prepare(rest_poly)
            cands.append(cc[shapely.contains(rest_poly, shapely.points(cc))])
    if n >= 2 and len(segs):
        i, j = np.array(list(itertools.combinations(range(n), 2)), dtype=np.intp).T
        m = (q[i] + q[j]) / 2.0  # the bisector of i, j: points x with (x - m) . v = 0
        v = q[j] - q[i]
        a = segs[:, :2] - o
        dseg = segs[:, 2:] - segs[:, :2]
        den = dseg @ v.T  # (segments, pairs)
        num = (m * v).sum(axis=1)[None, :] - a @ v.T
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = num / den
        si, pi = np.nonzero((den != 0.0) & (tt >= 0.0) & (tt <= 1.0))
        cands.append(segs[si, :2] + tt[si, pi, None] * dseg[si])
    c = np.vstack(cands)
    diff = c[:, None, :] - pts[None, :, :]
    g = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]).min(axis=1)
    kk = int(np.argmax(g))
    return Farthest(float(g[kk]), float(g[kk]), (float(c[kk, 0]), float(c[kk, 1])))


def _farthest_on_samples(rest_poly, samples: NDArray, h: float, tunion, cells: _Cells | None = None) -> Farthest:
    """max over the candidates of the proof in :func:`farthest_distance` (g = distance to samples);
    only the candidates in ``cells``' kept cells when given."""
    verts = shapely.get_coordinates(rest_poly)
    segs = _ring_segments(rest_poly)
    allxy = np.vstack([samples, verts])
    lo, hi = allxy.min(axis=0), allxy.max(axis=0)
    span = float(max(np.hypot(*(hi - lo)), 1.0))
    far = 20.0 * span
    dummies = (lo + hi) / 2 + np.array([[-far, -far], [far, -far], [far, far], [-far, far]])
    vor = Voronoi(np.vstack([samples, dummies]))
    vv = vor.vertices
    # shapely.contains on points, not contains_xy: contains_xy crashes once SpatiaLite has loaded the
    # system GEOS into the process (RTLD_GLOBAL), i.e. inside Django on SpatiaLite.
    shapely.prepare(rest_poly)
    # (only the vertices in its bounding box can be inside: fewer point objects, same mask)
    bx0, by0, bx1, by1 = rest_poly.bounds
    inside = (vv[:, 0] >= bx0) & (vv[:, 0] <= bx1) & (vv[:, 1] >= by0) & (vv[:, 1] <= by1)
    if inside.any():
        inside[inside] = shapely.contains(rest_poly, shapely.points(vv[inside]))
    rv = np.asarray(vor.ridge_vertices)
    rv = rv[(rv >= 0).all(axis=1)]
    ridges = np.hstack([vv[rv[:, 0]], vv[rv[:, 1]]])
    rlo = np.minimum(ridges[:, :2], ridges[:, 2:])
    rhi = np.maximum(ridges[:, :2], ridges[:, 2:])
    keep = (rhi[:, 0] >= bx0) & (rlo[:, 0] <= bx1) & (rhi[:, 1] >= by0) & (rlo[:, 1] <= by1)
    c = np.vstack([verts, vv[inside], _segment_crossings(segs, ridges[keep])])
    if cells is not None:
        held = cells.hold(c)
        if held.any():  # (always: the vertex or centre giving L is held)
            c = c[held]
    g, _ = cKDTree(samples).query(c)
    gmax = float(g.max())
    # only candidates whose g is within h/2 of the best can hold the best f (f <= g, f >= g - h/2)
    sel = np.flatnonzero(g >= gmax - h / 2 - 1e-9)
    if h == 0.0:
        f = g[sel]
    else:
        f = shapely.distance(tunion, shapely.points(c[sel]))
    k = int(np.argmax(f))
    best = c[sel[k]]
    return Farthest(float(f[k]), max(gmax, float(f[k])), (float(best[0]), float(best[1])))


def area_shares(site, geoms: ArrayLike) -> NDArray[np.float64]:
    """Share of the site's area inside each geometry: area(site ∩ g) / area(site).

    Examples
    --------
    >>> area_shares(shapely.box(0, 0, 10, 10), [shapely.box(-5, 0, 4, 10), shapely.box(4, 0, 20, 10)]).tolist()
    [0.4, 0.6]
    """
    g = np.asarray(geoms, dtype=object).reshape(-1)
    a = site.area
    if g.size == 0 or a <= 0:
        return np.zeros(g.size)
    return np.clip(shapely.area(shapely.intersection(g, site)) / a, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# capacity
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SpareCapacity:
    """Spare capacity of the shelters within reach of a site.

    ``spare_persons`` is exact: the number of additional persons placed at the site that the
    shelters within reach can take while everybody already served stays served (possibly moved to
    another shelter in their own reach). ``reach_idx`` indexes the shelters in reach of the site,
    ``load``/``capacity`` are the per-shelter figures of one optimal assignment without the project.
    """

    spare_persons: float
    reach_idx: NDArray[np.int64]
    load: NDArray[np.float64]
    capacity: NDArray[np.float64]
    population_served: float


def shelter_spare_capacity(site, shelter_geoms: ArrayLike, shelter_radius_m: ArrayLike,
                           shelter_capacity: ArrayLike, demand_xy: ArrayLike,
                           demand_pop: ArrayLike, *, _discs: _Discs | None = None) -> SpareCapacity:
    """Spare capacity of the shelters that reach ``site``, net of the demand they already serve.

    Existing demand (points with population) is assigned to shelters within each shelter's service
    distance by the exact transportation problem (:func:`layers.analysis.coverage.capacitated_coverage`).
    The project is then added as one more demand point that reaches the shelters within their
    service distance of the site, with unbounded population; the increase of the maximum served
    population is the spare capacity available to the project. Augmenting paths of the max-flow
    never reduce the flow of other demand, so nobody already served is displaced out of reach.
    Both maxima come from :func:`layers.analysis.coverage.added_demand_capacity`: exact integer
    maximum flows for whole persons (the database's case), the LP otherwise.

    Examples
    --------
    Two shelters of 100 persons; the first (reachable from the site) already serves 70 people who
    could only use it, the second is out of the site's reach: 30 spare.

    >>> sh = [shapely.Point(0, 0).buffer(10), shapely.Point(5000, 0).buffer(10)]
    >>> res = shelter_spare_capacity(shapely.box(100, 0, 200, 50), sh, [500., 500.], [100., 100.],
    ...                              [[-200., 0.]], [70.])
    >>> res.spare_persons, res.reach_idx.tolist()
    (30.0, [0])
    """
    geoms = np.asarray(shelter_geoms, dtype=object).reshape(-1)
    rad = np.broadcast_to(np.asarray(shelter_radius_m, dtype=np.float64), geoms.shape).copy()
    cap = np.asarray(shelter_capacity, dtype=np.float64).reshape(-1)
    if cap.shape != geoms.shape:
        raise ValueError("shelter_capacity must align with shelter_geoms")
    dxy = np.asarray(demand_xy, dtype=np.float64).reshape(-1, 2)
    pop = np.asarray(demand_pop, dtype=np.float64).reshape(-1)
    if geoms.size == 0:
        return SpareCapacity(0.0, np.zeros(0, np.int64), np.zeros(0), cap, 0.0)
    reach = np.flatnonzero(shapely.distance(geoms, site) <= rad)
    if reach.size == 0:
        return SpareCapacity(0.0, reach, np.zeros(geoms.size), cap, 0.0)
    # = coverage_matrix_geoms(dxy, geoms, rad), 3-5x faster (dwithin_pairs)
    d_idx, s_idx = dwithin_pairs(dxy, geoms, rad, b_discs=_discs() if _discs is not None else None)
    cover = scipy.sparse.csr_array((np.ones(d_idx.size, dtype=np.uint8), (d_idx, s_idx)),
                                   shape=(len(dxy), geoms.size))
    res = added_demand_capacity(pop, cover, cap, reach)
    spare = max(res.added_persons, 0.0)
    return SpareCapacity(spare, reach, res.load, cap, res.population_served)


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------
def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def check_inside_city(site, district_geoms: ArrayLike, rs: RuleSet) -> Check:
    """LOC-INSIDE-CITY: share of the site area inside the city (the union of the districts).

    Passes when the part outside is at most ``rs.area_tolerance_m2`` (boundaries digitised
    separately differ by centimetres); the part outside is the evidence.
    """
    g = np.asarray(district_geoms, dtype=object).reshape(-1)
    city = shapely.union_all(g) if g.size else shapely.Polygon()
    outside = shapely.difference(site, city)
    share = 1.0 - outside.area / site.area
    ok = outside.area <= rs.area_tolerance_m2
    return _check(rs, "LOC-INSIDE-CITY", PASS if ok else FAIL, round(share, 6), 1.0,
                  f"项目用地 {share:.2%} 位于市域内" + ("" if ok else f"，{_fmt(outside.area)} 平方米在市域外"),
                  f"{share:.2%} of the site lies inside the city"
                  + ("" if ok else f"; {_fmt(outside.area)} m² lies outside"), evidence=outside)


def _share_list(site, areas: Areas, rs: RuleSet, with_names: bool = True) -> tuple[dict, ...]:
    shares = area_shares(site, areas.geoms)
    keep = shares * site.area > rs.area_tolerance_m2
    order = sorted(np.flatnonzero(keep), key=lambda i: (-shares[i], areas.codes[i]))
    out = []
    for i in order:
        d = {"code": areas.codes[i]}
        if with_names and areas.names:
            d["name"] = areas.names[i]
        d["share"] = round(float(shares[i]), 4)
        out.append(d)
    return tuple(out)


def location_shares(site, ctx: ReviewContext, rs: RuleSet) -> dict[str, tuple[dict, ...]]:
    """Districts, streets, communities and grids the site overlaps, with area shares (largest first)."""
    return {"districts": _share_list(site, ctx.districts, rs),
            "streets": _share_list(site, ctx.streets, rs),
            "communities": _share_list(site, ctx.communities, rs),
            "grids": _share_list(site, ctx.grids, rs, with_names=False)}


def check_district(site, districts: Areas, rs: RuleSet) -> Check:
    """LOC-DISTRICT: ``pass`` when one district holds the whole site, ``warn`` when it straddles.

    A site lies in one district when some district holds all of it but the area tolerance
    (districts may overlap, e.g. a development zone drawn over its host district: then each holds
    it wholly and the check passes, listing both). It straddles when no district holds it whole
    but two or more hold a part; ``n/a`` when no district holds any of it (LOC-INSIDE-CITY fails).
    """
    lst = _share_list(site, districts, rs)
    shares = area_shares(site, districts.geoms)
    whole = bool((site.area * (1.0 - shares) <= rs.area_tolerance_m2).any()) if shares.size else False
    names = "、".join(f"{d.get('name', '')}({d['code']}) {d['share']:.1%}" for d in lst)
    names_en = ", ".join(f"{d.get('name', '')} ({d['code']}) {d['share']:.1%}" for d in lst)
    if not lst:
        return _check(rs, "LOC-DISTRICT", NA, [], 1, "项目用地不在任何区县内",
                      "the site lies in no district")
    if whole:
        return _check(rs, "LOC-DISTRICT", PASS, list(lst), 1, f"项目用地位于 {names}",
                      f"the site lies in {names_en}")
    return _check(rs, "LOC-DISTRICT", WARN, list(lst), 1,
                  f"项目用地跨 {len(lst)} 个区县：{names}",
                  f"the site straddles {len(lst)} districts: {names_en}")


def _service_facilities(project: Project, rs: RuleSet) -> list[ProjectFacility]:
    return [f for f in project.facilities if f.kind in rs.community_service_kinds]


def check_fac_declared(project: Project, rs: RuleSet) -> Check:
    """FAC-DECLARED: at least one community service facility with a location and a floor area > 0."""
    ok = [f for f in _service_facilities(project, rs)
          if f.geom is not None and not f.geom.is_empty and f.floor_area_m2 > 0]
    n = len(ok)
    return _check(rs, "FAC-DECLARED", PASS if n else FAIL, n, 1,
                  f"标明社区综合服务设施 {n} 处" if n else "未标明社区综合服务设施的位置和面积",
                  f"{n} community service facilit{'y' if n == 1 else 'ies'} declared" if n
                  else "no community service facility with a location and floor area declared")


def check_fac_in_site(project: Project, rs: RuleSet) -> Check:
    """FAC-IN-SITE: every community service facility inside the site; value = largest distance out, m.

    A point's distance outside is its distance to the site (0 inside or on the boundary); a
    footprint's is the farthest distance of its points from the site (:func:`farthest_distance`).
    Evidence: the parts of the facilities outside the site (points as they are).
    """
    fac = _service_facilities(project, rs)
    if not fac:
        return _check(rs, "FAC-IN-SITE", NA, None, rs.facility_outside_tolerance_m,
                      "未标明社区综合服务设施，不适用", "no community service facility declared")
    dist, outside = [], []
    for f in fac:
        if f.geom.geom_type in ("Point", "MultiPoint"):
            d = float(shapely.distance(f.geom, project.site))
            if d > 0:
                outside.append(f.geom)
        else:
            d = farthest_distance(f.geom, [project.site], tol_m=rs.distance_tolerance_m).distance_m
            part = shapely.difference(f.geom, project.site)
            if not part.is_empty:
                outside.append(part)
        dist.append(d)
    worst = max(dist)
    ok = worst <= rs.facility_outside_tolerance_m + 1e-9
    n_out = sum(d > rs.facility_outside_tolerance_m + 1e-9 for d in dist)
    return _check(rs, "FAC-IN-SITE", PASS if ok else FAIL, round(worst, 2),
                  rs.facility_outside_tolerance_m,
                  "社区综合服务设施均位于项目用地内" if ok else
                  f"{n_out} 处社区综合服务设施位于项目用地外，最远 {_fmt(worst)} 米",
                  "every community service facility lies inside the site" if ok else
                  f"{n_out} community service facilit{'y lies' if n_out == 1 else 'ies lie'} outside the site,"
                  f" up to {_fmt(worst)} m", evidence=shapely.union_all(outside) if outside else None)


def check_fac_area(project: Project, rs: RuleSet) -> Check:
    """FAC-AREA: total floor area of the community service facilities >= threshold per 100 households.

    ``value`` = total m², ``required`` = threshold x households / 100 m². Compared with a relative
    slack of 1e-9 only (30.00 m² per 100 households passes, 29.99 fails).
    """
    total = float(sum(f.floor_area_m2 for f in _service_facilities(project, rs)))
    required = rs.facility_area_m2_per_100_households * project.households / 100.0
    ok = total >= required * (1.0 - 1e-9)
    per100 = total / project.households * 100.0
    return _check(rs, "FAC-AREA", PASS if ok else FAIL, round(total, 2), round(required, 2),
                  f"社区综合服务设施建筑面积 {_fmt(total, 2)} 平方米，每百户 {per100:.2f} 平方米，"
                  f"应不少于 {_fmt(required, 2)} 平方米",
                  f"community service floor area {_fmt(total, 2)} m² ({per100:.2f} m² per 100 households);"
                  f" {_fmt(required, 2)} m² required", unit="m2")


def _inner_discs(geoms: NDArray[np.object_]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                     NDArray[np.float64]]:
    """Per geometry a point ``p`` on it, a radius ``rho`` of a disc about p inside it (0 for points
    and lines) and a radius ``big`` of a disc about p holding it: ``|x - p| - big <= d(x, g) <=
    max(0, |x - p| - rho)`` for every point x."""
    if (shapely.get_type_id(geoms) == 0).all():  # points: the point itself, both radii 0
        pxy = shapely.get_coordinates(geoms)
        return pxy, np.zeros(len(geoms)), np.zeros(len(geoms))
    pts = shapely.point_on_surface(geoms)
    pxy = shapely.get_coordinates(pts)
    rho = np.zeros(len(geoms))
    areal = shapely.area(geoms) > 0
    if areal.any():
        rho[areal] = shapely.distance(pts[areal], shapely.boundary(geoms[areal]))
    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    big = np.zeros(len(geoms))
    np.maximum.at(big, owner, np.hypot(*(xy - pxy[owner]).T))
    return pxy, rho, big


class _Discs:
    """The :func:`_inner_discs` of one geometry array, computed on first use (one per array per review)."""

    __slots__ = ("geoms", "_v")

    def __init__(self, geoms: NDArray[np.object_]):
        self.geoms = geoms
        self._v = None

    def __call__(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        if self._v is None:
            self._v = _inner_discs(self.geoms)
        return self._v


def dwithin_pairs(a_geoms: ArrayLike, b_geoms: ArrayLike, distance_m: ArrayLike, *,
                  a_discs: tuple | None = None,
                  b_discs: tuple | None = None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Pairs (i, j) with ``distance(a_i, b_j) <= distance_m[j]``: GEOS's ``dwithin``, fast.

    The same pairs as ``shapely.STRtree(a).query(b, predicate="dwithin", distance=distance_m)``
    (swapped), computed with bounding discs: every geometry g has a point p on it, a disc of
    radius rho about p inside it and one of radius R about p holding it, so
    ``|p_a - p_b| - R_a - R_b <= d(a, b) <= max(0, |p_a - p_b| - rho_a - rho_b)``. A k-d tree on
    the p_a finds the candidates; pairs that the bounds decide with a margin of 1e-6 m are
    settled by arithmetic, and only the thin ring between the bounds goes to GEOS. For 100 m
    grids or shelter squares against 500-2,500 m service distances that ring holds a few per
    cent of the pairs.

    Parameters
    ----------
    a_geoms : (n,) array of shapely geometries, or (n, 2) array of float
        Geometries, or points given by their coordinates (no point objects are made but for
        the few pairs GEOS decides).
    b_geoms : (m,) array of shapely geometries
    distance_m : float or (m,) array of float
        Distance per b geometry (>= 0).
    a_discs, b_discs : tuple, keyword-only, optional
        The geometries' bounding discs ``(p_xy, rho, R)`` if the caller already has them (computed
        by :func:`_inner_discs` on the same array: it is element-wise, so a subset's discs are the
        rows of the whole array's); saves recomputing them. Ignored for ``a`` given as coordinates.

    Returns
    -------
    a_idx, b_idx : (k,) arrays of int64
        Sorted by ``b_idx``, then ``a_idx``.

    Examples
    --------
    Two points and a 10 m square; the second point is exactly 5 m from it.

    >>> a = [shapely.Point(20, 5), shapely.Point(15, 5)]
    >>> [x.tolist() for x in dwithin_pairs(a, [shapely.box(0, 0, 10, 10)], 5.0)]
    [[1], [0]]
    """
    a = np.asarray(a_geoms)
    a_xy = a.dtype != object and a.ndim == 2 and a.shape[1] == 2  # points as coordinates
    a = a.astype(np.float64) if a_xy else np.asarray(a_geoms, dtype=object).reshape(-1)
    b = np.asarray(b_geoms, dtype=object).reshape(-1)
    r = np.broadcast_to(np.asarray(distance_m, dtype=np.float64), b.shape)
    if len(a) == 0 or b.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if a_xy:
        pa, rho_a, big_a = a, np.zeros(len(a)), np.zeros(len(a))
    else:
        pa, rho_a, big_a = a_discs if a_discs is not None else _inner_discs(a)
    pb, rho_b, big_b = b_discs if b_discs is not None else _inner_discs(b)
    eps = 1e-6
    # (unsorted lists: the pairs are sorted at the end anyway)
    lists = cKDTree(pa).query_ball_point(pb, r + big_b + big_a.max() + eps, return_sorted=False)
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=b.size)
    if not lens.sum():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bi = np.repeat(np.arange(b.size), lens)
    ai = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
    d = np.hypot(pa[ai, 0] - pb[bi, 0], pa[ai, 1] - pb[bi, 1])
    rr = r[bi]
    sure = d <= rr + rho_a[ai] + rho_b[bi] - eps
    maybe = ~sure & (d <= rr + big_a[ai] + big_b[bi] + eps)
    m = np.flatnonzero(maybe)
    ok = sure
    if m.size:
        ok = sure.copy()
        ag = shapely.points(a[ai[m]]) if a_xy else a[ai[m]]
        ok[m] = shapely.dwithin(ag, b[bi[m]], rr[m])
    ai, bi = ai[ok], bi[ok]
    # sorted by (b, a): one sort of the unique keys b * n_a + a (4x faster than np.lexsort)
    key = bi * np.int64(len(a)) + ai
    key.sort()
    bi, ai = np.divmod(key, np.int64(len(a)))
    return ai, bi


def _may_be_nearest(site, targets: NDArray[np.object_], discs: tuple | None = None) -> NDArray[np.bool_]:
    """Mask of the targets that can be the nearest one to some point of ``site``.

    Every target k gives an upper bound of the farthest distance f* = max over the site of the
    distance to the nearest target: f* <= max over the site's hull vertices v of |v - p_k| - rho_k
    (:func:`_inner_discs`; the distance to a point is convex, so its maximum over the site is at a
    hull vertex). A target farther than the smallest such bound U from the site is never nearest
    to a point of it, so dropping it leaves the distance function on the site unchanged.
    """
    if targets.size <= 1:
        return np.ones(targets.size, dtype=bool)
    u = _disc_bound(site, targets, discs)
    return shapely.distance(targets, site) <= u + 1e-6 * max(1.0, u)


def _disc_bound(site, targets: NDArray[np.object_], discs: tuple | None = None) -> float:
    """U = min over the targets k of max over the site's hull vertices v of ``|v - p_k| - rho_k``
    (:func:`_inner_discs`): an upper bound of the farthest distance from the site to the targets."""
    pxy, rho, _ = discs if discs is not None else _inner_discs(targets)
    hull = shapely.get_coordinates(shapely.convex_hull(site))
    far = np.hypot(hull[None, :, 0] - pxy[:, None, 0], hull[None, :, 1] - pxy[:, None, 1]).max(axis=1)
    return float(np.maximum(far - rho, 0.0).min())


def _reach_check(code: str, site, targets, radius_m: float, rs: RuleSet, what_zh: str, what_en: str,
                 discs: _Discs | None = None) -> Check:
    t = np.asarray(targets, dtype=object).reshape(-1)
    sub = None  # the targets' discs (rows of ``discs``, aligned with t)
    if t.size:
        # only targets that can be nearest to a point of the site matter when the answer is <= q
        x0, y0, x1, y1 = site.bounds
        q = max(2.0 * radius_m, radius_m + math.hypot(x1 - x0, y1 - y0))
        m = shapely.dwithin(t, site, q)
        t = t[m]
        if discs is not None and t.size > 1:
            sub = tuple(x[m] for x in discs())
    if t.size == 0:
        return _check(rs, code, FAIL, None, radius_m, f"{radius_m:.0f} 米范围内没有{what_zh}",
                      f"no {what_en} within {radius_m:.0f} m", evidence=site)
    near = t[_may_be_nearest(site, t, sub)]
    fr = farthest_distance(site, near, tol_m=rs.distance_tolerance_m)
    # decide on the bracket [distance_m, upper_m]; refine when the threshold falls inside it
    # (twice at most, to tol / 100; then the lower value decides: the true maximum is within tol / 100)
    tol = rs.distance_tolerance_m
    for _ in range(2):
        if not fr.distance_m <= radius_m < fr.upper_m:
            break
        tol /= 10.0
        fr = farthest_distance(site, near, tol_m=tol)
    ok = fr.distance_m <= radius_m
    evidence = None
    if not ok:
        reach = shapely.union_all(shapely.buffer(t, radius_m, quad_segs=32))
        evidence = shapely.difference(site, reach)
        if fr.point_xy is not None and evidence.is_empty:
            evidence = shapely.Point(fr.point_xy)
    d = fr.distance_m
    return _check(rs, code, PASS if ok else FAIL, round(d, 2), radius_m,
                  f"项目用地最远点距最近{what_zh} {_fmt(d)} 米，要求不超过 {radius_m:.0f} 米",
                  f"the farthest point of the site is {_fmt(d)} m from the nearest {what_en};"
                  f" at most {radius_m:.0f} m allowed", evidence=evidence)


# --------------------------------------------------------------------------------------------
# reach along the roads (reach_method="network")
# --------------------------------------------------------------------------------------------
def reach_samples(site, spacing_m: float = NETWORK_SAMPLE_M) -> NDArray[np.float64]:
    """Sample points of a site for network reach: its boundary densified so that no two consecutive
    vertices are more than ``spacing_m`` apart (the vertices kept), plus a lattice of spacing
    ``spacing_m`` (offset half a step from the site's bounding box) inside it.

    Returns
    -------
    (n, 2) array of float
        Distinct points, sorted (x, then y).

    Examples
    --------
    A 50 m x 25 m site at 25 m: six boundary points and the two lattice points inside.

    >>> reach_samples(shapely.box(0, 0, 50, 25)).tolist()
    [[0.0, 0.0], [0.0, 25.0], [12.5, 12.5], [25.0, 0.0], [25.0, 25.0], [37.5, 12.5], [50.0, 0.0], [50.0, 25.0]]
    """
    if not spacing_m > 0:
        raise ValueError("spacing_m must be > 0")
    bxy = shapely.get_coordinates(shapely.segmentize(shapely.boundary(site), spacing_m))
    x0, y0, x1, y1 = site.bounds
    xs = np.arange(x0 + spacing_m / 2.0, x1, spacing_m)
    ys = np.arange(y0 + spacing_m / 2.0, y1, spacing_m)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    lat = np.column_stack([gx.ravel(), gy.ravel()])
    if len(lat):
        # shapely.contains on points, not contains_xy (see _farthest_on_samples)
        shapely.prepare(site)
        lat = lat[shapely.contains(site, shapely.points(lat))]
    return np.unique(np.vstack([bxy[:, :2], lat]), axis=0)


def _entry_points(targets: NDArray[np.object_], gate_spacing_m: float) -> NDArray[np.float64]:
    """Where targets are reached from the road: points themselves; the boundary of an area (or a
    line) sampled every ``gate_spacing_m`` (as the coverage engine's gates)."""
    tid = shapely.get_type_id(targets)
    pts = np.isin(tid, (0, 4))
    out = [shapely.get_coordinates(targets[pts])] if pts.any() else []
    if (~pts).any():
        other = targets[~pts]
        area = shapely.area(other) > 0
        shapes = np.where(area, shapely.boundary(other), other)
        out.append(shapely.get_coordinates(shapely.segmentize(shapes, gate_spacing_m)))
    return np.unique(np.vstack(out)[:, :2], axis=0) if out else np.zeros((0, 2))


def network_reach_distances(site, targets: ArrayLike, network: RoadNetwork | None, *,
                            sample_m: float = NETWORK_SAMPLE_M,
                            gate_spacing_m: float = NETWORK_GATE_SPACING_M
                            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Walking distance along the roads from each sample of the site to the nearest target.

    The samples are :func:`reach_samples`; a point target is entered at itself, an area target
    (a shelter) at gates on its boundary every ``gate_spacing_m``, and a sample inside an area target
    has distance 0 -- the rules of the coverage engine (``layers.services_coverage.cover_network``).
    Distances are :func:`layers.analysis.network.network_distance_to_nearest`: access leg from the
    sample to its nearest road, along the roads, access leg to the gate (one Dijkstra run).

    Parameters
    ----------
    site : shapely Polygon or MultiPolygon
    targets : (n,) array of shapely geometries
    network : RoadNetwork or None
        None: no road reaches the site area; every sample outside the targets gets ``inf``.

    Returns
    -------
    sample_xy : (m, 2) array of float
    distance_m : (m,) array of float
        ``inf`` where no target can be reached.

    Examples
    --------
    A road along y = 0; a station 5 m north of it at x = 0; a 20 m square site 10 m north of the road
    at x = 100..120. Its farthest sample (x = 120, y = 30) walks 30 + 120 + 5 = 155 m.

    >>> from layers.analysis.network import build_network
    >>> net = build_network([shapely.LineString([(0, 0), (200, 0)])])
    >>> xy, d = network_reach_distances(shapely.box(100, 10, 120, 30), [shapely.Point(0, 5)], net)
    >>> float(d.max()), xy[np.argmax(d)].tolist()
    (155.0, [120.0, 30.0])
    """
    xy = reach_samples(site, sample_m)
    t = np.asarray(targets, dtype=object).reshape(-1)
    t = t[~(shapely.is_missing(t) | shapely.is_empty(t))] if t.size else t
    d = np.full(len(xy), np.inf)
    if t.size == 0:
        return xy, d
    if network is not None and network.n_edges:
        d = network_distance_to_nearest(network, _entry_points(t, gate_spacing_m), xy)
    areal = t[shapely.area(t) > 0]
    if areal.size:  # inside a target area: reached without a road
        u = shapely.union_all(areal)
        shapely.prepare(u)
        d[shapely.intersects(u, shapely.points(xy))] = 0.0
    return xy, d


def _network_reach_check(code: str, site, targets, radius_m: float, rs: RuleSet, what_zh: str,
                         what_en: str, network: RoadNetwork | None) -> Check:
    t = np.asarray(targets, dtype=object).reshape(-1)
    if t.size:  # as the euclidean check: a road walk is never shorter than the straight line
        x0, y0, x1, y1 = site.bounds
        q = max(2.0 * radius_m, radius_m + math.hypot(x1 - x0, y1 - y0))
        t = t[shapely.dwithin(t, site, q)]
    if t.size == 0:
        return _check(rs, code, FAIL, None, radius_m, f"{radius_m:.0f} 米范围内没有{what_zh}",
                      f"no {what_en} within {radius_m:.0f} m", evidence=site, method="network")
    xy, d = network_reach_distances(site, t, network)
    worst = float(d.max())
    bad = d > radius_m * (1.0 + 1e-12)
    ok = not bad.any()
    evidence = None if ok else shapely.MultiPoint(xy[bad])
    n_bad, n = int(bad.sum()), len(d)
    if not math.isfinite(worst):
        return _check(rs, code, FAIL, None, radius_m,
                      f"按道路距离：项目用地有 {n_bad}/{n} 个采样点无法沿道路到达{what_zh}，要求不超过 {radius_m:.0f} 米",
                      f"by road: {n_bad} of {n} sample points of the site cannot reach a {what_en} along the"
                      f" roads; at most {radius_m:.0f} m allowed", evidence=evidence, method="network")
    tail_zh = "" if ok else f"，{n_bad}/{n} 个采样点超出"
    tail_en = "" if ok else f"; {n_bad} of {n} sample points beyond"
    return _check(rs, code, PASS if ok else FAIL, round(worst, 2), radius_m,
                  f"按道路距离，项目用地最远采样点距最近{what_zh} {_fmt(worst)} 米，要求不超过 {radius_m:.0f} 米"
                  + tail_zh,
                  f"by road, the farthest sample point of the site is {_fmt(worst)} m from the nearest"
                  f" {what_en}; at most {radius_m:.0f} m allowed" + tail_en, evidence=evidence, method="network")


def _reach(code: str, site, targets, radius_m: float, rs: RuleSet, what_zh: str, what_en: str,
           network: RoadNetwork | None, roads_loaded: bool | None, discs: _Discs | None = None) -> Check:
    """The reach check by the rule set's ``reach_method`` (euclidean unchanged by default)."""
    if rs.reach_method != "network":
        return _reach_check(code, site, targets, radius_m, rs, what_zh, what_en, discs)
    if not (roads_loaded or network is not None):
        c = _reach_check(code, site, targets, radius_m, rs, what_zh, what_en, discs)
        return dataclasses.replace(c, method="euclidean",
                                   message_zh=c.message_zh + "（未加载道路，按直线距离计算）",
                                   message_en=c.message_en + " (no roads loaded: straight-line distance)")
    return _network_reach_check(code, site, targets, radius_m, rs, what_zh, what_en, network)


def check_shelter_reach(site, shelter_geoms: ArrayLike, rs: RuleSet, *, network: RoadNetwork | None = None,
                        roads_loaded: bool | None = None, _discs: _Discs | None = None) -> Check:
    """SHELTER-REACH: every point of the site within ``rs.shelter_reach_m`` of a shelter site.

    Value: the farthest distance (m) from a point of the site to the nearest shelter polygon
    (:func:`farthest_distance`); evidence: the uncovered part (site minus the union of the reach
    buffers) when it fails. With ``rs.reach_method == "network"`` and roads loaded (``network``,
    ``roads_loaded``; see :class:`ReviewContext`): the largest road distance over the site's samples
    (:func:`network_reach_distances`), the samples beyond reach as evidence, ``method="network"``.
    """
    return _reach("SHELTER-REACH", site, shelter_geoms, rs.shelter_reach_m, rs, "应急避难场所",
                  "emergency shelter", network, roads_loaded, _discs)


def check_fire_reach(site, fire_geoms: ArrayLike, fire_kinds: Sequence[str], rs: RuleSet, *,
                     network: RoadNetwork | None = None, roads_loaded: bool | None = None) -> Check:
    """FIRE-REACH: every point of the site within the response distance of a community micro station
    (by road as :func:`check_shelter_reach` under ``reach_method="network"``)."""
    g = np.asarray(fire_geoms, dtype=object).reshape(-1)
    mask = np.isin(np.asarray(fire_kinds, dtype=object), list(rs.fire_station_kinds)) if g.size \
        else np.zeros(0, bool)
    return _reach("FIRE-REACH", site, g[mask], rs.fire_response_distance_m, rs, "社区微型消防站",
                  "community micro fire station", network, roads_loaded)


def check_shelter_capacity(project: Project, ctx: ReviewContext, rs: RuleSet, *,
                           _discs: _Discs | None = None) -> Check:
    """SHELTER-CAPACITY: the shelters within their service distance of the site have room for the
    project's population, net of the population they already serve (:func:`shelter_spare_capacity`).
    """
    pop = project.population(rs.persons_per_household)
    rad = np.array([rs.shelter_service_distance_m.get(lv, rs.shelter_reach_m) for lv in ctx.shelter_levels],
                   dtype=np.float64)
    sc = shelter_spare_capacity(project.site, ctx.shelter_geoms, rad, ctx.shelter_capacity,
                                ctx.demand_xy, ctx.demand_pop, _discs=_discs)
    spare = sc.spare_persons
    ok = spare >= pop
    n = int(sc.reach_idx.size)
    return _check(rs, "SHELTER-CAPACITY", PASS if ok else FAIL, round(spare), pop,
                  f"服务半径内 {n} 处避难场所剩余容量 {spare:,.0f} 人，项目人口 {pop:,} 人",
                  f"{n} shelter{'s' if n != 1 else ''} in reach have room for {spare:,.0f} more persons;"
                  f" the project brings {pop:,}")


def check_life_circle(site, facility_geoms: ArrayLike, facility_kinds: Sequence[str], rs: RuleSet) -> Check:
    """LIFE-CIRCLE (advisory): per kind, the farthest distance from the site to the nearest facility of
    that kind (existing ones and the project's own) against its walking distance; ``warn``, never ``fail``.
    """
    if not rs.life_circle_m:
        return _check(rs, "LIFE-CIRCLE", NA, {}, {}, "未设置生活圈设施", "no life-circle kinds configured")
    g = np.asarray(facility_geoms, dtype=object).reshape(-1)
    kinds = np.asarray(facility_kinds, dtype=object).reshape(-1)
    value: dict[str, float | None] = {}
    short_zh, short_en, far_pts = [], [], []
    for kind, limit in rs.life_circle_m.items():
        t = g[kinds == kind] if g.size else g
        if t.size == 0:
            value[kind] = None
            short_zh.append(f"{kind} 无")
            short_en.append(f"{kind}: none")
            continue
        fr = farthest_distance(site, t, tol_m=rs.distance_tolerance_m)
        value[kind] = round(fr.distance_m, 1)
        if fr.distance_m > limit:
            short_zh.append(f"{kind} {fr.distance_m:,.0f}>{limit:.0f} 米")
            short_en.append(f"{kind} {fr.distance_m:,.0f} > {limit:.0f} m")
            if fr.point_xy is not None:
                far_pts.append(shapely.Point(fr.point_xy))
    ok = not short_zh
    return _check(rs, "LIFE-CIRCLE", PASS if ok else WARN, value, dict(rs.life_circle_m),
                  "生活圈设施均在步行距离内" if ok else "（建议）超出步行距离：" + "；".join(short_zh),
                  "every life-circle facility kind is within walking distance" if ok
                  else "(advisory) beyond walking distance: " + "; ".join(short_en),
                  evidence=shapely.MultiPoint(far_pts) if far_pts else None)


def check_site_no_shelter(site, shelter_geoms: ArrayLike, rs: RuleSet) -> Check:
    """SITE-NO-SHELTER: the site takes no land of an existing shelter; value = overlap m² (evidence)."""
    g = np.asarray(shelter_geoms, dtype=object).reshape(-1)
    g = g[shapely.intersects(g, site)] if g.size else g
    overlap = shapely.intersection(site, shapely.union_all(g)) if g.size else shapely.Polygon()
    a = float(overlap.area) if not overlap.is_empty else 0.0
    ok = a <= rs.area_tolerance_m2
    return _check(rs, "SITE-NO-SHELTER", PASS if ok else FAIL, round(a, 1), 0.0,
                  "项目用地未占用现有避难场所" if ok else f"项目用地占用现有避难场所 {_fmt(a)} 平方米",
                  "the site takes no shelter land" if ok else f"the site takes {_fmt(a)} m² of shelter land",
                  evidence=overlap if not ok else None)


def review(project: Project, ctx: ReviewContext, rs: RuleSet) -> Review:
    """Run every rule; the verdict is ``pass`` iff no check fails (``warn`` and ``n/a`` do not fail).

    Existing facilities and the project's own declared facilities both count for LIFE-CIRCLE.
    """
    site = project.site
    if site is None or site.is_empty or site.area <= 0:
        raise ValueError("the project site must be a polygon with positive area")
    own_g = [f.geom for f in project.facilities]
    own_k = ["community_service_centre" if f.kind in rs.community_service_kinds else f.kind
             for f in project.facilities]
    fac_g = np.concatenate([ctx.facility_geoms, np.asarray(own_g, dtype=object).reshape(-1)])
    fac_k = list(ctx.facility_kinds) + own_k
    sh_discs = _Discs(ctx.shelter_geoms)  # shared by SHELTER-REACH and SHELTER-CAPACITY
    checks = (
        check_inside_city(site, ctx.districts.geoms, rs),
        check_district(site, ctx.districts, rs),
        check_fac_declared(project, rs),
        check_fac_in_site(project, rs),
        check_fac_area(project, rs),
        check_shelter_reach(site, ctx.shelter_geoms, rs, network=ctx.road_network,
                            roads_loaded=ctx.roads_loaded, _discs=sh_discs),
        check_shelter_capacity(project, ctx, rs, _discs=sh_discs),
        check_fire_reach(site, ctx.fire_geoms, ctx.fire_kinds, rs, network=ctx.road_network,
                         roads_loaded=ctx.roads_loaded),
        check_life_circle(site, fac_g, fac_k, rs),
        check_site_no_shelter(site, ctx.shelter_geoms, rs),
    )
    verdict = FAIL if any(c.status == FAIL for c in checks) else PASS
    return Review(verdict, rs.version, project, project.population(rs.persons_per_household),
                  MappingProxyType(location_shares(site, ctx, rs)), checks)
