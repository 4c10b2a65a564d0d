"""Folium maps that load every browser asset from our own static files (offline first).

A stock folium page is blank on an intranet with no internet: Leaflet, jQuery, Bootstrap,
awesome-markers and Font Awesome come from CDNs (PITFALLS.md row 9). This module points folium
at the copies under ``gisportal/static/vendor/`` (made by ``scripts/vendor_assets.sh``), chooses a
basemap from a settings dict (none by default), and offers popup/tooltip helpers that show
attribute text as text.

This module imports no Django, so it is testable without settings. In a Django view pass
``static_url=django.templatetags.static.static`` (a callable) to get hashed names under
ManifestStaticFilesStorage, or ``settings.STATIC_URL`` (a string prefix).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from string import Formatter
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union
from urllib.parse import quote

import folium
import numpy as np
from branca.element import Element, Figure, MacroElement
from folium.elements import JSCSSMixin
from folium.features import GeoJsonDetail, GeoJsonPopup, GeoJsonTooltip
from folium.plugins import Draw, Fullscreen, MarkerCluster
from folium.map import FitBounds, Marker
from folium.template import Template
from folium.vector_layers import BaseMultiLocation

from layers.analysis.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02

__all__ = [
    "MAP_JS",
    "MAP_CSS",
    "PLUGIN_ASSETS",
    "TIANDITU_URL",
    "OSM_URL",
    "StaticUrl",
    "TileSpec",
    "MapParts",
    "GAODE_URL",
    "GCJ02",
    "WGS84",
    "basemap_crs",
    "shift_geojson",
    "unshift_geojson",
    "shift_lonlat",
    "unshift_lonlat",
    "shift_bounds",
    "shift_map_overlays",
    "OfflineAssetError",
    "UnsafeContentError",
    "make_map",
    "basemap_tiles",
    "static_path_url",
    "local_plugin_assets",
    "localize_assets",
    "asset_urls",
    "check_safe_content",
    "escape_popup",
    "safe_popup",
    "safe_tooltip",
    "popup_html",
    "SafeGeoJsonPopup",
    "SafeGeoJsonTooltip",
    "render_map_html",
    "map_parts",
]

StaticUrl = Union[str, Callable[[str], str]]

# Same resource names as folium's `_default_js` / `_default_css`, so figure headers dedupe by name.
MAP_JS: tuple[tuple[str, str], ...] = (
    ("leaflet", "vendor/leaflet/leaflet.js"),
    ("jquery", "vendor/jquery/jquery.min.js"),
    ("bootstrap", "vendor/bootstrap/js/bootstrap.bundle.min.js"),
    ("awesome_markers", "vendor/leaflet-awesome-markers/leaflet.awesome-markers.min.js"),
)
MAP_CSS: tuple[tuple[str, str], ...] = (
    ("leaflet_css", "vendor/leaflet/leaflet.css"),
    ("bootstrap_css", "vendor/bootstrap/css/bootstrap.min.css"),
    ("glyphicons_css", "vendor/glyphicons/css/bootstrap-glyphicons.min.css"),
    ("awesome_markers_font_css", "vendor/fontawesome/css/all.min.css"),
    ("awesome_markers_css", "vendor/leaflet-awesome-markers/leaflet.awesome-markers.css"),
    ("awesome_rotate_css", "vendor/folium/leaflet.awesome.rotate.min.css"),
)

# folium plugin class -> (js, css), with folium's own resource names.
PLUGIN_ASSETS: dict[type, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = {
    Draw: (
        (("leaflet_draw_js", "vendor/leaflet-draw/leaflet.draw.js"),),
        (("leaflet_draw_css", "vendor/leaflet-draw/leaflet.draw.css"),),
    ),
    MarkerCluster: (
        (("markerclusterjs", "vendor/leaflet-markercluster/leaflet.markercluster.js"),),
        (
            ("markerclustercss", "vendor/leaflet-markercluster/MarkerCluster.css"),
            ("markerclusterdefaultcss", "vendor/leaflet-markercluster/MarkerCluster.Default.css"),
        ),
    ),
    Fullscreen: (
        (("Control.Fullscreen.js", "vendor/leaflet-fullscreen/Control.FullScreen.js"),),
        (("Control.FullScreen.css", "vendor/leaflet-fullscreen/Control.FullScreen.css"),),
    ),
}

# Tianditu WMTS in Web Mercator (`_w`), KVP form; STANDARDS.md "web maps". {layer} is vec or cva.
TIANDITU_URL = (
    "https://t{s}.tianditu.gov.cn/{layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
    "&LAYER={layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles"
    "&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={key}"
)
TIANDITU_ATTRIBUTION = "&copy; 天地图 Tianditu"
OSM_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = "&copy; OpenStreetMap contributors"
# AutoNavi (Gaode) road map tiles: Web Mercator tiling of GCJ-02 coordinates, so overlays must be shifted.
GAODE_URL = "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}"
GAODE_ATTRIBUTION = "&copy; 高德地图 AutoNavi"

#: Coordinate systems a basemap may be drawn in: plain lon/lat (WGS84 = CGCS2000 at map scale) or GCJ-02.
WGS84, GCJ02 = "wgs84", "gcj02"
_CRS_NAMES = {None: WGS84, "": WGS84, "wgs84": WGS84, "cgcs2000": WGS84, "epsg:4326": WGS84, "epsg:4490": WGS84,
              "gcj02": GCJ02, "gcj-02": GCJ02}
#: Basemap kinds whose tiles are always GCJ-02.
GCJ02_KINDS = frozenset({"gaode"})
_CRS_ATTR = "gisportal_overlay_crs"
_SHIFTED_ATTR = "_gisportal_shifted"

_MAP_ATTR = "gisportal_static_url"
_SAFE_ATTR = "_gisportal_escaped"


class OfflineAssetError(RuntimeError):
    """A map element would load a script or stylesheet from outside our static files."""


class UnsafeContentError(ValueError):
    """A popup or tooltip would insert unescaped text as HTML."""


@dataclass(frozen=True)
class TileSpec:
    """One tile layer in Leaflet's URL-template terms (``{s}``, ``{z}``, ``{x}``, ``{y}``)."""

    name: str
    url: str
    attribution: str
    subdomains: str = "abc"
    max_zoom: int = 18
    overlay: bool = False


