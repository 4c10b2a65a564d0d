"""Per-process cache of each feature's GeoJSON text, valid while its table's revision token is unchanged.

A map pans and zooms over the same features again and again; building their GeoJSON (WKB -> lon/lat
-> text) is most of a layer request's CPU. Here each feature's text is kept per process, keyed by
primary key, for one revision token of its table (``models.TableRevision``, changed by database
triggers on every INSERT / UPDATE / DELETE / TRUNCATE, whoever writes). A request runs one query for
the keys of the features it wants *with the token read in the same statement* (one snapshot), takes
the texts it has for that token, builds only the missing ones (one more query, by key) and keeps them
if the token they were read with is still the same. A new token drops the table's texts; a table
without a token (never written since the triggers exist) is not cached.

Bounded: at most ``GISPORTAL_GEOJSON_CACHE_MB`` (default 64) of text per process; when a table's
texts would pass it, the other tables' are dropped first, and a request that alone would pass it is
served without caching. ``GISPORTAL_GEOJSON_CACHE_MB = 0`` turns the cache off.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections

from . import selectors

_lock = threading.Lock()


@dataclass
class _Entry:
    token: int
    texts: dict = field(default_factory=dict)
    chars: int = 0


_entries: dict[tuple, _Entry] = {}
stats = {"hits": 0, "built": 0}   # features served from the cache / built (for tests and the benchmark)


def _limit_chars() -> int:
    return int(float(getattr(settings, "GISPORTAL_GEOJSON_CACHE_MB", 64)) * 1024 * 1024)


def _token(model):
    from .revisions import token_expression

    return token_expression(model)


def keyed(qs):
    """``(token, pk)`` rows of ``qs`` (its order, slicing and filters kept): the token of the table read
    in the same statement as the keys."""
    return qs.annotate(_revision=_token(qs.model)).values_list("_revision", "pk")


def _fetch(keyed_rows) -> list:
    """The rows of a ``keyed`` queryset through a plain cursor (the ORM's per-row converters cost ~1 ms
    for 1,000 rows and these two integer columns need none); lists and DRF pages are taken as they are."""
    query = getattr(keyed_rows, "query", None)
    if query is None or getattr(keyed_rows, "_result_cache", None) is not None:
        return list(keyed_rows)
    try:
        sql, params = query.get_compiler(keyed_rows.db).as_sql()
    except EmptyResultSet:   # e.g. .none(), pk__in=[]
        return []
    with connections[keyed_rows.db].cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def clear() -> None:
    """Forget every cached text and index (tests; a restore under a running server needs no call: tokens
    change)."""
    from . import snapshots

    with _lock:
        _entries.clear()
    snapshots.clear()


def _total_chars() -> int:
    return sum(e.chars for e in _entries.values())


def feature_texts(model, fields: tuple[str, ...], keyed_rows, *, escape_html: bool = False,
                  simplify_m: float | None = None, allow_nan: bool = True) -> list[str]:
    """The JSON text of the features ``keyed_rows`` (``(token, pk)`` rows from :func:`keyed`), in order.

    The texts are exactly :func:`selectors.feature_texts` of the rows (the cache changes only who
    builds them): tested by ``tests/gisportal/test_geojson_cache.py`` on both backends.
    """
    keyed_rows = _fetch(keyed_rows)
    if not keyed_rows:
        return []
    token = keyed_rows[0][0]
    pks = [pk for _, pk in keyed_rows]
    limit = _limit_chars()
    conn = connections[model.objects.db]
    key = (model.objects.db, str(conn.settings_dict.get("NAME")), model._meta.db_table, bool(escape_html),
           simplify_m, bool(allow_nan))
    entry = _entries.get(key)
    if entry is None or entry.token != token:
        entry = _Entry(token) if token is not None and limit > 0 else None
        if entry is not None:
            with _lock:
                _entries[key] = entry
    have = entry.texts if entry is not None else {}
    missing = [pk for pk in pks if pk not in have]
    stats["hits"] += len(pks) - len(missing)
    if not missing:
        return [have[pk] for pk in pks]
    rows = list(selectors.with_wkb(model.objects.filter(pk__in=missing))
                .annotate(_revision=_token(model))
                .values_list("_revision", "pk", "is_sample", "_wkb", *fields))
    built = selectors.feature_texts(fields, [r[1:] for r in rows], escape_html=escape_html,
                                    simplify_m=simplify_m, allow_nan=allow_nan)
    stats["built"] += len(built)
    new = {r[1]: text for r, text in zip(rows, built)}
    if len(new) != len(set(missing)):   # a feature deleted between the two queries: serve what exists
        return [t for t in (have.get(pk) or new.get(pk) for pk in pks) if t is not None]
    if entry is not None and all(r[0] == token for r in rows):
        chars = sum(map(len, built))
        with _lock:
            if _entries.get(key) is entry:
                if _total_chars() + chars > limit:   # make room: drop the other tables' texts first
                    for k in [k for k in _entries if k != key]:
                        del _entries[k]
                if entry.chars + chars <= limit:
                    entry.texts.update(new)
                    entry.chars += chars
    return [have[pk] if pk in have else new[pk] for pk in pks]


# --------------------------------------------------------------------------------------------------
# The spatial selection itself, in memory, for whole tables (no per-user filter)
#
# A map request for an unfiltered layer asks "which features intersect this box": PostgreSQL answers in
# ~2 ms of its CPU plus ~1.5 ms of ORM work here. For tables up to GISPORTAL_GEOJSON_INDEX_FEATURES rows
# (default 100,000) each process keeps the table's geometries (GIS_SRID) in a shapely STRtree for one
# revision token (a ``layers.snapshots`` snapshot without columns), read with one small query per
# request, and answers with the same predicate (GEOS intersects against the same projected box). Filtered querysets (a field worker's grids) and larger
# tables use the database.

def _index_limit() -> int:
    return int(getattr(settings, "GISPORTAL_GEOJSON_INDEX_FEATURES", 100_000))


def is_whole_table(qs) -> bool:
    """True when ``qs`` is every row of its model: no filter, slice, annotation, extra or distinct."""
    q = qs.query
    return (not q.where.children and q.low_mark == 0 and q.high_mark is None and not q.annotations
            and not q.extra and not q.distinct and not q.combinator and type(qs).__name__ != "EmptyQuerySet"
            and not getattr(q, "is_empty", lambda: False)())


def current_token(model):
    """The table's revision token now, or None (none yet, or written by this transaction on PostgreSQL)."""
    from .revisions import current_tokens

    return current_tokens([model], model.objects.db)[model._meta.db_table]


