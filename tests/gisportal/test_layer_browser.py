"""The layer browser (issue 8): what each role sees, search, the sort allow-list, pagination, exports of the
current selection, and overlays shifted to GCJ-02 when the basemap is GCJ-02 (issue: "overlays are shifted
correctly when the basemap is GCJ-02")."""
from __future__ import annotations

import csv
import io
import json
import math
import re

import folium
import numpy as np
import pyogrio.raw
import pytest
from django.conf import settings
from django.contrib.gis.geos import Point
from django.test import Client, override_settings

from gisportal import mapping, maps, views_layers
from layers import models
from layers.analysis.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02
from tests.gisportal.api_helpers import make_users

pytestmark = pytest.mark.django_db

GCJ_LOCAL = {"kind": "local", "url": "/tiles/{z}/{x}/{y}.png", "crs": "gcj02"}
LON0, LAT0 = 114.89, 40.77  # Zhangjiakou


def _client(user=None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def _point(lon, lat):
    return Point(lon, lat, srid=4326).transform(settings.GIS_SRID, clone=True)


@pytest.fixture
def users():
    return make_users()


@pytest.fixture
def stations():
    """Five fire stations of ours (codes 999LB...), one with a hostile name, one with a formula name."""
    names = ["测试站甲", "测试站乙 Alpha", "=HYPERLINK(\"http://x\")", "<script>alert(1)</script>", "测试站丁"]
    out = []
    for i, name in enumerate(names):
        out.append(models.FireStation.objects.create(
            code=f"999LB{i}", name=name, kind="community_micro", staff=3 + i, on_duty=1,
            geom=_point(LON0 + 0.01 * i, LAT0 + 0.005 * i)))
    return out


@pytest.fixture
def demo():
    if not models.Grid.objects.exists():
        pytest.skip("the demo city is not loaded (GISPORTAL_TEST_NO_DEMO=1)")


def _row_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'class="lb-row" tabindex="0" data-id="(\d+)"', html)]


def _inline_scripts(html: str) -> list[str]:
    out = []
    for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I):
        attrs, body = m.group(1), m.group(2)
        if "src=" in attrs or re.search(r'type=["\']application/(ld\+)?json', attrs):
            continue
        if body.strip():
            out.append(body.strip()[:80])
    return out


# ------------------------------------------------------------------ who sees what
def test_index_lists_what_each_role_may_browse(users):
    def kinds(user):
        html = _client(user).get("/layers/").content.decode()
        return set(re.findall(r'data-kind="(\w+)"', html))

    public = set(maps.PUBLIC_KINDS)
    assert kinds(None) == public
    assert kinds(users["field_staff"]) == public | {"grids"}
    assert kinds(users["planner"]) == public | {"grids"}
    assert kinds(users["emergency_official"]) == public | {"grids", "candidates"}
    assert kinds(users["admin"]) == set(views_layers.LAYERS)
    assert _client().get("/layers/?kind=shelters")["Location"] == "/layers/shelters/"
    assert _client().get("/layers/?kind=nope").status_code == 404


def test_refusals(users):
    assert _client().get("/layers/nope/").status_code == 404
    r = _client().get("/layers/grids/")
    assert r.status_code == 302 and "/login/" in r["Location"]
    assert _client(users["planner"]).get("/layers/candidates/").status_code == 403
    assert _client(users["planner"]).get("/layers/candidates/features/").status_code == 403
    assert _client(users["emergency_official"]).get("/layers/candidates/").status_code == 200
    # exports follow the API's rule: the model's view permission (field staff: no shelters)
    assert _client(users["field_staff"]).get("/layers/shelters/export/?format=csv").status_code == 403
    assert _client().get("/layers/shelters/export/?format=csv").status_code == 302
    assert _client(users["planner"]).get("/layers/shelters/export/?format=xlsx").status_code == 400


