"""The housing project review pages (issue 4): submit, check, save, decide, resubmit, print.

Thin: a submission is read by ``layers.services_review.parse_submission`` / ``parse_path`` and checked by
``review_submission`` (the path ``manage.py review_project`` takes); ``save_review`` stores project,
facilities and report, ``layers.services_resubmit.save_resubmission`` a new version of a stored project.
A submission comes as a file (GeoJSON, Shapefile .zip, GeoPackage, DXF), as pasted GeoJSON, or drawn on
the list page's map (``static/gisportal/review_draw.js`` writes a GeoJSON FeatureCollection into the
form's hidden ``drawn`` field; it is parsed like any upload). The map (folium) and the PDF (``layers.analysis.report_pdf``) draw the same
:class:`~layers.analysis.report_pdf.ReviewMapLayers`.

Access: planners (``layers.add_housingproject``) submit and see their own projects; admins (superusers
or the ``admin`` group) see every project. Workflow actions need ``layers.change_housingproject``:
submitted -> in_review (start) -> approved / rejected; a rejected or submitted project may be resubmitted
(back to submitted). Every action is an append-only :class:`~layers.models_review.ReviewDecision` row
with the user, the time and the per-check comments; optimistic locking on ``HousingProject.version``.

A saved project's map and PDF are drawn from the project as stored (its site and facilities) against
the layers as they are now; the table is the stored report.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import folium
import numpy as np
import shapely
from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _g
from django.utils.translation import gettext_lazy as _
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from importers.crs import ALLOWED_SRIDS
from layers import models, services_review
from layers.analysis import rules as R
from layers.analysis.report_pdf import (FACILITY_COLOR, FIRE_COLOR, SHELTER_COLOR, SITE_COLOR, STATUS_COLORS,
                                        ReviewMapLayers, format_value, review_map_layers, review_pdf,
                                        status_label)
from layers.analysis.submission import MAX_BYTES, Submission, SubmissionError
from layers.models_review import ReviewDecision, ReviewReport
from layers.selectors import geoms_to_lonlat
from layers.services_resubmit import RESUBMIT_FROM, ResubmitProblem, save_resubmission
from layers.services_decisions import DecisionProblem
from layers.services_decisions import review_decide as review_decide_service

from .mapping import basemap_tiles, make_map, render_map_html, safe_tooltip
from .maps import basemap_setting, drawn_geojson_text, overlay_geojson

SUBMIT_PERMISSION = "layers.add_housingproject"
VIEW_PERMISSION = "layers.view_housingproject"
DECIDE_PERMISSION = "layers.change_housingproject"
Status = models.HousingProject.Status
Action = ReviewDecision.Action

#: action -> (allowed from statuses, new status); ``comment`` keeps the status.
TRANSITIONS = {
    Action.IN_REVIEW: ((Status.SUBMITTED,), Status.IN_REVIEW),
    Action.APPROVED: ((Status.IN_REVIEW,), Status.APPROVED),
    Action.REJECTED: ((Status.IN_REVIEW,), Status.REJECTED),
    Action.COMMENT: (tuple(Status.values), None),
}


def _lang() -> str:
    return "en" if (translation.get_language() or "").startswith("en") else "zh"


def is_admin(user) -> bool:
    return bool(user.is_superuser or user.groups.filter(name="admin").exists())


def projects_for(user):
    """The projects this user may see: all for admins, their own for everyone else."""
    qs = models.HousingProject.objects.select_related("district", "submitted_by")
    return qs if is_admin(user) else qs.filter(submitted_by=user)


def _project(request, pk: int) -> models.HousingProject:
    return get_object_or_404(projects_for(request.user), pk=pk)


# ------------------------------------------------------------------ submission input
#: Upload suffixes read by ``services_review.parse_path`` (GeoJSON is read in memory).
FILE_SUFFIXES = (".zip", ".gpkg", ".dxf")
GEOJSON_SUFFIXES = (".geojson", ".json", "")


class SubmissionForm(forms.Form):
    """One submission, from exactly one source: an uploaded file, pasted GeoJSON, or the features drawn
    on the page's map (``drawn``: a GeoJSON FeatureCollection in lon/lat that the page's script writes).
    All three are parsed by ``services_review`` (``parse_submission`` / ``parse_path``), so every refusal
    says the same thing whichever way the project came in."""

    file = forms.FileField(label=_("报审文件（GeoJSON、Shapefile 压缩包 .zip、GeoPackage、DXF）"), required=False,
                           widget=forms.ClearableFileInput(attrs={
                               "accept": ".geojson,.json,.zip,.gpkg,.dxf"}))
    text = forms.CharField(label=_("或粘贴 GeoJSON"), required=False,
                           widget=forms.Textarea(attrs={"rows": 6, "cols": 48, "spellcheck": "false"}))
    srid = forms.IntegerField(label=_("坐标系 EPSG（可选）"), required=False,
                              help_text=_("留空：按文件的 crs，否则为经纬度（EPSG:4326/4490）；DXF 文件必须填写"))
    drawn = forms.CharField(required=False, widget=forms.HiddenInput(attrs={"id": "id_drawn"}),
                            max_length=MAX_BYTES)
    # The site's properties: what a drawing carries (the page's script copies them into the drawn site),
    # and for a .zip / .gpkg / .dxf upload what fills the properties the file leaves empty
    # (``parse_path(attrs=...)``). Checked where every submission is checked (``project_from_features``).
    site_name = forms.CharField(label=_("项目名称"), required=False, max_length=128,
                                widget=forms.TextInput(attrs={"data-prop": "name"}))
    site_developer = forms.CharField(label=_("建设单位"), required=False, max_length=128,
                                     widget=forms.TextInput(attrs={"data-prop": "developer"}))
    site_households = forms.CharField(label=_("户数"), required=False, max_length=12, widget=forms.TextInput(
        attrs={"data-prop": "households", "inputmode": "numeric", "size": 8}))
    site_population = forms.CharField(label=_("人口（可选）"), required=False, max_length=12, widget=forms.TextInput(
        attrs={"data-prop": "population", "inputmode": "numeric", "size": 8}))

    SOURCE_FIELDS = ("file", "text", "srid")
    SITE_FIELDS = ("site_name", "site_developer", "site_households", "site_population")

    def source_fields(self):
        return [self[n] for n in self.SOURCE_FIELDS]

    def site_fields(self):
        return [self[n] for n in self.SITE_FIELDS]

    def site_attrs(self) -> dict:
        """The site properties given in the form (only those filled in)."""
        d = self.cleaned_data
        return {k: d[f"site_{k}"].strip() for k in ("name", "developer", "households", "population")
                if (d.get(f"site_{k}") or "").strip()}

    def clean_srid(self):
        srid = self.cleaned_data.get("srid")
        if srid is not None and srid not in ALLOWED_SRIDS:
            raise forms.ValidationError(
                _("EPSG:%(srid)s 不在允许的坐标系列表中（CGCS2000、西安80、北京54 的经纬度与高斯-克吕格投影带，"
                  "WGS84 EPSG:4326，Web 墨卡托 EPSG:3857）"), params={"srid": srid})
        return srid

    def clean(self):
        data = super().clean()
        f = data.get("file")
        given = [bool(f), bool((data.get("text") or "").strip()), bool((data.get("drawn") or "").strip())]
        if not any(given):
            raise forms.ValidationError(_("请上传文件、粘贴 GeoJSON 或在地图上绘制"))
        if sum(given) > 1:
            raise forms.ValidationError(_("请只用一种方式提交：上传文件、粘贴 GeoJSON 或在地图上绘制"))
        if f is not None and f.size > MAX_BYTES:
            raise forms.ValidationError(_("文件过大"))
        return data


def _upload_to_path(f, suffix: str, tmp: str) -> Path:
    """Write the upload under a name we chose in our private temp dir; refuse more than MAX_BYTES."""
    p = Path(tmp) / f"submission{suffix}"
    written = 0
    with open(p, "wb") as out:
        for chunk in f.chunks():
            written += len(chunk)
            if written > MAX_BYTES:
                raise SubmissionError("too_large", "文件过大", "the file is too large")
            out.write(chunk)
    return p


def submission_geojson(sub: Submission) -> str:
    """The parsed submission as GeoJSON in the storage CRS (``crs`` member EPSG:GIS_SRID): what the
    result page carries to the save step for a file that has no GeoJSON text of its own (.zip, .gpkg,
    .dxf); parsing it again gives the same project, coordinate for coordinate."""
    p = sub.project
    site = {"role": "site", "name": p.name, "developer": p.developer, "households": p.households}
    if p.population_declared is not None:
        site["population"] = p.population_declared
    feats = [_feature(p.site, **site)] + [
        _feature(f.geom, role="facility", name=f.name, kind=f.kind, floor_area_m2=f.floor_area_m2)
        for f in p.facilities]
    srid = settings.GIS_SRID
    return json.dumps({"type": "FeatureCollection",
                       "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{srid}"}},
                       "features": feats}, ensure_ascii=False)


def read_submission(form: SubmissionForm) -> tuple[Submission, str, int | None]:
    """(parsed submission, GeoJSON text to carry to the save step, the srid to carry with it).
    Raises SubmissionError.

    Drawn features are lon/lat by construction (the ``srid`` field applies to files and pasted text).
    A .zip / .gpkg / .dxf upload is written to a private temporary directory (removed in every case)
    and read by ``services_review.parse_path``; its carried text is :func:`submission_geojson`.
    """
    d = form.cleaned_data
    f = d.get("file")
    srid = d.get("srid")
    if f is None:
        drawn = (d.get("drawn") or "").strip()
        if drawn:
            drawn = drawn_geojson_text(drawn)   # from the basemap's coordinates back to lon/lat
            return services_review.parse_submission(drawn), drawn, None
        text = d["text"]
        return services_review.parse_submission(text, srid=srid), text, srid
    suffix = Path(f.name).suffix.lower()
    if suffix in GEOJSON_SUFFIXES:
        raw = f.read(MAX_BYTES + 1)
        sub = services_review.parse_submission(raw, srid=srid)
        return sub, raw.decode("utf-8-sig"), srid
    if suffix not in FILE_SUFFIXES:
        raise SubmissionError("format", f"不支持 {suffix[:12]} 格式的报审文件（可用：GeoJSON、.zip、.gpkg、.dxf）",
                              f"{suffix[:12]} submissions are not supported (GeoJSON, .zip, .gpkg, .dxf)")
    with tempfile.TemporaryDirectory(prefix="gisportal-review-") as tmp:  # mode 0700, removed on any exit
        attrs = form.site_attrs()
        kwargs = {"attrs": attrs} if attrs else {}
        sub = services_review.parse_path(_upload_to_path(f, suffix, tmp), srid=srid, **kwargs)
    return sub, submission_geojson(sub), None


def run_review(sub: Submission) -> tuple[R.Review, ReviewMapLayers]:
    """The review (``services_review.review_submission``) and its map layers. Raises SubmissionError."""
    review = services_review.review_submission(sub)
    rs = services_review.rule_set()
    ctx = services_review.gather_context(sub.project.site, rs)
    return review, review_map_layers(review, ctx, rs)


def _stored_submission(project: models.HousingProject) -> Submission:
    """The project as stored, as a Submission in GIS_SRID (for its map and PDF)."""
    site = shapely.from_wkb(bytes(project.geom.wkb))
    kinds = {v: k for k, v in services_review.KIND_TO_MODEL.items()}
    facs = []
    for f in project.facilities.order_by("code"):
        g = f.footprint if f.footprint is not None else f.geom
        facs.append(R.ProjectFacility(kinds.get(f.kind, f.kind), float(f.floor_area_m2 or 0.0),
                                      shapely.from_wkb(bytes(g.wkb)), f.name))
    return Submission(R.Project(project.name, project.developer, project.households, site, tuple(facs),
                                project.population_declared), project.geom.srid)


# ------------------------------------------------------------------ what changed on a resubmission
def _facility_points(items) -> list[tuple[str, str, float, object]]:
    return [(n, services_review.KIND_TO_MODEL.get(k, k), a, g if g.geom_type == "Point" else
             shapely.point_on_surface(g)) for n, k, a, g in items]


def submission_changes(project: models.HousingProject, sub: Submission, review: R.Review) -> dict:
    """What a resubmission changes against the project as stored and its latest report.

    ``site_area_m2`` and ``households``: (old, new); ``facilities``: one row per facility, matched by
    name and kind, then by kind in order, with ``moved_m`` (None when added or removed) and the floor
    areas; ``flipped``: (code, old status, new status) for every check whose status changed.
    """
    old_f = _facility_points([(f.name, f.kind, float(f.floor_area_m2 or 0.0), shapely.from_wkb(bytes(f.geom.wkb)))
                              for f in project.facilities.order_by("code")])
    new_f = _facility_points([(f.name, f.kind, f.floor_area_m2, f.geom) for f in sub.project.facilities])
    rows, left = [], list(range(len(old_f)))
    pairs = []
    for j, (n, k, _area, _geom) in enumerate(new_f):
        i = next((i for i in left if old_f[i][0] == n and old_f[i][1] == k), None)
        if i is None:
            i = next((i for i in left if old_f[i][1] == k), None)
        if i is not None:
            left.remove(i)
        pairs.append((i, j))
    for i, j in pairs:
        n, k, a, g = new_f[j]
        if i is None:
            rows.append({"name": n, "kind": k, "change": "added", "moved_m": None, "area_old": None, "area_new": a})
        else:
            moved = float(old_f[i][3].distance(g))
            rows.append({"name": n, "kind": k, "change": "moved" if moved >= 0.5 else "same",
                         "moved_m": round(moved, 1), "area_old": old_f[i][2], "area_new": a})
    for i in left:
        n, k, a, _g = old_f[i]
        rows.append({"name": n, "kind": k, "change": "removed", "moved_m": None, "area_old": a, "area_new": None})
    report = project.reports.first()
    old_status = {c["code"]: c["status"] for c in (report.checks.get("checks", []) if report else [])}
    flipped = [(c.code, old_status[c.code], c.status) for c in review.checks
               if c.code in old_status and old_status[c.code] != c.status]
    return {"site_area_m2": (round(float(project.geom.area), 1), round(float(sub.project.site.area), 1)),
            "households": (project.households, sub.project.households),
            "facilities": rows, "flipped": flipped}


def changes_text(ch: dict) -> str:
    """One line per change, for the history (Chinese, the product's first language)."""
    lines = []
    a0, a1 = ch["site_area_m2"]
    if abs(a1 - a0) >= 1.0:
        lines.append(f"用地面积 {a0:,.0f} → {a1:,.0f} 平方米")
    h0, h1 = ch["households"]
    if h0 != h1:
        lines.append(f"户数 {h0} → {h1}")
    for r in ch["facilities"]:
        if r["change"] == "added":
            lines.append(f"新增设施 {r['name']}（{r['kind']}）")
        elif r["change"] == "removed":
            lines.append(f"删除设施 {r['name']}（{r['kind']}）")
        elif r["change"] == "moved":
            lines.append(f"设施 {r['name']} 移动 {r['moved_m']:,.1f} 米")
        if r["change"] in ("moved", "same") and r["area_old"] != r["area_new"]:
            lines.append(f"设施 {r['name']} 面积 {r['area_old']:g} → {r['area_new']:g} 平方米")
    lines += [f"{code}：{status_label(a)} → {status_label(b)}" for code, a, b in ch["flipped"]]
    return "；".join(lines) if lines else "无变化"


# ------------------------------------------------------------------ map
def _lonlat(geoms) -> list:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    return list(geoms_to_lonlat([shapely.to_wkb(g) for g in geoms])) if geoms else []


def _feature(g, **props) -> dict:
    return {"type": "Feature", "properties": props, "geometry": g.__geo_interface__}


def review_map_html(layers: ReviewMapLayers) -> str:
    """The review map as a standalone folium page (every asset local)."""
    m = make_map(static_url=static(""), basemap=basemap_setting(), control_scale=True)
    reach = _lonlat([shapely.buffer(g, layers.shelter_reach_m, quad_segs=32) for g in layers.shelters])
    fire_reach = _lonlat([shapely.buffer(g, layers.fire_reach_m, quad_segs=32) for g in layers.fire_stations])
    circles = folium.FeatureGroup(name=_g("服务范围"))
    for g in reach:
        folium.GeoJson(_feature(g), style_function=lambda f: {"color": SHELTER_COLOR, "weight": 1, "dashArray": "4 4",
                                                              "fillOpacity": 0.03}).add_to(circles)
    for g in fire_reach:
        folium.GeoJson(_feature(g), style_function=lambda f: {"color": FIRE_COLOR, "weight": 1, "dashArray": "2 6",
                                                              "fillOpacity": 0.0}).add_to(circles)
    circles.add_to(m)
    shelters = folium.FeatureGroup(name=_g("应急避难场所") + f" ({len(layers.shelters)})")
    for g in _lonlat(layers.shelters):
        folium.GeoJson(_feature(g), style_function=lambda f: {"color": SHELTER_COLOR, "weight": 1.5,
                                                              "fillOpacity": 0.45},
                       tooltip=safe_tooltip(_g("应急避难场所"))).add_to(shelters)
    shelters.add_to(m)
    site = _lonlat([layers.site])
    folium.GeoJson(_feature(site[0]), name=_g("项目用地"),
                   style_function=lambda f: {"color": SITE_COLOR, "weight": 3, "fillColor": "#9ecae1",
                                             "fillOpacity": 0.35},
                   tooltip=safe_tooltip(_g("项目用地"))).add_to(m)
    problems = folium.FeatureGroup(name=_g("未通过/提示的部分"))
    for (code, status, _g0), g in zip(layers.problems, _lonlat([g for _c, _s, g in layers.problems])):
        color = STATUS_COLORS.get(status, "#d7191c")
        if g.geom_type in ("Point", "MultiPoint"):
            for x, y in shapely.get_coordinates(g):
                folium.CircleMarker([y, x], radius=8, color=color, weight=2, fill=True, fill_opacity=0.8,
                                    tooltip=safe_tooltip(f"{code} {status_label(status, _lang())}")).add_to(problems)
        else:
            folium.GeoJson(_feature(g), style_function=lambda f, c=color: {
                "color": c, "weight": 1, "fillColor": c, "fillOpacity": 0.55},
                tooltip=safe_tooltip(f"{code} {status_label(status, _lang())}")).add_to(problems)
    problems.add_to(m)
    stations = folium.FeatureGroup(name=_g("社区微型消防站") + f" ({len(layers.fire_stations)})")
    for g in _lonlat(layers.fire_stations):
        for x, y in shapely.get_coordinates(g)[:1]:
            folium.CircleMarker([y, x], radius=6, color="#222222", weight=2, fill=True, fill_color=FIRE_COLOR,
                                fill_opacity=0.9, tooltip=safe_tooltip(_g("社区微型消防站"))).add_to(stations)
    stations.add_to(m)
    facs = folium.FeatureGroup(name=_g("配套设施"))
    for name, g in zip(layers.facility_names, _lonlat(layers.facilities)):
        if g.geom_type == "Point":
            folium.CircleMarker([g.y, g.x], radius=7, color="#222222", weight=1, fill=True, fill_opacity=0.95,
                                fill_color=FACILITY_COLOR, tooltip=safe_tooltip(name)).add_to(facs)
        else:
            folium.GeoJson(_feature(g), style_function=lambda f: {"color": FACILITY_COLOR, "weight": 1,
                                                                  "fillOpacity": 0.6},
                           tooltip=safe_tooltip(name)).add_to(facs)
    facs.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(_lonlat([shapely.box(*layers.bounds(200.0))]), dtype=object))
    m.fit_bounds([[y0, x0], [y1, x1]])
    return render_map_html(m)


