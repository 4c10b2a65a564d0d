"""The fast write path and the vectorised whole-file checks of importers.services (benchmarks/bench_import.py)."""
import numpy as np
import pytest
import shapely
import shapely.affinity
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, box

from importers import services
from importers.services import _InstanceFactory, _overlapping_pairs, _promote, import_file
from layers import models

from .conftest import _TR, FORMATS, LAT0, LON0, STEP, counts


def _ok(report):
    assert report.ok, [str(i) for i in report.errors]
    return report


def _brute_pairs(left, right, same):
    out = []
    for i, a in enumerate(left):
        for j, b in enumerate(right):
            if same and i >= j:
                continue
            area = a.intersection(b).area
            if area > services.OVERLAP_TOLERANCE_M2:
                out.append((i, j, area))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_pairs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 40
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(0.5, 12, (n, 2))
    geoms = np.array([box(x, y, x + w, y + h) for (x, y), (w, h) in zip(xy, wh)], dtype=object)
    # a few rotated (non-rectangular) shapes and exact neighbours that only touch
    geoms[:5] = [shapely.affinity.rotate(g, 30) for g in geoms[:5]]
    geoms[5], geoms[6] = box(100, 0, 110, 10), box(110, 0, 120, 10)
    got = [(a, b, round(ar, 9)) for a, b, ar, _g in _overlapping_pairs(geoms, geoms, same=True)]
    want = [(a, b, round(ar, 9)) for a, b, ar in _brute_pairs(geoms, geoms, True)]
    assert got == want
    other = geoms[::3].copy()
    got = [(a, b) for a, b, _ar, _g in _overlapping_pairs(geoms, other)]
    assert got == [(a, b) for a, b, _ar in _brute_pairs(geoms, other, False)]
    assert (5, 6) not in [(a, b) for a, b, *_ in _overlapping_pairs(geoms, geoms, same=True)]


def test_overlapping_pairs_hand_checked():
    g = np.array([box(0, 0, 10, 10), box(9, 0, 19, 10), box(9.95, 0, 20, 10), box(30, 30, 31, 31)], dtype=object)
    pairs = [(a, b, ar) for a, b, ar, _g in _overlapping_pairs(g, g, same=True)]
    # 0-1 overlap 1 x 10 = 10 m2; 1-2 overlap 9.05 x 10; 0-2 overlap 0.05 x 10 = 0.5 m2 (below the 1 m2 tolerance)
    assert [(a, b) for a, b, _ in pairs] == [(0, 1), (1, 2)]
    assert pairs[0][2] == pytest.approx(10.0) and pairs[1][2] == pytest.approx(90.5)
    assert _overlapping_pairs(g[:0], g) == []


def test_promote_to_the_model_types():
    poly, line = box(0, 0, 2, 3), LineString([(0, 0), (1, 1)])
    mp = MultiPolygon([box(0, 0, 1, 1), box(2, 2, 3, 3)])
    out = _promote(np.array([poly, mp], dtype=object), "multipolygon")
    assert [g.geom_type for g in out] == ["MultiPolygon", "MultiPolygon"]
    assert out[0].area == 6.0 and out[1].equals(mp)
    out = _promote(np.array([line], dtype=object), "multilinestring")
    assert out[0].geom_type == "MultiLineString" and out[0].length == pytest.approx(2 ** 0.5)
    out = _promote(np.array([MultiPoint([(3, 4)]), Point(1, 2)], dtype=object), "point")
    assert [(g.geom_type, g.x, g.y) for g in out] == [("Point", 3, 4), ("Point", 1, 2)]


@pytest.mark.django_db
def test_instance_factory_equals_keyword_construction(hierarchy):
    from django.contrib.gis.geos import GEOSGeometry
    c = hierarchy["communities"][0]
    geom = GEOSGeometry("MULTIPOLYGON(((0 0,1 0,1 1,0 0)))", srid=4547)
    kw = {"code": "999001001001001", "community_id": c.pk, "population": 7, "geom": geom}
    a, b = _InstanceFactory(models.Grid)(kw), models.Grid(**kw)
    for f in models.Grid._meta.concrete_fields:
        assert getattr(a, f.attname) == getattr(b, f.attname), f.name
    assert a.households == 0 and a.is_sample is False and a.pk is None and a._state.adding
    assert _InstanceFactory(models.Grid)(kw, pk=42).pk == 42


