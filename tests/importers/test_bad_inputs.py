"""The bad-input corpus (fixtures/bad, written by fixtures/make_fixtures.py): every file is refused with an
error that names the file, the feature/row (where the fault is in one) and the reason, and no layer table
changes. Row ``None`` marks a whole-file fault (unsafe archive, wrong format, missing CRS …)."""
import json

import pytest

from importers.safety import Limits
from importers.services import import_file

from .conftest import BAD, LAT0, LON0, counts

pytestmark = pytest.mark.django_db

# (kind, file, options, expected error code, expected row, text the message must contain)
CASES = [
    ("districts", "truncated.geojson", {}, "json_truncated", 2, "截断"),
    ("districts", "truncated.shp", {}, "read_failed", 4, ""),
    ("districts", "no_dbf.shp", {}, "missing_dbf", None, ".dbf"),
    ("districts", "no_shx.shp", {}, "missing_shx", None, ".shx"),
    ("districts", "mixed_types.geojson", {}, "geometry_type", 2, "Point"),
    ("districts", "nested_collections.geojson", {}, "nesting_too_deep", 1, "嵌套"),
    ("districts", "geometry_collection.geojson", {}, "geometry_type", 1, "GeometryCollection"),
    ("districts", "infinite_coordinate.geojson", {}, "coordinates_not_finite", 1, "NaN"),
    ("facilities", "nan_coordinate.csv", {}, "coordinates_unparsable", 2, "NaN"),
    ("facilities", "inf_wkt.csv", {}, "coordinates_unparsable", 1, ""),
    ("districts", "crs_link.geojson", {}, "crs_url", None, "URL"),
    ("districts", "crs_name_url.geojson", {}, "crs_url", None, "http://example.invalid"),
    ("facilities", "swapped_all.csv", {}, "swapped_axes", None, "颠倒"),
    ("candidates", "swapped_one.geojson", {}, "swapped_axes", 2, "颠倒"),
    ("districts", "projected_no_crs.geojson", {}, "crs_missing", None, "--srid 4526"),
    ("candidates", "projected_no_crs.csv", {}, "crs_missing", None, "--srid 4547"),
    ("facilities", "gbk_declared_utf8.csv", {"encoding": "utf-8"}, "encoding_error", None, "utf-8"),
    ("facilities", "undecodable.csv", {}, "encoding_undetected", None, "--encoding"),
    ("districts", "invalid_polygon.geojson", {}, "invalid_geometry", 1, "Self-intersection"),
    ("districts", "duplicate_codes.geojson", {}, "duplicate_code", 2, "999001"),
    ("districts", "vrt_renamed.geojson", {}, "vrt_refused", None, "VRT"),
    ("districts", "zip_slip.zip", {}, "zip_unsafe_path", None, "../../evil.shp"),
    ("districts", "zip_absolute.zip", {}, "zip_unsafe_path", None, "/tmp/evil.shp"),
    ("districts", "zip_bomb.zip", {}, "zip_ratio", None, "压缩比"),
    ("districts", "zip_many_entries.zip", {}, "zip_too_many_entries", None, "300"),
    ("districts", "zip_symlink.zip", {}, "zip_symlink", None, "data.shp"),
    ("districts", "zip_empty.zip", {}, "zip_no_dataset", None, ""),
    ("districts", "empty.geojson", {}, "empty_file", None, ""),
    ("districts", "not_json.geojson", {}, "content_mismatch", None, "geojson"),
    ("districts", "fake.gpkg", {}, "content_mismatch", None, "gpkg"),
    ("districts", "spreadsheet.xlsx", {}, "format_unsupported", None, ".xlsx"),
    ("candidates", "binary.dxf", {}, "dxf_binary", None, "DXF"),
    ("facilities", "entity.kml", {}, "xml_doctype", None, "ENTITY"),
    ("districts", "null_geometry.geojson", {}, "geometry_missing", 1, ""),
    ("communities", "negative_population.geojson", {}, "value_invalid", 1, "负数"),
    ("communities", "absurd_population.geojson", {}, "value_invalid", 1, "不合理"),
    ("grids", "overlapping_grids.geojson", {}, "grid_overlap", 1, "重叠"),
    ("grids", "grid_outside_community.geojson", {}, "outside_parent", 1, "超出"),
    ("facilities", "missing_columns.csv", {}, "field_missing", None, "--map"),
    ("facilities", "no_coordinates.csv", {}, "csv_no_geometry", 1, "经度"),
    ("facilities", "ragged.csv", {}, "csv_columns", 2, "列数"),
    ("facilities", "outside_china.geojson", {}, "outside_china", 1, "中国"),
    ("facilities", "lines_as_points.geojson", {}, "geometry_type", 1, "LineString"),
    ("streets", "orphan_street.geojson", {}, "parent_missing", 1, "999777"),
    ("districts", "bad_code_format.geojson", {}, "value_invalid", 1, "99A001"),
    ("districts", "empty_polygon.geojson", {}, "geometry_missing", 1, ""),
    ("districts", "empty_wkt.csv", {}, "geometry_empty", 2, "为空"),
    ("districts", "two_layers.gpkg", {}, "layer_required", None, "--layer"),
    ("districts", "two_layers.gpkg", {"layer": "nope"}, "layer_missing", None, "nope"),
    ("districts", "invalid_polygon.geojson", {"srid": 32650}, "srid_not_allowed", None, "32650"),
    ("districts", "projected_no_crs.geojson", {"srid": 4526, "gcj02": True}, "gcj02_not_lonlat", None, "--gcj02"),
    ("districts", "duplicate_codes.geojson", {"mapping": ["nosuch=name"]}, "map_unknown_field", None, "nosuch"),
]