# ------------------------------------------------------------------ pages
def _check_rows(doc: dict, lang: str) -> list[dict]:
    return [{**c, "label": status_label(c["status"], lang), "value_text": format_value(c.get("value")),
             "required_text": format_value(c.get("required"))} for c in doc.get("checks", [])]


#: Outline simplification (m) of the districts drawn for orientation on the drawing map.
DRAW_OUTLINE_SIMPLIFY_M = 100.0


def facility_kind_choices() -> list[tuple[str, str]]:
    """The facility kinds a planner picks from when drawing (the submission spelling of each)."""
    K = models.ServiceFacility.Kind
    inv = {v: k for k, v in services_review.KIND_TO_MODEL.items()}
    return [(inv.get(value, value), label) for value, label in K.choices]


def draw_map_data() -> dict:
    """What the drawing map needs, in lon/lat: the basemap's tile layers (none when offline) and the
    district outlines (simplified) for orientation."""
    tiles = [{"url": t.url, "attribution": t.attribution, "subdomains": t.subdomains, "maxZoom": t.max_zoom,
              "overlay": t.overlay, "name": t.name} for t in basemap_tiles(basemap_setting())]
    rows = list(models.District.objects.order_by("code").values_list("code", "name", "geom"))
    feats = []
    if rows:
        geoms = shapely.set_precision(geoms_to_lonlat([bytes(r[2].wkb) for r in rows],
                                                      simplify_m=DRAW_OUTLINE_SIMPLIFY_M), 1e-5)
        feats = [{"type": "Feature", "properties": {"code": c, "name": n}, "geometry": json.loads(g)}
                 for (c, n, _g0), g in zip(rows, shapely.to_geojson(geoms))]
    # drawn over the basemap: shifted onto GCJ-02 tiles when the basemap is GCJ-02 (read back in read_submission)
    return {"tiles": tiles, "districts": overlay_geojson({"type": "FeatureCollection", "features": feats})}


