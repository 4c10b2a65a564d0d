"""Issue 8: the GeoJSON bodies built as text (geometry text spliced in, no dict -> JSON round trip per
feature) parse to exactly the documents the dict-per-feature code produced, for every layer kind of the
demo, in escape_html and simplify (overview) mode, through the portal view and the API list view."""
from __future__ import annotations

import html
import json

import pytest
import shapely
from django.contrib.gis.geos import Point
from django.urls import reverse

from gisportal import maps
from layers import models, selectors
from layers.registry import LAYERS
from tests.gisportal.api_helpers import client_for, demo, users  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

# a name with JSON-looking text, quotes, markup, a backslash, a control character and CJK text
HOSTILE = '"geometry":null} <b>&</b> \\"geometry\\":null} \x07 社区 "x"'


def reference(kind: str, rows, *, escape_html: bool = False, simplify_m: float | None = None) -> dict:
    """The implementation before issue 8: a dict per feature, each geometry parsed with json.loads."""
    return {"type": "FeatureCollection",
            "features": reference_fields(LAYERS[kind].fields, rows, escape_html=escape_html, simplify_m=simplify_m)}


def reference_fields(fields, rows, *, escape_html: bool = False, simplify_m: float | None = None) -> list:
    if not rows:
        return []
    lonlat = selectors.geoms_to_lonlat([bytes(r[2]) for r in rows], simplify_m=simplify_m)
    features = []
    for row, geometry in zip(rows, shapely.to_geojson(shapely.set_precision(lonlat, 1e-7))):
        props = {"id": row[0], "is_sample": row[1]}
        for field, value in zip(fields, row[3:]):
            value = value if value is None or isinstance(value, (bool, int, float)) else str(value)
            props[field] = html.escape(value) if escape_html and isinstance(value, str) else value
        features.append({"type": "Feature", "id": row[0], "properties": props, "geometry": json.loads(geometry)})
    return features


def rows_of(kind: str, qs=None):
    qs = LAYERS[kind].model.objects.order_by("pk") if qs is None else qs
    return list(selectors.with_wkb(qs).values_list("pk", "is_sample", "_wkb", *LAYERS[kind].fields))


@pytest.fixture
def hostile(db):
    return models.ServiceFacility.objects.create(code="999GJ1", name=HOSTILE, kind="other", floor_area_m2=12.5,
                                                 geom=Point(500123.25, 4512345.5, srid=4547))


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_kind_every_mode(demo, hostile, kind):  # noqa: F811
    qs = LAYERS[kind].model.objects.order_by("pk")
    rows = rows_of(kind)
    assert rows or kind == "candidates"
    for escape_html in (False, True):
        body = selectors.layer_geojson_bytes(kind, escape_html=escape_html, queryset=qs)
        assert isinstance(body, bytes)
        doc = json.loads(body)
        assert doc == reference(kind, rows, escape_html=escape_html)
        assert doc == selectors.layer_geojson(kind, escape_html=escape_html, queryset=qs)
    simplify_m = selectors.OVERVIEW_SIMPLIFY_M.get(kind)
    doc = json.loads(selectors.layer_geojson_bytes(kind, simplify=True, escape_html=True, queryset=qs))
    assert doc == reference(kind, rows, escape_html=True, simplify_m=simplify_m)


def test_hostile_text_and_bbox(demo, hostile):  # noqa: F811
    west, south, east, north = selectors.layer_bounds_lonlat("facilities")
    bbox = (west - 0.01, south - 0.01, east + 0.01, north + 0.01)
    qs = models.ServiceFacility.objects.order_by("pk")
    for escape_html in (False, True):
        doc = json.loads(selectors.layer_geojson_bytes("facilities", bbox=bbox, limit=5000, escape_html=escape_html,
                                                       queryset=qs))
        mine = [f for f in doc["features"] if f["id"] == hostile.pk]
        assert len(mine) == 1
        assert mine[0]["properties"]["name"] == (html.escape(HOSTILE) if escape_html else HOSTILE)
        assert doc == selectors.layer_geojson("facilities", bbox=bbox, limit=5000, escape_html=escape_html,
                                              queryset=qs)


