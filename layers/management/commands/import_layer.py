"""manage.py import_layer KIND PATH: import a layer file (see importers.services.import_file).

Exit status 0 on success (or a clean dry run), 2 on bad input with the reasons on stderr. ``--json`` prints
the report as one JSON document on stdout.
"""
import json
import sys

from django.core.management.base import BaseCommand

from importers import services
from importers.mapping import SPECS


class Command(BaseCommand):
    help = "Import a Shapefile/.zip, GeoJSON, GeoPackage, CSV, KML/KMZ or DXF file into one layer, atomically."
    # The system checks import the whole URLconf (~2.5 s, as long as ogr2ogr's whole run on 100k features);
    # they run in `manage.py check`, `migrate` and the test suite, not on every import.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(SPECS), help="the layer to import into")
        parser.add_argument("path", help="the file (.shp, .zip, .geojson/.json, .gpkg, .csv, .kml, .kmz, .dxf)")
        parser.add_argument("--srid", type=int, default=None, help="EPSG code of the file's CRS (overrides the file)")
        parser.add_argument("--encoding", default=None, help="attribute text encoding (default: .cpg, else detected)")
        parser.add_argument("--layer", default=None, help="layer of a GeoPackage/KML, or dataset in a .zip, "
                                                          "or CAD layer of a DXF")
        parser.add_argument("--gcj02", action="store_true", help="coordinates are GCJ-02 (AMap/Tencent) lon/lat")
        parser.add_argument("--map", action="append", default=[], metavar="FIELD=ATTR",
                            help="set a model field from a named attribute (repeatable)")
        parser.add_argument("--mode", choices=services.MODES, default="append")
        parser.add_argument("--make-valid", action="store_true", help="repair invalid geometries (area change reported)")
        parser.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
        parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")

    def handle(self, *args, **o):
        progress = None
        if not o["json"] and sys.stderr.isatty():
            def progress(stage, done, total):
                tail = f"/{total:,}" if total else ""
                sys.stderr.write(f"\r  {stage}: {done:,}{tail}")
                sys.stderr.flush()
        report = services.import_file(
            o["kind"], o["path"], srid=o["srid"], encoding=o["encoding"], layer=o["layer"], gcj02=o["gcj02"],
            mapping=o["map"], mode=o["mode"], make_valid=o["make_valid"], dry_run=o["dry_run"], progress=progress)
        if progress:
            sys.stderr.write("\n")
        if o["json"]:
            self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, indent=1, default=str))
        else:
            for issue in report.issues:
                if issue.level != "error":
                    self.stdout.write(f"{issue.level}: {issue}")
            crs = report.crs or {}
            self.stdout.write(
                f"import_layer {report.kind} {report.file}: {report.status}; read {report.features_read}, "
                f"created {report.created}, updated {report.updated}, deleted {report.deleted}; "
                f"CRS {crs.get('name')} ({crs.get('how')}{', GCJ-02' if crs.get('gcj02') else ''}); "
                f"encoding {report.encoding.get('name')} ({report.encoding.get('how')}); {report.elapsed_s} s")
        if not report.ok:
            for issue in report.errors:
                sys.stderr.write(f"error: {issue}\n")
            sys.exit(2)
