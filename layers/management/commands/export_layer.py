"""manage.py export_layer KIND --format F --out PATH: export a layer (see importers.exports.export_layer).

Exit status 0 on success, 2 on bad input with the reason on stderr.
"""
import sys

from django.core.management.base import BaseCommand

from importers import exports
from importers.mapping import SPECS


class Command(BaseCommand):
    help = "Export a layer as GeoJSON (EPSG:4326), GeoPackage, Shapefile .zip, CSV, KML or KMZ."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(SPECS))
        parser.add_argument("--format", required=True, choices=exports.FORMATS)
        parser.add_argument("--out", required=True, help="output file")
        area = parser.add_mutually_exclusive_group()
        area.add_argument("--district", help="only this district (code)")
        area.add_argument("--street", help="only this street (code)")
        area.add_argument("--community", help="only this community (code)")
        parser.add_argument("--crs", choices=("wgs84", "gcj02"), default="wgs84",
                            help="gcj02 for AMap/Tencent phone apps (default: EPSG:4326)")

    def handle(self, *args, **o):
        try:
            result = exports.export_layer(o["kind"], o["format"], o["out"], district=o["district"],
                                          street=o["street"], community=o["community"], crs=o["crs"])
        except exports.ExportProblem as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(2)
        self.stdout.write(f"export_layer {o['kind']}: {result.count} features -> {result.path} "
                          f"({result.format}, {result.crs})")