@dataclass(frozen=True)
class MapParts:
    """The pieces of a rendered map for embedding in a page template.

    ``header`` goes in ``<head>`` (links, styles), ``html`` in ``<body>`` (the map div),
    ``script`` is JavaScript *without* ``<script>`` tags, to place after ``html``.
    """

    header: str
    html: str
    script: str


# --------------------------------------------------------------------------- assets


def static_path_url(static_url: StaticUrl, path: str) -> str:
    """Return the URL of static file ``path`` under a prefix string or via a ``static()`` callable."""
    if callable(static_url):
        return static_url(path)
    return static_url.rstrip("/") + "/" + path.lstrip("/")


def _urls(static_url: StaticUrl, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, static_path_url(static_url, path)) for name, path in pairs]


def local_plugin_assets(plugin: JSCSSMixin, static_url: StaticUrl = "/static/") -> JSCSSMixin:
    """Point one folium plugin instance at our vendored files; return it (chainable).

    Sets ``default_js``/``default_css`` on the instance only (folium's ``add_js_link``
    mutates the class list in place, so class attributes are never touched).
    Raises OfflineAssetError for a plugin we have not vendored.
    """
    for cls, (js, css) in PLUGIN_ASSETS.items():
        if isinstance(plugin, cls):
            plugin.default_js = _urls(static_url, js)
            plugin.default_css = _urls(static_url, css)
            return plugin
    raise OfflineAssetError(
        f"{type(plugin).__name__} loads assets we have not vendored; "
        f"supported plugins: {', '.join(c.__name__ for c in PLUGIN_ASSETS)}"
    )


def _walk(element: Element) -> Iterator[Element]:
    yield element
    for child in list(element._children.values()):
        yield from _walk(child)


def _is_local(url: str, static_url: StaticUrl) -> bool:
    if callable(static_url):
        # The prefix the callable gives a file every map loads.
        prefix = static_url(MAP_JS[0][1]).rsplit("vendor/", 1)[0]
    else:
        prefix = static_url.rstrip("/") + "/"
    return url.startswith(prefix) and "//" not in url[len(prefix) :] and ".." not in url


