"""The printable review report (issue 4): an A4 PDF of one housing-project review.

Pure: the report document (``Review.as_dict(lang)``, as stored in ``ReviewReport.checks``) and shapely
geometries in ``GIS_SRID`` metres in, PDF bytes out; no Django. The view gathers the data.

* :class:`ReviewMapLayers` -- what the review map shows (site, the project's facilities, the shelters
  and micro fire stations within reach, their reach circles, the failed checks' evidence in red). The
  web map (folium, ``gisportal/views_review.py``) and the PDF map draw the same value, built once by
  :func:`review_map_layers` from a :class:`layers.analysis.rules.Review` and its context.
* :func:`review_pdf` -- page 1: title, project, verdict, rule-set version, time, reviewer, the map
  (drawn from the geometries, no tiles ever) and the location shares; page 2: the checks table
  (status, value, required, unit, message) and the basis of each rule, then the decision history.

Fonts come from :func:`layers.analysis.mapsheet.sheet_rc` (WenQuanYi Micro Hei registered with
``font_manager.addfont``, ``pdf.fonttype`` 42), so the Chinese text is embedded and searchable.
"""
from __future__ import annotations

import io
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import shapely
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath

from .mapsheet import nice_scale_bar_m, sheet_rc
from .rules import FAIL, WARN, Review, ReviewContext, RuleSet

__all__ = ["ReviewMapLayers", "review_map_layers", "format_value", "status_label", "review_pdf",
           "STATUS_COLORS", "A4_INCHES"]

A4_INCHES = (210 / 25.4, 297 / 25.4)
STATUS_COLORS = {"pass": "#1a9641", "fail": "#d7191c", "warn": "#fd8d3c", "n/a": "#888888"}
_STATUS_ZH = {"pass": "通过", "fail": "不通过", "warn": "提示", "n/a": "不适用"}
_STATUS_EN = {"pass": "pass", "fail": "fail", "warn": "warning", "n/a": "n/a"}
# map colours (the folium map uses the same)
SITE_COLOR, FACILITY_COLOR, SHELTER_COLOR, FIRE_COLOR = "#1f4e79", "#3969ac", "#008695", "#cf1c90"


@dataclass(frozen=True, eq=False)
class ReviewMapLayers:
    """The geometries of a review map, in the storage CRS (metres).

    ``problems`` holds ``(code, status, geometry)`` for every failed or warned check with evidence
    (the uncovered part of the site, a facility outside it, the shelter land taken, ...).
    """

    site: Any
    facilities: tuple = ()
    facility_names: tuple[str, ...] = ()
    shelters: tuple = ()
    fire_stations: tuple = ()
    shelter_reach_m: float = 500.0
    fire_reach_m: float = 500.0
    problems: tuple[tuple[str, str, Any], ...] = ()

    def bounds(self, margin_m: float = 100.0, *, targets: bool = False) -> tuple[float, float, float, float]:
        """The site, facilities and problems (and with ``targets`` the shelters and stations) with a
        margin, in metres: the map's frame."""
        geoms = [self.site, *self.facilities, *(g for _, _, g in self.problems)]
        if targets:
            geoms += [*self.shelters, *self.fire_stations]
        x0, y0, x1, y1 = shapely.total_bounds(np.asarray(geoms, dtype=object))
        return x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m


