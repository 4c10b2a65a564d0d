"""Admin map widget that loads OpenLayers from our static files and no remote tiles by default.

Django's OpenLayersWidget/OSMWidget load OpenLayers from a CDN and OpenStreetMap tiles
(PITFALLS.md row 10); on an intranet with no internet the admin map is then blank and the
geometry cannot be edited. Here the base layer comes from ``settings.GISPORTAL_BASEMAP`` (see
:func:`gisportal.mapping.basemap_tiles`); when that is None the base layer is an empty layer
group on a plain background, and the geometry still draws and can be edited.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from django.conf import settings
from django.contrib.gis.admin import GISModelAdmin
from django.contrib.gis.forms.widgets import OSMWidget


__all__ = ["OfflineOpenLayersWidget", "OfflineGISModelAdmin", "ol_tile_sources"]


class _Unset:
    """Marks "no basemap given here: use settings" (a class, so it survives any copy)."""


def ol_tile_sources(basemap: Optional[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tile layers for OpenLayers' ``ol.source.XYZ``: ``urls`` (``{s}`` expanded), attribution, zoom."""
    from gisportal.mapping import basemap_tiles  # lazily: folium is heavy, and every manage.py loads admin

    out = []
    for spec in basemap_tiles(basemap):
        if "{s}" in spec.url and spec.subdomains:
            urls = [spec.url.replace("{s}", s) for s in spec.subdomains]
        else:
            urls = [spec.url]
        out.append(
            {"name": spec.name, "urls": urls, "attributions": spec.attribution, "maxZoom": spec.max_zoom}
        )
    return out


class OfflineOpenLayersWidget(OSMWidget):
    """OSMWidget with OpenLayers served from ``vendor/ol/`` and a configurable (default: no) basemap.

    ``basemap`` (class attribute or ``attrs={"basemap": {...}}``) overrides
    ``settings.GISPORTAL_BASEMAP``; ``None`` means no tiles.
    """

    template_name = "gis/openlayers-offline.html"
    # Zhangjiakou (lon, lat), used when the field is empty.
    default_lon = 114.89
    default_lat = 40.77
    default_zoom = 10
    basemap: Any = _Unset

    class Media:
        extend = False  # do not inherit the CDN URLs from OpenLayersWidget.Media
        css = {"all": ("vendor/ol/ol.css", "gis/css/ol3.css")}
        js = ("vendor/ol/ol.js", "gis/js/OLMapWidget.js")

    def __init__(self, attrs: Optional[dict[str, Any]] = None):
        attrs = dict(attrs or {})
        basemap = attrs.pop("basemap", self.basemap)
        super().__init__(attrs)
        self._basemap = basemap

    def get_basemap(self) -> Optional[Mapping[str, Any]]:
        """The basemap dict in force: the widget's own, else ``settings.GISPORTAL_BASEMAP``.

        The setting may be a dict, None, or a kind name (``"none"``, ``"osm"``, ``"tianditu"``
        with ``settings.TIANDITU_KEY``, ``"local"`` with ``settings.GISPORTAL_LOCAL_TILES``).
        """
        value = self._basemap
        if value is _Unset:
            value = getattr(settings, "GISPORTAL_BASEMAP", None)
        if value is None or isinstance(value, Mapping):
            return value
        kind = str(value).strip().lower()
        if kind in ("", "none"):
            return None
        if kind == "tianditu":
            return {"kind": kind, "key": getattr(settings, "TIANDITU_KEY", "")}
        if kind == "local":
            return {"kind": kind, "url": getattr(settings, "GISPORTAL_LOCAL_TILES", "")}
        return {"kind": kind}

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        # Read in the template through escapejs, inside a JS string literal.
        basemap = self.get_basemap()
        if basemap is not None and self._basemap is _Unset:
            # The admin edits stored (CGCS2000 ~ WGS84) coordinates: on GCJ-02 tiles they would look ~500 m
            # off, and shifting what an editor draws is not worth the risk. Such basemaps stay off here.
            from .maps import basemap_setting
            from .mapping import basemap_crs
            if basemap_crs(basemap_setting()) == "gcj02":
                basemap = None
        context["tile_sources_json"] = json.dumps(ol_tile_sources(basemap))
        return context


class OfflineGISModelAdmin(GISModelAdmin):
    """GISModelAdmin whose geometry fields use :class:`OfflineOpenLayersWidget`."""

    gis_widget = OfflineOpenLayersWidget