def localize_assets(m: folium.Map, static_url: Optional[StaticUrl] = None) -> folium.Map:
    """Point the map and every vendored plugin in its tree at our static files; check the rest.

    Raises OfflineAssetError if any element would still load a remote script or stylesheet.
    """
    if static_url is None:
        static_url = getattr(m, _MAP_ATTR, "/static/")
    m.default_js = _urls(static_url, MAP_JS)
    m.default_css = _urls(static_url, MAP_CSS)
    for element in _walk(m):
        if element is m or not isinstance(element, JSCSSMixin):
            continue
        if any(isinstance(element, cls) for cls in PLUGIN_ASSETS):
            local_plugin_assets(element, static_url)
        remote = [u for _, u in [*element.default_js, *element.default_css] if not _is_local(u, static_url)]
        if remote:
            raise OfflineAssetError(f"{type(element).__name__} would load {remote}")
    return m


def asset_urls(m: folium.Map) -> list[str]:
    """Every script/stylesheet URL the map will load, in header order (renders the map)."""
    localize_assets(m)
    root = m.get_root()
    root.render()
    out = []
    for child in root.header._children.values():
        url = getattr(child, "url", None)
        if url is not None:
            out.append(url)
    return out


# --------------------------------------------------------------------------- basemap


def basemap_tiles(basemap: Optional[Mapping[str, Any]]) -> list[TileSpec]:
    """Tile layers for a ``GISPORTAL_BASEMAP``-style dict; ``[]`` for None (no basemap).

    ``{"kind": "osm"}``; ``{"kind": "tianditu", "key": "..."}`` (vector ``vec_w`` plus the
    ``cva_w`` annotation overlay; an optional ``"url"`` template with ``{layer}``, ``{s}``,
    ``{z}``, ``{x}``, ``{y}`` and ``{key}`` replaces the public host, e.g. an intranet mirror);
    ``{"kind": "local", "url": "/tiles/{z}/{x}/{y}.png"}`` (tiles on our own server);
    ``{"kind": "gaode"}`` (AutoNavi road map, GCJ-02; an optional ``"url"`` replaces the public host).
    ``attribution``, ``max_zoom`` and ``subdomains`` are optional everywhere. ``"crs": "gcj02"`` declares
    tiles drawn in GCJ-02 (see :func:`basemap_crs`): overlays are then shifted before display.
    """
    if basemap is None:
        return []
    kind = basemap.get("kind")
    max_zoom = int(basemap.get("max_zoom", 18))
    if kind == "osm":
        return [
            TileSpec(
                name="OpenStreetMap",
                url=basemap.get("url") or OSM_URL,
                attribution=basemap.get("attribution") or OSM_ATTRIBUTION,
                subdomains=basemap.get("subdomains", "abc"),
                max_zoom=max_zoom,
            )
        ]
    if kind == "tianditu":
        key = basemap.get("key")
        if not key:
            raise ValueError("GISPORTAL_BASEMAP kind 'tianditu' needs a 'key' (tk)")
        template = basemap.get("url") or TIANDITU_URL
        for needed in ("{layer}", "{z}", "{x}", "{y}"):
            if needed not in template:
                raise ValueError(f"tianditu url template lacks {needed}: {template!r}")
        attribution = basemap.get("attribution") or TIANDITU_ATTRIBUTION
        subdomains = basemap.get("subdomains", "01234567")

        def url(layer: str) -> str:
            return template.replace("{layer}", layer).replace("{key}", quote(str(key), safe=""))

        return [
            TileSpec("天地图 矢量", url("vec"), attribution, subdomains, max_zoom, overlay=False),
            TileSpec("天地图 注记", url("cva"), attribution, subdomains, max_zoom, overlay=True),
        ]
    if kind == "local":
        template = basemap.get("url")
        if not template or not all(p in template for p in ("{z}", "{x}", "{y}")):
            raise ValueError("GISPORTAL_BASEMAP kind 'local' needs a 'url' with {z}, {x} and {y}")
        return [
            TileSpec(
                name=basemap.get("name", "底图"),
                url=template,
                attribution=basemap.get("attribution") or " ",
                subdomains=basemap.get("subdomains", "abc"),
                max_zoom=max_zoom,
            )
        ]
    if kind == "gaode":
        template = basemap.get("url") or GAODE_URL
        if not all(p in template for p in ("{z}", "{x}", "{y}")):
            raise ValueError(f"gaode url template lacks {{z}}, {{x}} or {{y}}: {template!r}")
        return [
            TileSpec(
                name=basemap.get("name", "高德地图"),
                url=template,
                attribution=basemap.get("attribution") or GAODE_ATTRIBUTION,
                subdomains=basemap.get("subdomains", "1234"),
                max_zoom=max_zoom,
            )
        ]
    raise ValueError(f"unknown GISPORTAL_BASEMAP kind {kind!r}; use 'osm', 'tianditu', 'gaode' or 'local'")


