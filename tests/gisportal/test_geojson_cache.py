"""Issue 8: the per-process cache of each feature's GeoJSON text (layers.geojson_cache) serves exactly what
building the text afresh serves, before and after every kind of write (ORM save, queryset update, delete,
bulk create, raw SQL, an import through the importers' executemany / COPY path), on both backends; it is
actually used (a warm request builds nothing); it respects the size limit and per-user filtering."""
from __future__ import annotations

import json

import pytest
from django.contrib.gis.geos import Point
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from importers.services import import_file
from layers import geojson_cache, models, selectors
from layers.registry import LAYERS
from tests.gisportal.api_helpers import client_for, demo, users  # noqa: F401 (fixtures)
from tests.gisportal.test_geojson_body import reference, rows_of

pytestmark = pytest.mark.django_db

BBOX = (114.7, 40.6, 115.1, 40.95)


@pytest.fixture(autouse=True)
def fresh_cache():
    geojson_cache.clear()
    yield
    geojson_cache.clear()


def body(kind: str, **kw) -> dict:
    return json.loads(selectors.layer_geojson_bytes(kind, **kw))


def uncached(kind: str, **kw) -> dict:
    with override_settings(GISPORTAL_GEOJSON_CACHE_MB=0):
        return body(kind, **kw)


def token(model) -> int | None:
    return models.TableRevision.objects.filter(table=model._meta.db_table).values_list("token", flat=True).first()


def random_boxes(seed: int, n: int):
    """Lon/lat boxes from street size (~100 m) to city size (~30 km) over and around the demo city."""
    import random

    rng = random.Random(seed)
    for _ in range(n):
        w = 10 ** rng.uniform(-3, -0.5)
        x0, y0 = rng.uniform(114.6, 115.2), rng.uniform(40.5, 41.0)
        yield (x0, y0, x0 + w, y0 + w * rng.uniform(0.5, 2))


def built_by(fn) -> int:
    before = geojson_cache.stats["built"]
    fn()
    return geojson_cache.stats["built"] - before


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_layer_table_has_a_revision_trigger(demo, kind):  # noqa: F811
    """A layer added without a trigger (migration) would serve stale features: this fails for it. Inside the
    writing transaction the token reads as None on PostgreSQL (set at commit; see the committed test below),
    as a new value on SQLite."""
    model = LAYERS[kind].model
    t0 = geojson_cache.current_token(model)
    obj = model.objects.order_by("pk").first()
    if obj is None:   # the demo has no candidates: make one
        obj = models.CandidateSite.objects.create(code="999C1", name="候选", geom=Point(500000, 4500000, srid=4547))
    model.objects.filter(pk=obj.pk).update(is_sample=not obj.is_sample)
    t1 = geojson_cache.current_token(model)
    assert t1 != t0
    assert (t1 is None) == (connection.vendor == "postgresql")
    with connection.cursor() as cur:   # raw SQL, outside the ORM (protected foreign keys: no DELETE here)
        cur.execute(f'UPDATE "{model._meta.db_table}" SET is_sample = is_sample WHERE id = %s', [obj.pk])
    t2 = geojson_cache.current_token(model)
    assert t2 != t0 and (t2 is None or t2 != t1)


