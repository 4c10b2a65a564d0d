"""Housing project review (issue 4): submission -> nearby layers as arrays -> pure rules -> report.

One path for the web page, the REST API and ``manage.py review_project``:

* :func:`parse_path` / :func:`parse_submission` read a submission (GeoJSON; other formats through the
  importers' hook :func:`layers.analysis.submission.project_from_features`);
* :func:`gather_context` fetches, with spatial lookups only (``intersects`` / ``dwithin``, which use
  the spatial index on PostGIS; no Python loop over the city's features), the districts, streets,
  communities and grids under the site, the shelters and fire stations within reach, the demand
  already assigned to those shelters (grid population within the shelters' service distance) and
  the facilities near the site;
* :func:`review_submission` runs :func:`layers.analysis.rules.review`;
* :func:`save_review` stores the project, its facilities and (once the models exist) the report,
  in one transaction.
"""
from __future__ import annotations

import math
from functools import reduce
from operator import or_
from pathlib import Path

import numpy as np
import shapely
from django.apps import apps
from django.conf import settings
from django.contrib.gis.db.models.functions import AsWKB
from django.contrib.gis.geos import GEOSGeometry, Polygon
from django.contrib.gis.measure import D
from django.db import transaction
from django.db.models import Q

from . import models
from .analysis import rules as R
from .analysis.submission import Submission, SubmissionError, parse_submission as _parse

__all__ = ["rule_set", "parse_submission", "parse_path", "gather_context", "review_submission",
           "review_path", "save_review", "SubmissionError"]

#: Submission kinds -> ServiceFacility.Kind (the submission default is ``community_service``).
KIND_TO_MODEL = {"community_service": "community_service_centre"}


def rule_set() -> R.RuleSet:
    """The active rule set, from ``settings.GISPORTAL_RULES``."""
    return R.RuleSet.from_settings(settings.GISPORTAL_RULES)


def parse_submission(data, *, srid: int | None = None) -> Submission:
    """GeoJSON text/bytes/dict -> :class:`Submission` in ``GIS_SRID`` (raises SubmissionError)."""
    return _parse(data, srid=srid, storage_srid=settings.GIS_SRID)


def parse_path(path, *, srid: int | None = None) -> Submission:
    """Read a submission file. GeoJSON here; .zip / .gpkg / .dxf go through the importers (hook)."""
    p = Path(path)
    if not p.is_file():
        raise SubmissionError("file", f"找不到文件 {p}", f"no such file: {p}")
    suffix = p.suffix.lower()
    if suffix in (".zip", ".shp", ".gpkg", ".dxf"):
        # Hook: the importers turn layers "site" and "facility" into GeoJSON-like features and call
        # layers.analysis.submission.project_from_features(features, source_srid=..., storage_srid=...).
        raise SubmissionError("format", f"暂不支持 {suffix} 格式的报审文件，请提交 GeoJSON",
                              f"{suffix} submissions are not supported yet; submit GeoJSON")
    return parse_submission(p.read_bytes(), srid=srid)


# --------------------------------------------------------------------------------------------
# ORM <-> shapely
# --------------------------------------------------------------------------------------------
def _geos(geom) -> GEOSGeometry:
    return GEOSGeometry(memoryview(shapely.to_wkb(geom)), srid=settings.GIS_SRID)


def _rows(qs, *fields) -> list[tuple]:
    """``values_list(*fields, wkb)`` with the geometry as raw WKB from the database (``AsWKB``):
    no GEOS object is built per row, the caller parses all of them at once with shapely."""
    return list(qs.annotate(_wkb=AsWKB("geom")).values_list(*fields, "_wkb"))


def _from_wkb(rows, col: int = -1) -> np.ndarray:
    if not rows:
        return np.empty(0, dtype=object)
    return shapely.from_wkb([bytes(r[col]) for r in rows])


def _areas(qs, with_names: bool = True) -> R.Areas:
    rows = _rows(qs, "code", "name") if with_names else _rows(qs, "code")
    if not rows:
        return R.Areas()
    codes = tuple(r[0] for r in rows)
    names = tuple(r[1] for r in rows) if with_names else ("",) * len(rows)
    return R.Areas(codes, names, _from_wkb(rows))


def _bbox_diag(geom) -> float:
    x0, y0, x1, y1 = geom.bounds
    return math.hypot(x1 - x0, y1 - y0)


