"""Every supported format imports for real (fixtures/formats, written by fixtures/make_fixtures.py)."""
import json

import pytest
import shapely
from django.core.management import call_command

from importers.services import import_file
from layers import models

from .conftest import FORMATS, counts

pytestmark = pytest.mark.django_db


def _ok(report):
    assert report.ok, [str(i) for i in report.errors]
    return report


def test_districts_geojson_gcj02_moves_500_m_and_matches_wgs84_file():
    r = _ok(import_file("districts", FORMATS / "districts_gcj02.geojson", gcj02=True))
    assert r.created == 2 and r.crs["gcj02"] and r.crs["how"] == "assumed_lonlat"
    assert r.mapping["code"] == "adcode"
    d = {x.code: x for x in models.District.objects.filter(code__startswith="999")}
    assert d["999001"].name == "测试区" and d["999001"].kind == "district" and d["999002"].kind == "county"
    gcj = {c: x.geom.clone() for c, x in d.items()}
    models.District.objects.filter(code__startswith="999").delete()
    _ok(import_file("districts", FORMATS / "districts_wgs84.geojson"))
    for c, x in models.District.objects.filter(code__startswith="999").values_list("code", "geom"):
        # the GCJ-02 inverse lands within 0.5 m of the true WGS84 square (vertices match)
        assert shapely.hausdorff_distance(shapely.from_wkb(bytes(gcj[c].wkb)), shapely.from_wkb(bytes(x.wkb))) < 0.5
        assert abs(gcj[c].area - x.area) / x.area < 1e-6
    # and without --gcj02 the same file lands ~0.5 km off
    models.District.objects.filter(code__startswith="999").delete()
    _ok(import_file("districts", FORMATS / "districts_gcj02.geojson"))
    moved = models.District.objects.get(code="999001").geom
    assert 300 < moved.centroid.distance(gcj["999001"].centroid) < 800


@pytest.mark.parametrize("name", ["communities_gbk.shp", "communities_gbk_cpg.zip"])
def test_gbk_shapefile_with_and_without_cpg_comes_through_exactly(hierarchy, name):
    models.Community.objects.filter(code__startswith="999").delete()
    r = _ok(import_file("communities", FORMATS / name))
    assert r.encoding["name"] == "gb18030"
    assert r.encoding["how"] == ("cpg" if name.endswith(".zip") else "detected_gb18030")
    got = dict(models.Community.objects.filter(code__startswith="999").values_list("code", "name"))
    assert got == {"999001001001": "测试社区甲", "999001001002": "测试社区乙（东）"}
    c = models.Community.objects.get(code="999001001002")
    assert (c.households, c.population, c.street.code) == (80, 210, "999001001")
    assert r.crs["srid"] == 4547 and r.crs["how"] == "file"


def test_gbk_shapefile_forced_utf8_is_refused_not_mojibake(hierarchy):
    models.Community.objects.filter(code__startswith="999").delete()
    before = counts()
    r = import_file("communities", FORMATS / "communities_gbk.shp", encoding="utf-8")
    assert not r.ok and r.errors[0].code == "encoding_error"
    assert counts() == before


def test_geopackage_needs_layer_and_grids_get_their_community(hierarchy):
    r = import_file("grids", FORMATS / "grids.gpkg")
    assert not r.ok and r.errors[0].code == "layer_required" and "grids" in r.errors[0].message
    r = _ok(import_file("grids", FORMATS / "grids.gpkg", layer="grids"))
    assert r.created == 4 and r.crs["srid"] == 4490
    grids = models.Grid.objects.filter(code__startswith="999").select_related("community")
    assert {g.code[:12] == g.community.code for g in grids} == {True}
    assert set(grids.values_list("worker_name", flat=True)) == {"张三", "李四", "王五", "赵六"}
    assert not [i for i in r.issues if i.code == "grid_gap"]  # four quarters tile the two halves


def test_grids_without_code_prefix_go_to_the_community_containing_most(hierarchy):
    r = _ok(import_file("grids", FORMATS / "grids.gpkg", layer="grids", dry_run=True))
    assert r.status == "dry_run" and r.created == 4