@pytest.mark.django_db
def test_many_write_batches_store_every_feature_exactly(hierarchy, monkeypatch, tmp_path):
    monkeypatch.setattr(services, "WRITE_BATCH", 3)
    monkeypatch.setattr(services, "_in_chunk", lambda: 4)   # duplicate checks over several queries too
    rng = np.random.default_rng(7)
    lon = rng.uniform(LON0 + 0.001, LON0 + STEP - 0.001, 11)
    lat = rng.uniform(LAT0 + 0.001, LAT0 + STEP - 0.001, 11)
    csv = tmp_path / "f.csv"
    csv.write_text("编码,名称,经度,纬度\n" + "".join(f"999W{i:03d},设施{i},{x:.9f},{y:.9f}\n"
                                                  for i, (x, y) in enumerate(zip(lon, lat))), encoding="utf-8")
    r = _ok(import_file("facilities", csv))
    assert r.created == 11
    got = {f.code: f for f in models.ServiceFacility.objects.filter(code__startswith="999W")}
    x, y = _TR.transform(lon, lat)
    for i in range(11):
        f = got[f"999W{i:03d}"]
        assert f.name == f"设施{i}" and f.floor_area_m2 == 0 and f.status == "built"
        assert abs(f.geom.x - x[i]) < 1e-3 and abs(f.geom.y - y[i]) < 1e-3
        west = lon[i] < LON0 + STEP / 2
        assert f.community.code == ("999001001001" if west else "999001001002")
    # append again: every code found to exist, across the 4-code query chunks; nothing written
    before = counts()
    r = import_file("facilities", csv)
    assert sorted(i.row for i in r.errors if i.code == "code_exists") == list(range(1, 12))
    assert counts() == before


@pytest.mark.django_db
def test_upsert_in_batches_updates_attributes_and_geometry(hierarchy, monkeypatch, tmp_path):
    monkeypatch.setattr(services, "WRITE_BATCH", 1)
    _ok(import_file("facilities", FORMATS / "facilities.csv"))
    before = models.ServiceFacility.objects.get(code="999F001")
    assert before.floor_area_m2 == 650.5
    csv = tmp_path / "f.csv"
    csv.write_text("编码,名称,经度,纬度\n999F001,改名中心,115.056,40.606\n999F003,新设施,115.066,40.613\n",
                   encoding="utf-8")
    r = _ok(import_file("facilities", csv, mode="upsert"))
    assert (r.created, r.updated) == (1, 1)
    after = models.ServiceFacility.objects.get(code="999F001")
    assert after.pk == before.pk and after.name == "改名中心"
    assert after.floor_area_m2 == 650.5          # not in the file: left as it was
    x, y = _TR.transform(115.056, 40.606)
    assert abs(after.geom.x - x) < 1e-3 and abs(after.geom.y - y) < 1e-3
    assert models.ServiceFacility.objects.get(code="999F002").name == "测试卫生站"


@pytest.mark.django_db
def test_grids_outside_their_community_reported_in_file_order(hierarchy, tmp_path):
    """Two grids poke out of their community (one per community), one lies inside."""
    import json
    half = STEP / 2
    feats = [
        ("999001001002001", box(LON0 + half + 0.001, LAT0 + 0.001, LON0 + STEP + 0.002, LAT0 + 0.004)),  # east, out
        ("999001001001001", box(LON0 + 0.001, LAT0 + 0.001, LON0 + 0.003, LAT0 + 0.003)),               # inside
        ("999001001001002", box(LON0 - 0.002, LAT0 + 0.005, LON0 + 0.002, LAT0 + 0.008)),               # west, out
    ]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": c}, "geometry": shapely.geometry.mapping(g)} for c, g in feats]}
    path = tmp_path / "g.geojson"
    path.write_text(json.dumps(doc))
    r = import_file("grids", path, dry_run=True)
    out = [i for i in r.errors if i.code == "outside_parent"]
    assert [i.row for i in out] == [1, 3]
    assert "999001001002" in out[0].message and "999001001001" in out[1].message
    assert out[1].location[0] < LON0 < out[0].location[0] - STEP  # west one left of the square, east one right


# --- the raw INSERT / COPY write path (services._RowInserter) -------------------------------------------