def basemap_crs(basemap: Optional[Mapping[str, Any]]) -> str:
    """The coordinate system the basemap's tiles are drawn in: ``"gcj02"`` or ``"wgs84"``.

    GCJ-02 for kind ``gaode`` and for any basemap with ``"crs": "gcj02"`` (e.g. a local tile folder cut
    from AutoNavi data); WGS84 otherwise, and with no basemap. An unknown ``crs`` raises ValueError.

    >>> basemap_crs(None), basemap_crs({"kind": "osm"}), basemap_crs({"kind": "gaode"})
    ('wgs84', 'wgs84', 'gcj02')
    >>> basemap_crs({"kind": "local", "url": "/t/{z}/{x}/{y}.png", "crs": "GCJ02"})
    'gcj02'
    """
    if basemap is None:
        return WGS84
    raw = basemap.get("crs")
    key = raw.strip().lower() if isinstance(raw, str) else raw
    if key not in _CRS_NAMES:
        raise ValueError(f"unknown basemap crs {raw!r}; use 'wgs84' or 'gcj02'")
    if basemap.get("kind") in GCJ02_KINDS:
        if _CRS_NAMES[key] == WGS84 and key:
            raise ValueError(f"basemap kind {basemap.get('kind')!r} is GCJ-02; it cannot be declared {raw!r}")
        return GCJ02
    return _CRS_NAMES[key]


# --------------------------------------------------------------------------- GCJ-02 overlays
#
# Overlays are stored and served in lon/lat (WGS84/CGCS2000). On a GCJ-02 basemap they must be drawn shifted
# (about 515 m E, 142 m N in Zhangjiakou), so every map overlay goes through one of the functions below:
# folium maps automatically (render_map_html / map_parts call shift_map_overlays), GeoJSON served to our own
# Leaflet pages through shift_geojson. Coordinates read back from such a map (a click, the view's bbox) go
# through unshift_lonlat. The data API is never shifted.


def _check_crs(crs: str) -> str:
    if crs not in (WGS84, GCJ02):
        raise ValueError(f"overlay crs must be {WGS84!r} or {GCJ02!r}, not {crs!r}")
    return crs


def shift_lonlat(lon: Any, lat: Any, crs: str = GCJ02):
    """Lon/lat as drawn on a basemap in ``crs`` (forward GCJ-02 for ``"gcj02"``; unchanged for ``"wgs84"``).

    Vectorised; returns float arrays.

    >>> lon, lat = shift_lonlat(114.89, 40.77)
    >>> round(float(lon) - 114.89, 5), round(float(lat) - 40.77, 5)
    (0.00611, 0.00128)
    """
    if _check_crs(crs) == GCJ02:
        return wgs84_to_gcj02(lon, lat)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def unshift_lonlat(lon: Any, lat: Any, crs: str = GCJ02):
    """Inverse of :func:`shift_lonlat`: a position read on a ``crs`` map (a click) back to WGS84 lon/lat.

    >>> lon, lat = unshift_lonlat(*shift_lonlat(114.89, 40.77))
    >>> abs(float(lon) - 114.89) < 1e-9 and abs(float(lat) - 40.77) < 1e-9
    True
    """
    if _check_crs(crs) == GCJ02:
        return gcj02_to_wgs84(lon, lat)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def shift_bounds(bounds: Optional[Sequence[float]], crs: str = GCJ02):
    """(west, south, east, north) as drawn on a ``crs`` basemap (its four corners shifted); None stays None."""
    if bounds is None or _check_crs(crs) == WGS84:
        return None if bounds is None else tuple(float(b) for b in bounds)
    west, south, east, north = bounds
    lon, lat = shift_lonlat([west, east, west, east], [south, south, north, north], crs)
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())