def test_field_worker_sees_only_their_grids(users, demo):
    worker = users["field_staff"]
    mine = set(models.Grid.objects.filter(worker=worker).values_list("pk", flat=True))
    assert len(mine) == 2
    c = _client(worker)
    html = c.get("/layers/grids/").content.decode()
    assert set(_row_ids(html)) == mine
    data = c.get("/layers/grids/features/").json()
    assert {f["id"] for f in data["features"]} == mine
    other = models.Grid.objects.exclude(worker=worker).first()
    assert c.get(f"/layers/grids/features/?id={other.pk}").json()["features"] == []
    code = models.Grid.objects.get(pk=min(mine)).code
    html = c.get("/layers/grids/", {"q": other.code}).content.decode()
    assert _row_ids(html) == []  # searching someone else's grid finds nothing
    html = c.get("/layers/grids/", {"q": code}).content.decode()
    assert _row_ids(html) == [min(mine)]
    # a planner sees every grid
    assert len(_row_ids(_client(users["planner"]).get("/layers/grids/").content.decode())) == min(
        views_layers.PAGE_SIZE, models.Grid.objects.count())
    # the field worker's grid export has their rows only
    body = c.get("/layers/grids/export/?format=csv").content.decode("utf-8-sig")
    codes = {r["code"] for r in csv.DictReader(io.StringIO(body))}
    assert codes == set(models.Grid.objects.filter(pk__in=mine).values_list("code", flat=True))


def test_anonymous_sees_public_layer_without_inline_script(stations):
    r = _client().get("/layers/fire_stations/", {"q": "999LB"})
    assert r.status_code == 200
    html = r.content.decode()
    assert _inline_scripts(html) == []
    assert "gisportal/layer_browser.js" in html and "vendor/leaflet/leaflet.js" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'id="lb-export"' not in html  # anonymous: no export links
    config = json.loads(re.search(r'<script id="lb-config" type="application/json">(.*?)</script>', html,
                                  re.S).group(1))
    assert config["tiles"] == [] and config["crs"] == "wgs84"
    assert config["featuresUrl"] == "/layers/fire_stations/features/"
    assert 'href="/layers/"' in html  # the navigation link of the base template


# ------------------------------------------------------------------ search, sort, pagination
def test_search_by_name_or_code(stations, users):
    c = _client(users["admin"])
    ids = {s.name: s.pk for s in stations}
    assert sorted(_row_ids(c.get("/layers/fire_stations/", {"q": "999lb"}).content.decode())) == sorted(
        s.pk for s in stations)  # code, case-insensitive
    assert _row_ids(c.get("/layers/fire_stations/", {"q": "alpha"}).content.decode()) == [ids["测试站乙 Alpha"]]
    assert _row_ids(c.get("/layers/fire_stations/", {"q": "测试站丁"}).content.decode()) == [ids["测试站丁"]]
    assert _row_ids(c.get("/layers/fire_stations/", {"q": "无此名称xyz"}).content.decode()) == []
    # the map follows the search too
    feats = c.get("/layers/fire_stations/features/", {"q": "999LB"}).json()["features"]
    assert {f["id"] for f in feats} == set(ids.values())


def test_sort_allow_list(stations, users):
    c = _client(users["admin"])
    by_staff = [s.pk for s in sorted(stations, key=lambda s: s.staff)]
    html = c.get("/layers/fire_stations/", {"q": "999LB", "order_by": "staff"}).content.decode()
    assert _row_ids(html) == by_staff
    assert 'aria-sort="ascending"' in html
    html = c.get("/layers/fire_stations/", {"q": "999LB", "order_by": "-staff"}).content.decode()
    assert _row_ids(html) == by_staff[::-1]
    html = c.get("/layers/fire_stations/", {"q": "999LB", "order_by": "-code"}).content.decode()
    assert _row_ids(html) == [s.pk for s in sorted(stations, key=lambda s: s.code, reverse=True)]
    assert _row_ids(c.get("/layers/fire_stations/", {"q": "999LB", "order_by": "-id"}).content.decode()) == sorted(
        (s.pk for s in stations), reverse=True)
    for bad in ("geom", "service_radius_m", "community__name", "code;drop", "--code", "pk"):
        r = c.get("/layers/fire_stations/", {"order_by": bad})
        assert r.status_code == 400, bad
    with pytest.raises(views_layers.BadOrder):
        views_layers.order_fields("grids", "worker__password")


