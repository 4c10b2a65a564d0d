"""export_grids (issue 7): atlas PDF pages and text, sheets, KML/KMZ, GeoJSON/GPKG/SHP/CSV round trips,
GeoTIFF pixels, the GCJ-02 offset, and field workers limited to their own grids."""
import csv
import json
import shutil
import subprocess
import zipfile
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import shapely
from django.core.management import call_command

from layers import models
from layers import services
from layers import services_export as se

pytestmark = pytest.mark.django_db
KML = "{http://www.opengis.net/kml/2.2}"


@pytest.fixture
def first_community():
    services.demo_users_create()
    c = models.Community.objects.filter(is_sample=True).order_by("code").first()
    assert c is not None and c.grids.exists()
    return c


def _codes(community):
    return sorted(community.grids.values_list("code", flat=True))


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils not installed")
def test_atlas_has_index_and_one_page_per_grid_with_code_and_community(first_community, tmp_path):
    out = tmp_path / "atlas.pdf"
    r = se.export_grids("pdf", out, community=first_community.code)
    codes = _codes(first_community)
    n_index = se.mapsheet.index_page_count(len(codes))
    assert r.count == len(codes) and r.pages == len(codes) + n_index
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True, check=True).stdout
    assert f"Pages:          {r.pages}" in info.replace("Pages:           ", "Pages:          ")
    pages = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True,
                           check=True).stdout.split("\f")[:r.pages]
    for code in codes:
        assert code in pages[0]  # index lists every grid
    for i, code in enumerate(codes):
        page = pages[n_index + i]
        assert code in page and first_community.name in page, (i, code)
        assert f"第 {n_index + i + 1} 页" in page


def test_png_sheet_not_blank_and_per_grid_zip(first_community, tmp_path):
    code = _codes(first_community)[0]
    out = tmp_path / "g.png"
    se.export_grids("png", out, grid=code, dpi=40)
    import matplotlib.image
    img = matplotlib.image.imread(out)[..., :3]
    assert (img.sum(axis=2) < 2.9).mean() > 0.02
    with pytest.raises(se.GridExportProblem, match="--per-grid"):
        se.export_grids("png", tmp_path / "x.png", community=first_community.code)
    z = tmp_path / "sheets.zip"
    r = se.export_grids("png", z, community=first_community.code, per_grid=True, dpi=30)
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == [f"{c}.png" for c in _codes(first_community)] == list(r.files)
        assert all(zf.read(name).startswith(b"\x89PNG") for name in zf.namelist())


@pytest.mark.parametrize("fmt", ["kml", "kmz"])
def test_kml_one_placemark_per_grid(first_community, tmp_path, fmt):
    g = first_community.grids.order_by("code").first()
    g.worker_name = '<b>&"王</b>'  # escaped, not markup
    g.save()
    out = tmp_path / f"grids.{fmt}"
    se.export_grids(fmt, out, community=first_community.code)
    data = out.read_bytes() if fmt == "kml" else zipfile.ZipFile(out).read("doc.kml")
    root = ET.fromstring(data)
    marks = root.findall(f".//{KML}Placemark")
    assert sorted(m.find(f"{KML}name").text for m in marks) == _codes(first_community)
    assert root.find(f".//{KML}Style/{KML}PolyStyle") is not None
    first = next(m for m in marks if m.find(f"{KML}name").text == g.code)
    values = {d.get("name"): d.find(f"{KML}value").text for d in first.iter(f"{KML}Data")}
    assert values["worker_name"] == '<b>&"王</b>' and values["comm_name"] == first_community.name
    ring = first.find(f".//{KML}coordinates").text.split()
    lon, lat = map(float, ring[0].split(","))
    assert 113 < lon < 117 and 39 < lat < 42


