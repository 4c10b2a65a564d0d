"""manage.py export_grids --format F --out PATH [area] [options]: grid atlas / sheets / data for field staff.

See layers.services_export for the formats. Progress goes to stderr; the result to stdout (``--json`` for
a machine-readable line). Exit status 0 on success, 2 on bad input (unknown code, empty selection, user
not allowed) with the reason on stderr.
"""
import json
import sys

from django.core.management.base import BaseCommand

from layers import services_export as se


class Command(BaseCommand):
    help = ("Export grids as an atlas PDF (index + one page per grid), PNG sheets, KML/KMZ, GeoJSON, "
            "GeoPackage, Shapefile .zip, CSV or a GeoTIFF of grid codes.")

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, choices=se.FORMATS)
        parser.add_argument("--out", required=True, help="output file (.zip with --per-grid)")
        area = parser.add_mutually_exclusive_group()
        area.add_argument("--district", help="grids of this district (6-digit code)")
        area.add_argument("--street", help="grids of this street (9-digit code)")
        area.add_argument("--community", help="grids of this community (12-digit code)")
        area.add_argument("--grid", help="this grid (15-digit code)")
        parser.add_argument("--crs", choices=("wgs84", "gcj02"), default="wgs84",
                            help="data formats: gcj02 for AMap-based phone apps (default EPSG:4326)")
        parser.add_argument("--paper", choices=("A4", "A3"), default="A4")
        parser.add_argument("--dpi", type=int, default=150, help="PNG resolution (default 150)")
        parser.add_argument("--per-grid", action="store_true", help="pdf/png: one file per grid in a .zip")
        parser.add_argument("--res-m", type=float, default=None, help="tif: pixel size in metres")
        parser.add_argument("--date", default=None, help="data date printed on sheets (default today)")
        parser.add_argument("--user", default=None,
                            help="export as this user (a field worker gets only their own grids)")
        parser.add_argument("--json", action="store_true", help="print the result as one JSON line")

    def handle(self, *args, **o):
        def progress(fraction: float, message: str) -> None:
            if o["verbosity"] > 0:
                sys.stderr.write(f"\r[{fraction * 100:5.1f}%] {message}   ")
                sys.stderr.flush()

        try:
            user = se.username_user(o["user"]) if o["user"] else None
            r = se.export_grids(o["format"], o["out"], district=o["district"], street=o["street"],
                                community=o["community"], grid=o["grid"], user=user, crs=o["crs"],
                                paper=o["paper"], dpi=o["dpi"], per_grid=o["per_grid"], res_m=o["res_m"],
                                data_date=o["date"], progress=progress)
        except se.GridExportProblem as exc:
            sys.stderr.write(f"\nerror: {exc}\n")
            sys.exit(2)
        if o["verbosity"] > 0:
            sys.stderr.write("\n")
        if o["json"]:
            self.stdout.write(json.dumps({
                "path": str(r.path), "format": r.format, "grids": r.count, "pages": r.pages, "crs": r.crs,
                "files": list(r.files), "seconds": round(r.seconds, 3), **r.extra}, ensure_ascii=False))
        else:
            self.stdout.write(f"export_grids: {r.count} grids -> {r.path} ({r.format}, {r.crs}"
                              + (f", {r.pages} pages" if r.pages else "") + f") in {r.seconds:.1f} s")