def test_pagination(stations, users, monkeypatch):
    monkeypatch.setattr(views_layers, "PAGE_SIZE", 2)
    c = _client(users["admin"])
    pages = [_row_ids(c.get("/layers/fire_stations/", {"q": "999LB", "page": p}).content.decode())
             for p in (1, 2, 3)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(sum(pages, [])) == sorted(s.pk for s in stations)
    html = c.get("/layers/fire_stations/", {"q": "999LB", "page": 2}).content.decode()
    assert "page=3" in html and "page=1" in html and "第 2 / 3 页" in html
    # an out-of-range or invalid page shows the last / first page
    assert _row_ids(c.get("/layers/fire_stations/", {"q": "999LB", "page": 99}).content.decode()) == pages[2]
    assert _row_ids(c.get("/layers/fire_stations/", {"q": "999LB", "page": "x"}).content.decode()) == pages[0]


def test_map_features_are_capped_and_say_so(stations, users, monkeypatch):
    monkeypatch.setattr(views_layers, "MAP_MAX_FEATURES", 3)
    data = _client(users["admin"]).get("/layers/fire_stations/features/", {"q": "999LB"}).json()
    assert len(data["features"]) == 3 and data["truncated"] is True
    data = _client(users["admin"]).get("/layers/fire_stations/features/", {"q": "999LB0"}).json()
    assert len(data["features"]) == 1 and data["truncated"] is False
    assert _client().get("/layers/fire_stations/features/", {"bbox": "1,2,3"}).status_code == 400
    assert _client().get("/layers/fire_stations/features/", {"id": "x"}).status_code == 400


# ------------------------------------------------------------------ exports
def _read(body: bytes, suffix: str, tmp_path):
    path = tmp_path / f"out.{suffix}"
    path.write_bytes(body)
    meta, _fids, geoms, fields = pyogrio.raw.read(str(path))
    return dict(zip(meta["fields"], fields)), geoms


@pytest.mark.parametrize("fmt,suffix", [("geojson", "geojson"), ("gpkg", "gpkg"), ("csv", "csv"), ("kml", "kml")])
def test_exports_have_the_filtered_rows(stations, users, tmp_path, fmt, suffix):
    r = _client(users["planner"]).get("/layers/fire_stations/export/", {"format": fmt, "q": "测试站"})
    assert r.status_code == 200
    assert r["Content-Disposition"] == f'attachment; filename="fire_stations.{suffix}"'
    cols, geoms = _read(r.content, suffix, tmp_path)
    wanted = {"测试站甲", "测试站乙 Alpha", "测试站丁"}
    names_col = cols["name"] if "name" in cols else cols["Name"]
    assert set(names_col.tolist()) == wanted and len(geoms) == 3
    if fmt != "kml":
        assert set(cols["code"].tolist()) == {"999LB0", "999LB1", "999LB4"}


def test_export_coordinates_stay_wgs84_and_csv_formulas_are_escaped(stations, users):
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):  # the basemap never changes exported data
        r = _client(users["planner"]).get("/layers/fire_stations/export/", {"format": "csv", "q": "999LB"})
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == 5
    by_code = {row["code"]: row for row in rows}
    assert by_code["999LB2"]["name"] == "'=HYPERLINK(\"http://x\")"
    assert abs(float(by_code["999LB0"]["lon"]) - LON0) < 1e-6 and abs(float(by_code["999LB0"]["lat"]) - LAT0) < 1e-6


def test_export_is_capped(stations, users, monkeypatch):
    monkeypatch.setattr(views_layers, "EXPORT_MAX_ROWS", 4)
    c = _client(users["planner"])
    assert c.get("/layers/fire_stations/export/", {"format": "csv", "q": "999LB"}).status_code == 400
    assert c.get("/layers/fire_stations/export/", {"format": "csv", "q": "999LB0"}).status_code == 200


# ------------------------------------------------------------------ GCJ-02 basemaps
def _coords(feature):
    return feature["geometry"]["coordinates"]


def test_gcj02_basemap_shifts_overlays_and_none_does_not(stations, users):
    station = stations[0]
    c = _client(users["admin"])
    plain = c.get("/layers/fire_stations/features/", {"id": station.pk}).json()["features"][0]
    lon, lat = _coords(plain)
    assert abs(lon - LON0) < 1e-6 and abs(lat - LAT0) < 1e-6  # no basemap: stored lon/lat, unshifted
    for setting in (GCJ_LOCAL, "gaode"):
        with override_settings(GISPORTAL_BASEMAP=setting):
            shifted = c.get("/layers/fire_stations/features/", {"id": station.pk}).json()["features"][0]
        glon, glat = wgs84_to_gcj02(lon, lat)
        assert abs(_coords(shifted)[0] - float(glon)) < 1e-9 and abs(_coords(shifted)[1] - float(glat)) < 1e-9
        east_m = (_coords(shifted)[0] - lon) * math.cos(math.radians(lat)) * 6371008.8 * math.pi / 180
        north_m = (_coords(shifted)[1] - lat) * 6371008.8 * math.pi / 180
        assert 505 < east_m < 525 and 135 < north_m < 150, (east_m, north_m)  # ~515 m E, ~142 m N
    # the API's data endpoint is never shifted
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        api = c.get(f"/api/v1/layers/fire_stations/{station.pk}/").json()
    assert abs(_coords(api)[0] - LON0) < 1e-6 and abs(_coords(api)[1] - LAT0) < 1e-6


