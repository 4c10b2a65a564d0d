"""Portal pages. Thin: parse the request, call one selector or service, render."""
from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET

from layers import selectors
from layers.registry import LAYERS

from . import maps


def _parse_bbox(raw: str | None):
    if not raw:
        return None
    parts = raw.split(",")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise Http404(_("bbox 应为 4 个数字：西,南,东,北")) from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise Http404(_("bbox 超出经纬度范围"))
    return west, south, east, north


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    from .permissions import can_view_layer

    counts = {kind: maps.visible_queryset(request.user, kind).count()
              if kind in maps.PUBLIC_KINDS or can_view_layer(request.user, kind) else None for kind in LAYERS}
    layers = [{"kind": kind, "label": layer.label, "count": counts[kind], "color": layer.color}
              for kind, layer in LAYERS.items()]
    sample = any(m.objects.filter(is_sample=True).exists() for m in (l.model for l in LAYERS.values()))
    return render(request, "gisportal/home.html", {"layers": layers, "has_sample": sample,
                                                   "basemap": settings.GISPORTAL_BASEMAP})


@xframe_options_sameorigin  # shown in an iframe of our own pages; everything else is DENY
@require_GET
def map_frame(request: HttpRequest) -> HttpResponse:
    """The overview map (folium page, every asset local), shown in an iframe on the home page."""
    html = maps.overview_map_html(request.user)
    return HttpResponse(html, content_type="text/html; charset=utf-8")


@gzip_page  # public map data, no secret in the body (no BREACH risk): ~11x smaller for ~3 ms of CPU
@require_GET
def layer_geojson(request: HttpRequest, kind: str) -> HttpResponse:
    if kind not in LAYERS:
        raise Http404(_("未知图层"))
    bbox = _parse_bbox(request.GET.get("bbox"))
    body = selectors.layer_geojson_bytes(kind, bbox=bbox, limit=5000,
                                         queryset=maps.visible_queryset(request.user, kind))
    return HttpResponse(body, content_type="application/json")
