"""The coverage page (issue 5): choose kind, level, distance, method, capacity; see the result on a map.

Thin: the form is parsed and checked here (``coverage_check``: bad input is shown on the form and
records nothing), then the run is queued as a Job for the background worker, like the API does
(``gisportal.tasks``; the task calls ``layers.services_coverage.coverage_compute``, the same path as
``manage.py coverage``). The browser goes to the job's status page (progress, cancel), which follows on
to the result page when the job is done. A run is shown from its recorded Job, so a result page is a
permanent, shareable record. Exports (GeoJSON, CSV, JSON, GeoPackage, a PDF summary) read the Job's
stored figures.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import folium
from django import forms
from django.core.exceptions import PermissionDenied
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _g
from django.utils.translation import gettext_lazy as _
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods

from layers import models, services_coverage as svc
from layers.registry import LAYERS

from . import tasks
from .mapping import SafeGeoJsonTooltip, make_map, render_map_html, safe_tooltip
from .maps import basemap_setting
from .permissions import can_run_analysis
from .views_jobs import job_wait_redirect

PERMISSION = "layers.view_shelter"


class CoverageForm(forms.Form):
    kind = forms.ChoiceField(label=_("设施类别"), choices=[
        ("shelters", _("应急避难场所")), ("fire_stations", _("消防站")), ("facilities", _("社区服务设施"))])
    level = forms.ChoiceField(label=_("避难场所级别"), required=False,
                              choices=[("", _("全部级别"))] + list(models.Shelter.Level.choices))
    facility_kind = forms.ChoiceField(
        label=_("设施类型"), required=False,
        choices=[("", _("全部类型"))] + list(models.FireStation.Kind.choices)
        + [c for c in models.ServiceFacility.Kind.choices])
    radius_m = forms.FloatField(label=_("服务半径（米）"), required=False, min_value=0,
                                help_text=_("留空则按设施自身设定的服务半径，未设定的按规则：避难场所按级别，消防站 500 米，"
                                            "生活圈设施按类型；填写则对全部设施生效"))
    method = forms.ChoiceField(label=_("距离"), initial="euclidean",
                               choices=[("euclidean", _("直线距离")), ("network", _("沿道路"))])
    demand = forms.ChoiceField(label=_("人口"), initial="raster",
                               choices=[("raster", _("人口栅格")), ("grids", _("网格人口（均匀分布）"))])
    capacity = forms.BooleanField(label=_("考虑容量（避难场所）"), required=False)

    def clean(self):
        data = super().clean()
        kind, fk = data.get("kind"), data.get("facility_kind")
        if kind == "shelters" and fk:
            self.add_error("facility_kind", _("避难场所请按级别筛选"))
        if kind != "shelters" and data.get("level"):
            self.add_error("level", _("级别只适用于避难场所"))
        if kind != "shelters" and data.get("capacity"):
            self.add_error("capacity", _("容量只适用于避难场所"))
        valid = {"fire_stations": models.FireStation.Kind.values,
                 "facilities": models.ServiceFacility.Kind.values}.get(kind)
        if fk and valid is not None and fk not in valid:
            self.add_error("facility_kind", _("该类别没有这种设施类型"))
        return data


def _lang() -> str:
    return "en" if (translation.get_language() or "").startswith("en") else "zh"


def _job(pk: int) -> models.Job:
    job = get_object_or_404(models.Job, pk=pk, kind=models.Job.Kind.COVERAGE)
    if job.status != models.Job.Status.DONE or not job.result:
        raise Http404(_g("该分析没有结果"))
    return job


@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_http_methods(["GET", "POST"])
def coverage_page(request: HttpRequest) -> HttpResponse:
    """GET: the form (and the latest runs); POST: check, queue the run, then follow its progress."""
    if request.method == "POST" and not can_run_analysis(request.user):
        raise PermissionDenied  # viewing runs: view_shelter; running them: emergency officials, admins
    if request.method == "POST":
        form = CoverageForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            params = {"kind": d["kind"], "radius_m": d["radius_m"], "level": d["level"] or None,
                      "facility_kind": d["facility_kind"] or None, "method": d["method"], "demand": d["demand"],
                      "capacity": bool(d["capacity"])}
            try:
                svc.coverage_check(**params)
            except svc.CoverageInputError as exc:
                form.add_error(None, exc.message(_lang()))
            else:
                job = tasks.job_queue(models.Job.Kind.COVERAGE, params, user=request.user)
                tasks.job_enqueue(job)
                return job_wait_redirect(job)
    else:
        form = CoverageForm()
    return render(request, "coverage/page.html", {"form": form, "recent": _recent()})


def _recent():
    return list(models.Job.objects.filter(kind=models.Job.Kind.COVERAGE, status=models.Job.Status.DONE)
                .order_by("-pk").values("pk", "params", "created_at", "user__username")[:10])


@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_GET
def coverage_result(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(pk)
    doc = job.result
    p = job.params
    form = CoverageForm(initial={"kind": p.get("kind"), "level": p.get("level") or "",
                                 "facility_kind": p.get("facility_kind") or "", "radius_m": p.get("radius_m"),
                                 "method": p.get("method"), "demand": p.get("demand"),
                                 "capacity": p.get("capacity")})
    facilities = sorted(doc["facilities"], key=lambda f: -(f["load"] if f["load"] is not None else f["served"]))
    radius = doc["radius_m"]
    radius_text = f"{radius:g}" if isinstance(radius, (int, float)) else "，".join(f"{k} {v:g}" for k, v in radius.items())
    if doc.get("facility_radius_overrides"):
        radius_text += _g("（%(n)s 个设施单独设定）") % {"n": doc["facility_radius_overrides"]}
    ctx = {
        "form": form, "job": job, "doc": doc, "recent": _recent(),
        "radius_text": radius_text,
        "uncovered": doc["population_total"] - doc["population_covered"],
        "has_capacity": "population_served" in doc,
        "facilities_top": facilities[:25], "n_facilities": len(facilities),
        "zero_grids": sum(1 for g in doc["grids"] if g["population"] > 0 and g["covered"] == 0),
        "headline": _headline(doc),
        "exports": [(label, reverse("coverage_export", kwargs={"pk": job.pk, "fmt": fmt}) + q)
                    for label, fmt, q in [
                        (_g("网格 GeoJSON"), "geojson", ""), (_g("设施 GeoJSON"), "geojson", "?layer=facilities"),
                        (_g("网格 CSV"), "csv", ""), (_g("设施 CSV"), "csv", "?layer=facilities"),
                        (_g("街道 CSV"), "csv", "?layer=streets"), (_g("社区 CSV"), "csv", "?layer=communities"),
                        (_g("完整结果 JSON"), "json", ""),
                        (_g("GeoPackage（网格和设施两个图层）"), "gpkg", ""), (_g("PDF 摘要报告"), "pdf", "")]],
    }
    return render(request, "coverage/page.html", ctx)


def _headline(doc: dict) -> list[tuple[str, str, str]]:
    """(label, key, text) rows of the headline figures, numbers formatted for reading."""
    rows = [(_g("总人口"), "population_total", f"{doc['population_total']:,.0f}"),
            (_g("覆盖人口"), "population_covered", f"{doc['population_covered']:,.0f}"),
            (_g("覆盖比例"), "share_covered", f"{doc['share_covered']:.1%}"),
            (_g("未覆盖人口"), "population_uncovered",
             f"{doc['population_total'] - doc['population_covered']:,.0f}")]
    if "population_served" in doc:
        rows += [(_g("可安置人口"), "population_served", f"{doc['population_served']:,.0f}"),
                 (_g("容量不足"), "population_short", f"{doc['population_short']:,.0f}"),
                 (_g("服务范围外"), "population_unreachable", f"{doc['population_unreachable']:,.0f}")]
    return rows


# ------------------------------------------------------------------ map
SHARE_COLORS = ["#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641"]  # 0 .. 1, red = nobody covered


def share_color(share: float | None) -> str:
    """Red for 0 (uncovered), through yellow, to green for 1 (fully covered)."""
    if share is None:
        return "#bbbbbb"
    if share <= 0:
        return SHARE_COLORS[0]
    return SHARE_COLORS[min(4, 1 + int(share * 4 - 1e-9))] if share < 1 else SHARE_COLORS[4]


def load_color(load: float | None) -> str:
    """Shelters by load = served ÷ capacity: green < 0.8, orange < 1, red when full or over."""
    if load is None:
        return "#3969ac"
    return "#1a9641" if load < 0.8 else "#fd8d3c" if load < 1.0 - 1e-9 else "#d7191c"


def coverage_map_html(doc: dict) -> str:
    m = make_map(static_url=static(""), basemap=basemap_setting())
    grids = svc.result_grid_features(doc, simplify_m=svc.MAP_SIMPLIFY_M)
    grids["features"] = [f for f in grids["features"] if f["geometry"] is not None]
    shapes = svc.coverage_geometries(doc)
    fields = ["code", "population", "covered", "share"] + (["served"] if "population_served" in doc else [])
    aliases = [_g("网格"), _g("人口"), _g("覆盖人口"), _g("覆盖比例")] + ([_g("已安置")] if len(fields) > 4 else [])
    if grids["features"]:
        folium.GeoJson(
            grids, name=_g("网格覆盖比例"),
            style_function=lambda f: {"color": "#555555", "weight": 0.5, "fillOpacity": 0.55,
                                      "fillColor": share_color(f["properties"].get("share"))},
            tooltip=SafeGeoJsonTooltip(fields=fields, aliases=aliases, labels=True),
        ).add_to(m)
    if shapes["service_areas"] and shapes["service_areas"]["features"]:
        folium.GeoJson(shapes["service_areas"], name=_g("服务范围"), show=False,
                       style_function=lambda f: {"color": "#2c7fb8", "weight": 1, "fillOpacity": 0.08}).add_to(m)
    if shapes["uncovered"] is not None:
        folium.GeoJson({"type": "Feature", "properties": {},
                        "geometry": shapes["uncovered"].__geo_interface__}, name=_g("未覆盖区域"),
                       style_function=lambda f: {"color": "#d7191c", "weight": 0, "fillColor": "#d7191c",
                                                 "fillOpacity": 0.35}).add_to(m)
    sites = svc.result_facility_features(doc)
    group = folium.FeatureGroup(name=f"{LAYERS[doc['kind']].label} ({len(sites['features'])})")
    for f in sites["features"]:
        if f["geometry"] is None:
            continue
        lon, lat = f["geometry"]["coordinates"][:2]
        p = f["properties"]
        text = f"{p['name']} ({p['code']})\n" + _g("覆盖人口") + f": {p['population_in_reach']:,.0f}"
        if p.get("capacity") is not None:
            text += "\n" + _g("容量") + f": {p['capacity']:,.0f}, " + _g("负荷") + f": {p['load']:.0%}"
        folium.CircleMarker([lat, lon], radius=6, color="#222222", weight=1, fill=True, fill_opacity=0.9,
                            fill_color=load_color(p.get("load")), tooltip=safe_tooltip(text)).add_to(group)
    group.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    lats = [c[1] for f in sites["features"] if f["geometry"] for c in [f["geometry"]["coordinates"]]]
    lons = [c[0] for f in sites["features"] if f["geometry"] for c in [f["geometry"]["coordinates"]]]
    if grids["features"]:
        import shapely
        b = shapely.total_bounds(shapely.from_geojson(json.dumps(grids)))
        m.fit_bounds([[b[1], b[0]], [b[3], b[2]]])
    elif lats:
        m.fit_bounds([[min(lats), min(lons)], [max(lats), max(lons)]])
    return render_map_html(m)


@xframe_options_sameorigin  # shown in an iframe of our own pages; everything else is DENY
@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_GET
def coverage_map(request: HttpRequest, pk: int) -> HttpResponse:
    """The result's map as a standalone folium page (every asset local), shown in an iframe."""
    return HttpResponse(coverage_map_html(_job(pk).result), content_type="text/html; charset=utf-8")