def review_map_layers(review: Review, ctx: ReviewContext, rs: RuleSet) -> ReviewMapLayers:
    """The map of a review: shelters within ``rs.shelter_reach_m`` and micro stations within
    ``rs.fire_response_distance_m`` of the site (the ones the reach rules use), the evidence of
    failed/warned checks.

    Examples
    --------
    >>> from layers.analysis import rules as R
    >>> site = shapely.box(0, 0, 100, 100)
    >>> rs = R.RuleSet(version="t")
    >>> ctx = R.ReviewContext(shelter_geoms=[shapely.box(300, 0, 350, 50), shapely.box(5000, 0, 5050, 50)],
    ...                       shelter_levels=("emergency", "emergency"), shelter_capacity=[10, 10])
    >>> rv = R.Review("fail", "t", R.Project("p", "d", 10, site), 26, {}, ())
    >>> len(review_map_layers(rv, ctx, rs).shelters)   # the far one is left out
    1
    """
    site = review.project.site
    sh = np.asarray(ctx.shelter_geoms, dtype=object)
    sh = sh[shapely.dwithin(sh, site, rs.shelter_reach_m)] if sh.size else sh
    fg = np.asarray(ctx.fire_geoms, dtype=object)
    if fg.size:
        mask = np.isin(np.asarray(ctx.fire_kinds, dtype=object), list(rs.fire_station_kinds))
        fg = fg[mask & shapely.dwithin(fg, site, rs.fire_response_distance_m)]
    problems = tuple((c.code, c.status, c.evidence) for c in review.checks
                     if c.status in (FAIL, WARN) and c.evidence is not None and not c.evidence.is_empty)
    return ReviewMapLayers(
        site=site, facilities=tuple(f.geom for f in review.project.facilities),
        facility_names=tuple(f.name or f.kind for f in review.project.facilities),
        shelters=tuple(sh), fire_stations=tuple(fg), shelter_reach_m=rs.shelter_reach_m,
        fire_reach_m=rs.fire_response_distance_m, problems=problems)


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
def status_label(status: str, lang: str = "zh") -> str:
    """``'fail'`` -> ``'不通过'`` (``'fail'`` in English)."""
    return (_STATUS_EN if lang.startswith("en") else _STATUS_ZH).get(status, status)


