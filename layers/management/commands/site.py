"""manage.py site KIND --objective lscp|mclp|cmclp --radius-m M [--p N] [--candidates PATH|layer]
[--spacing-m S] [--area CODES] [--no-existing] [--capacity N] [--time-limit S] [--curve K]
[--method euclidean|network] [--demand raster|grids|grid_points] [--exclude PATH] [--level L]
[--facility-kind K] [--json]: where new shelters or micro fire stations should go (issue 6).

KIND: shelters or fire_stations. Without --candidates, candidates are generated on a lattice --spacing-m
apart (default 200 m) inside the grids of --area (codes, comma-separated) or of the whole city. Demand is
the raster's populated cells (default; the grids as a 100 m lattice when no raster is active), that
lattice (--demand grids), or one representative point per populated grid (--demand grid_points).
--exclude: a GeoJSON file of lon/lat polygons where no new site may go (water, protected land). --json
prints exactly one JSON document on stdout; otherwise a summary. Every run is recorded as a Job (kind
"siting"). Exit status: 0 on success, 2 on bad input (reason on stderr).
"""
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import translation

from layers import services_siting as svc


class Command(BaseCommand):
    help = "Optimal siting of new shelters or fire stations: LSCP, MCLP, capacitated MCLP (issue 6)."

    def add_arguments(self, parser):
        parser.add_argument("kind", help="shelters or fire_stations")
        # Numbers are validated by the service (not argparse), so bad values exit 2 with our message.
        parser.add_argument("--objective", default=None, help="lscp, mclp or cmclp (shelters)")
        parser.add_argument("--radius-m", dest="radius_m", default=None, help="service distance in metres")
        parser.add_argument("--p", default=None, help="new sites to add (mclp, cmclp)")
        parser.add_argument("--candidates", default=None,
                            help="a GeoJSON file of lon/lat points, or 'layer' (default: generated lattice)")
        parser.add_argument("--spacing-m", dest="spacing_m", default=str(svc.DEFAULT_SPACING_M),
                            help="lattice spacing of generated candidates (default 200)")
        parser.add_argument("--area", default=None,
                            help="district/street/community/grid codes, comma-separated: demand and generated "
                                 "candidates inside them")
        parser.add_argument("--no-existing", dest="existing", action="store_false",
                            help="ignore existing facilities (default: they cover and are never chosen)")
        parser.add_argument("--capacity", default=None,
                            help="cmclp: persons per candidate without its own capacity (default 2000)")
        parser.add_argument("--time-limit", dest="time_limit", default="60", help="solver time limit, seconds")
        parser.add_argument("--curve", default=None, help="also the covered population for k = 1..K new sites")
        parser.add_argument("--method", default="euclidean", help="euclidean (default) or network")
        parser.add_argument("--demand", default="raster",
                            help="raster (default; grids when no raster is active), grids (100 m lattice in "
                                 "the grids) or grid_points (one point per populated grid)")
        parser.add_argument("--exclude", default=None,
                            help="a GeoJSON file of lon/lat (Multi)Polygons: no candidate inside them")
        parser.add_argument("--level", default=None, help="count only existing shelters of this level")
        parser.add_argument("--facility-kind", dest="facility_kind", default=None,
                            help="count only existing fire stations of this kind, e.g. community_micro")
        parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    def handle(self, *args, kind, objective=None, radius_m=None, p=None, candidates=None, spacing_m="200",
               area=None, existing=True, capacity=None, time_limit="60", curve=None, method="euclidean",
               level=None, facility_kind=None, demand="raster", exclude=None, json=False, **options):
        lang = translation.get_language() or "zh-hans"
        if objective is None:
            raise CommandError("请给出 --objective（lscp、mclp 或 cmclp）" if not lang.startswith("en") else
                               "give --objective (lscp, mclp or cmclp)", returncode=2)
        try:
            doc = svc.siting_compute(kind=kind, objective=objective, radius_m=radius_m, p=p,
                                     candidates=candidates, spacing_m=spacing_m, area=area, existing=existing,
                                     capacity=capacity, method=method, time_limit_s=time_limit, curve_k=curve,
                                     level=level, facility_kind=facility_kind, demand=demand, exclude=exclude)
        except svc.SitingInputError as exc:
            raise CommandError(exc.message(lang), returncode=2) from None
        if json:
            self.stdout.write(_dumps(doc))
        else:
            self._summary(doc)

    def _summary(self, doc):
        w = self.stdout.write
        what = {"lscp": "fewest sites covering all coverable demand", "mclp": f"best {doc['p']} sites",
                "cmclp": f"best {doc['p']} sites with capacities"}[doc["objective"]]
        c = doc["candidates"]
        w(f"siting {doc['kind']}: {doc['objective']} ({what}), radius {doc['radius_m']:g} m, {doc['method']} "
          f"distance  [job {doc['job_id']}, data {doc['data_version']}]")
        w(f"  demand: {doc['demand']['points']:,} {doc['demand']['mode']} points"
          + (f" in {', '.join(doc['area'])}" if doc["area"] else "")
          + f"; candidates: {c['count']:,} ({c['source']}, {c['excluded']} dropped at existing sites"
          + (f" or in exclusion zones ({c['excluded_zone']})" if c.get("excluded_zone") else "") + "); "
          f"existing sites: {doc['existing_sites'] if doc['existing'] else 'ignored'}")
        gap = "-" if doc["gap"] is None else f"{doc['gap']:.2%}"
        w(f"  status {doc['status']} ({doc['solver']}), objective {doc['objective_value']:,.3f}, bound "
          f"{doc['bound']:,.3f}, gap {gap}, {doc['seconds']:.2f} s (total {doc['seconds_total']:.1f} s)")
        total = doc["population_total"]
        w(f"  population {total:,.0f}: covered before {doc['population_existing']:,.0f} "
          f"({doc['share_existing']:.1%}), after {doc['population_covered']:,.0f} ({doc['share_covered']:.1%}); "
          f"uncoverable {doc['uncoverable_population']:,.0f}")
        w("")
        w(f"  {'#':>3} {'code':<24} {'lon':>11} {'lat':>10} {'added':>10}")
        for i, s in enumerate(doc["selected"], start=1):
            w(f"  {i:>3} {s['code']:<24} {s['lon']:>11.6f} {s['lat']:>10.6f} {s['added_population']:>10,.0f}")
        if doc["curve"]:
            w("")
            w("  k-curve (population covered with k new sites):")
            for row in doc["curve"]:
                w(f"  {row['k']:>3} {row['population_covered']:>12,.0f}  {row['status']}")


def _dumps(doc) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