def _is_position(coords: Any) -> bool:
    return isinstance(coords, (list, tuple)) and len(coords) >= 2 and isinstance(coords[0], (int, float))


def _collect_positions(coords: Any, out: list) -> None:
    if _is_position(coords):
        out.append((coords[0], coords[1]))
    elif isinstance(coords, (list, tuple)):
        for c in coords:
            _collect_positions(c, out)


def _rebuild_positions(coords: Any, it: Iterator) -> Any:
    if _is_position(coords):
        x, y = next(it)
        return [x, y, *coords[2:]]
    if isinstance(coords, (list, tuple)):
        return [_rebuild_positions(c, it) for c in coords]
    return coords


def _geometries(obj: Any) -> Iterator[dict]:
    """The geometry objects (with ``coordinates``) inside a GeoJSON object, depth first."""
    if not isinstance(obj, Mapping):
        return
    t = obj.get("type")
    if t == "FeatureCollection":
        for f in obj.get("features") or []:
            yield from _geometries(f)
    elif t == "Feature":
        yield from _geometries(obj.get("geometry"))
    elif t == "GeometryCollection":
        for g in obj.get("geometries") or []:
            yield from _geometries(g)
    elif "coordinates" in obj:
        yield obj


def _copy_structure(obj: Any) -> Any:
    """A copy of the GeoJSON containers (dicts and lists); leaf values are shared."""
    if isinstance(obj, Mapping):
        return {k: _copy_structure(v) if k in ("features", "geometry", "geometries") else v
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy_structure(v) for v in obj]
    return obj


def _transform_geojson(data: Any, func: Callable) -> Any:
    out = _copy_structure(data)
    geoms = list(_geometries(out))
    positions: list = []
    for g in geoms:
        _collect_positions(g["coordinates"], positions)
    if positions:
        xy = np.asarray(positions, dtype=float)
        lon, lat = func(xy[:, 0], xy[:, 1])
        it = iter(zip(lon.tolist(), lat.tolist()))
        for g in geoms:
            g["coordinates"] = _rebuild_positions(g["coordinates"], it)
    if isinstance(out, Mapping) and isinstance(out.get("bbox"), (list, tuple)) and len(out["bbox"]) == 4:
        west, south, east, north = out["bbox"]
        lon, lat = func(np.array([west, east, west, east], dtype=float),
                        np.array([south, south, north, north], dtype=float))
        out["bbox"] = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    return out


def shift_geojson(data: Any, crs: str = GCJ02) -> Any:
    """A GeoJSON object (FeatureCollection, Feature or geometry) with every position shifted for ``crs``.

    For ``"wgs84"`` the object itself is returned; for ``"gcj02"`` a new object (the input is not changed)
    whose positions are the forward GCJ-02 transform of the input's, computed in one vectorised call.
    Extra ordinates (z) are kept; a ``bbox`` member is recomputed from the shifted corners.

    >>> shift_geojson({"type": "Point", "coordinates": [114.89, 40.77]}, "wgs84")["coordinates"]
    [114.89, 40.77]
    >>> p = shift_geojson({"type": "Point", "coordinates": [114.89, 40.77]})["coordinates"]
    >>> round(p[0] - 114.89, 5), round(p[1] - 40.77, 5)
    (0.00611, 0.00128)
    """
    if _check_crs(crs) == WGS84:
        return data
    return _transform_geojson(data, wgs84_to_gcj02)


def unshift_geojson(data: Any, crs: str = GCJ02) -> Any:
    """Inverse of :func:`shift_geojson`: geometry drawn on a ``crs`` map back to WGS84 lon/lat.

    >>> p = unshift_geojson(shift_geojson({"type": "Point", "coordinates": [114.89, 40.77]}))["coordinates"]
    >>> abs(p[0] - 114.89) < 1e-9 and abs(p[1] - 40.77) < 1e-9
    True
    """
    if _check_crs(crs) == WGS84:
        return data
    return _transform_geojson(data, gcj02_to_wgs84)