def _list_context(request, form=None) -> dict:
    qs = projects_for(request.user)
    return {"form": form or SubmissionForm(), "projects": list(qs[:50]), "admin_view": is_admin(request.user),
            "waiting": qs.filter(status__in=(Status.SUBMITTED, Status.IN_REVIEW)).count(),
            "draw": draw_map_data(), "facility_kinds": facility_kind_choices()}


@login_required
@permission_required(SUBMIT_PERMISSION, raise_exception=True)
@require_http_methods(["GET", "POST"])
def review_page(request: HttpRequest) -> HttpResponse:
    """GET: the submission form and the projects. POST ``action=check``: review and show (nothing stored);
    ``action=save``: review again and store the project, the report and the ``submitted`` history row."""
    if request.method == "GET":
        return render(request, "review/list.html", _list_context(request))
    form = SubmissionForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "review/list.html", _list_context(request, form), status=400)
    lang = _lang()
    try:
        sub, text, text_srid = read_submission(form)
        review, layers = run_review(sub)
    except SubmissionError as exc:
        form.add_error(None, exc.message(lang))
        return render(request, "review/list.html", {**_list_context(request, form), "refused": exc.code},
                      status=400)
    if request.POST.get("action") == "save":
        with transaction.atomic():
            project = services_review.save_review(sub, review, user=request.user, lang=lang)
            # save_review marks the automated check done (in_review, as the command does); on the web a
            # person still has to start the review, so the project waits as "submitted".
            models.HousingProject.objects.filter(pk=project.pk).update(status=Status.SUBMITTED)
            ReviewDecision.objects.create(project=project, report=project.reports.first(),
                                          action=Action.SUBMITTED, user=request.user)
        return redirect("review_project", pk=project.pk)
    doc = review.as_dict(lang)
    return render(request, "review/result.html", {
        "doc": doc, "checks": _check_rows(doc, lang), "verdict_label": status_label(doc["verdict"], lang),
        "map_html": review_map_html(layers), "submission_text": text, "srid": text_srid,
        "developer": sub.project.developer, "site_area": sub.project.site.area,
        "save_url": reverse("review"), "title": _g("审查结果（未保存）")})