def test_empty_and_odd_columns(db):
    assert json.loads(selectors.layer_geojson_bytes(
        "facilities", queryset=models.ServiceFacility.objects.none())) == {"type": "FeatureCollection",
                                                                           "features": []}
    import datetime
    import decimal

    wkb = [shapely.to_wkb(shapely.Point(500000 + i, 4500000 + i)) for i in range(5)]
    cols = {  # mixed types, NaN, None, Decimal, dates, a field called "id" overriding the pk, odd keys
        "name": ["a", None, "<x>", '"q"', "社区"],
        "n": [1, 2.5, None, True, float("nan")],
        "f": [0.1, 1e300, -0.0, 3.0, 2.5e-7],
        "d": [decimal.Decimal("1.10"), datetime.date(2026, 11, 26), 7, "x", None],
        "id": ["p1", "p2", "p3", "p4", "p5"],
        "pct%s": [1, 2, 3, 4, 5],
        "is_sample": [False, True, False, True, False],
    }
    fields = tuple(cols)
    rows = [(10 + i, i % 2 == 0, wkb[i], *(cols[f][i] for f in fields)) for i in range(5)]
    for escape_html in (False, True):
        got = json.loads(selectors.features_json(fields, rows, escape_html=escape_html))
        want = reference_fields(fields, rows, escape_html=escape_html)
        assert json.dumps(got, sort_keys=False) == json.dumps(want, sort_keys=False)  # same key order, NaN too
    with pytest.raises(ValueError):
        selectors.features_json(fields, rows, allow_nan=False)


def test_view_body(demo, hostile, client):  # noqa: F811
    west, south, east, north = 114.84, 40.76, 114.91, 40.82
    for kind in ("roads", "districts", "facilities"):
        resp = client.get(reverse("layer_geojson", kwargs={"kind": kind}), {"bbox": f"{west},{south},{east},{north}"})
        assert resp.status_code == 200
        assert resp["Content-Type"] == "application/json"
        qs = maps.visible_queryset(resp.wsgi_request.user, kind).in_bbox(west, south, east, north).order_by("pk")[:5000]
        assert resp.json() == reference(kind, rows_of(kind, qs))


def test_api_list_body(demo, hostile, users):  # noqa: F811
    api = client_for(users["admin"])
    for kind, params in (("roads", {"page_size": 300, "page": 2}), ("facilities", {"page_size": 5000}),
                         ("grids", {"ordering": "-code", "page_size": 100})):
        resp = api.get(f"/api/v1/layers/{kind}/", params)
        assert resp.status_code == 200, resp.content[:300]
        assert resp["Content-Type"] == "application/json"
        doc = resp.json()
        assert list(doc) == ["type", "count", "next", "previous", "features"]
        ids = [f["id"] for f in doc["features"]]
        model = LAYERS[kind].model
        order = ["-code", "pk"] if "ordering" in params else ["pk"]
        assert doc["count"] == model.objects.count()
        page = params.get("page", 1)
        expected = rows_of(kind, model.objects.filter(pk__in=ids).order_by(*order))
        assert doc["features"] == reference(kind, expected)["features"]
        assert len(ids) == min(params["page_size"], doc["count"] - (page - 1) * params["page_size"])
        assert (doc["previous"] is None) == (page == 1)
    doc = api.get("/api/v1/layers/facilities/", {"code": "999GJ1"}).json()
    assert [f["properties"]["name"] for f in doc["features"]] == [HOSTILE]


def test_view_gzip_when_asked(demo, client):  # noqa: F811
    import gzip

    url = reverse("layer_geojson", kwargs={"kind": "roads"})
    plain = client.get(url, {"bbox": "114.84,40.76,114.91,40.82"})
    assert "Content-Encoding" not in plain
    packed = client.get(url, {"bbox": "114.84,40.76,114.91,40.82"}, HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert packed.status_code == 200 and packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"]
    body = gzip.decompress(packed.content)
    assert len(packed.content) < len(body) / 4
    assert json.loads(body) == json.loads(plain.content)
