"""Reads: querysets -> GeoJSON for the web edge, or (pks, arrays) in GIS_SRID for the analysis."""
from __future__ import annotations

import html
import json
import math

import numpy as np
from django.conf import settings
from django.contrib.gis.db.models import Extent

from .registry import LAYERS, layer_get

# Overview maps draw simplified outlines: 10 m is invisible at city scale and keeps pages small.
OVERVIEW_SIMPLIFY_M = {"districts": 30.0, "streets": 10.0, "communities": 5.0}


def _display(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _to_lonlat():
    from .analysis.transform import transformer

    return transformer(settings.GIS_SRID, 4326)   # cached: building one costs ~100 ms


def with_wkb(qs):
    """``qs`` annotated with ``_wkb``, the geometry as WKB straight from the database: no GEOS object is
    built per row (the caller parses them all at once with shapely)."""
    from django.contrib.gis.db.models.functions import AsWKB

    return qs.annotate(_wkb=AsWKB("geom"))


def geoms_to_lonlat(geoms_wkb: list[bytes], *, simplify_m: float | None = None):
    """Shapely geometries in lon/lat from WKB in GIS_SRID (vectorised: one transformer for all)."""
    import shapely

    geoms = shapely.from_wkb(geoms_wkb)
    if simplify_m:
        geoms = shapely.simplify(geoms, simplify_m, preserve_topology=True)
    transformer = _to_lonlat()
    return shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _layer_rows(kind: str, *, bbox, limit, queryset) -> list[tuple]:
    layer = layer_get(kind)
    qs = layer.model.objects.all() if queryset is None else queryset
    if bbox is not None:
        qs = qs.in_bbox(*bbox)
    if limit is not None:
        qs = qs[:limit]
    return list(with_wkb(qs).values_list("pk", "is_sample", "_wkb", *layer.fields))


def layer_geojson(kind: str, *, bbox: tuple[float, float, float, float] | None = None,
                  limit: int | None = None, escape_html: bool = False, simplify: bool = False,
                  queryset=None) -> dict:
    """A FeatureCollection (EPSG:4326, RFC 7946) of one layer, optionally within a lon/lat bbox.

    ``escape_html`` escapes attribute text for sinks that use innerHTML. ``queryset`` restricts the rows
    (e.g. to what a user may see). For an HTTP body use :func:`layer_geojson_bytes` (the same document,
    without building a dict per feature).
    """
    import shapely

    layer = layer_get(kind)
    rows = _layer_rows(kind, bbox=bbox, limit=limit, queryset=queryset)
    if not rows:
        return {"type": "FeatureCollection", "features": []}
    lonlat = geoms_to_lonlat([bytes(r[2]) for r in rows],
                             simplify_m=OVERVIEW_SIMPLIFY_M.get(kind) if simplify else None)
    geometries = shapely.to_geojson(shapely.set_precision(lonlat, 1e-7))
    features = []
    for row, geometry in zip(rows, geometries):
        pk, is_sample = row[0], row[1]
        props = {"id": pk, "is_sample": is_sample}
        for field, value in zip(layer.fields, row[3:]):
            value = _display(value)
            props[field] = html.escape(value) if escape_html and isinstance(value, str) else value
        features.append({"type": "Feature", "id": pk, "properties": props, "geometry": json.loads(geometry)})
    return {"type": "FeatureCollection", "features": features}


_ENCODERS = {allow_nan: json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)
             for allow_nan in (True, False)}
_json_str = json.encoder.encode_basestring  # what the encoder above writes for a str (C, no ASCII escaping)


def _json_column(col: tuple, *, escape_html: bool, allow_nan: bool) -> list[str]:
    """JSON text of each value of a column after ``_display`` (and ``html.escape`` of text when asked):
    what ``json.dumps`` writes for it, with the common column types done without a call per value."""
    if all(type(v) is str for v in col):
        return [_json_str(html.escape(v)) for v in col] if escape_html else list(map(_json_str, col))
    if all(type(v) is int for v in col):
        return list(map(int.__repr__, col))
    if all(type(v) is bool for v in col):
        return ["true" if v else "false" for v in col]
    if all(type(v) is float and math.isfinite(v) for v in col):
        return list(map(float.__repr__, col))
    encode = _ENCODERS[allow_nan].encode
    out = []
    for v in col:
        v = _display(v)
        out.append(encode(html.escape(v) if escape_html and isinstance(v, str) else v))
    return out