# ------------------------------------------------------------------ exports
@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_GET
def coverage_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """``geojson`` (grids, or ``?layer=facilities``; EPSG:4326), ``csv`` (grids, facilities, districts,
    streets, communities), ``json`` (the whole result document), ``gpkg`` (layers ``grids`` and
    ``facilities`` in one GeoPackage, EPSG:4326 like the layer exports) or ``pdf`` (an A4 summary)."""
    job = _job(pk)
    doc = job.result
    layer = request.GET.get("layer", "grids")
    name = f"coverage-{job.pk}-{layer}"
    if fmt == "geojson":
        if layer not in ("grids", "facilities"):
            raise Http404(_g("GeoJSON 只提供网格和设施"))
        data = svc.result_grid_features(doc) if layer == "grids" else svc.result_facility_features(doc)
        resp = JsonResponse(data, json_dumps_params={"ensure_ascii": False})
        resp["Content-Type"] = "application/geo+json"
    elif fmt == "csv":
        if layer not in ("grids", "facilities", "districts", "streets", "communities"):
            raise Http404(_g("未知的导出图层"))
        # a BOM so that Excel opens the Chinese names as UTF-8
        resp = HttpResponse("\ufeff" + svc.result_csv(doc, layer), content_type="text/csv; charset=utf-8")
    elif fmt == "json":
        name = f"coverage-{job.pk}"
        resp = JsonResponse({"job": {"id": job.pk, "params": job.params, "data_version": job.data_version,
                                     "created_at": job.created_at.isoformat()}, "result": doc},
                            json_dumps_params={"ensure_ascii": False})
    elif fmt == "gpkg":
        name = f"coverage-{job.pk}"
        with tempfile.TemporaryDirectory(prefix="gisportal-coverage-") as tmp:  # mode 0700
            out = Path(tmp) / f"{name}.gpkg"
            svc.result_gpkg(doc, out)
            resp = HttpResponse(out.read_bytes(), content_type="application/geopackage+sqlite3")
    elif fmt == "pdf":
        name = f"coverage-{job.pk}"
        when = timezone.localtime(job.finished_at or job.created_at).strftime("%Y-%m-%d %H:%M")
        pdf = svc.result_pdf(doc, job_id=job.pk, created_at=when, user=job.user.username if job.user else "",
                             data_version=job.data_version, lang=_lang())
        resp = HttpResponse(pdf, content_type="application/pdf")
    else:
        raise Http404(_g("未知的导出格式"))
    resp["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return resp


#: Add to gisportal/urls.py: ``urlpatterns += views_coverage.urlpatterns``.
urlpatterns = [
    path("coverage/", coverage_page, name="coverage"),
    path("coverage/jobs/<int:pk>/", coverage_result, name="coverage_result"),
    path("coverage/jobs/<int:pk>/map/", coverage_map, name="coverage_map"),
    path("coverage/jobs/<int:pk>.<str:fmt>", coverage_export, name="coverage_export"),
]