def _shift_latlon(location: Any) -> Any:
    """[lat, lon] (or nested lists of them, as folium keeps them) shifted to GCJ-02."""
    if location is None:
        return None
    if _is_position(location):
        lon, lat = wgs84_to_gcj02(float(location[1]), float(location[0]))
        return [float(lat), float(lon), *location[2:]]
    return [_shift_latlon(c) for c in location]


def shift_map_overlays(m: folium.Map, crs: Optional[str] = None) -> folium.Map:
    """Shift every overlay of a folium map for a GCJ-02 basemap (in place; each element once).

    ``crs`` defaults to the one :func:`make_map` recorded from its basemap. Shifted: GeoJson data (also
    inside Choropleth), markers and circles, polylines/polygons/rectangles, fit_bounds and the map centre.
    A GeoJson that the browser would load by URL cannot be shifted here and raises ValueError.
    """
    crs = _check_crs(crs or getattr(m, _CRS_ATTR, WGS84))
    if crs == WGS84:
        return m
    for element in _walk(m):
        if getattr(element, _SHIFTED_ATTR, False):
            continue
        if element is m:
            if getattr(m, "location", None) is not None:
                m.location = _shift_latlon(list(m.location))
        elif isinstance(element, folium.GeoJson):
            if not getattr(element, "embed", True) or not isinstance(element.data, Mapping):
                raise ValueError("a GeoJson overlay loaded by URL cannot be shifted to the GCJ-02 basemap; "
                                 "embed it, or serve it shifted (gisportal.mapping.shift_geojson)")
            element.data = shift_geojson(element.data, crs)
        elif isinstance(element, Marker):
            if getattr(element, "location", None) is not None:
                element.location = _shift_latlon(list(element.location))
        elif isinstance(element, BaseMultiLocation):
            element.locations = _shift_latlon(element.locations)
        elif isinstance(element, FitBounds):
            (south, west), (north, east) = element.bounds
            w, s_, e, n = shift_bounds((west, south, east, north), crs)
            element.bounds = [[s_, w], [n, e]]
        setattr(element, _SHIFTED_ATTR, True)
    return m


class _AttributionPrefix(MacroElement):
    """A plain "Leaflet" attribution prefix: Leaflet 1.9's default adds a national flag icon, out of place
    on a Chinese government map."""

    _template = Template(
        "{% macro script(this, kwargs) %}"
        "{{ this._parent.get_name() }}.attributionControl.setPrefix('Leaflet');"
        "{% endmacro %}"
    )


def make_map(
    static_url: StaticUrl = "/static/",
    basemap: Optional[Mapping[str, Any]] = None,
    location: Sequence[float] = (40.77, 114.89),
    zoom_start: int = 10,
    **kwargs: Any,
) -> folium.Map:
    """A folium Map whose assets come from our static files; no tiles unless ``basemap`` is given.

    ``location`` is (lat, lon) as folium wants (default: Zhangjiakou). ``max_zoom`` (default: the
    basemap's, else 18) and ``min_zoom`` are set on the Leaflet map itself. Other keyword arguments
    go to ``folium.Map`` (``width``, ``height``, ``control_scale``, ...), except ``tiles``: use
    ``basemap`` (see :func:`basemap_tiles`). With a GCJ-02 basemap (:func:`basemap_crs`) every overlay
    added to the map, given in WGS84 lon/lat as usual, is shifted to GCJ-02 when the map is rendered.
    """
    if "tiles" in kwargs:
        raise TypeError("make_map() takes basemap=, not tiles=")
    tiles = basemap_tiles(basemap)
    overlay_crs = basemap_crs(basemap)
    max_zoom = kwargs.pop("max_zoom", None) or max((t.max_zoom for t in tiles), default=18)
    min_zoom = kwargs.pop("min_zoom", None)
    m = folium.Map(location=list(location), zoom_start=zoom_start, tiles=None, **kwargs)
    # Leaflet takes maxZoom from tile layers; with none, MarkerCluster fails ("Map has no
    # maxZoom specified"), so put it on the map itself.
    m.options["max_zoom"] = max_zoom
    if min_zoom is not None:
        m.options["min_zoom"] = min_zoom
    setattr(m, _MAP_ATTR, static_url)
    setattr(m, _CRS_ATTR, overlay_crs)  # overlays are shifted at render time (shift_map_overlays)
    _AttributionPrefix().add_to(m)
    m.default_js = _urls(static_url, MAP_JS)
    m.default_css = _urls(static_url, MAP_CSS)
    for spec in tiles:
        folium.TileLayer(
            tiles=spec.url,
            attr=spec.attribution,
            name=spec.name,
            max_zoom=spec.max_zoom,
            subdomains=spec.subdomains,
            overlay=spec.overlay,
            control=not spec.overlay,
        ).add_to(m)
    return m