def _box(b) -> Polygon:
    poly = Polygon.from_bbox(tuple(float(v) for v in b))
    poly.srid = settings.GIS_SRID
    return poly


_SHELTER_FIELDS = ("pk", "level", "effective_area_m2", "capacity_persons")


def gather_context(site, rs: R.RuleSet) -> R.ReviewContext:
    """The nearby layers for :func:`layers.analysis.rules.review`, as arrays in GIS_SRID.

    Reach rules get every target within ``max(2 r, r + site diagonal)`` of the site: any point of
    the site whose nearest target is within r is then served by a fetched target, so pass/fail is
    exact and the farthest distance is exact whenever it is at most that query distance.

    Capacity: the shelters S1 within their service distance of the site; the demand D = grids
    within the service distance of some S1 shelter (population at the grid's representative
    point); the LP's shelters = those within the largest service distance of D (so demand in D
    can use its other shelters). Demand beyond D that also uses those other shelters is not
    modelled (a second-ring boundary effect).

    Speed: ten queries, each a spatial-index lookup; geometries come back as WKB (``AsWKB``) and
    are parsed and measured with vectorised shapely (no GEOS object per row).
    """
    g_site = _geos(site)
    diag = _bbox_diag(site)
    ctx: dict = {}
    ctx["districts"] = _areas(models.District.objects.filter(geom__intersects=g_site))
    ctx["streets"] = _areas(models.Street.objects.filter(geom__intersects=g_site))
    ctx["communities"] = _areas(models.Community.objects.filter(geom__intersects=g_site))
    ctx["grids"] = _areas(models.Grid.objects.filter(geom__intersects=g_site), with_names=False)

    # shelters: the reach rule's query distance, and the capacity rule's service distances. One
    # dwithin at the largest of them, then the exact per-level distances with shapely: an OR of one
    # dwithin per level costs PostgreSQL's planner so much (PostGIS functions are costed high) that it
    # JIT-compiles the query once the tables have statistics (40 ms to 0.9 s; see the report).
    reach_q = max(2 * rs.shelter_reach_m, rs.shelter_reach_m + diag)
    levels = dict(rs.shelter_service_distance_m)
    d_all = max(levels.values()) if levels else rs.shelter_reach_m
    near = _rows(models.Shelter.objects.filter(geom__dwithin=(g_site, D(m=max(d_all, reach_q)))),
                 *_SHELTER_FIELDS)
    near_g = _from_wkb(near)
    dist = shapely.distance(near_g, site) if near else np.zeros(0)
    lv_d = np.array([levels.get(r[1], -1.0) for r in near], dtype=np.float64)
    keep = np.flatnonzero((dist <= lv_d) | (dist <= reach_q))
    near, near_g, dist = [near[i] for i in keep], near_g[keep], dist[keep]
    # demand: grids within the service distance of a shelter that reaches the site
    near_d = np.array([levels.get(r[1], rs.shelter_reach_m) for r in near], dtype=np.float64)
    s1 = np.flatnonzero(dist <= near_d)
    demand_xy, demand_pop = np.empty((0, 2)), np.empty(0)
    lp_rows, lp_g = list(near), [near_g]
    if s1.size:
        # candidates: grids whose box meets a S1 shelter's box grown by its service distance (index
        # only, no distance in SQL); then the exact distances with shapely
        boxes = shapely.bounds(near_g[s1]) + near_d[s1, None] * np.array([-1.0, -1.0, 1.0, 1.0])
        gq = reduce(or_, [Q(geom__bboverlaps=_box(b)) for b in boxes])
        grid_rows = _rows(models.Grid.objects.filter(gq), "population")
        if grid_rows:
            gg = _from_wkb(grid_rows)
            # exact: within the service distance of one of the S1 shelters (their own distances)
            hit = np.unique(R.dwithin_pairs(gg, near_g[s1], near_d[s1])[0])
            gg = gg[hit]
            demand_xy = shapely.get_coordinates(shapely.point_on_surface(gg))
            demand_pop = np.array([grid_rows[i][0] for i in hit], dtype=np.float64)
        if demand_pop.size:
            x0, y0 = demand_xy.min(axis=0)
            x1, y1 = demand_xy.max(axis=0)
            box = Polygon.from_bbox((x0, y0, x1, y1)) if (x1 > x0 and y1 > y0) else \
                GEOSGeometry(f"POINT ({x0} {y0})")
            box.srid = settings.GIS_SRID
            seen = {r[0] for r in near}
            more = _rows(models.Shelter.objects.filter(geom__dwithin=(box, D(m=d_all))).exclude(pk__in=seen),
                         *_SHELTER_FIELDS)
            lp_rows += more
            lp_g.append(_from_wkb(more))
    per_capita = dict(rs.shelter_per_capita_m2)
    cap = [float(c) if c is not None else float(a // per_capita.get(lv, 1.0)) for _, lv, a, c, _ in lp_rows]
    ctx["shelter_geoms"] = np.concatenate(lp_g) if lp_rows else np.empty(0, dtype=object)
    ctx["shelter_levels"] = tuple(r[1] for r in lp_rows)
    ctx["shelter_capacity"] = np.array(cap, dtype=np.float64)
    ctx["demand_xy"], ctx["demand_pop"] = demand_xy, demand_pop

    fire_q = max(2 * rs.fire_response_distance_m, rs.fire_response_distance_m + diag)
    fire = _rows(models.FireStation.objects.filter(
        kind__in=rs.fire_station_kinds, geom__dwithin=(g_site, D(m=fire_q))), "kind")
    ctx["fire_geoms"] = _from_wkb(fire)
    ctx["fire_kinds"] = tuple(r[0] for r in fire)

    if rs.life_circle_m:
        lim = max(rs.life_circle_m.values())
        fac = _rows(models.ServiceFacility.objects.filter(
            kind__in=list(rs.life_circle_m), geom__dwithin=(g_site, D(m=max(2 * lim, lim + diag)))), "kind")
    else:
        fac = []
    ctx["facility_geoms"] = _from_wkb(fac)
    ctx["facility_kinds"] = tuple(r[0] for r in fac)
    return R.ReviewContext(**ctx)


def review_submission(sub: Submission, *, rs: R.RuleSet | None = None) -> R.Review:
    """Review a parsed submission against the layers in the database.

    Raises SubmissionError (``outside_city``) when the site touches no district at all.
    """
    rs = rs or rule_set()
    ctx = gather_context(sub.project.site, rs)
    shares = R.area_shares(sub.project.site, ctx.districts.geoms)
    if not (shares * sub.project.site.area > rs.area_tolerance_m2).any():
        raise SubmissionError("outside_city", "项目用地不在本市范围内", "the site lies outside the city")
    return R.review(sub.project, ctx, rs)


def review_path(path, *, srid: int | None = None) -> tuple[Submission, R.Review]:
    """Parse and review a submission file."""
    sub = parse_path(path, srid=srid)
    return sub, review_submission(sub)


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
def _review_report_model():
    try:
        return apps.get_model("layers", "ReviewReport")
    except LookupError:
        return None


@transaction.atomic
def save_review(sub: Submission, review: R.Review, *, user=None, lang: str = "zh"):
    """Store the project (status ``in_review``), its facilities and the report; one transaction.

    Returns the HousingProject. The report row needs ``ReviewReport`` (``layers/models_review.py``);
    until that model is installed only the project and facilities are stored.
    """
    p = sub.project
    district_code = review.location["districts"][0]["code"] if review.location["districts"] else None
    district = models.District.objects.filter(code=district_code).first() if district_code else None
    project = models.HousingProject(
        name=p.name[:128], developer=p.developer[:128], households=p.households,
        population_declared=p.population_declared, status=models.HousingProject.Status.IN_REVIEW,
        district=district, submitted_by=user if getattr(user, "is_authenticated", False) else None,
        geom=_geos(p.site))
    project.full_clean()
    project.save()
    for i, f in enumerate(p.facilities, start=1):
        point = f.geom if f.geom.geom_type == "Point" else shapely.point_on_surface(f.geom)
        obj = models.ServiceFacility(
            code=f"P{project.pk}-F{i}", name=(f.name or f"{p.name} {i}")[:128],
            kind=KIND_TO_MODEL.get(f.kind, f.kind), floor_area_m2=f.floor_area_m2,
            status=models.ServiceFacility.Status.PLANNED, project=project, geom=_geos(point),
            footprint=_geos(f.geom) if f.geom.geom_type == "Polygon" else None)
        obj.full_clean()
        obj.save()
    report_model = _review_report_model()
    if report_model is not None:
        report_model.objects.create(project=project, rule_set=review.rule_set, verdict=review.verdict,
                                    checks=review.as_dict(lang), reviewer=None)
    return project
