"""The siting page (issue 6): choose kind, objective, distance, p and candidates; see the chosen sites.

Thin: the form is parsed here, the run is ``layers.services_siting.siting_compute`` (the same path as
``manage.py site``), and a run is shown from its recorded Job, so a result is a permanent, shareable
record. A POST with generated or layer candidates queues a siting Job (``gisportal.tasks``, as the API
does) and redirects to the job's status page, which follows on to the result page when it is done; an
uploaded candidate file is run in the request (the worker never reads a path that came from a
request), then redirects to the Job's page. Exports of the chosen sites read the stored Job.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import folium
import numpy as np
import shapely
from django import forms
from django.core.exceptions import PermissionDenied
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import translation
from django.utils.translation import gettext as _g
from django.utils.translation import gettext_lazy as _
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods

from layers import models, services_siting as svc

from . import tasks
from .mapping import make_map, render_map_html, safe_tooltip
from .maps import basemap_setting
from .permissions import can_run_analysis
from .views_jobs import job_wait_redirect

PERMISSION = "layers.view_shelter"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


class SitingForm(forms.Form):
    kind = forms.ChoiceField(label=_("设施类别"), choices=[("shelters", _("应急避难场所")),
                                                           ("fire_stations", _("消防站"))])
    objective = forms.ChoiceField(label=_("目标"), choices=[
        ("lscp", _("最少新增，覆盖全部可覆盖人口（LSCP）")), ("mclp", _("新增 p 处，覆盖人口最多（MCLP）")),
        ("cmclp", _("新增 p 处，考虑容量（避难场所）"))])
    radius_m = forms.FloatField(label=_("服务半径（米）"), initial=500, min_value=1,
                                help_text=_("避难场所（紧急）500 米：GB 50413-2007 §8.2.10；微型消防站 500 米：3 分钟到场"))
    p = forms.IntegerField(label=_("新增数量 p"), required=False, min_value=1, max_value=500)
    candidates = forms.ChoiceField(label=_("候选选址"), initial="generated", choices=[
        ("generated", _("按间距生成（网格内，避开现有避难场所）")), ("layer", _("候选选址图层")),
        ("file", _("上传 GeoJSON 点文件（经纬度）"))])
    candidates_file = forms.FileField(label=_("候选文件"), required=False)
    exclude_file = forms.FileField(label=_("排除区域文件"), required=False,
                                   help_text=_("可选：GeoJSON 面（经纬度），如水域、保护用地；其中的候选点不选"))
    spacing_m = forms.FloatField(label=_("生成间距（米）"), initial=200, min_value=20)
    area = forms.CharField(label=_("区域代码"), required=False, max_length=400,
                           help_text=_("区县/街道/社区/网格代码，逗号分隔；留空为全市"))
    existing = forms.BooleanField(label=_("计入现有设施"), required=False, initial=True)
    capacity = forms.FloatField(label=_("候选容量（人）"), required=False, min_value=1,
                                help_text=_("容量约束时，没有容量的候选点按此计算（默认 2000 人）"))
    method = forms.ChoiceField(label=_("距离"), initial="euclidean",
                               choices=[("euclidean", _("直线距离")), ("network", _("沿道路"))])
    demand = forms.ChoiceField(label=_("需求点"), initial="raster", required=False, choices=[
        ("raster", _("人口栅格单元（无栅格时为网格内 100 米点阵）")), ("grids", _("网格内 100 米点阵")),
        ("grid_points", _("每个网格一个代表点（网格人口）"))])
    curve_k = forms.IntegerField(label=_("曲线：新增 1…K 处"), required=False, min_value=1, max_value=50, initial=10)
    time_limit_s = forms.FloatField(label=_("时间限制（秒）"), initial=60, min_value=1, max_value=600)

    def clean(self):
        data = super().clean()
        obj = data.get("objective")
        if obj in ("mclp", "cmclp") and not data.get("p"):
            self.add_error("p", _("该目标需要新增数量 p"))
        if obj == "lscp":
            data["p"] = None
        if obj == "cmclp" and data.get("kind") != "shelters":
            self.add_error("objective", _("容量约束只适用于避难场所"))
        if obj != "cmclp":
            data["capacity"] = None
        data["demand"] = data.get("demand") or "raster"  # a form without the field: the default
        if data.get("candidates") == "file":
            f = data.get("candidates_file")
            if f is None:
                self.add_error("candidates_file", _("请选择候选文件"))
            elif f.size > MAX_UPLOAD_BYTES:
                self.add_error("candidates_file", _("候选文件过大"))
        ex = data.get("exclude_file")
        if ex is not None and ex.size > MAX_UPLOAD_BYTES:
            self.add_error("exclude_file", _("排除区域文件过大"))
        return data


def _lang() -> str:
    return "en" if (translation.get_language() or "").startswith("en") else "zh"


def _job(pk: int) -> models.Job:
    job = get_object_or_404(models.Job, pk=pk, kind=models.Job.Kind.SITING)
    if job.status != models.Job.Status.DONE or not job.result:
        raise Http404(_g("该分析没有结果"))
    return job


def _recent():
    return list(models.Job.objects.filter(kind=models.Job.Kind.SITING, status=models.Job.Status.DONE)
                .order_by("-pk").values("pk", "params", "created_at", "user__username")[:10])


@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_http_methods(["GET", "POST"])
def siting_page(request: HttpRequest) -> HttpResponse:
    """GET: the form (and the latest runs); POST: run, then redirect to the recorded result."""
    if request.method == "POST" and not can_run_analysis(request.user):
        raise PermissionDenied  # viewing runs: view_shelter; running them: emergency officials, admins
    if request.method == "POST":
        form = SitingForm(request.POST, request.FILES)
        if form.is_valid():
            d = form.cleaned_data
            if d["candidates"] != "file" and d.get("exclude_file") is None:
                # queued: the worker runs it, the status page follows it
                params = {"kind": d["kind"], "objective": d["objective"], "radius_m": d["radius_m"],
                          "p": d["p"], "candidates": None if d["candidates"] == "generated" else "layer",
                          "spacing_m": d["spacing_m"], "area": d["area"] or None,
                          "existing": bool(d["existing"]), "capacity": d["capacity"], "method": d["method"],
                          "demand": d["demand"], "time_limit_s": d["time_limit_s"], "curve_k": d["curve_k"]}
                job = tasks.job_queue(models.Job.Kind.SITING, params, user=request.user)
                tasks.job_enqueue(job)
                return job_wait_redirect(job)
            # An uploaded file is run here: the worker never reads a path from a request.
            with tempfile.TemporaryDirectory(prefix="gisportal-siting-") as tmp:
                exclude = None
                if d.get("exclude_file") is not None:
                    (Path(tmp) / "exclude").mkdir()  # its own folder: the two uploads may share a name
                    exclude = Path(tmp) / "exclude" / Path(d["exclude_file"].name or "exclude.geojson").name
                    with open(exclude, "wb") as fh:
                        for chunk in d["exclude_file"].chunks():
                            fh.write(chunk)
                cand = None if d["candidates"] == "generated" else "layer"
                if d["candidates"] == "file":
                    name = Path(d["candidates_file"].name or "candidates.geojson").name
                    cand = Path(tmp) / name
                    with open(cand, "wb") as fh:
                        for chunk in d["candidates_file"].chunks():
                            fh.write(chunk)
                try:
                    doc = svc.siting_compute(
                        kind=d["kind"], objective=d["objective"], radius_m=d["radius_m"], p=d["p"],
                        candidates=str(cand) if isinstance(cand, Path) else cand, spacing_m=d["spacing_m"],
                        area=d["area"] or None, existing=bool(d["existing"]), capacity=d["capacity"],
                        method=d["method"], time_limit_s=d["time_limit_s"], curve_k=d["curve_k"],
                        demand=d["demand"], exclude=str(exclude) if exclude else None, user=request.user)
                except svc.SitingInputError as exc:
                    form.add_error(None, exc.message(_lang()))
                else:
                    return redirect("siting_result", pk=doc["job_id"])
    else:
        form = SitingForm()
    return render(request, "siting/page.html", {"form": form, "recent": _recent()})


@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_GET
def siting_result(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(pk)
    doc = job.result
    p = job.params
    form = SitingForm(initial={
        "kind": p.get("kind"), "objective": p.get("objective"), "radius_m": p.get("radius_m"), "p": p.get("p"),
        "candidates": p.get("candidates") if p.get("candidates") in ("generated", "layer") else "file",
        "spacing_m": p.get("spacing_m") or 200, "area": ",".join(p.get("area") or []),
        "existing": p.get("existing"), "capacity": p.get("capacity"), "method": p.get("method"),
        "demand": p.get("demand") or "raster", "curve_k": p.get("curve_k"), "time_limit_s": p.get("time_limit_s")})
    ctx = {"form": form, "job": job, "doc": doc, "recent": _recent(), "headline": _headline(doc),
           "curve_svg": curve_svg(doc),
           "exports": [(label, reverse("siting_export", kwargs={"pk": job.pk, "fmt": fmt}))
                       for label, fmt in [("GeoJSON", "geojson"), ("GeoPackage", "gpkg"), ("CSV", "csv"),
                                          ("KML", "kml"), (_g("完整结果 JSON"), "json")]]}
    return render(request, "siting/page.html", ctx)


def _headline(doc: dict) -> list[tuple[str, str, str]]:
    """(label, key, text) rows of the headline figures."""
    gap = "-" if doc.get("gap") is None else f"{doc['gap']:.2%}"
    status = {"optimal": _g("已证明最优"), "time_limit": _g("达到时间限制"), "heuristic": _g("启发式")}.get(
        doc["status"], doc["status"])
    solver = {"milp": "HiGHS MILP", "heuristic": _g("启发式解")}.get(doc["solver"], doc["solver"])
    total = doc["population_total"] or 0.0
    before = (_g("新增前覆盖"), "population_existing",
              f"{doc['population_existing']:,.0f}（{doc['share_existing']:.1%}）")
    if doc["objective"] == "cmclp" and doc.get("population_served_before") is not None:
        v = doc["population_served_before"]  # served, like the row after it (not merely within reach)
        before = (_g("新增前可安置"), "population_served_before", f"{v:,.0f}（{v / total if total else 0.0:.1%}）")
    rows = [(_g("新增选址"), "count", f"{doc['count']}"),
            (_g("总人口"), "population_total", f"{doc['population_total']:,.0f}"),
            before,
            (_g("新增后覆盖") if doc["objective"] != "cmclp" else _g("新增后可安置"), "population_covered",
             f"{doc['population_covered']:,.0f}（{doc['share_covered']:.1%}）"),
            (_g("无法覆盖的人口"), "uncoverable_population", f"{doc['uncoverable_population']:,.0f}"),
            (_g("求解状态"), "status", f"{status}（{solver}）"),
            (_g("最优间隙"), "gap", gap), (_g("求解时间（秒）"), "seconds", f"{doc['seconds']:.2f}")]
    return rows


def curve_svg(doc: dict, width: int = 340, height: int = 170) -> str:
    """The k-curve (k = 0 … K new sites vs population covered) as a small inline SVG (no JS)."""
    base = doc.get("curve_base")  # k = 0; runs recorded before it existed: the covered population
    pts = [(0, float(doc["population_existing"] if base is None else base))] + [(c["k"], float(c["population_covered"]))
                                                      for c in doc.get("curve") or []]
    if len(pts) < 2:
        return ""
    left, right, top, bottom = 58, 10, 10, 28
    kmax = max(k for k, _ in pts)
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    sx = lambda k: left + (width - left - right) * k / kmax  # noqa: E731
    sy = lambda v: top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    line = " ".join(f"{sx(k):.1f},{sy(v):.1f}" for k, v in pts)
    dots = "".join(f'<circle cx="{sx(k):.1f}" cy="{sy(v):.1f}" r="2.5"><title>k={k}: {v:,.0f}</title></circle>'
                   for k, v in pts)
    ticks = "".join(f'<text x="{sx(k):.1f}" y="{height - 12}" text-anchor="middle">{k}</text>'
                    for k, _ in pts if kmax <= 12 or k % max(1, kmax // 10) == 0)
    y_labels = (f'<text x="{left - 4}" y="{sy(hi) + 4:.1f}" text-anchor="end">{hi:,.0f}</text>'
                f'<text x="{left - 4}" y="{sy(lo) + 4:.1f}" text-anchor="end">{lo:,.0f}</text>')
    title = _g("新增数量 k 与覆盖人口")
    return (f'<svg class="k-curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{title}" font-size="10" fill="#333">'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>'
            f'<polyline points="{line}" fill="none" stroke="#cf1c90" stroke-width="2"/>{dots}{ticks}{y_labels}'
            f'<text x="{(left + width - right) / 2:.0f}" y="{height - 1}" text-anchor="middle">k</text></svg>')


# ------------------------------------------------------------------ map
def siting_map_html(doc: dict) -> str:
    m = make_map(static_url=static(""), basemap=basemap_setting())
    radius = float(doc["radius_m"])
    model = models.Shelter if doc["kind"] == "shelters" else models.FireStation
    lats, lons = [], []
    if doc.get("existing"):
        group = folium.FeatureGroup(name=_g("现有设施"))
        qs = model.objects.all()  # the sites the run counted: its level (shelters) or kind filter
        if doc.get("level") and doc["kind"] == "shelters":
            qs = qs.filter(level=doc["level"])
        elif doc.get("facility_kind") and doc["kind"] != "shelters":
            qs = qs.filter(kind=doc["facility_kind"])
        rows = list(qs.order_by("code").values_list("code", "name", "geom"))
        geoms = shapely.from_wkb([bytes(g.wkb) for _, _, g in rows])
        to_ll = svc._to_lonlat()  # one pyproj transformer for all (GDAL per geometry took ~50 ms each)
        rep = shapely.get_coordinates(shapely.point_on_surface(geoms)) if rows else np.empty((0, 2))
        lon, lat = to_ll.transform(rep[:, 0], rep[:, 1])
        for (code, name, _), x, y in zip(rows, np.atleast_1d(lon).tolist(), np.atleast_1d(lat).tolist()):
            folium.CircleMarker([y, x], radius=4, color="#555555", weight=1, fill=True, fill_opacity=0.6,
                                fill_color="#999999", tooltip=safe_tooltip(f"{name} ({code})")).add_to(group)
        if rows:  # the coverage before the new sites: one outline of every site's reach, measured from its
            # edge (a shelter is a polygon), as the analysis measures it
            reach_before = svc.lonlat_geojson(shapely.union_all(shapely.buffer(geoms, radius, quad_segs=8)),
                                              radius / 100.0)
            folium.GeoJson(reach_before, name=_g("现有服务范围"), style_function=lambda _f: {
                "color": "#777777", "weight": 1, "fillColor": "#777777", "fillOpacity": 0.08}).add_to(m)
        group.add_to(m)
    reach = folium.FeatureGroup(name=_g("新址服务范围"))
    new = folium.FeatureGroup(name=_g("新增选址") + f" ({doc['count']})")
    for i, s in enumerate(doc["selected"], start=1):
        lats.append(s["lat"])
        lons.append(s["lon"])
        folium.Circle([s["lat"], s["lon"]], radius=radius, color="#cf1c90", weight=1, fill=True,
                      fill_opacity=0.08).add_to(reach)
        text = f"#{i} {s['code']}\n" + _g("新增覆盖人口") + f": {s['added_population']:,.0f}"
        if s.get("capacity") is not None:
            text += "\n" + _g("容量") + f": {s['capacity']:,.0f}"
        folium.CircleMarker([s["lat"], s["lon"]], radius=7, color="#222222", weight=1, fill=True, fill_opacity=0.95,
                            fill_color="#cf1c90", tooltip=safe_tooltip(text)).add_to(new)
    area = svc.area_outline(doc.get("area") or [])
    if area is not None:  # the units the run was limited to (the whole city draws none)
        folium.GeoJson(area, name=_g("分析范围"), style_function=lambda _f: {
            "color": "#1f4e79", "weight": 2, "fill": False}).add_to(m)
    if doc.get("exclude_zones"):  # where the run let no new site go
        folium.GeoJson(doc["exclude_zones"], name=_g("排除区域"), style_function=lambda _f: {
            "color": "#b00020", "weight": 1.5, "dashArray": "4 3", "fillColor": "#b00020",
            "fillOpacity": 0.12}).add_to(m)
    reach.add_to(m)
    new.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    ext = doc.get("extent_lonlat")  # the study area (older runs have none), and every new site's reach
    if ext:
        lons += [ext[0], ext[2]]
        lats += [ext[1], ext[3]]
    if lats:
        pad = radius / 111_000.0
        m.fit_bounds([[min(lats) - pad, min(lons) - pad], [max(lats) + pad, max(lons) + pad]])
    return render_map_html(m)


@xframe_options_sameorigin  # shown in an iframe of our own pages; everything else is DENY
@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_GET
def siting_map(request: HttpRequest, pk: int) -> HttpResponse:
    """The result's map as a standalone folium page (every asset local), shown in an iframe."""
    return HttpResponse(siting_map_html(_job(pk).result), content_type="text/html; charset=utf-8")