def test_gcj02_polygons_shift_vertex_by_vertex(users, demo):
    c = _client(users["admin"])
    district = models.District.objects.order_by("pk").first()
    plain = c.get("/layers/districts/features/", {"id": district.pk}).json()["features"][0]["geometry"]
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        shifted = c.get("/layers/districts/features/", {"id": district.pk}).json()["features"][0]["geometry"]
    a = np.array([p for poly in plain["coordinates"] for ring in poly for p in ring])
    b = np.array([p for poly in shifted["coordinates"] for ring in poly for p in ring])
    glon, glat = wgs84_to_gcj02(a[:, 0], a[:, 1])
    assert a.shape == b.shape and a.shape[0] > 10
    assert np.abs(b[:, 0] - glon).max() < 1e-9 and np.abs(b[:, 1] - glat).max() < 1e-9


def test_gcj02_map_bbox_is_read_back_in_wgs84(stations, users):
    """The map sends its bbox in the basemap's (GCJ-02) coordinates; the server shifts it back."""
    c = _client(users["admin"])
    glon, glat = (float(v) for v in wgs84_to_gcj02(LON0, LAT0))
    d = 0.0005  # ~40 m: the WGS84 position (~530 m away) is outside this box, the GCJ-02 one inside
    around_gcj = f"{glon - d},{glat - d},{glon + d},{glat + d}"
    around_wgs = f"{LON0 - d},{LAT0 - d},{LON0 + d},{LAT0 + d}"

    def ids(bbox):
        return {f["id"] for f in c.get("/layers/fire_stations/features/", {"bbox": bbox}).json()["features"]}

    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        assert stations[0].pk in ids(around_gcj) and stations[0].pk not in ids(around_wgs)
    assert stations[0].pk in ids(around_wgs) and stations[0].pk not in ids(around_gcj)
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        lon, lat = maps.click_lonlat(glon, glat)
    assert abs(lon - LON0) < 1e-9 and abs(lat - LAT0) < 1e-9


def test_gcj02_folium_maps_shift_every_overlay_once():
    """Every folium map (overview, review, coverage, siting) is built by make_map and rendered by
    render_map_html / map_parts: with a GCJ-02 basemap the overlays are shifted there, once."""
    point = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Point", "coordinates": [LON0, LAT0]}}]}
    for basemap, shifted in ((None, False), ({"kind": "osm"}, False), (GCJ_LOCAL, True), ({"kind": "gaode"}, True)):
        m = mapping.make_map(basemap=basemap)
        gj = folium.GeoJson(point).add_to(m)
        marker = folium.CircleMarker([LAT0, LON0], radius=3).add_to(m)
        line = folium.PolyLine([[LAT0, LON0], [LAT0 + 0.01, LON0 + 0.01]]).add_to(m)
        m.fit_bounds([[LAT0, LON0], [LAT0 + 0.01, LON0 + 0.01]])
        mapping.render_map_html(m)
        mapping.map_parts(m)  # a second render does not shift again
        glon, glat = (float(v) for v in wgs84_to_gcj02(LON0, LAT0))
        want_lon, want_lat = (glon, glat) if shifted else (LON0, LAT0)
        assert gj.data["features"][0]["geometry"]["coordinates"] == pytest.approx([want_lon, want_lat], abs=1e-9)
        assert marker.location == pytest.approx([want_lat, want_lon], abs=1e-9)
        assert line.locations[0] == pytest.approx([want_lat, want_lon], abs=1e-9)
        fit = next(e for e in m._children.values() if type(e).__name__ == "FitBounds")
        box = (LON0, LAT0, LON0 + 0.01, LAT0 + 0.01)
        w, s, e, n = mapping.shift_bounds(box) if shifted else box  # the envelope of the shifted corners
        assert np.allclose(fit.bounds, [[s, w], [n, e]], rtol=0, atol=1e-9)
        assert abs(s - want_lat) < 1e-5 and abs(w - want_lon) < 1e-5
    assert point["features"][0]["geometry"]["coordinates"] == [LON0, LAT0]  # the caller's data is untouched