def features_json(fields: tuple[str, ...], rows, *, escape_html: bool = False, simplify_m: float | None = None,
                  allow_nan: bool = True) -> str:
    """JSON text of a list of GeoJSON features (lon/lat, RFC 7946, coordinates to 1e-7 degree) from
    ``(pk, is_sample, wkb, *fields)`` rows in GIS_SRID: the same document as :func:`layer_geojson`'s
    features dumped with ``json``, for a fraction of the CPU: one vectorised ``shapely.to_geojson``
    whose text is spliced in (never parsed), the properties written column by column, one string
    template per feature. ``allow_nan=False`` refuses NaN/Infinity as ``json.dumps(allow_nan=False)``.
    """
    return "[" + ",".join(feature_texts(fields, rows, escape_html=escape_html, simplify_m=simplify_m,
                                        allow_nan=allow_nan)) + "]"


def feature_texts(fields: tuple[str, ...], rows, *, escape_html: bool = False, simplify_m: float | None = None,
                  allow_nan: bool = True) -> list[str]:
    """The JSON text of each feature of :func:`features_json`, one string per row, in row order."""
    import shapely

    if not rows:
        return []
    cols = list(zip(*rows))
    lonlat = geoms_to_lonlat([w if isinstance(w, bytes) else bytes(w) for w in cols[2]], simplify_m=simplify_m)
    geometries = shapely.to_geojson(shapely.set_precision(lonlat, 1e-7)).tolist()
    ids = _json_column(cols[0], escape_html=False, allow_nan=allow_nan)   # the pk is never escaped
    values = [_json_column(col, escape_html=escape_html, allow_nan=allow_nan) for col in cols[1:2] + cols[3:]]
    # a later key wins in a dict (a field called "id" overrides the pk, as props[field] = ... did)
    keys = dict.fromkeys(("id", "is_sample", *fields))
    slot = {k: i for i, k in enumerate(("id", "is_sample", *fields))}
    order = [slot[k] for k in keys]   # the column that supplies each key, in first-seen key order
    cols_text = [ids, *values]
    cols_text = [cols_text[i] for i in order]
    template = ('{"type":"Feature","id":%s,"properties":{'
                + ",".join(_json_str(k).replace("%", "%%") + ":%s" for k in keys) + '},"geometry":%s}')
    return [template % t for t in zip(ids, *cols_text, geometries)]


def layer_geojson_bytes(kind: str, *, bbox: tuple[float, float, float, float] | None = None,
                        limit: int | None = None, escape_html: bool = False, simplify: bool = False,
                        queryset=None) -> bytes:
    """:func:`layer_geojson` as a UTF-8 JSON body, features in key order: ``json.loads`` of it equals
    ``layer_geojson(...)`` of the queryset ordered by key.

    Each feature's text comes from the per-process cache of :mod:`layers.geojson_cache` (checked
    against the table's revision token in the same query that selects the features), so a request
    for features already served costs one query for their keys.
    """
    from . import geojson_cache

    layer = layer_get(kind)
    qs = layer.model.objects.all() if queryset is None else queryset
    keyed = None
    if bbox is not None and geojson_cache.is_whole_table(qs):   # the in-memory index, if the table qualifies
        keyed = geojson_cache.keyed_in_bbox(layer.model, bbox, limit)
    if keyed is None:
        if bbox is not None:
            qs = qs.in_bbox(*bbox)
        qs = qs.order_by("pk")   # features by key, whichever path selects them (and the same first `limit`)
        if limit is not None:
            qs = qs[:limit]
        keyed = geojson_cache.keyed(qs)
    texts = geojson_cache.feature_texts(layer.model, layer.fields, keyed,
                                        escape_html=escape_html,
                                        simplify_m=OVERVIEW_SIMPLIFY_M.get(kind) if simplify else None)
    return ('{"type":"FeatureCollection","features":[' + ",".join(texts) + "]}").encode()


def layer_counts() -> dict[str, int]:
    """Row count per layer KIND."""
    return {kind: layer.model.objects.count() for kind, layer in LAYERS.items()}


def layer_bounds_lonlat(kind: str = "districts") -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of a layer in lon/lat, or None when empty."""
    model = layer_get(kind).model
    extent = model.objects.aggregate(e=Extent("geom"))["e"]
    if not extent:
        return None
    from .analysis.transform import bbox_polygon

    return tuple(bbox_polygon(settings.GIS_SRID, 4326, *extent, densify=16).bounds)


def points_xy(kind: str, queryset=None) -> tuple[np.ndarray, np.ndarray]:
    """(pks, xy) of a point layer in GIS_SRID metres, for the pure analysis functions."""
    qs = queryset if queryset is not None else layer_get(kind).model.objects.all()
    pks, xy = [], []
    for pk, geom in qs.values_list("pk", "geom"):
        pks.append(pk)
        xy.append(geom.coords[:2])
    return np.asarray(pks, dtype=np.int64), np.asarray(xy, dtype=float).reshape(-1, 2)