def _check(report, name, code, row, text):
    assert not report.ok and report.status == "refused"
    errors = [e for e in report.errors if e.code == code]
    assert errors, f"expected {code}, got {[(e.code, str(e)) for e in report.errors]}"
    e = errors[0]
    assert e.file == name and str(e).startswith(name)
    assert e.row == row
    if row is not None:
        assert f"第 {row} 个要素/行" in str(e)
    assert text in e.message
    assert report.created == report.updated == report.deleted == 0


@pytest.mark.parametrize("kind,name,options,code,row,text", CASES, ids=[f"{c[1]}-{c[3]}" for c in CASES])
def test_bad_input_is_refused_and_nothing_written(hierarchy, kind, name, options, code, row, text):
    before = counts()
    report = import_file(kind, BAD / name, **options)
    _check(report, name, code, row, text)
    assert counts() == before
    json.dumps(report.as_dict(), ensure_ascii=False)  # the report serialises


def test_code_already_in_database(db):
    before = counts()
    report = import_file("districts", BAD / ".." / "formats" / "districts_wgs84.geojson")
    assert report.ok  # sanity: the file itself is fine
    after = counts()
    assert after["District"] == before["District"] + 2
    report = import_file("districts", BAD / ".." / "formats" / "districts_wgs84.geojson")
    _check(report, "districts_wgs84.geojson", "code_exists", 1, "upsert")
    assert counts() == after


def test_million_vertex_polygon_refused_before_parsing(hierarchy, tmp_path):
    n = 1_000_000
    t = [i * 2 * 3.141592653589793 / n for i in range(n)]
    import math
    ring = [[round(LON0 + 0.01 * math.cos(a), 7), round(LAT0 + 0.01 * math.sin(a), 7)] for a in t]
    ring.append(ring[0])
    path = tmp_path / "million.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "小", "adcode": "999003"},
         "geometry": {"type": "Point", "coordinates": [LON0, LAT0]}},
        {"type": "Feature", "properties": {"name": "大", "adcode": "999004"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    before = counts()
    report = import_file("districts", path)
    _check(report, "million.geojson", "too_many_vertices", 2, "顶点")
    assert counts() == before


def test_zip_entry_count_and_file_size_limits(hierarchy, tmp_path):
    path = BAD / ".." / "formats" / "districts_wgs84.geojson"
    report = import_file("districts", path, limits=Limits(max_file_bytes=100))
    _check(report, "districts_wgs84.geojson", "file_too_large", None, "上限")


def test_temp_files_removed(hierarchy, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    import_file("districts", BAD / "invalid_polygon.geojson")
    import_file("communities", BAD / ".." / "formats" / "communities_gbk_cpg.zip", dry_run=True)
    assert list(tmp_path.iterdir()) == []
