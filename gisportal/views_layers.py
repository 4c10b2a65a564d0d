"""The layer browser (issue 8): choose a layer, see it on a Leaflet map, read and sort its attribute table,
search it by name or code, zoom to a row, and export the current selection.

Who sees what is the overview map's rule (:func:`gisportal.maps.visible_queryset`): the public layers
(:data:`gisportal.maps.PUBLIC_KINDS`) for everyone, the others with the model's view permission and the
object rules of :mod:`gisportal.permissions` (a field worker: only their own grids). Exports follow the
API's rule (``POST /api/v1/exports/``): the model's view permission, rows from
:func:`gisportal.permissions.layer_queryset`.

The map is our own Leaflet page (``static/gisportal/layer_browser.js``, no inline script: the page keeps
the strict CSP). Its features come from :func:`layer_features` by bbox, capped at
:data:`MAP_MAX_FEATURES`, shifted for a GCJ-02 basemap (:func:`gisportal.maps.overlay_geojson`); the bbox
the map sends is in the basemap's coordinates and is shifted back first.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from django.contrib.auth.views import redirect_to_login
from django.contrib.gis.db.models import Extent
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from layers import selectors
from layers.registry import LAYERS

from . import maps
from .mapping import basemap_tiles
from .permissions import can_view_layer, layer_queryset

#: Rows per page of the attribute table.
PAGE_SIZE = 25
#: Features one map request returns at most (the answer says when it was cut: zoom in for the rest).
MAP_MAX_FEATURES = 2000
#: Export formats offered here -> (content type, file suffix); all written by importers.exports.
EXPORT_FORMATS = {
    "geojson": ("application/geo+json", "geojson"),
    "gpkg": ("application/geopackage+sqlite3", "gpkg"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "kml": ("application/vnd.google-earth.kml+xml", "kml"),
}
#: A synchronous export writes at most this many rows; larger ones go through the export job (API).
EXPORT_MAX_ROWS = 20000
#: The longest search text taken.
Q_MAX_LEN = 100


# ------------------------------------------------------------------ rules and queries
def can_browse(user, kind: str) -> bool:
    """Whether ``user`` may open layer ``kind`` in the browser (the overview map's rule)."""
    return kind in maps.PUBLIC_KINDS or can_view_layer(user, kind)


def browsable_kinds(user) -> list[str]:
    return [kind for kind in LAYERS if can_browse(user, kind)]


def _layer_or_refuse(request: HttpRequest, kind: str):
    """The layer, or 404 (unknown kind), the login page (anonymous), 403 (no permission)."""
    if kind not in LAYERS:
        raise Http404(_("未知图层"))
    if not can_browse(request.user, kind):
        if not request.user.is_authenticated:
            return None
        raise PermissionDenied(_("无权查看该图层"))
    return LAYERS[kind]


def search_fields(kind: str) -> list[str]:
    """The text attributes ``?q=`` searches (``icontains``): name and/or code."""
    return [f for f in ("name", "code") if f in LAYERS[kind].fields]


def search(kind: str, qs, q: str):
    """Rows whose name or code contains ``q`` (case-insensitive); all rows for an empty ``q``."""
    q = (q or "").strip()[:Q_MAX_LEN]
    fields = search_fields(kind)
    if not q or not fields:
        return qs
    rule = Q()
    for f in fields:
        rule |= Q(**{f"{f}__icontains": q})
    return qs.filter(rule)


def sort_columns(kind: str) -> list[str]:
    """The columns the table may be sorted by (the allow-list): ``id`` and the layer's attributes."""
    return ["id", *LAYERS[kind].fields]


class BadOrder(ValueError):
    pass


def order_fields(kind: str, raw: str | None) -> list[str]:
    """ORM ``order_by`` for ``?order_by=`` (one allow-listed column, ``-`` for descending), ties by pk."""
    raw = (raw or "id").strip()
    name = raw[1:] if raw.startswith("-") else raw
    if name not in sort_columns(kind):
        raise BadOrder(raw)
    field = "pk" if name == "id" else name
    return [("-" if raw.startswith("-") else "") + field, "pk"]


def _bounds_lonlat(qs) -> tuple[float, float, float, float] | None:
    from django.conf import settings

    extent = qs.aggregate(e=Extent("geom"))["e"]
    if not extent:
        return None
    x0, y0, x1, y1 = extent
    if x0 == x1 and y0 == y1:  # a single point: a small box around it
        x0, y0, x1, y1 = x0 - 100, y0 - 100, x1 + 100, y1 + 100
    from layers.analysis.transform import bbox_polygon

    return tuple(bbox_polygon(settings.GIS_SRID, 4326, x0, y0, x1, y1, densify=16).bounds)


def _choice_labels(kind: str) -> dict[str, dict]:
    model = LAYERS[kind].model
    out = {}
    for name in LAYERS[kind].fields:
        field = model._meta.get_field(name)
        if field.choices:
            out[name] = {k: str(v) for k, v in field.flatchoices}
    return out


def _display(value, labels: dict | None):
    if value is None:
        return ""
    if isinstance(value, bool):
        return _("是") if value else _("否")
    if labels and value in labels:
        return labels[value]
    return value


# ------------------------------------------------------------------ pages
@require_GET
def layer_browser(request: HttpRequest) -> HttpResponse:
    """The layers this user may browse, with counts; ``?kind=`` goes to that layer."""
    kind = request.GET.get("kind")
    if kind:
        if kind not in LAYERS:
            raise Http404(_("未知图层"))
        return redirect("layer_browser_kind", kind=kind)
    layers = [{"kind": k, "label": LAYERS[k].label, "color": LAYERS[k].color,
               "count": maps.visible_queryset(request.user, k).count()} for k in browsable_kinds(request.user)]
    return render(request, "layers/index.html", {"layers": layers})


@require_GET
def layer_browser_kind(request: HttpRequest, kind: str) -> HttpResponse:
    layer = _layer_or_refuse(request, kind)
    if layer is None:
        return redirect_to_login(request.get_full_path())
    q = (request.GET.get("q") or "").strip()[:Q_MAX_LEN]
    raw_order = (request.GET.get("order_by") or "id").strip()
    try:
        ordering = order_fields(kind, raw_order)
    except BadOrder:
        allowed = ", ".join(sort_columns(kind))
        return HttpResponseBadRequest(_("不能按“%(name)s”排序；可用：%(allowed)s") % {"name": raw_order[:40],
                                                                                   "allowed": allowed},
                                      content_type="text/plain; charset=utf-8")
    qs = search(kind, maps.visible_queryset(request.user, kind), q)
    page = Paginator(qs.order_by(*ordering).values_list("pk", *layer.fields), PAGE_SIZE).get_page(
        request.GET.get("page"))
    labels = _choice_labels(kind)
    model = layer.model
    rows = [{"id": r[0], "cells": [_display(v, labels.get(f)) for f, v in zip(layer.fields, r[1:])]}
            for r in page.object_list]
    current = raw_order.lstrip("-")
    descending = raw_order.startswith("-")
    columns = []
    for name in sort_columns(kind):
        label = "ID" if name == "id" else model._meta.get_field(name).verbose_name
        next_order = f"-{name}" if name == current and not descending else name
        sort = ("descending" if descending else "ascending") if name == current else "none"
        columns.append({"name": name, "label": label, "sort": sort,
                        "url": "?" + urlencode({k: v for k, v in (("q", q), ("order_by", next_order)) if v})})

    def page_url(number: int) -> str:
        return "?" + urlencode({k: v for k, v in (("q", q), ("order_by", raw_order if raw_order != "id" else ""),
                                                  ("page", number)) if v})

    can_export = can_view_layer(request.user, kind)
    exports = [{"format": f, "label": label, "url": reverse("layer_browser_export", kwargs={"kind": kind}) + "?"
                + urlencode({k: v for k, v in (("format", f), ("q", q)) if v})}
               for f, label in (("geojson", "GeoJSON"), ("gpkg", "GeoPackage"), ("csv", "CSV"), ("kml", "KML"))
               ] if can_export else []
    basemap = maps.basemap_setting()
    bounds = _bounds_lonlat(qs)
    config = {
        "kind": kind,
        "color": layer.color,
        "featuresUrl": reverse("layer_browser_features", kwargs={"kind": kind}),
        "q": q,
        "fields": list(layer.fields),
        "labels": {f: str(model._meta.get_field(f).verbose_name) for f in layer.fields},
        "bounds": maps.overlay_bounds(bounds) if bounds else None,
        "maxFeatures": MAP_MAX_FEATURES,
        "tiles": [{"url": t.url, "attribution": t.attribution, "subdomains": t.subdomains,
                   "maxZoom": t.max_zoom, "overlay": t.overlay} for t in basemap_tiles(basemap)],
        "crs": maps.overlay_crs(),
        "text": {
            "loading": _("正在加载要素……"),
            "shown": _("地图显示 %(n)s 个要素"),
            "truncated": _("地图显示 %(n)s 个要素（已达上限，请放大查看其余要素）"),
            "failed": _("要素加载失败"),
            "located": _("已定位：%(name)s"),
            "notFound": _("未找到该要素"),
        },
    }
    context = {
        "layer": layer, "kind": kind, "q": q, "order_by": raw_order, "page": page, "rows": rows,
        "columns": columns, "exports": exports, "config": config, "search_fields": search_fields(kind),
        "layers": [{"kind": k, "label": LAYERS[k].label} for k in browsable_kinds(request.user)],
        "page_urls": {"first": page_url(1), "last": page_url(page.paginator.num_pages),
                      "previous": page_url(page.previous_page_number()) if page.has_previous() else None,
                      "next": page_url(page.next_page_number()) if page.has_next() else None},
        "offline": not config["tiles"],
    }
    return render(request, "layers/browser.html", context)


def _parse_bbox(raw: str):
    try:
        west, south, east, north = (float(p) for p in raw.split(","))
    except ValueError:
        return None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        return None
    return west, south, east, north


@require_GET
def layer_features(request: HttpRequest, kind: str) -> HttpResponse:
    """GeoJSON of the browsed layer for the map: ``?bbox=`` (in the basemap's coordinates), ``?q=``, or
    ``?id=`` (one feature); at most :data:`MAP_MAX_FEATURES`, ``"truncated"`` says when cut. Shifted to
    GCJ-02 when the basemap is GCJ-02."""
    layer = _layer_or_refuse(request, kind)
    if layer is None:
        return redirect_to_login(request.get_full_path())
    qs = maps.visible_queryset(request.user, kind)
    bbox = None
    if request.GET.get("id"):
        try:
            pk = int(request.GET["id"])
        except ValueError:
            return HttpResponseBadRequest(_("id 应为整数"), content_type="text/plain; charset=utf-8")
        qs = qs.filter(pk=pk)
    else:
        qs = search(kind, qs, request.GET.get("q", ""))
        if request.GET.get("bbox"):
            bbox = _parse_bbox(request.GET["bbox"])
            if bbox is None:
                return HttpResponseBadRequest(_("bbox 应为 4 个数字：西,南,东,北（经纬度）"),
                                              content_type="text/plain; charset=utf-8")
            west, south = maps.click_lonlat(bbox[0], bbox[1])
            east, north = maps.click_lonlat(bbox[2], bbox[3])
            bbox = (west, south, east, north)
    data = selectors.layer_geojson(kind, bbox=bbox, limit=MAP_MAX_FEATURES + 1, queryset=qs.order_by("pk"))
    truncated = len(data["features"]) > MAP_MAX_FEATURES
    data["features"] = data["features"][:MAP_MAX_FEATURES]
    data = maps.overlay_geojson(data)
    data["truncated"] = truncated
    return JsonResponse(data, json_dumps_params={"ensure_ascii": False})


# ------------------------------------------------------------------ export
def export_selection(kind: str, fmt: str, out, qs):
    """Write the rows of ``qs`` (a queryset of layer ``kind``) to ``out`` with importers.exports' writers,
    exactly as ``export_layer`` writes a whole layer (WGS84 lon/lat; CSV formula escaping; GeoPackage by
    pyogrio). Returns ``(path, count)``."""
    from importers import exports

    if fmt not in EXPORT_FORMATS:
        raise exports.ExportProblem(f"未知格式 {fmt!r}")
    out = Path(out)
    n = exports.export_layer(kind, fmt, out, rows_qs=qs).count
    return out, n


@require_GET
def layer_export(request: HttpRequest, kind: str) -> HttpResponse:
    """The current selection (``?q=``) as ``?format=`` geojson, gpkg, csv or kml (a download)."""
    if kind not in LAYERS:
        raise Http404(_("未知图层"))
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not can_view_layer(request.user, kind):
        raise PermissionDenied(_("无权导出该图层"))
    fmt = request.GET.get("format", "")
    if fmt not in EXPORT_FORMATS:
        return HttpResponseBadRequest(_("格式应为 %(formats)s 之一") % {"formats": ", ".join(EXPORT_FORMATS)},
                                      content_type="text/plain; charset=utf-8")
    qs = search(kind, layer_queryset(request.user, kind), request.GET.get("q", ""))
    if qs.count() > EXPORT_MAX_ROWS:
        return HttpResponseBadRequest(
            _("所选要素超过 %(n)s 个，请先搜索缩小范围，或使用后台导出任务（/api/v1/exports/）") % {"n": EXPORT_MAX_ROWS},
            content_type="text/plain; charset=utf-8")
    content_type, suffix = EXPORT_FORMATS[fmt]
    with tempfile.TemporaryDirectory(prefix="gisportal-browse-") as tmp:
        target, _count = export_selection(kind, fmt, Path(tmp) / f"{kind}.{suffix}", qs)
        body = target.read_bytes()
    resp = HttpResponse(body, content_type=content_type)
    resp["Content-Disposition"] = f'attachment; filename="{kind}.{suffix}"'
    return resp


urlpatterns = [
    path("layers/", layer_browser, name="layer_browser"),
    path("layers/<str:kind>/", layer_browser_kind, name="layer_browser_kind"),
    path("layers/<str:kind>/features/", layer_features, name="layer_browser_features"),
    path("layers/<str:kind>/export/", layer_export, name="layer_browser_export"),
]