def format_value(v: Any) -> str:
    """A check's value or requirement as short text.

    >>> format_value(1234.5), format_value(150.0), format_value(None), format_value({"a": 12.0, "b": None})
    ('1,234.5', '150', '-', 'a 12; b -')
    >>> format_value([{"code": "130702", "share": 0.25}])
    '130702 25.0%'
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "-"
        return f"{f:,.0f}" if abs(f - round(f)) < 1e-9 else f"{f:,.2f}".rstrip("0").rstrip(".")
    if isinstance(v, Mapping):
        if "code" in v and "share" in v:
            return f"{v.get('name') or v['code']} {float(v['share']):.1%}"
        return "; ".join(f"{k} {format_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x) for x in v)
    return str(v)


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _wrap(text: str, width: int) -> str:
    """Wrap mixed Chinese/Latin text to ``width`` half-width columns (CJK counts double).

    >>> _wrap("项目用地最远点距最近应急避难场所 120 米", 20).split("\\n")
    ['项目用地最远点距最近', '应急避难场所 120 米']
    """
    out = []
    for para in str(text).split("\n"):
        line = ""
        for ch in para:
            if line and _width(line + ch) > width:
                cut = line.rfind(" ")
                if cut > len(line) * 2 // 3:
                    out.append(line[:cut])
                    line = line[cut + 1:] + ch
                else:
                    out.append(line.rstrip())
                    line = ch.lstrip()
            else:
                line += ch
        out.append(line)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------
def _polygon_path(geom) -> MplPath | None:
    polys = [geom] if geom.geom_type == "Polygon" else [g for g in getattr(geom, "geoms", []) if
                                                       g.geom_type == "Polygon"]
    verts, codes = [], []
    for p in polys:
        for ring in (p.exterior, *p.interiors):
            xy = np.asarray(ring.coords)[:, :2]
            if len(xy) < 3:
                continue
            verts.append(xy)
            c = np.full(len(xy), MplPath.LINETO, dtype=np.uint8)
            c[0], c[-1] = MplPath.MOVETO, MplPath.CLOSEPOLY
            codes.append(c)
    if not verts:
        return None
    return MplPath(np.concatenate(verts), np.concatenate(codes))


def _draw(ax, geom, **kw) -> None:
    """Polygons as patches, lines as lines, points as markers (geometry collections split)."""
    if geom is None or geom.is_empty:
        return
    gt = geom.geom_type
    if gt in ("Polygon", "MultiPolygon"):
        path = _polygon_path(geom)
        if path is not None:
            ax.add_patch(PathPatch(path, **{k: v for k, v in kw.items() if k not in ("marker", "ms")}))
    elif gt in ("Point", "MultiPoint"):
        xy = shapely.get_coordinates(geom)
        ax.plot(xy[:, 0], xy[:, 1], linestyle="none", marker=kw.get("marker", "o"), ms=kw.get("ms", 6),
                mfc=kw.get("facecolor", "none"), mec=kw.get("edgecolor", "k"), zorder=kw.get("zorder", 5))
    elif gt in ("LineString", "MultiLineString", "LinearRing"):
        for part in getattr(geom, "geoms", [geom]):
            xy = np.asarray(part.coords)
            ax.plot(xy[:, 0], xy[:, 1], color=kw.get("edgecolor", "k"), lw=kw.get("linewidth", 1))
    else:
        for part in geom.geoms:
            _draw(ax, part, **kw)


def _draw_map(fig: Figure, rect, layers: ReviewMapLayers, lang: str) -> None:
    en = lang.startswith("en")
    ax = fig.add_axes(rect)
    x0, y0, x1, y1 = layers.bounds(margin_m=80.0, targets=True)
    # the frame: equal scale in x and y, fitted to the axes' aspect
    fw, fh = fig.get_size_inches()
    aspect = (rect[3] * fh) / (rect[2] * fw)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if h / w > aspect:
        w = h / aspect
    else:
        h = w * aspect
    ax.set_xlim(cx - w / 2, cx + w / 2)
    ax.set_ylim(cy - h / 2, cy + h / 2)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xticks([])
    ax.set_yticks([])
    for g in layers.shelters:
        _draw(ax, shapely.buffer(g, layers.shelter_reach_m, quad_segs=32).boundary, edgecolor=SHELTER_COLOR,
              linewidth=0.6)
    for g in layers.fire_stations:
        _draw(ax, shapely.buffer(g, layers.fire_reach_m, quad_segs=32).boundary, edgecolor=FIRE_COLOR,
              linewidth=0.6)
    for g in layers.shelters:
        _draw(ax, g, facecolor=SHELTER_COLOR, edgecolor=SHELTER_COLOR, alpha=0.45, linewidth=0.8, zorder=2)
    _draw(ax, layers.site, facecolor="#9ecae1", edgecolor=SITE_COLOR, alpha=0.5, linewidth=1.5, zorder=3)
    _draw(ax, layers.site, facecolor="none", edgecolor=SITE_COLOR, linewidth=1.5, zorder=3)
    for code, status, g in layers.problems:
        col = STATUS_COLORS.get(status, "#d7191c")
        _draw(ax, g, facecolor=col, edgecolor=col, alpha=0.55, linewidth=1.0, marker="X", ms=9, zorder=4)
    for g in layers.fire_stations:
        _draw(ax, g, facecolor=FIRE_COLOR, edgecolor="k", marker="^", ms=8, zorder=6)
    for g in layers.facilities:
        if g.geom_type == "Point":
            _draw(ax, g, facecolor=FACILITY_COLOR, edgecolor="k", marker="o", ms=7, zorder=6)
        else:
            _draw(ax, g, facecolor=FACILITY_COLOR, edgecolor=FACILITY_COLOR, alpha=0.6, linewidth=0.8, zorder=4)
    # scale bar (data metres; the axes are equal-aspect)
    m_per_in = (ax.get_xlim()[1] - ax.get_xlim()[0]) / (rect[2] * fw)
    bar = nice_scale_bar_m(m_per_in / 25.4, target_mm=30.0)
    bx, by = ax.get_xlim()[0] + 0.04 * w, ax.get_ylim()[0] + 0.04 * h
    ax.plot([bx, bx + bar], [by, by], color="k", lw=2.5, solid_capstyle="butt", zorder=8)
    ax.text(bx + bar / 2, by + 0.012 * h, f"{bar:,.0f} m", ha="center", va="bottom", fontsize=7, zorder=8)
    ax.annotate("N", xy=(0.96, 0.93), xytext=(0.96, 0.83), xycoords="axes fraction", ha="center",
                fontsize=9, arrowprops={"arrowstyle": "-|>", "color": "k"})
    handles = [
        Patch(facecolor="#9ecae1", edgecolor=SITE_COLOR, label="Site" if en else "项目用地"),
        Line2D([], [], linestyle="none", marker="o", mfc=FACILITY_COLOR, mec="k",
               label="Facilities" if en else "配套设施"),
        Patch(facecolor=SHELTER_COLOR, alpha=0.45, label=(f"Shelters ({layers.shelter_reach_m:.0f} m circle)" if en
                                                           else f"避难场所（{layers.shelter_reach_m:.0f} 米范围）")),
        Line2D([], [], linestyle="none", marker="^", mfc=FIRE_COLOR, mec="k",
               label=(f"Micro fire stations ({layers.fire_reach_m:.0f} m)" if en
                      else f"微型消防站（{layers.fire_reach_m:.0f} 米范围）")),
        Patch(facecolor=STATUS_COLORS["fail"], alpha=0.55, label="Failed check" if en else "未通过部分"),
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.85)


def _meta_lines(doc: Mapping, *, created_at: str, reviewer: str, lang: str, extra: Sequence[tuple[str, str]]):
    en = lang.startswith("en")
    p = doc.get("project", {})
    L = [("Project" if en else "项目名称", str(p.get("name", ""))),
         *extra,
         ("Households / persons" if en else "户数 / 人口", f"{p.get('households', '-')} / {p.get('population', '-')}"),
         ("Rule set" if en else "规则版本", str(doc.get("rule_set", ""))),
         ("Reviewed at" if en else "审查时间", created_at),
         ("Reviewer" if en else "审查人", reviewer or "-")]
    loc = doc.get("location", {})
    for key, zh, en_label in (("districts", "所在区县", "District"), ("streets", "街道/乡镇", "Streets"),
                              ("communities", "社区/村", "Communities")):
        rows = loc.get(key) or []
        if rows:
            L.append((en_label if en else zh, _wrap(format_value(list(rows)), 70)))
    return L


def review_pdf(doc: Mapping[str, Any], layers: ReviewMapLayers | None = None, *, created_at: str = "",
               reviewer: str = "", lang: str = "zh", extra: Sequence[tuple[str, str]] = (),
               history: Sequence[str] = ()) -> bytes:
    """The A4 PDF of a review report.

    Parameters
    ----------
    doc : mapping
        The report document ``{"verdict", "rule_set", "project", "location", "checks"}``
        (``Review.as_dict(lang)``; ``ReviewReport.checks``).
    layers : ReviewMapLayers, optional
        The map; without it page 1 says the map is unavailable.
    created_at, reviewer : str
        Shown in the header (the report's time and the person who decided or ran it).
    extra : sequence of (label, text)
        More header rows (developer, project number, status).
    history : sequence of str
        Decision history lines, printed after the table.

    Returns
    -------
    bytes
        A two-page A4 portrait PDF.

    Examples
    --------
    >>> doc = {"verdict": "fail", "rule_set": "t-1", "project": {"name": "示例", "households": 10,
    ...        "population": 26}, "location": {}, "checks": [{"code": "FAC-AREA", "status": "fail",
    ...        "value": 2.0, "required": 3.0, "unit": "m2", "message": "面积不足", "basis": "规划"}]}
    >>> review_pdf(doc, created_at="2025-01-01 10:00")[:5]
    b'%PDF-'
    """
    en = lang.startswith("en")
    buf = io.BytesIO()
    verdict = str(doc.get("verdict", ""))
    with matplotlib.rc_context(sheet_rc()), PdfPages(buf, metadata={
            "Title": ("Housing project review" if en else "住宅项目审查报告") + f" {doc.get('project', {}).get('name', '')}",
            "Creator": "gisportal", "CreationDate": None, "ModDate": None}) as pdf:
        # ---- page 1: header, verdict, map
        fig = Figure(figsize=A4_INCHES)
        fig.text(0.5, 0.965, "Housing project review report" if en else "住宅项目配套设施与安全审查报告",
                 ha="center", va="top", fontsize=16)
        y = 0.925
        for label, text in _meta_lines(doc, created_at=created_at, reviewer=reviewer, lang=lang, extra=extra):
            fig.text(0.08, y, label, fontsize=9, va="top", color="#444444")
            fig.text(0.30, y, text, fontsize=9, va="top")
            y -= 0.021 * (1 + text.count("\n"))
        fig.text(0.92, 0.925, ("Verdict: " if en else "结论：") + status_label(verdict, lang), ha="right", va="top",
                 fontsize=15, color=STATUS_COLORS.get(verdict, "k"),
                 bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": STATUS_COLORS.get(verdict, "k")})
        fig.text(0.92, 0.885, f"verdict={verdict}", ha="right", va="top", fontsize=7, color="#666666")
        counts = {}
        for c in doc.get("checks", []):
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        fig.text(0.92, 0.865, " · ".join(f"{status_label(s, lang)} {n}" for s, n in sorted(counts.items())),
                 ha="right", va="top", fontsize=8)
        map_top = min(y - 0.01, 0.80)
        rect = (0.08, 0.06, 0.84, map_top - 0.06)
        if layers is not None and layers.site is not None:
            _draw_map(fig, rect, layers, lang)
            fig.text(0.08, 0.045, ("Straight-line distances in EPSG:4547 metres; no basemap." if en else
                                   "距离为 EPSG:4547 平面直线距离（米）；地图不含底图。"), fontsize=7, color="#666666",
                     va="top")
        else:
            fig.text(0.5, 0.45, "map unavailable" if en else "（无地图）", ha="center", fontsize=12)
        fig.text(0.92, 0.02, "1 / 2", ha="right", fontsize=7, color="#666666")
        pdf.savefig(fig)

        # ---- page 2: the checks, the basis, the history
        fig = Figure(figsize=A4_INCHES)
        fig.text(0.08, 0.965, "Checks" if en else "逐项审查结果", fontsize=13, va="top")
        cols = [(0.08, "Rule" if en else "规则"), (0.27, "Result" if en else "结果"),
                (0.35, "Value" if en else "实测值"), (0.47, "Required" if en else "要求"),
                (0.58, "Unit" if en else "单位"), (0.66, "Message" if en else "说明")]
        y = 0.93
        for x, h in cols:
            fig.text(x, y, h, fontsize=8.5, va="top")
        y -= 0.018
        fig.add_artist(Line2D([0.08, 0.94], [y + 0.004, y + 0.004], color="k", lw=0.6))
        for c in doc.get("checks", []):
            msg = _wrap(str(c.get("message", "")), 36)
            val = "\n".join(_wrap(t, 16) for t in format_value(c.get("value")).split("; "))
            req = "\n".join(_wrap(t, 14) for t in format_value(c.get("required")).split("; "))
            nlines = max(msg.count("\n"), val.count("\n"), req.count("\n")) + 1
            fig.text(0.08, y, c["code"], fontsize=8, va="top", family="DejaVu Sans Mono")
            fig.text(0.27, y, status_label(c["status"], lang), fontsize=8, va="top",
                     color=STATUS_COLORS.get(c["status"], "k"))
            fig.text(0.35, y, val, fontsize=7.5, va="top")
            fig.text(0.47, y, req, fontsize=7.5, va="top")
            fig.text(0.58, y, str(c.get("unit", "")), fontsize=7.5, va="top")
            fig.text(0.66, y, msg, fontsize=7.5, va="top")
            y -= 0.0125 * nlines + 0.007
            fig.add_artist(Line2D([0.08, 0.94], [y + 0.004, y + 0.004], color="#cccccc", lw=0.4))
        y -= 0.015
        fig.text(0.08, y, "Basis" if en else "依据", fontsize=11, va="top")
        y -= 0.022
        for c in doc.get("checks", []):
            text = _wrap(str(c.get("basis", "")), 84)
            fig.text(0.08, y, c["code"], fontsize=7, va="top", family="DejaVu Sans Mono")
            fig.text(0.27, y, text, fontsize=7, va="top")
            y -= 0.0115 * (text.count("\n") + 1) + 0.003
        if history:
            y -= 0.012
            fig.text(0.08, y, "History" if en else "审查记录", fontsize=11, va="top")
            y -= 0.022
            for line in history:
                if y < 0.05:
                    fig.text(0.08, y, "…", fontsize=7, va="top")
                    break
                text = _wrap(line, 110)
                fig.text(0.08, y, text, fontsize=7, va="top")
                y -= 0.0115 * (text.count("\n") + 1) + 0.002
        fig.text(0.92, 0.02, "2 / 2", ha="right", fontsize=7, color="#666666")
        pdf.savefig(fig)
    return buf.getvalue()