# --------------------------------------------------------------------------- safe text

# Characters that are special inside the JS template literals folium wraps popups and
# tooltips in (`...${...}...\x`), encoded as HTML entities that jQuery/innerHTML turn back
# into the plain characters.
_JS_TEMPLATE_SPECIALS = {"`": "&#96;", "$": "&#36;", "\\": "&#92;"}
_JS_TEMPLATE_RE = re.compile(r"[`$\\]")


def escape_popup(text: Any) -> str:
    """Escape any value for display as plain text in a folium popup or tooltip.

    HTML-escapes ``& < > " '`` and also entity-encodes backtick, ``$`` and backslash, which
    folium would otherwise let through into a JavaScript template literal.

    >>> escape_popup('<img src=x onerror="alert(1)">')
    '&lt;img src=x onerror=&quot;alert(1)&quot;&gt;'
    >>> escape_popup('${alert(1)}`')
    '&#36;{alert(1)}&#96;'
    """
    escaped = html.escape("" if text is None else str(text), quote=True)
    return _JS_TEMPLATE_RE.sub(lambda mo: _JS_TEMPLATE_SPECIALS[mo.group(0)], escaped)


def _mark_safe(element: Element) -> Element:
    setattr(element, _SAFE_ATTR, True)
    return element


def safe_popup(text: Any, max_width: Union[int, str] = 300, **kwargs: Any) -> folium.Popup:
    """A Popup showing ``text`` as plain text (newlines kept)."""
    body = escape_popup(text).replace("\n", "<br>")
    return _mark_safe(folium.Popup(body, parse_html=False, max_width=max_width, **kwargs))


def popup_html(template: str, /, max_width: Union[int, str] = 300, **values: Any) -> folium.Popup:
    """A Popup from a trusted HTML ``template`` with ``{name}`` fields filled by escaped values.

    >>> p = popup_html("<b>{name}</b>", name="<script>x</script>")
    >>> "<b>&lt;script&gt;x&lt;/script&gt;</b>" in p.html.render()
    True
    """
    fields = {f for _, f, _, _ in Formatter().parse(template) if f}
    missing = fields - values.keys()
    if missing:
        raise KeyError(f"popup_html: no value for {sorted(missing)}")
    body = template.format(**{k: escape_popup(v) for k, v in values.items()})
    # The trusted template itself may contain template-literal specials: encode them too.
    body = _JS_TEMPLATE_RE.sub(lambda mo: _JS_TEMPLATE_SPECIALS[mo.group(0)], body)
    return _mark_safe(folium.Popup(body, parse_html=False, max_width=max_width))


def safe_tooltip(text: Any, **kwargs: Any) -> folium.Tooltip:
    """A Tooltip showing ``text`` as plain text."""
    return _mark_safe(folium.Tooltip(escape_popup(text), **kwargs))


# Builds the table with textContent, never innerHTML, so feature properties and aliases are
# shown as text (folium's GeoJsonDetail puts them into innerHTML unescaped).
_SAFE_DETAIL_JS = """
    function(layer){
    let div = L.DomUtil.create('div');
    {% if this.fields %}
    let show = v => {
        if (v === null || v === undefined) { return ''; }
        if (typeof(v) == 'object') { return JSON.stringify(v); }
        return {% if this.localize %}v.toLocaleString(){% else %}String(v){% endif %};
    };
    let fields = {{ this.fields | tojson }};
    let aliases = {{ this.aliases | tojson }};
    let table = L.DomUtil.create('table', '', div);
    fields.forEach(function(field, i) {
        let tr = L.DomUtil.create('tr', '', table);
        {% if this.labels %}L.DomUtil.create('th', '', tr).textContent = String(aliases[i]);{% endif %}
        L.DomUtil.create('td', '', tr).textContent = show(layer.feature.properties[field]);
    });
    {% endif %}
    return div;
    }
"""