def _read_ogr(path):
    import pyogrio.raw
    meta, _fids, geoms, fields = pyogrio.raw.read(str(path))
    cols = dict(zip(meta["fields"], fields))
    return [str(c) for c in cols["code"]], [shapely.from_wkb(g) for g in geoms], cols


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "shp"])
def test_vector_formats_reopen_with_the_same_grids(first_community, tmp_path, fmt):
    out = tmp_path / ("grids.zip" if fmt == "shp" else f"grids.{fmt}")
    se.export_grids(fmt, out, community=first_community.code)
    if fmt == "shp":
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            assert {"grids.shp", "grids.dbf", "grids.prj", "grids.cpg"} <= set(names)
            assert zf.read("grids.cpg").strip() == b"UTF-8"
            zf.extractall(tmp_path / "shp")
        out = tmp_path / "shp" / "grids.shp"
    codes, geoms, cols = _read_ogr(out)
    assert sorted(codes) == _codes(first_community)
    from pyproj import Transformer
    tr = Transformer.from_crs(4547, 4326, always_xy=True)
    for code, g in zip(codes, geoms):
        ref = shapely.from_wkb(bytes(models.Grid.objects.get(code=code).geom.wkb))
        ref = shapely.transform(ref, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
        assert shapely.hausdorff_distance(ref, g) < 1e-6  # degrees, ~ 0.1 m
    assert first_community.name in [str(v) for v in cols["comm_name"]]


def test_csv_escapes_formulas(first_community, tmp_path):
    g = first_community.grids.order_by("code").first()
    g.worker_name = "=HYPERLINK(\"http://x\")"
    g.save()
    out = tmp_path / "grids.csv"
    se.export_grids("csv", out, community=first_community.code)
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert sorted(r["code"] for r in rows) == _codes(first_community)
    row = next(r for r in rows if r["code"] == g.code)
    assert row["worker_name"].startswith("'=")


def test_geotiff_pixels_hold_the_right_grid(first_community, tmp_path):
    import rasterio
    out = tmp_path / "grids.tif"
    r = se.export_grids("tif", out, community=first_community.code, res_m=5)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 4547 and src.dtypes[0] == "int64" and src.res == (5.0, 5.0)
        band = src.read(1)
        for g in first_community.grids.all():
            shp = shapely.from_wkb(bytes(g.geom.wkb)).buffer(-8)  # away from shared edges
            for p in [shp.representative_point(), shp.centroid]:
                if not shp.contains(p):
                    continue
                row, col = src.index(p.x, p.y)
                assert band[row, col] == int(g.code)
        assert set(np.unique(band)) - {0} == {int(c) for c in _codes(first_community)}
    assert r.extra["res_m"] == 5.0


def test_gcj02_output_is_offset_by_the_known_amount(first_community, tmp_path):
    a, b = tmp_path / "wgs.geojson", tmp_path / "gcj.geojson"
    se.export_grids("geojson", a, community=first_community.code)
    se.export_grids("geojson", b, community=first_community.code, crs="gcj02")
    fa, fb = json.loads(a.read_text())["features"], json.loads(b.read_text())["features"]
    for x, y in zip(fa, fb):
        lon0, lat0 = x["geometry"]["coordinates"][0][0][0]
        lon1, lat1 = y["geometry"]["coordinates"][0][0][0]
        east = (lon1 - lon0) * 111_320 * np.cos(np.radians(lat0))
        north = (lat1 - lat0) * 110_574
        assert 480 < east < 550 and 110 < north < 170, (east, north)  # ~515 m E, ~140 m N in Zhangjiakou
    with pytest.raises(se.GridExportProblem):
        se.export_grids("tif", tmp_path / "x.tif", community=first_community.code, crs="gcj02")


def test_field_worker_gets_only_their_grids(first_community, tmp_path):
    from django.contrib.auth import get_user_model
    worker = get_user_model().objects.get(username="field_demo")
    mine = _codes(first_community)
    assert set(mine) == set(models.Grid.objects.filter(worker=worker).values_list("code", flat=True))
    other = models.Grid.objects.exclude(worker=worker).order_by("code").first()
    with pytest.raises(se.GridExportDenied):
        se.export_grids("kml", tmp_path / "x.kml", grid=other.code, user=worker)
    with pytest.raises(se.GridExportDenied):
        se.export_grids("kml", tmp_path / "x.kml", community=other.community.code, user=worker)
    # with no area, or a wider one, they get exactly their own grids
    out = tmp_path / "mine.kml"
    se.export_grids("kml", out, street=first_community.street.code, user=worker)
    names = [m.find(f"{KML}name").text for m in ET.parse(out).getroot().iter(f"{KML}Placemark")]
    assert sorted(names) == mine
    assert se.grid_selection(user=worker).count() == len(mine)
    # a planner sees the other grid
    planner = get_user_model().objects.get(username="planner_demo")
    assert se.grid_selection(grid=other.code, user=planner).count() == 1


def test_command_exit_codes_and_json(first_community, tmp_path, capsys):
    other = models.Grid.objects.exclude(community=first_community).order_by("code").first()
    for argv in (["--grid", "999999999999999"], ["--community", "999999999999"],
                 ["--grid", other.code, "--user", "field_demo"], ["--grid", other.code, "--user", "nobody"]):
        with pytest.raises(SystemExit) as exc:
            call_command("export_grids", "--format", "kml", "--out", str(tmp_path / "x.kml"), *argv)
        assert exc.value.code == 2, argv
        assert "error:" in capsys.readouterr().err
    call_command("export_grids", "--format", "geojson", "--out", str(tmp_path / "ok.geojson"), "--community",
                 first_community.code, "--user", "field_demo", "--json")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["grids"] == len(_codes(first_community)) and result["crs"] == "EPSG:4326"