@pytest.mark.parametrize("kind", ["roads", "shelters"])
def test_postgres_sets_the_token_once_per_transaction_at_commit(demo, kind):  # noqa: F811
    """PostgreSQL: a deferred constraint trigger sets the token at COMMIT (so concurrent writers of a table
    never wait on the token row: tests/security/test_concurrency.py), once per transaction and table.
    SET CONSTRAINTS ALL IMMEDIATE runs the deferred triggers now, inside this test's transaction."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (SQLite's triggers are immediate: see the test above)")
    model = LAYERS[kind].model
    pks = list(model.objects.order_by("pk").values_list("pk", flat=True)[:2])
    t0 = token(model)
    model.objects.filter(pk=pks[0]).update(is_sample=True)
    assert token(model) == t0                      # not yet: deferred to the commit
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
    t1 = token(model)
    assert t1 not in (None, t0)
    model.objects.filter(pk=pks[1]).update(is_sample=True)
    assert token(model) == t1                      # once per transaction and table
    assert geojson_cache.current_token(model) is None   # the writer itself does not cache until it commits


def test_warm_request_builds_nothing_and_equals_a_fresh_build(demo):  # noqa: F811
    n = built_by(lambda: body("roads", bbox=BBOX))
    assert n > 100
    assert built_by(lambda: body("roads", bbox=BBOX)) == 0
    warm = body("roads", bbox=BBOX)
    assert warm == uncached("roads", bbox=BBOX)
    rows = rows_of("roads", models.Road.objects.in_bbox(*BBOX)[:5000])
    assert sorted(f["id"] for f in warm["features"]) == sorted(r[0] for r in rows)
    by_id = {f["id"]: f for f in reference("roads", rows)["features"]}
    assert [by_id[f["id"]] for f in warm["features"]] == warm["features"]
    # a wider box reuses what it has and builds only the rest
    n_all = models.Road.objects.count()
    assert built_by(lambda: body("roads")) == n_all - len(warm["features"])


@pytest.mark.parametrize("write", ["save", "update", "bulk_create", "delete", "raw_sql"])
def test_every_write_path_is_seen(demo, write):  # noqa: F811
    body("roads", bbox=BBOX)      # warm
    road = models.Road.objects.in_bbox(*BBOX).order_by("pk").first()
    if write == "save":
        road.name = "改名路"
        road.save()
    elif write == "update":
        models.Road.objects.filter(pk=road.pk).update(name="改名路")
    elif write == "bulk_create":
        models.Road.objects.bulk_create([models.Road(name="新路", road_class=road.road_class, geom=road.geom)])
    elif write == "delete":
        models.Road.objects.filter(pk=road.pk).delete()
    else:
        with connection.cursor() as cur:
            cur.execute(f"UPDATE {models.Road._meta.db_table} SET name = %s WHERE id = %s", ["改名路", road.pk])
    after = body("roads", bbox=BBOX)
    assert after == uncached("roads", bbox=BBOX)
    names = {f["id"]: f["properties"]["name"] for f in after["features"]}
    if write == "delete":
        assert road.pk not in names
    elif write == "bulk_create":
        assert "新路" in names.values()
    else:
        assert names[road.pk] == "改名路"


def test_an_import_is_seen(demo, tmp_path):  # noqa: F811
    body("roads", bbox=BBOX)
    path = tmp_path / "roads.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "导入新路", "road_class": "branch"},
         "geometry": {"type": "LineString", "coordinates": [[114.88, 40.79], [114.881, 40.791]]}}]}),
        encoding="utf-8")
    t0 = geojson_cache.current_token(models.Road)
    report = import_file("roads", path)
    assert report.ok, [(i.level, i.message) for i in report.issues]
    assert geojson_cache.current_token(models.Road) != t0
    after = body("roads", bbox=BBOX)
    assert "导入新路" in {f["properties"]["name"] for f in after["features"]}
    assert after == uncached("roads", bbox=BBOX)


def test_modes_are_cached_apart(demo):  # noqa: F811
    models.ServiceFacility.objects.create(code="999GC1", name="<b>社区</b>", kind="other", floor_area_m2=1.0,
                                          geom=Point(500123.25, 4512345.5, srid=4547))
    plain = body("facilities")
    escaped = body("facilities", escape_html=True)
    assert plain == uncached("facilities") and escaped == uncached("facilities", escape_html=True)
    assert plain != escaped
    simple = body("districts", simplify=True)
    assert simple == uncached("districts", simplify=True) and simple != body("districts")


def test_size_limit_and_no_token(demo):  # noqa: F811
    with override_settings(GISPORTAL_GEOJSON_CACHE_MB=0.01):    # ~10 KB: roads in the box do not fit
        first = body("roads", bbox=BBOX)
        assert built_by(lambda: body("roads", bbox=BBOX)) > 0    # nothing kept beyond the limit
        assert body("roads", bbox=BBOX) == first
    models.TableRevision.objects.filter(table=models.Road._meta.db_table).delete()   # e.g. rows older than 0005
    assert built_by(lambda: body("roads", bbox=BBOX)) > 0
    assert built_by(lambda: body("roads", bbox=BBOX)) > 0     # not cached without a token
    assert body("roads", bbox=BBOX) == uncached("roads", bbox=BBOX)


def test_per_user_filter_after_an_admin_warmed_the_cache(demo, users, client):  # noqa: F811
    client.force_login(users["admin"])
    everything = client.get(reverse("layer_geojson", args=["grids"])).json()
    client.force_login(users["field_staff"])
    mine = client.get(reverse("layer_geojson", args=["grids"])).json()
    own = set(models.Grid.objects.filter(worker=users["field_staff"]).values_list("pk", flat=True))
    assert {f["id"] for f in mine["features"]} == own
    assert len(everything["features"]) > len(own)


def test_api_list_uses_the_cache_and_equals_a_fresh_build(demo, users):  # noqa: F811
    api = client_for(users["admin"])
    url = reverse("api-layer", kwargs={"kind": "roads"}) + "?page_size=200&ordering=-id"
    first = api.get(url).json()
    assert built_by(lambda: api.get(url)) == 0
    with override_settings(GISPORTAL_GEOJSON_CACHE_MB=0):
        assert api.get(url).json() == first
    assert [f["id"] for f in first["features"]] == sorted((f["id"] for f in first["features"]), reverse=True)


@pytest.mark.parametrize("kind", ["roads", "grids", "shelters", "districts"])
def test_in_bbox_fast_path_selects_exactly_the_intersecting_rows(demo, kind):  # noqa: F811
    """in_bbox = (bounding box inside an inner rectangle) OR intersects: the same rows as intersects alone,
    for random boxes from street size to the whole city, some straddling the edges of features."""
    import shapely
    from django.conf import settings
    from django.contrib.gis.geos import GEOSGeometry

    from layers.analysis.transform import bbox_polygon

    model = LAYERS[kind].model
    for box in random_boxes(8, 12):
        ring = bbox_polygon(4326, settings.GIS_SRID, *box, densify=16)
        exact = set(model.objects.filter(geom__intersects=GEOSGeometry(
            memoryview(shapely.to_wkb(ring)), srid=settings.GIS_SRID)).values_list("pk", flat=True))
        got = set(model.objects.in_bbox(*box).values_list("pk", flat=True))
        # the adaptive ring follows the curved edges to ~0.1 m: rows can differ only within that of an edge
        differ = exact ^ got
        for pk in differ:
            geom = shapely.from_wkb(bytes(model.objects.get(pk=pk).geom.wkb))
            assert shapely.distance(geom, ring.exterior) < 0.2, (kind, box, pk)
        assert len(differ) <= 1


def test_empty_selections(demo):  # noqa: F811
    assert body("roads", queryset=models.Road.objects.none()) == {"type": "FeatureCollection", "features": []}
    assert body("roads", queryset=models.Road.objects.filter(pk__in=[])) == {"type": "FeatureCollection",
                                                                             "features": []}
    assert body("roads", bbox=(100.0, 10.0, 100.1, 10.1))["features"] == []


@pytest.mark.parametrize("kind", ["roads", "grids", "shelters", "districts"])
def test_in_memory_index_selects_what_the_database_selects(demo, kind):  # noqa: F811
    """keyed_in_bbox (STRtree + inner rectangle + GEOS intersects near the edges) = in_bbox in SQL, for random
    boxes; and it notices writes (a new token rebuilds it)."""
    model = LAYERS[kind].model
    for box in random_boxes(3, 15):
        mem = geojson_cache.keyed_in_bbox(model, box, None)
        assert mem is not None
        sql = geojson_cache._fetch(geojson_cache.keyed(model.objects.all().in_bbox(*box)))
        assert sorted(mem) == sorted(sql), (kind, box)
    obj = model.objects.order_by("pk").first()
    box = (114.0, 40.0, 116.0, 42.0)
    n = len(geojson_cache.keyed_in_bbox(model, box, None))
    with connection.cursor() as cur:
        cur.execute(f'DELETE FROM "{model._meta.db_table}" WHERE id = %s', [obj.pk]) if kind == "roads" else \
            cur.execute(f'UPDATE "{model._meta.db_table}" SET is_sample = is_sample WHERE id = %s', [obj.pk])
    after = geojson_cache.keyed_in_bbox(model, box, None)
    if connection.vendor == "postgresql":   # written by this (test) transaction: not cacheable until commit
        assert after is None
    else:
        assert len(after) == n - (kind == "roads") and all(t == token(model) for t, _ in after)


def test_in_memory_index_is_used_only_for_whole_small_tables(demo, users):  # noqa: F811
    assert geojson_cache.is_whole_table(models.Grid.objects.all())
    assert not geojson_cache.is_whole_table(models.Grid.objects.filter(worker=users["field_staff"]))
    assert not geojson_cache.is_whole_table(models.Grid.objects.none())
    assert not geojson_cache.is_whole_table(models.Grid.objects.all()[:10])
    with override_settings(GISPORTAL_GEOJSON_INDEX_FEATURES=100):   # roads: 4,505 rows
        assert geojson_cache.keyed_in_bbox(models.Road, BBOX, None) is None
        assert body("roads", bbox=BBOX) == uncached("roads", bbox=BBOX)
    with override_settings(GISPORTAL_GEOJSON_INDEX_FEATURES=0):
        assert geojson_cache.keyed_in_bbox(models.Road, BBOX, None) is None


def test_api_bbox_pages_from_the_index_equal_the_database_pages(demo, users):  # noqa: F811
    api = client_for(users["admin"])
    box = ",".join(map(str, BBOX))
    for params in ("page_size=300&page=2", "page_size=300&page=4&ordering=id", "page_size=5000"):
        url = reverse("api-layer", kwargs={"kind": "roads"}) + f"?bbox={box}&{params}"
        got = api.get(url).json()
        with override_settings(GISPORTAL_GEOJSON_INDEX_FEATURES=0):
            want = api.get(url).json()
        assert got == want and got["features"], params