def keyed_in_bbox(model, bbox, limit: int | None):
    """``(token, pk)`` rows of the features of the whole table ``model`` intersecting the lon/lat
    ``bbox`` (``in_bbox``'s predicate, the database's answer), from the in-memory index when the table
    qualifies, else None (the caller asks the database)."""
    import numpy as np
    import shapely

    from . import snapshots
    from .analysis.transform import bbox_polygon, inner_rectangle

    idx = snapshots.snapshots({model: ()}, model.objects.db, limit=_index_limit())[model]
    if idx is None:
        return None
    token = idx.token
    ring = bbox_polygon(4326, settings.GIS_SRID, *bbox)
    hits = idx.tree.query(ring)   # bounding boxes only; then the exact test where it is needed:
    inner = inner_rectangle(ring)  # a geometry whose bounding box lies inside this rectangle intersects
    if inner is not None and hits.size:
        b = idx.bounds[hits]
        sure = (b[:, 0] >= inner[0]) & (b[:, 1] >= inner[1]) & (b[:, 2] <= inner[2]) & (b[:, 3] <= inner[3])
    else:
        sure = np.zeros(hits.size, dtype=bool)
    edge = hits[~sure]
    if edge.size:
        shapely.prepare(ring)
        edge = edge[shapely.intersects(idx.geoms[edge], ring)]
    pks = np.sort(idx.pks[np.concatenate([hits[sure], edge])])
    if limit is not None:
        pks = pks[:limit]
    return list(zip([token] * len(pks), pks.tolist()))
