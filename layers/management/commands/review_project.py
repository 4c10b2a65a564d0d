"""manage.py review_project PATH [--json] [--save] [--srid N] [--attr KEY=VALUE ...]: review a submission.

PATH: a GeoJSON FeatureCollection, a Shapefile .zip (site.shp, facility.shp), a GeoPackage (layers site
and facility) or a DXF (CAD layers site and facility; needs --srid). ``--attr`` fills site properties the
file leaves empty (name, developer, households, population).

Exit status: 0 when the verdict is pass, 1 when a check fails, 2 on bad input (reason on stderr).
"""
import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import translation

from layers import services_review
from layers.analysis.submission import SubmissionError


class Command(BaseCommand):
    help = "Review a housing project submission (GeoJSON, Shapefile .zip, GeoPackage, DXF) against the rule set (issue 4)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="submission file: GeoJSON, Shapefile .zip, GeoPackage or DXF")
        parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        parser.add_argument("--save", action="store_true", help="store the project, facilities and report")
        parser.add_argument("--srid", type=int, default=None,
                            help="EPSG code of the coordinates (default: the crs member, else lon/lat)")
        parser.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                            help="site property missing from a .zip/.gpkg/.dxf file (name, developer, "
                                 "households, population); repeatable")

    def handle(self, *args, path, json: bool = False, save: bool = False, srid=None, attr=(), **options):
        lang = (translation.get_language() or "zh-hans")
        lang = "en" if lang.startswith("en") else "zh"
        attrs = {}
        for item in attr or ():
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                msg = (f"--attr needs KEY=VALUE, got {item!r}" if lang == "en"
                       else f"--attr 应为 键=值 形式，收到 {item!r}")
                raise CommandError(msg, returncode=2)
            attrs[key.strip()] = value.strip()
        try:
            sub, review = services_review.review_path(path, srid=srid, attrs=attrs or None)
        except SubmissionError as exc:
            raise CommandError(exc.message(lang), returncode=2) from None
        doc = review.as_dict(lang)
        if save:
            project = services_review.save_review(sub, review, lang=lang)
            doc_saved = project.pk
        else:
            doc_saved = None
        if json:
            out = dict(doc)
            if doc_saved is not None:
                out["project_id"] = doc_saved
            self.stdout.write(_dumps(out))
        else:
            self._table(doc, doc_saved)
        if review.verdict != "pass":
            sys.stdout.flush()
            self.stdout.flush()
            raise SystemExit(1)

    def _table(self, doc, saved_pk):
        p = doc["project"]
        w = self.stdout.write
        w(f"{p['name']}: {p['households']} households, {p['population']} persons; rule set {doc['rule_set']}")
        for level in ("districts", "streets", "communities"):
            items = ", ".join(f"{d.get('name', '')} {d['code']} {d['share']:.1%}" for d in doc["location"][level])
            w(f"  {level}: {items or '-'}")
        w(f"  grids: {len(doc['location']['grids'])}")
        for c in doc["checks"]:
            w(f"  {c['status']:5} {c['code']:17} {c['message']}")
        style = self.style.SUCCESS if doc["verdict"] == "pass" else self.style.ERROR
        w(style(f"verdict: {doc['verdict']}" + (f" (saved as project {saved_pk})" if saved_pk else "")))


def _dumps(doc) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
