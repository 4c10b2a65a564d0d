"""Folium maps of the portal, built from our own static assets (see gisportal/mapping.py)."""
from __future__ import annotations

import folium
from django.conf import settings
from django.templatetags.static import static
from django.utils.translation import gettext as _

from layers import selectors
from layers.registry import LAYERS

from .mapping import SafeGeoJsonPopup, make_map, render_map_html

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
    """The configured basemap as mapping.make_map expects it; None means no tiles (offline)."""
    kind = settings.GISPORTAL_BASEMAP
    if kind in ("", "none"):
        return None
    if kind == "tianditu":
        return {"kind": "tianditu", "key": settings.TIANDITU_KEY}
    if kind == "local":
        return {"kind": "local", "url": settings.GISPORTAL_LOCAL_TILES, "attribution": _("本地瓦片")}
    return {"kind": "osm"}


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