def test_overview_map_is_shifted_with_a_gcj02_basemap(stations):
    def station_coords(html):
        # folium writes the GeoJSON inline (keys sorted); find our station's point by its id
        m = re.search(r'"geometry": \{"coordinates": \[([0-9.e-]+), ([0-9.e-]+)\], "type": "Point"\}, "id": %d,'
                      % stations[0].pk, html)
        return float(m.group(1)), float(m.group(2))

    plain = station_coords(maps.overview_map_html(None))
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        html = maps.overview_map_html(None)
    shifted = station_coords(html)
    assert "/tiles/{z}/{x}/{y}.png" in html
    glon, glat = wgs84_to_gcj02(*plain)
    assert abs(shifted[0] - float(glon)) < 1e-9 and abs(shifted[1] - float(glat)) < 1e-9


def test_basemap_settings():
    with override_settings(GISPORTAL_BASEMAP="none"):
        assert maps.basemap_setting() is None and maps.overlay_crs() == "wgs84"
    with override_settings(GISPORTAL_BASEMAP="osm"):
        assert maps.overlay_crs() == "wgs84"
    with override_settings(GISPORTAL_BASEMAP="gaode"):
        assert maps.basemap_setting() == {"kind": "gaode"} and maps.overlay_crs() == "gcj02"
        assert mapping.basemap_tiles(maps.basemap_setting())[0].url == mapping.GAODE_URL
    with override_settings(GISPORTAL_BASEMAP="local", GISPORTAL_LOCAL_TILES="/t/{z}/{x}/{y}.png",
                           GISPORTAL_BASEMAP_CRS="gcj02"):
        assert maps.overlay_crs() == "gcj02"
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        assert maps.overlay_crs() == "gcj02"
    for bad in ({"kind": "osm", "crs": "bd09"}, {"kind": "gaode", "crs": "wgs84"}):
        with pytest.raises(ValueError):
            mapping.basemap_crs(bad)


def test_shift_geojson_round_trips_every_geometry_type():
    rng = np.random.default_rng(7)
    ring = (rng.random((5, 2)) * 0.1 + [LON0, LAT0]).tolist()
    ring.append(ring[0])
    data = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon", "coordinates": [[ring]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": ring[:3]}},
        {"type": "Feature", "properties": {}, "geometry": None},
        {"type": "Feature", "properties": {}, "geometry": {"type": "GeometryCollection", "geometries": [
            {"type": "Point", "coordinates": [LON0, LAT0, 12.5]}]}}]}
    out = mapping.shift_geojson(data, "gcj02")
    assert mapping.shift_geojson(data, "wgs84") is data
    got = np.array(out["features"][0]["geometry"]["coordinates"][0][0])
    lon, lat = gcj02_to_wgs84(got[:, 0], got[:, 1])
    assert np.abs(lon - np.array(ring)[:, 0]).max() < 1e-9 and np.abs(lat - np.array(ring)[:, 1]).max() < 1e-9
    assert out["features"][2]["geometry"] is None
    assert out["features"][3]["geometry"]["geometries"][0]["coordinates"][2] == 12.5
    assert data["features"][0]["geometry"]["coordinates"][0][0] == ring  # input unchanged


def test_drawn_geometry_is_read_back_in_wgs84():
    """What a planner draws on a GCJ-02 basemap is shifted back before the server reads it."""
    ring = [[LON0, LAT0], [LON0 + 0.002, LAT0], [LON0 + 0.002, LAT0 + 0.001], [LON0, LAT0]]
    text = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"role": "site", "name": "测试"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}, ensure_ascii=False)
    with override_settings(GISPORTAL_BASEMAP="none"):
        assert maps.drawn_geojson_text(text) == text
    drawn_on_map = json.dumps(mapping.shift_geojson(json.loads(text)))  # what the page's map would send
    with override_settings(GISPORTAL_BASEMAP=GCJ_LOCAL):
        back = json.loads(maps.drawn_geojson_text(drawn_on_map))
        assert maps.drawn_geojson_text("not json") == "not json"
    got = np.array(back["features"][0]["geometry"]["coordinates"][0])
    assert np.abs(got - np.array(ring)).max() < 1e-9
    assert back["features"][0]["properties"] == {"role": "site", "name": "测试"}