def _history(project) -> list[ReviewDecision]:
    return list(project.decisions.select_related("user", "report"))


def _project_context(request, project, **extra) -> dict:
    lang = _lang()
    report = project.reports.select_related("reviewer").first()
    doc = report.checks if report else None
    comments = {}
    for d in project.decisions.all():
        for code, text in (d.check_comments or {}).items():
            if not code.startswith("_") and text:
                comments.setdefault(code, []).append((d, text))
    checks = _check_rows(doc, lang) if doc else []
    for c in checks:
        c["comments"] = comments.get(c["code"], [])
    actions = [a for a, (frm, _to) in TRANSITIONS.items() if project.status in frm and a != Action.COMMENT]
    can_decide = request.user.has_perm(DECIDE_PERMISSION)
    return {"project": project, "report": report, "doc": doc, "checks": checks,
            "verdict_label": status_label(doc["verdict"], lang) if doc else "",
            "reports": list(project.reports.all()), "history": _history(project),
            "can_decide": can_decide, "actions": [(a, Action(a).label) for a in actions] if can_decide else [],
            "can_resubmit": request.user.has_perm(SUBMIT_PERMISSION) and project.status in RESUBMIT_FROM,
            "form": SubmissionForm(), **extra}


@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
@require_GET
def review_project(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    return render(request, "review/project.html", _project_context(request, project))


@xframe_options_sameorigin  # shown in an iframe of our own pages; everything else is DENY
@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
@require_GET
def review_map(request: HttpRequest, pk: int) -> HttpResponse:
    """The project's map (folium, every asset local), shown in an iframe on the project page."""
    project = _project(request, pk)
    try:
        _review, layers = run_review(_stored_submission(project))
    except SubmissionError as exc:
        raise Http404(exc.message(_lang())) from None
    return HttpResponse(review_map_html(layers), content_type="text/html; charset=utf-8")


@login_required
@permission_required(DECIDE_PERMISSION, raise_exception=True)
@require_POST
def review_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """A workflow action or a comment: one new ReviewDecision row (never an update)."""
    project = _project(request, pk)
    action = request.POST.get("action", "")
    if action not in TRANSITIONS:
        return HttpResponse(_g("未知操作"), status=400)
    report = project.reports.first()
    codes = {c["code"] for c in report.checks.get("checks", [])} if report else set()
    check_comments = {code: request.POST[f"comment_{code}"].strip()[:2000] for code in sorted(codes)
                      if request.POST.get(f"comment_{code}", "").strip()}
    comment = request.POST.get("comment", "").strip()[:4000]
    try:
        version = int(request.POST.get("version", ""))
    except ValueError:
        version = -1
    errors = []
    try:  # one path with the API: layers.services_decisions
        review_decide_service(project, action=action, user=request.user, comment=comment,
                              check_comments=check_comments, expected_version=version)
    except DecisionProblem as exc:
        errors.append(exc.message(_lang()))
    if errors:
        return render(request, "review/project.html",
                      _project_context(request, project, errors=errors, posted=request.POST), status=409)
    return redirect("review_project", pk=project.pk)


@login_required
@permission_required(SUBMIT_PERMISSION, raise_exception=True)
@require_POST
def review_resubmit(request: HttpRequest, pk: int) -> HttpResponse:
    """``action=check``: the new version's review and what changed; ``action=save``: store it on the
    same project (status back to submitted, new report, history row with the changes)."""
    project = _project(request, pk)
    if project.status not in RESUBMIT_FROM:
        return render(request, "review/project.html",
                      _project_context(request, project, errors=[_g("只有已提交或已退回的项目可以重新提交")]),
                      status=409)
    form = SubmissionForm(request.POST, request.FILES)
    lang = _lang()
    err = None
    if form.is_valid():
        try:
            sub, text, text_srid = read_submission(form)
            review, layers = run_review(sub)
        except SubmissionError as exc:
            err = exc.message(lang)
    else:
        err = " ".join(str(e) for errs in form.errors.values() for e in errs) or _g("请上传文件或粘贴 GeoJSON")
    if err:
        return render(request, "review/project.html",
                      _project_context(request, project, errors=[err], form=form), status=400)
    changes = submission_changes(project, sub, review)
    if request.POST.get("action") == "save":
        try:
            version = int(request.POST.get("version", ""))
        except ValueError:
            version = -1
        try:
            save_resubmission(project, version, sub, review, user=request.user, lang=lang, changes=changes,
                              comment=_g("重新提交：") + changes_text(changes))
        except ResubmitProblem as exc:
            return render(request, "review/project.html",
                          _project_context(request, project, errors=[exc.message(lang)]), status=409)
        return redirect("review_project", pk=project.pk)
    doc = review.as_dict(lang)
    return render(request, "review/result.html", {
        "doc": doc, "checks": _check_rows(doc, lang), "verdict_label": status_label(doc["verdict"], lang),
        "map_html": review_map_html(layers), "submission_text": text, "srid": text_srid,
        "developer": sub.project.developer, "site_area": sub.project.site.area, "project": project,
        "changes": changes, "changes_text": changes_text(changes),
        "save_url": reverse("review_resubmit", kwargs={"pk": project.pk}),
        "title": _g("重新提交的审查结果（未保存）")})


@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
@require_GET
def review_report_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    """The printable A4 report of one stored ReviewReport (map drawn on the server, no tiles)."""
    report = get_object_or_404(ReviewReport.objects.select_related("project", "reviewer"), pk=pk)
    project = _project(request, report.project_id)
    lang = _lang()
    layers = None
    if report == project.reports.first():  # the map shows the project as stored now: only for its latest report
        try:
            layers = run_review(_stored_submission(project))[1]
        except SubmissionError:
            layers = None
    decisions = _history(project)
    last_decider = next((d.user for d in reversed(decisions) if d.user and d.action in (
        Action.APPROVED, Action.REJECTED, Action.IN_REVIEW) and d.created_at >= report.created_at), None)
    reviewer = report.reviewer or last_decider
    history = [f"{timezone.localtime(d.created_at):%Y-%m-%d %H:%M}  {d.get_action_display()}  "
               f"{d.user.get_username() if d.user else '-'}  {d.comment}"
               + "".join(f"  [{k}] {v}" for k, v in (d.check_comments or {}).items() if not k.startswith("_"))
               for d in decisions]
    pdf = review_pdf(report.checks, layers, created_at=f"{timezone.localtime(report.created_at):%Y-%m-%d %H:%M}",
                     reviewer=reviewer.get_username() if reviewer else "", lang=lang,
                     extra=[(_g("建设单位"), project.developer), (_g("项目编号"), f"{project.pk} / v{project.version}"),
                            (_g("状态"), str(project.get_status_display()))],
                     history=history)
    resp = HttpResponse(pdf, content_type="application/pdf")
    resp["Content-Disposition"] = f'inline; filename="review-{project.pk}-{report.pk}.pdf"'
    return resp


#: Add to gisportal/urls.py: ``urlpatterns += views_review.urlpatterns``.
urlpatterns = [
    path("review/", review_page, name="review"),
    path("review/projects/<int:pk>/", review_project, name="review_project"),
    path("review/projects/<int:pk>/map/", review_map, name="review_map"),
    path("review/projects/<int:pk>/decide/", review_decide, name="review_decide"),
    path("review/projects/<int:pk>/resubmit/", review_resubmit, name="review_resubmit"),
    path("review/reports/<int:pk>.pdf", review_report_pdf, name="review_report_pdf"),
]
