"""Folium maps of the portal, built from our own static assets (see gisportal/mapping.py)."""
from __future__ import annotations

import json
from collections.abc import Mapping

import folium
from django.conf import settings
from django.templatetags.static import static
from django.utils.translation import gettext as _

from layers import selectors
from layers.registry import LAYERS

from .mapping import (WGS84, SafeGeoJsonPopup, basemap_crs, make_map, render_map_html, shift_bounds,
                      shift_geojson, unshift_geojson, unshift_lonlat)

# Layers drawn on the overview map, bottom to top; polygons first so points stay clickable.
OVERVIEW_LAYERS = ["districts", "streets", "communities", "grids", "shelters", "roads",
                   "facilities", "fire_stations", "candidates"]
SHOWN_BY_DEFAULT = {"districts", "shelters", "fire_stations", "facilities"}
# The overview embeds its data in the page: past this many features a layer is cut (and says so); the
# layer API (/api/v1/layers/<kind>/?bbox=...) serves the rest by area and page.
OVERVIEW_MAX_FEATURES = 5000
# Public information anyone may see on the overview map; other layers (grids with their workers,
# candidate sites) follow the user's permissions (a field worker sees only their own grids).
PUBLIC_KINDS = frozenset({"districts", "streets", "communities", "shelters", "fire_stations", "facilities",
                          "roads"})


def visible_queryset(user, kind: str):
    """The rows of ``kind`` that ``user`` (possibly anonymous) may see on the portal's maps."""
    from .permissions import layer_queryset

    if kind in PUBLIC_KINDS:
        return LAYERS[kind].model.objects.all()
    return layer_queryset(user, kind)


def basemap_setting() -> dict | None:
    """The configured basemap as mapping.make_map expects it; None means no tiles (offline).

    ``settings.GISPORTAL_BASEMAP`` is a kind name (``none``, ``osm``, ``tianditu`` with ``TIANDITU_KEY``,
    ``local`` with ``GISPORTAL_LOCAL_TILES``, ``gaode``/``amap`` for AutoNavi tiles, which are GCJ-02) or a
    dict as :func:`gisportal.mapping.basemap_tiles` takes it, e.g. ``{"kind": "local", "url":
    "/tiles/{z}/{x}/{y}.png", "crs": "gcj02"}``. ``settings.GISPORTAL_BASEMAP_CRS`` (optional, e.g.
    ``gcj02``) declares the coordinate system of a basemap given by name (a local tile folder cut from
    GCJ-02 data).
    """
    value = settings.GISPORTAL_BASEMAP
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    kind = str(value).strip().lower()
    if kind in ("", "none"):
        return None
    if kind == "tianditu":
        out = {"kind": "tianditu", "key": settings.TIANDITU_KEY}
    elif kind == "local":
        out = {"kind": "local", "url": settings.GISPORTAL_LOCAL_TILES, "attribution": _("本地瓦片")}
    elif kind in ("gaode", "amap", "autonavi"):
        out = {"kind": "gaode"}
    else:
        out = {"kind": "osm"}
    crs = getattr(settings, "GISPORTAL_BASEMAP_CRS", "") or ""
    if crs.strip():
        out["crs"] = crs.strip().lower()
    return out


def overlay_crs() -> str:
    """``"gcj02"`` when the configured basemap is drawn in GCJ-02 (overlays must be shifted), else ``"wgs84"``."""
    return basemap_crs(basemap_setting())


def overlay_geojson(data):
    """GeoJSON (WGS84 lon/lat) as it must be drawn over the configured basemap: shifted to GCJ-02 when the
    basemap is GCJ-02, unchanged otherwise. For map overlays only; the data API stays in lon/lat."""
    return shift_geojson(data, overlay_crs())


def overlay_bounds(bounds):
    """(west, south, east, north) in lon/lat as drawn over the configured basemap (None stays None)."""
    return shift_bounds(bounds, overlay_crs())


def drawn_geojson(data):
    """GeoJSON drawn on one of our maps (in the basemap's coordinates) back to WGS84 lon/lat."""
    return unshift_geojson(data, overlay_crs())


def drawn_geojson_text(text: str) -> str:
    """:func:`drawn_geojson` for GeoJSON text (a drawing map's hidden field). Text that is not JSON is
    returned as it is, for the parser to refuse with its own message."""
    if overlay_crs() == WGS84 or not text:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return json.dumps(drawn_geojson(data), ensure_ascii=False)


def click_lonlat(lon: float, lat: float) -> tuple[float, float]:
    """A position read on one of our maps (a click, the view's bbox corner) back to WGS84 lon/lat."""
    crs = overlay_crs()
    if crs == WGS84:
        return float(lon), float(lat)
    x, y = unshift_lonlat(lon, lat, crs)
    return float(x), float(y)


def _style(color: str, kind: str):
    fill = 0.0 if kind in ("districts", "streets") else 0.25

    def style(_feature):
        return {"color": color, "weight": 2 if kind == "districts" else 1, "fillColor": color,
                "fillOpacity": fill}
    return style


def overview_map_html(user=None) -> str:
    static_url = static("")
    m = make_map(static_url=static_url, basemap=basemap_setting())
    bounds = selectors.layer_bounds_lonlat("districts")
    for kind in OVERVIEW_LAYERS:
        layer = LAYERS[kind]
        qs = visible_queryset(user, kind)
        total = qs.count()
        if not total:
            continue
        data = selectors.layer_geojson(kind, simplify=True, queryset=qs.order_by("pk"),
                                       limit=OVERVIEW_MAX_FEATURES)
        fields = [f for f in layer.fields if f != "id"]
        shown = len(data["features"])
        count = f"{shown}" if shown == total else f"{shown} / {total}"
        group = folium.FeatureGroup(name=f"{layer.label} ({count})",
                                    show=kind in SHOWN_BY_DEFAULT)
        point_layer = data["features"][0]["geometry"]["type"] == "Point"
        folium.GeoJson(
            data, name=str(layer.label), style_function=_style(layer.color, kind),
            marker=folium.CircleMarker(radius=5, color=layer.color, fill=True, fill_opacity=0.9)
            if point_layer else None,
            popup=SafeGeoJsonPopup(fields=fields, aliases=[str(f) for f in fields], labels=True),
        ).add_to(group)
        group.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    if bounds:
        west, south, east, north = bounds
        m.fit_bounds([[south, west], [north, east]])
    return render_map_html(m)