# ------------------------------------------------------------------ exports
@login_required
@permission_required(PERMISSION, raise_exception=True)
@require_GET
def siting_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The chosen sites as ``geojson`` (EPSG:4326), ``gpkg`` (layer ``sites``), ``csv``, ``kml``, or ``json``
    (the whole run)."""
    job = _job(pk)
    doc = job.result
    name = f"siting-{job.pk}"
    if fmt == "geojson":
        resp = JsonResponse(svc.result_geojson(doc), json_dumps_params={"ensure_ascii": False})
        resp["Content-Type"] = "application/geo+json"
    elif fmt == "csv":
        # a BOM so that Excel opens Chinese names as UTF-8
        resp = HttpResponse("\ufeff" + svc.result_csv(doc), content_type="text/csv; charset=utf-8")
    elif fmt == "kml":
        resp = HttpResponse(svc.result_kml(doc), content_type="application/vnd.google-earth.kml+xml; charset=utf-8")
    elif fmt == "gpkg":
        with tempfile.TemporaryDirectory(prefix="gisportal-siting-") as tmp:  # mode 0700
            out = Path(tmp) / f"{name}.gpkg"
            svc.result_gpkg(doc, out)
            resp = HttpResponse(out.read_bytes(), content_type="application/geopackage+sqlite3")
    elif fmt == "json":
        resp = JsonResponse({"job": {"id": job.pk, "params": job.params, "data_version": job.data_version,
                                     "created_at": job.created_at.isoformat()}, "result": doc},
                            json_dumps_params={"ensure_ascii": False})
    else:
        raise Http404(_g("未知的导出格式"))
    resp["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return resp


#: Add to gisportal/urls.py: ``urlpatterns += views_siting.urlpatterns``.
urlpatterns = [
    path("siting/", siting_page, name="siting"),
    path("siting/jobs/<int:pk>/", siting_result, name="siting_result"),
    path("siting/jobs/<int:pk>/map/", siting_map, name="siting_map"),
    path("siting/jobs/<int:pk>.<str:fmt>", siting_export, name="siting_export"),
]

__all__ = ["SitingForm", "curve_svg", "siting_map_html", "urlpatterns"]