class SafeGeoJsonPopup(GeoJsonPopup):
    """GeoJsonPopup that shows property values and aliases as text, never as HTML."""

    _template = Template(
        "{% macro script(this, kwargs) %}{{ this._parent.get_name() }}.bindPopup("
        + _SAFE_DETAIL_JS
        + ",{{ this.popup_options | tojavascript }});{% endmacro %}"
    )


class SafeGeoJsonTooltip(GeoJsonTooltip):
    """GeoJsonTooltip that shows property values and aliases as text, never as HTML."""

    _template = Template(
        "{% macro script(this, kwargs) %}{{ this._parent.get_name() }}.bindTooltip("
        + _SAFE_DETAIL_JS
        + ",{{ this.tooltip_options | tojavascript }});{% endmacro %}"
    )


def _detail_texts(detail: GeoJsonDetail) -> Iterator[str]:
    """The strings a stock GeoJsonPopup/Tooltip would put into innerHTML."""
    if detail.labels:
        yield from (str(a) for a in detail.aliases)
    for feature in detail._parent.data.get("features", []):
        props = feature.get("properties") or {}
        for field in detail.fields:
            value = props.get(field)
            if isinstance(value, (dict, list)):
                yield json.dumps(value, ensure_ascii=False)
            elif value is not None:
                yield str(value)


def check_safe_content(m: folium.Map) -> None:
    """Raise UnsafeContentError for popups/tooltips that could insert attribute text as HTML.

    Allowed: anything built by :func:`safe_popup`, :func:`popup_html`, :func:`safe_tooltip`,
    :class:`SafeGeoJsonPopup`, :class:`SafeGeoJsonTooltip`; and a stock GeoJsonPopup/Tooltip on a
    GeoJson whose shown properties and aliases contain no ``<`` (already HTML-escaped data).
    Refused: any other folium Popup/Tooltip (``Marker(popup="...")`` inserts the string as HTML
    inside a JS template literal), and stock GeoJson popups over unescaped data.
    """
    for element in _walk(m):
        if isinstance(element, (SafeGeoJsonPopup, SafeGeoJsonTooltip)):
            continue
        if isinstance(element, GeoJsonDetail):
            if not isinstance(element._parent, folium.GeoJson):
                raise UnsafeContentError(f"{type(element).__name__} on a non-GeoJson layer")
            bad = next((t for t in _detail_texts(element) if "<" in t), None)
            if bad is not None:
                raise UnsafeContentError(
                    f"{type(element).__name__} would put {bad[:60]!r} into innerHTML; escape the "
                    "properties (html.escape) or use SafeGeoJsonPopup / SafeGeoJsonTooltip"
                )
        elif isinstance(element, (folium.Popup, folium.Tooltip)):
            if not getattr(element, _SAFE_ATTR, False):
                raise UnsafeContentError(
                    f"{type(element).__name__} not built with safe_popup / popup_html / "
                    "safe_tooltip (a plain string popup is inserted as HTML)"
                )


# --------------------------------------------------------------------------- render


def _prepare(m: folium.Map, strict: bool) -> Figure:
    localize_assets(m)
    shift_map_overlays(m)
    if strict:
        check_safe_content(m)
    root = m.get_root()
    if not isinstance(root, Figure):
        raise TypeError("map is not in a branca Figure")
    return root


def render_map_html(m: folium.Map, strict: bool = True) -> str:
    """The map as a full standalone HTML page (assets from our static files).

    With ``strict`` (default) refuse popups/tooltips not built by the safe helpers.
    """
    return _prepare(m, strict).render()


def map_parts(m: folium.Map, strict: bool = True) -> MapParts:
    """The map's header, body and script, for a page template (mark them safe there).

    In a Django template::

        {{ parts.header|safe }}  (in <head>)
        {{ parts.html|safe }}
        <script>{{ parts.script|safe }}</script>
    """
    root = _prepare(m, strict)
    root.render()  # renders children into the figure's header/html/script
    return MapParts(
        header=root.header.render(),
        html=root.html.render(),
        script=root.script.render(),
    )