def _tiling_geojson(path, holes: bool = True):
    """4 x 4 grids of the test square's lower-left quarter in each community, one with a hole; attributes
    with Chinese text, and one empty (defaulted) population."""
    import json
    half = STEP / 2
    feats = []
    for c, x0 in ((1, LON0), (2, LON0 + half)):
        for k in range(16):
            gx, gy = k % 4, k // 4
            w = half / 4
            g = box(x0 + gx * w, LAT0 + gy * w, x0 + (gx + 1) * w, LAT0 + (gy + 1) * w)
            if holes and k == 5:
                cx, cy = g.centroid.x, g.centroid.y
                g = shapely.Polygon(g.exterior.coords, [box(cx - w / 8, cy - w / 8, cx + w / 8, cy + w / 8).exterior.coords])
            props = {"wgbm": f"99900100100{c}{k + 1:03d}", "户数": k * 3, "网格员": f"网格员{k}号"}
            if k != 7:
                props["人口"] = k * 7 + c
            feats.append({"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(g)})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False),
                    encoding="utf-8")
    return path


@pytest.mark.django_db
def test_stored_grids_equal_an_independent_reading_feature_by_feature(hierarchy, monkeypatch, tmp_path):
    """Imported by the raw write path (several batches), then compared with pyogrio + shapely + pyproj."""
    import pyogrio
    monkeypatch.setattr(services, "WRITE_BATCH", 5)
    path = _tiling_geojson(tmp_path / "grids.geojson")
    r = _ok(import_file("grids", path))
    assert r.created == 32
    meta, _fids, wkbs, field_data = pyogrio.raw.read(path)
    attrs = [dict(zip(meta["fields"], vals)) for vals in zip(*field_data)]
    want_geoms = shapely.transform(shapely.from_wkb(wkbs),
                                   lambda c: np.column_stack(_TR.transform(c[:, 0], c[:, 1])))
    stored = {g.code: g for g in models.Grid.objects.filter(code__startswith="999001001").select_related("community")}
    assert len(stored) == 32
    for a, want in zip(attrs, want_geoms):
        g = stored[a["wgbm"]]
        assert g.households == a["户数"]
        assert g.population == (0 if a["人口"] is None or a["人口"] != a["人口"] else a["人口"])
        assert g.worker_name == a["网格员"] and g.worker_id is None and g.is_sample is False
        assert g.community.code == a["wgbm"][:12]
        got = shapely.from_wkb(bytes(g.geom.wkb))
        assert g.geom.srid == 4547 and got.geom_type == "MultiPolygon" and len(got.geoms) == 1
        assert shapely.get_num_coordinates(got) == shapely.get_num_coordinates(want)
        assert len(got.geoms[0].interiors) == len(want.interiors)
        assert shapely.equals_exact(got.geoms[0], shapely.normalize(want), tolerance=1e-6) or \
            shapely.equals_exact(got.geoms[0], want, tolerance=1e-6)
        assert abs(got.area - want.area) < 1e-6


@pytest.mark.django_db
def test_raw_rows_carry_the_same_defaults_as_the_orm(hierarchy, tmp_path):
    """A facility written by the raw path equals one created through the ORM with the same values."""
    csv = tmp_path / "f.csv"
    csv.write_text("编码,名称,经度,纬度\n999R001,默认值设施,115.055,40.605\n", encoding="utf-8")
    _ok(import_file("facilities", csv))
    raw = models.ServiceFacility.objects.get(code="999R001")
    orm = models.ServiceFacility.objects.create(code="999R002", name="默认值设施", geom=raw.geom,
                                                community_id=raw.community_id)
    orm.refresh_from_db()
    for f in models.ServiceFacility._meta.concrete_fields:
        if f.name not in ("id", "code"):
            assert getattr(raw, f.attname) == getattr(orm, f.attname), f.name
    assert raw.footprint is None and raw.service_radius_m is None and raw.project_id is None


@pytest.mark.django_db
@pytest.mark.parametrize("fail_batch", [1, 3, 7])
def test_fault_in_a_raw_batch_writes_nothing(hierarchy, monkeypatch, tmp_path, fail_batch):
    """An exception in the k-th INSERT/COPY batch: the batches before it are rolled back with the run."""
    from importers.models import ImportRun
    monkeypatch.setattr(services, "WRITE_BATCH", 5)
    path = _tiling_geojson(tmp_path / "grids.geojson", holes=False)
    real = services._RowInserter.__call__
    calls = {"n": 0}

    def insert(self, records):
        calls["n"] += 1
        if calls["n"] == fail_batch:
            raise RuntimeError(f"injected fault in batch {fail_batch}")
        return real(self, records)

    monkeypatch.setattr(services._RowInserter, "__call__", insert)
    before = counts()
    runs_before = set(ImportRun.objects.values_list("pk", flat=True))
    with pytest.raises(RuntimeError, match="injected"):
        import_file("grids", path)
    assert calls["n"] == fail_batch and counts() == before
    runs = list(ImportRun.objects.exclude(pk__in=runs_before).values_list("status", "error", "created"))
    assert runs == [("failed", f"RuntimeError: injected fault in batch {fail_batch}", 0)]
    monkeypatch.setattr(services._RowInserter, "__call__", real)
    assert _ok(import_file("grids", path)).created == 32


@pytest.mark.django_db
def test_facility_parents_by_containment_match_brute_force(hierarchy, tmp_path):
    """The vectorised spatial parent lookup against a per-point loop over the communities."""
    rng = np.random.default_rng(11)
    lon = rng.uniform(LON0 - 0.002, LON0 + STEP + 0.002, 60)
    lat = rng.uniform(LAT0 - 0.002, LAT0 + STEP + 0.002, 60)
    csv = tmp_path / "f.csv"
    csv.write_text("编码,名称,经度,纬度\n" + "".join(f"999P{i:03d},设施{i},{x:.9f},{y:.9f}\n"
                                                  for i, (x, y) in enumerate(zip(lon, lat))), encoding="utf-8")
    r = import_file("facilities", csv)
    assert r.ok, [str(i) for i in r.errors]
    comms = [(c.code, shapely.from_wkb(bytes(c.geom.wkb))) for c in hierarchy["communities"]]
    x, y = _TR.transform(lon, lat)
    got = dict(models.ServiceFacility.objects.filter(code__startswith="999P").values_list("code", "community__code"))
    missing = {i.row for i in r.warnings if i.code == "parent_missing"}
    for i in range(60):
        p = shapely.Point(x[i], y[i])
        want = next((code for code, g in comms if g.covers(p)), None)
        assert got[f"999P{i:03d}"] == want
        assert (want is None) == (i + 1 in missing)
