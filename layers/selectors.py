"""Reads: querysets -> GeoJSON for the web edge, or (pks, arrays) in GIS_SRID for the analysis."""
from __future__ import annotations

import html
import json

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


def layer_geojson(kind: str, *, bbox: tuple[float, float, float, float] | None = None,
                  limit: int | None = None, escape_html: bool = False, simplify: bool = False,
                  queryset=None) -> dict:
    """A FeatureCollection (EPSG:4326, RFC 7946) of one layer, optionally within a lon/lat bbox.

    ``escape_html`` escapes attribute text for sinks that use innerHTML. ``queryset`` restricts the rows
    (e.g. to what a user may see).
    """
    import shapely

    layer = layer_get(kind)
    qs = layer.model.objects.all() if queryset is None else queryset
    if bbox is not None:
        qs = qs.in_bbox(*bbox)
    if limit is not None:
        qs = qs[:limit]
    rows = list(with_wkb(qs).values_list("pk", "is_sample", "_wkb", *layer.fields))
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

    return tuple(bbox_polygon(settings.GIS_SRID, 4326, *extent).bounds)


def points_xy(kind: str, queryset=None) -> tuple[np.ndarray, np.ndarray]:
    """(pks, xy) of a point layer in GIS_SRID metres, for the pure analysis functions."""
    qs = queryset if queryset is not None else layer_get(kind).model.objects.all()
    pks, xy = [], []
    for pk, geom in qs.values_list("pk", "geom"):
        pks.append(pk)
        xy.append(geom.coords[:2])
    return np.asarray(pks, dtype=np.int64), np.asarray(xy, dtype=float).reshape(-1, 2)
