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


def _shapely(geoms) -> np.ndarray:
    wkb = [bytes(g.wkb) for g in geoms]
    return shapely.from_wkb(wkb) if wkb else np.empty(0, dtype=object)


def _areas(qs, with_names: bool = True) -> R.Areas:
    fields = ("code", "name", "geom") if with_names else ("code", "geom")
    rows = list(qs.values_list(*fields))
    if not rows:
        return R.Areas()
    codes = tuple(r[0] for r in rows)
    names = tuple(r[1] for r in rows) if with_names else ("",) * len(rows)
    return R.Areas(codes, names, _shapely([r[-1] for r in rows]))


def _bbox_diag(geom) -> float:
    x0, y0, x1, y1 = geom.bounds
    return math.hypot(x1 - x0, y1 - y0)


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
    """
    g_site = _geos(site)
    diag = _bbox_diag(site)
    ctx: dict = {}
    ctx["districts"] = _areas(models.District.objects.filter(geom__intersects=g_site))
    ctx["streets"] = _areas(models.Street.objects.filter(geom__intersects=g_site))
    ctx["communities"] = _areas(models.Community.objects.filter(geom__intersects=g_site))
    ctx["grids"] = _areas(models.Grid.objects.filter(geom__intersects=g_site), with_names=False)

    # shelters: the reach rule's query distance, and the capacity rule's service distances
    reach_q = max(2 * rs.shelter_reach_m, rs.shelter_reach_m + diag)
    levels = dict(rs.shelter_service_distance_m)
    d_all = max(levels.values()) if levels else rs.shelter_reach_m
    s1_filter = reduce(or_, [Q(level=lv, geom__dwithin=(g_site, D(m=d))) for lv, d in levels.items()]) \
        | Q(geom__dwithin=(g_site, D(m=reach_q)))
    near = list(models.Shelter.objects.filter(s1_filter).values_list(
        "pk", "level", "effective_area_m2", "capacity_persons", "geom"))
    # demand: grids within the service distance of a shelter that reaches the site
    s1 = [r for r in near if r[4].distance(g_site) <= levels.get(r[1], rs.shelter_reach_m)]
    demand_xy, demand_pop = np.empty((0, 2)), np.empty(0)
    lp_rows = list(near)
    if s1:
        gq = reduce(or_, [Q(geom__dwithin=(r[4], D(m=levels.get(r[1], rs.shelter_reach_m)))) for r in s1])
        grid_rows = list(models.Grid.objects.filter(gq).values_list("population", "geom"))
        if grid_rows:
            gg = _shapely([r[1] for r in grid_rows])
            demand_xy = shapely.get_coordinates(shapely.point_on_surface(gg))
            demand_pop = np.array([r[0] for r in grid_rows], dtype=np.float64)
            x0, y0 = demand_xy.min(axis=0)
            x1, y1 = demand_xy.max(axis=0)
            box = Polygon.from_bbox((x0, y0, x1, y1)) if (x1 > x0 and y1 > y0) else \
                GEOSGeometry(f"POINT ({x0} {y0})")
            box.srid = settings.GIS_SRID
            seen = {r[0] for r in near}
            more = models.Shelter.objects.filter(geom__dwithin=(box, D(m=d_all))).exclude(pk__in=seen)
            lp_rows += list(more.values_list("pk", "level", "effective_area_m2", "capacity_persons", "geom"))
    per_capita = dict(rs.shelter_per_capita_m2)
    cap = [float(c) if c is not None else float(a // per_capita.get(lv, 1.0)) for _, lv, a, c, _ in lp_rows]
    ctx["shelter_geoms"] = _shapely([r[4] for r in lp_rows])
    ctx["shelter_levels"] = tuple(r[1] for r in lp_rows)
    ctx["shelter_capacity"] = np.array(cap, dtype=np.float64)
    ctx["demand_xy"], ctx["demand_pop"] = demand_xy, demand_pop

    fire_q = max(2 * rs.fire_response_distance_m, rs.fire_response_distance_m + diag)
    fire = list(models.FireStation.objects.filter(
        kind__in=rs.fire_station_kinds, geom__dwithin=(g_site, D(m=fire_q))).values_list("kind", "geom"))
    ctx["fire_geoms"] = _shapely([r[1] for r in fire])
    ctx["fire_kinds"] = tuple(r[0] for r in fire)

    if rs.life_circle_m:
        lim = max(rs.life_circle_m.values())
        fac = list(models.ServiceFacility.objects.filter(
            kind__in=list(rs.life_circle_m), geom__dwithin=(g_site, D(m=max(2 * lim, lim + diag))))
            .values_list("kind", "geom"))
    else:
        fac = []
    ctx["facility_geoms"] = _shapely([r[1] for r in fac])
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
