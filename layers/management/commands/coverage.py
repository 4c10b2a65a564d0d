"""manage.py coverage KIND [--radius-m M] [--level L] [--facility-kind K] [--method euclidean|network]
[--demand raster|grids] [--capacity] [--json]: who is within reach of shelters, fire stations, facilities.

KIND: shelters, fire_stations, facilities. Without --radius-m the rule set's service distance is used
(per shelter level, the fire response distance, the life-circle distance per facility kind).
--json prints exactly one JSON document on stdout; otherwise a summary table. Every run is recorded as a
Job (kind "coverage"). Exit status: 0 on success, 2 on bad input (reason on stderr).
"""
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import translation

from layers import services_coverage as svc


class Command(BaseCommand):
    help = "Population coverage of shelters, fire stations or service facilities (issue 5)."

    def add_arguments(self, parser):
        parser.add_argument("kind", help="shelters, fire_stations or facilities")
        # Validated by the service (not argparse), so bad values exit 2 with our message.
        parser.add_argument("--radius-m", dest="radius_m", default=None,
                            help="service distance in metres (default: the rule set's, per level/kind)")
        parser.add_argument("--level", default=None, help="shelter level, e.g. emergency, fixed_short")
        parser.add_argument("--facility-kind", dest="facility_kind", default=None,
                            help="fire station or facility kind, e.g. community_micro, kindergarten")
        parser.add_argument("--method", default="euclidean", help="euclidean (default) or network")
        parser.add_argument("--demand", default="raster",
                            help="raster (default; grids when no raster is active) or grids")
        parser.add_argument("--capacity", action="store_true", help="capacity-aware coverage (shelters)")
        parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    def handle(self, *args, kind, radius_m=None, level=None, facility_kind=None, method="euclidean",
               demand="raster", capacity=False, json=False, **options):
        lang = translation.get_language() or "zh-hans"
        try:
            doc = svc.coverage_compute(kind=kind, radius_m=radius_m, level=level, facility_kind=facility_kind,
                                       method=method, demand=demand, capacity=capacity)
        except svc.CoverageInputError as exc:
            raise CommandError(exc.message(lang), returncode=2) from None
        if json:
            self.stdout.write(_dumps(doc))
        else:
            self._table(doc)

    def _table(self, doc):
        w = self.stdout.write
        radius = doc["radius_m"]
        radius_s = f"{radius:g} m" if isinstance(radius, (int, float)) else \
            ", ".join(f"{k} {v:g} m" for k, v in radius.items())
        w(f"coverage of {doc['kind']} ({len(doc['facilities'])} sites), {doc['method']} distance, "
          f"radius {radius_s}, demand: {doc['demand']}  [job {doc['job_id']}, data {doc['data_version']}]")
        w(f"  population {doc['population_total']:,.0f}, covered {doc['population_covered']:,.0f} "
          f"({doc['share_covered']:.1%}), uncovered {doc['population_total'] - doc['population_covered']:,.0f}")
        if "population_served" in doc:
            w(f"  capacity: served {doc['population_served']:,.0f} ({doc['share_served']:.1%}), "
              f"short of room {doc['population_short']:,.0f}, unreachable {doc['population_unreachable']:,.0f}")
            over = [f for f in doc["facilities"] if f["capacity"] and f["population_in_reach"] > f["capacity"]]
            w(f"  shelters with more people in reach than room: {len(over)} of {len(doc['facilities'])}")
        served = "population_served" in doc
        for level in ("districts", "streets"):
            rows = doc["areas"][level]
            if not rows:
                continue
            w("")
            head = f"  {'code':<10} {'name':<16} {'population':>12} {'covered':>12} {'share':>7}"
            w(f"{level}:")
            w(head + (f" {'served':>12}" if served else ""))
            for r in rows:
                line = (f"  {r['code']:<10} {_cut(r['name'], 16)} {r['population']:>12,.0f} "
                        f"{r['covered']:>12,.0f} {r['share']:>7.1%}")
                if served:
                    line += f" {r['served']:>12,.0f}"
                w(line)
        zero = sum(1 for g in doc["grids"] if g["population"] > 0 and g["covered"] == 0)
        w("")
        w(f"grids: {len(doc['grids'])}, of which {zero} with people and nobody covered")


def _cut(text: str, width: int) -> str:
    """Pad/cut to a display width, counting CJK characters as two columns."""
    out, used = "", 0
    for ch in text or "":
        cw = 2 if ord(ch) > 0x2E80 else 1
        if used + cw > width:
            break
        out, used = out + ch, used + cw
    return out + " " * (width - used)


def _dumps(doc) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