@pytest.mark.parametrize("name,kwargs", [
    ("facilities.csv", {}), ("facilities_gbk.csv", {}), ("facilities_xy.csv", {"srid": 4547}),
    ("facilities_wkt.csv", {}),
])
def test_csv_variants(hierarchy, name, kwargs):
    r = _ok(import_file("facilities", FORMATS / name, **kwargs))
    assert r.created == 2
    f = models.ServiceFacility.objects.get(code="999F002")
    assert f.name == "测试卫生站" and f.community.code == "999001001002"
    assert models.ServiceFacility.objects.get(code="999F001").community.code == "999001001001"
    if name.startswith("facilities.") or "gbk" in name:
        assert models.ServiceFacility.objects.get(code="999F001").kind == "community_service_centre"
        assert models.ServiceFacility.objects.get(code="999F001").floor_area_m2 == 650.5


@pytest.mark.parametrize("name", ["shelters.kml", "shelters.kmz"])
def test_kml_and_kmz(hierarchy, name):
    r = _ok(import_file("shelters", FORMATS / name))
    s = models.Shelter.objects.get(code="999S002")
    assert (s.name, s.level, s.effective_area_m2) == ("测试公园避难场所", "fixed_short", 8000.0)
    assert s.geom.area == pytest.approx(1688 * 2224 / 16, rel=0.05)  # a 0.005° cell, ~422 m x 556 m
    assert r.created == 2


def test_dxf_polylines_hatches_points_and_blocks():
    from pathlib import Path
    import tempfile

    from importers import readers
    with tempfile.TemporaryDirectory() as tmp:
        src = readers.open_source(FORMATS / "sites.dxf", Path(tmp), name="sites.dxf")
        feats = list(src.features())
    kinds = sorted((f.attrs["cad_layer"], shapely.from_wkb(f.wkb).geom_type) for f in feats)
    assert kinds == [("候选点", "Point"), ("候选点", "Point"), ("用地", "Polygon"), ("绿地", "Polygon")]
    poly = next(shapely.from_wkb(f.wkb) for f in feats if f.attrs["cad_layer"] == "用地")
    assert poly.area == pytest.approx(8000, abs=1)


def test_dxf_points_import_as_candidates_with_cad_layer_filter():
    r = _ok(import_file("candidates", FORMATS / "sites.dxf", srid=4547, layer="候选点",
                        mapping=["code=handle"]))
    assert r.created == 2


def test_command_json_and_exit_status(capsys):
    call_command("import_layer", "districts", str(FORMATS / "districts_gcj02.geojson"), "--gcj02", "--json",
                 "--dry-run")
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "dry_run" and doc["created"] == 2 and doc["ok"] is True
    with pytest.raises(SystemExit) as exc:
        call_command("import_layer", "districts", str(FORMATS / "facilities.csv"))
    assert exc.value.code == 2
    assert "facilities.csv" in capsys.readouterr().err


def test_upsert_and_replace(hierarchy):
    _ok(import_file("grids", FORMATS / "grids.gpkg", layer="grids"))
    r = import_file("grids", FORMATS / "grids.gpkg", layer="grids")
    assert {i.code for i in r.errors} == {"code_exists"}
    r = _ok(import_file("grids", FORMATS / "grids.gpkg", layer="grids", mode="upsert"))
    assert (r.created, r.updated) == (0, 4)
    n = models.Grid.objects.count()
    r = _ok(import_file("grids", FORMATS / "grids.gpkg", layer="grids", mode="replace"))
    assert models.Grid.objects.count() == 4 and r.deleted == n - 4


def test_import_run_recorded(hierarchy):
    from importers.models import ImportRun
    r = _ok(import_file("grids", FORMATS / "grids.gpkg", layer="grids"))
    run = ImportRun.objects.get(pk=r.run_id)
    assert run.status == "ok" and run.created == 4 and len(run.sha256) == 64
    assert run.report["created"] == 4
