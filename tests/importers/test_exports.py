"""Exports: every format round-trips (export -> re-import gives the same features), CSV is safe in Excel."""
import csv
import io
import json
import zipfile

import pytest
import shapely
from django.core.management import call_command

from importers import exports
from importers.services import import_file
from layers import models

from .conftest import FORMATS

pytestmark = pytest.mark.django_db

LAYERS = {  # kind -> (fixture, options, model attributes compared)
    "grids": ("grids.gpkg", {"layer": "grids"}, ("code", "households", "population", "worker_name",
                                                 "community_id")),
    "facilities": ("facilities.csv", {}, ("code", "name", "kind", "floor_area_m2", "status", "community_id")),
    "shelters": ("shelters.kml", {}, ("code", "name", "level", "effective_area_m2", "community_id")),
}


def _snapshot(kind, fields):
    model = exports.SPECS[kind].model
    out = {}
    for obj in model.objects.filter(code__startswith="999"):
        out[obj.code] = ({f: getattr(obj, f) for f in fields}, shapely.from_wkb(bytes(obj.geom.wkb)))
    return out


def _same(a, b, tol_m):
    assert a.keys() == b.keys() and a
    for code in a:
        assert a[code][0] == b[code][0], code
        assert shapely.hausdorff_distance(a[code][1], b[code][1]) < tol_m, code


@pytest.mark.parametrize("fmt", exports.FORMATS)
@pytest.mark.parametrize("kind", LAYERS)
def test_round_trip(hierarchy, tmp_path, kind, fmt):
    fixture, options, fields = LAYERS[kind]
    assert import_file(kind, FORMATS / fixture, **options).ok
    before = _snapshot(kind, fields)
    out = tmp_path / f"out.{ {'shp': 'zip'}.get(fmt, fmt) }"
    result = exports.export_layer(kind, fmt, out, street="999001001")
    assert result.count == len(before)
    exports.SPECS[kind].model.objects.filter(code__startswith="999").delete()
    r = import_file(kind, out)
    assert r.ok, [str(e) for e in r.errors]
    assert r.crs["srid"] in (4326, None) or r.crs["how"] in ("file", "assumed_lonlat")
    _same(before, _snapshot(kind, fields), tol_m=0.05)  # 7 decimals of a degree are ~1 cm


def test_gcj02_export_round_trips_with_gcj02_import(hierarchy, tmp_path):
    assert import_file("shelters", FORMATS / "shelters.kml").ok
    before = _snapshot("shelters", ("code", "name"))
    exports.export_layer("shelters", "geojson", tmp_path / "s.geojson", crs="gcj02", district="999001")
    plain = tmp_path / "p.geojson"
    exports.export_layer("shelters", "geojson", plain, district="999001")
    a = json.loads((tmp_path / "s.geojson").read_text())["features"][0]["geometry"]["coordinates"][0][0][0]
    b = json.loads(plain.read_text())["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 0.004 < a[0] - b[0] < 0.008  # ~0.5 km east in Zhangjiakou
    models.Shelter.objects.filter(code__startswith="999").delete()
    assert import_file("shelters", tmp_path / "s.geojson", gcj02=True).ok
    _same(before, _snapshot("shelters", ("code", "name")), tol_m=0.5)


def test_csv_formula_injection_escaped_and_numbers_kept(hierarchy, tmp_path):
    assert import_file("facilities", FORMATS / "facilities.csv").ok
    models.ServiceFacility.objects.filter(code="999F001").update(name="=HYPERLINK(\"http://x\")")
    models.ServiceFacility.objects.filter(code="999F002").update(name="@SUM(A1)", floor_area_m2=0)
    exports.export_layer("facilities", "csv", tmp_path / "f.csv", community="999001001001")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "f.csv").read_text(encoding="utf-8-sig"))))
    assert [r["name"] for r in rows] == ["'=HYPERLINK(\"http://x\")"]
    exports.export_layer("facilities", "csv", tmp_path / "g.csv", street="999001001")
    text = (tmp_path / "g.csv").read_text(encoding="utf-8-sig")
    assert "'@SUM(A1)" in text and ",0.0," in text


def test_shapefile_zip_has_prj_and_utf8_cpg(hierarchy, tmp_path):
    assert import_file("grids", FORMATS / "grids.gpkg", layer="grids").ok
    call_command("export_layer", "grids", "--format", "shp", "--out", str(tmp_path / "g.zip"),
                 "--community", "999001001001")
    with zipfile.ZipFile(tmp_path / "g.zip") as zf:
        names = sorted(zf.namelist())
        assert names == ["grids.cpg", "grids.dbf", "grids.prj", "grids.shp", "grids.shx"]
        assert zf.read("grids.cpg") == b"UTF-8"
        assert b"WGS" in zf.read("grids.prj")
    r = import_file("grids", tmp_path / "g.zip", mode="upsert", dry_run=True)
    assert r.ok and r.updated == 2 and r.encoding["how"] == "cpg"


def test_export_command_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        call_command("export_layer", "grids", "--format", "geojson", "--out", str(tmp_path / "x.geojson"),
                     "--community", "000000000000")
    assert exc.value.code == 2 and "000000000000" in capsys.readouterr().err
