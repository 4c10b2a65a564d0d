"""Per-process snapshots of small layer tables (geometry + a few columns), valid for one revision token.

A housing-project review asks nine spatial questions of seven tables (which districts, streets,
communities and grids the site touches; which shelters, fire stations and facilities lie within some
distance). Each ORM query costs ~1-1.5 ms of Django CPU before the database does anything; for tables
of a few hundred or thousand rows the same answers come from memory in microseconds. A snapshot holds
a table's rows in the database's own order (the model's ``Meta.ordering``, the database's collation)
with their geometries (shapely, GIS_SRID) and an STRtree, for one revision token of the table
(``models.TableRevision``, changed by database triggers on every write). :func:`snapshots` reads the
tokens of several tables in one query and returns the snapshot of each table that has one and is at
most ``GISPORTAL_SNAPSHOT_ROWS`` rows (default 20,000), else None (the caller queries the database).
The map's bbox requests use the same snapshots (no columns) for tables up to
``GISPORTAL_GEOJSON_INDEX_FEATURES`` rows (``layers.geojson_cache.keyed_in_bbox``).
Results are returned as row positions in database order, so a filter over a snapshot lists rows in
the order the same ORM filter would.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import shapely
from django.conf import settings
from django.db import connections

_lock = threading.Lock()


@dataclass(frozen=True)
class Snapshot:
    token: int
    fields: tuple[str, ...]
    rows: list            # (pk, *fields) per row, database order
    pks: np.ndarray       # int64, same order
    geoms: np.ndarray     # shapely geometries, same order
    tree: shapely.STRtree
    bounds: np.ndarray    # (n, 4)

    def intersects(self, geom) -> np.ndarray:
        """Positions of the rows whose geometry intersects ``geom`` (ascending = database order)."""
        return np.sort(self.tree.query(geom, predicate="intersects"))

    def dwithin(self, geom, distance: float) -> np.ndarray:
        """Positions of the rows within ``distance`` of ``geom`` (ascending)."""
        return np.sort(self.tree.query(geom, predicate="dwithin", distance=float(distance)))

    def bbox_overlaps(self, boxes: np.ndarray) -> np.ndarray:
        """Positions of the rows whose bounding box meets one of ``boxes`` ((k, 4), closed boxes)."""
        if not len(boxes) or not len(self.rows):
            return np.empty(0, dtype=np.intp)
        hit = np.zeros(len(self.rows), dtype=bool)
        b = self.bounds
        for x0, y0, x1, y1 in boxes:
            hit |= (b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)
        return np.flatnonzero(hit)


_snaps: dict[tuple, Snapshot] = {}


def _limit() -> int:
    return int(getattr(settings, "GISPORTAL_SNAPSHOT_ROWS", 20_000))


def _build(model, fields: tuple[str, ...], token, using: str, limit: int) -> Snapshot | None:
    from django.contrib.gis.db.models.functions import AsWKB

    from .revisions import token_expression

    tok = token_expression(model, using)
    rows = list(model.objects.using(using).annotate(_wkb=AsWKB("geom"), _revision=tok)
                .values_list("_revision", "pk", *fields, "_wkb")[:limit + 1])
    if len(rows) > limit or any(r[0] != token for r in rows):
        return None     # too large to keep, or written meanwhile: the database answers
    geoms = shapely.from_wkb([bytes(r[-1]) for r in rows]) if rows else np.empty(0, dtype=object)
    tree = shapely.STRtree(geoms)
    tree.query(shapely.box(0, 0, 0, 0))   # GEOS builds the tree on the first query: here, in one thread
    return Snapshot(token, tuple(fields), [tuple(r[1:-1]) for r in rows],
                    np.array([r[1] for r in rows], dtype=np.int64), geoms, tree, shapely.bounds(geoms).reshape(-1, 4))


def snapshots(specs: dict, using: str = "default", *, limit: int | None = None) -> dict:
    """``{model: Snapshot or None}`` for ``specs = {model: (field, ...)}`` (the columns to keep); tables of
    more than ``limit`` rows (default ``GISPORTAL_SNAPSHOT_ROWS``) get None."""
    from .revisions import current_tokens

    limit = _limit() if limit is None else int(limit)
    if limit <= 0:
        return {m: None for m in specs}
    toks = current_tokens(list(specs), using)
    name = str(connections[using].settings_dict.get("NAME"))
    out = {}
    for model, fields in specs.items():
        token = toks[model._meta.db_table]
        if token is None:
            out[model] = None
            continue
        key = (using, name, model._meta.db_table, tuple(fields))
        snap = _snaps.get(key)
        if snap is None or snap.token != token:
            snap = _build(model, tuple(fields), token, using, limit)
            with _lock:
                if snap is None:
                    _snaps.pop(key, None)
                else:
                    _snaps[key] = snap
        out[model] = snap
    return out


def clear() -> None:
    with _lock:
        _snaps.clear()
