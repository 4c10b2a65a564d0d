"""The printable summary of a coverage run (issue 5): an A4 PDF.

Pure: the run's result document (``coverage_compute``'s dict, as stored in ``Job.result``) and shapely
geometries in ``GIS_SRID`` metres in, PDF bytes out; no Django. The view gathers the geometries.

* page 1: title, the run's parameters, data and rule versions, who ran it and when, the headline
  figures, and a map drawn from the geometries (no tiles ever): grids coloured by the share of their
  people within reach (red = nobody, green = everyone; the web map's palette), the sites and, for at
  most :data:`MAX_CIRCLES` sites, their service-distance outlines.
* page 2: the per-district table, then the streets/townships with the lowest covered share.

Drawing helpers and fonts are the review report's and the grid atlas's
(:mod:`layers.analysis.report_pdf`, :func:`layers.analysis.mapsheet.sheet_rc`): WenQuanYi Micro Hei
embedded as TrueType, so the Chinese text is searchable (``pdftotext``).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import shapely
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch

from .mapsheet import nice_scale_bar_m, sheet_rc
from .report_pdf import A4_INCHES, _polygon_path, _wrap

__all__ = ["CoverageMap", "SHARE_COLORS", "share_color", "headline_rows", "parameter_rows", "coverage_pdf",
           "MAX_CIRCLES", "LOWEST_STREETS"]

#: 0 .. 1 covered share, red = nobody covered (the web map uses the same palette).
SHARE_COLORS = ("#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641")
NO_PEOPLE_COLOR = "#dddddd"
SITE_COLOR = "#1f4e79"
#: Service-distance outlines are drawn for at most this many sites (beyond that they are a blur).
MAX_CIRCLES = 400
#: Page 2 lists this many streets/townships with the lowest covered share.
LOWEST_STREETS = 25

_KIND = {"shelters": ("应急避难场所", "Emergency shelters"), "fire_stations": ("消防站", "Fire stations"),
         "facilities": ("社区服务设施", "Community service facilities")}
_METHOD = {"euclidean": ("直线距离", "straight line"), "network": ("沿道路", "along roads")}
_DEMAND = {"raster": ("人口栅格", "population raster"), "grids": ("网格人口（均匀分布）", "grid population (even)")}


@dataclass(frozen=True, eq=False)
class CoverageMap:
    """The geometries of the summary map, in the storage CRS (metres).

    ``grid_geoms[i]`` is the outline of ``grid_share[i]``'s grid (NaN share: no people);
    ``site_geoms[j]`` a site (point or polygon) with service distance ``site_radius_m[j]``.
    """

    grid_geoms: np.ndarray
    grid_share: np.ndarray
    site_geoms: np.ndarray
    site_radius_m: np.ndarray

    def bounds(self, margin_m: float = 200.0) -> tuple[float, float, float, float] | None:
        geoms = np.concatenate([np.asarray(self.grid_geoms, dtype=object), np.asarray(self.site_geoms, dtype=object)])
        geoms = geoms[~shapely.is_missing(geoms)] if len(geoms) else geoms
        if len(geoms) == 0:
            return None
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        return x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m


def share_color(share: float | None) -> str:
    """Red for 0 (nobody covered), through yellow, to green for 1; grey for no people (None/NaN).

    >>> share_color(0.0), share_color(0.1), share_color(0.5), share_color(1.0), share_color(None)
    ('#d7191c', '#fdae61', '#ffffbf', '#1a9641', '#dddddd')
    """
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return NO_PEOPLE_COLOR
    if share <= 0:
        return SHARE_COLORS[0]
    return SHARE_COLORS[min(4, 1 + int(share * 4 - 1e-9))] if share < 1 else SHARE_COLORS[4]


def _en(lang: str) -> bool:
    return str(lang).startswith("en")


def headline_rows(doc: Mapping[str, Any], lang: str = "zh") -> list[tuple[str, str]]:
    """The headline figures as (label, text), numbers formatted as the result page shows them.

    >>> headline_rows({"population_total": 1000.0, "population_covered": 750.4, "share_covered": 0.7504})
    [('总人口', '1,000'), ('覆盖人口', '750'), ('覆盖比例', '75.0%'), ('未覆盖人口', '250')]
    """
    en = _en(lang)
    total, covered = float(doc["population_total"]), float(doc["population_covered"])
    rows = [("Population" if en else "总人口", f"{total:,.0f}"),
            ("Covered" if en else "覆盖人口", f"{covered:,.0f}"),
            ("Share covered" if en else "覆盖比例", f"{float(doc['share_covered']):.1%}"),
            ("Not covered" if en else "未覆盖人口", f"{total - covered:,.0f}")]
    if "population_served" in doc:
        rows += [("Can be sheltered" if en else "可安置人口", f"{float(doc['population_served']):,.0f}"),
                 ("Short of capacity" if en else "容量不足", f"{float(doc['population_short']):,.0f}"),
                 ("Out of reach" if en else "服务范围外", f"{float(doc['population_unreachable']):,.0f}")]
    return rows


def _radius_text(radius) -> str:
    if isinstance(radius, Mapping):
        return "；".join(f"{k} {float(v):g}" for k, v in radius.items())
    return "-" if radius is None else f"{float(radius):g}"


def parameter_rows(doc: Mapping[str, Any], lang: str = "zh") -> list[tuple[str, str]]:
    """The run's parameters as (label, text).

    >>> parameter_rows({"kind": "fire_stations", "radius_m": 500.0, "method": "euclidean",
    ...                 "demand": "raster", "facilities": [{}, {}]})[:3]
    [('设施类别', '消防站（2 个）'), ('服务半径（米）', '500'), ('距离', '直线距离')]
    """
    en = _en(lang)
    i = 1 if en else 0
    n = len(doc.get("facilities", []))
    kind = _KIND.get(doc.get("kind"), (str(doc.get("kind")),) * 2)[i]
    radius = _radius_text(doc.get("radius_m"))
    own = int(doc.get("facility_radius_overrides") or 0)
    if own:
        radius += f" ({own} sites with their own distance)" if en else f"（{own} 个设施单独设定）"
    rows = [("Facilities" if en else "设施类别", f"{kind} ({n})" if en else f"{kind}（{n} 个）"),
            ("Service distance (m)" if en else "服务半径（米）", radius),
            ("Distance" if en else "距离", _METHOD.get(doc.get("method"), (str(doc.get("method")),) * 2)[i]),
            ("Demand" if en else "人口", _DEMAND.get(doc.get("demand"), (str(doc.get("demand")),) * 2)[i])]
    if doc.get("level"):
        rows.append(("Shelter level" if en else "避难场所级别", str(doc["level"])))
    if doc.get("facility_kind"):
        rows.append(("Facility kind" if en else "设施类型", str(doc["facility_kind"])))
    if "population_served" in doc:
        rows.append(("Capacity" if en else "容量", "transportation LP" if en else "考虑容量（运输问题线性规划）"))
    return rows


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------
def _draw_map(fig: Figure, rect, cmap: CoverageMap, lang: str) -> None:
    en = _en(lang)
    ax = fig.add_axes(rect)
    ax.set_xticks([])
    ax.set_yticks([])
    b = cmap.bounds()
    if b is None:
        ax.text(0.5, 0.5, "nothing to draw" if en else "（无可绘制的要素）", ha="center", transform=ax.transAxes)
        return
    x0, y0, x1, y1 = b
    fw, fh = fig.get_size_inches()
    aspect = (rect[3] * fh) / (rect[2] * fw)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    if h / w > aspect:
        w = h / aspect
    else:
        h = w * aspect
    ax.set_xlim(cx - w / 2, cx + w / 2)
    ax.set_ylim(cy - h / 2, cy + h / 2)
    ax.set_aspect("equal", adjustable="box")

    patches, colors = [], []
    for g, s in zip(cmap.grid_geoms, np.asarray(cmap.grid_share, dtype=np.float64)):
        if g is None or g.is_empty:
            continue
        path = _polygon_path(g)
        if path is not None:
            patches.append(PathPatch(path))
            colors.append(share_color(float(s)))
    if patches:
        ax.add_collection(PatchCollection(patches, facecolors=colors, edgecolors="#777777", linewidths=0.1,
                                          zorder=1))
    sites = np.asarray(cmap.site_geoms, dtype=object)
    sites = sites[~shapely.is_missing(sites)] if len(sites) else sites
    radius = np.asarray(cmap.site_radius_m, dtype=np.float64)
    if 0 < len(sites) <= MAX_CIRCLES and len(radius) == len(sites):
        outlines = shapely.boundary(shapely.buffer(sites, radius, quad_segs=16))
        for g in outlines:
            for part in getattr(g, "geoms", [g]):
                xy = np.asarray(part.coords)
                if len(xy):
                    ax.plot(xy[:, 0], xy[:, 1], color="#2c7fb8", lw=0.35, zorder=2)
    if len(sites):
        pts = shapely.get_coordinates(shapely.point_on_surface(sites))
        ax.plot(pts[:, 0], pts[:, 1], linestyle="none", marker="o", ms=2.8, mfc=SITE_COLOR, mec="white",
                mew=0.3, zorder=3)
    # scale bar (data metres; equal aspect) and north arrow (grid north)
    m_per_in = (ax.get_xlim()[1] - ax.get_xlim()[0]) / (rect[2] * fw)
    bar = nice_scale_bar_m(m_per_in / 25.4, target_mm=30.0)
    bx, by = ax.get_xlim()[0] + 0.04 * w, ax.get_ylim()[0] + 0.04 * h
    ax.plot([bx, bx + bar], [by, by], color="k", lw=2.5, solid_capstyle="butt", zorder=8)
    label = f"{bar / 1000:g} km" if bar >= 1000 else f"{bar:,.0f} m"
    ax.text(bx + bar / 2, by + 0.012 * h, label, ha="center", va="bottom", fontsize=7, zorder=8)
    ax.annotate("N", xy=(0.96, 0.95), xytext=(0.96, 0.87), xycoords="axes fraction", ha="center",
                fontsize=9, arrowprops={"arrowstyle": "-|>", "color": "k"})
    labels = (["nobody", "0–25%", "25–50%", "50–75%", "75–100%"] if en else
              ["无人覆盖", "0–25%", "25–50%", "50–75%", "75–100%"])
    handles = [Patch(facecolor=c, edgecolor="#777777", label=t) for c, t in zip(SHARE_COLORS, labels)]
    handles.append(Patch(facecolor=NO_PEOPLE_COLOR, edgecolor="#777777", label="no people" if en else "无人口"))
    handles.append(Line2D([], [], linestyle="none", marker="o", mfc=SITE_COLOR, mec="white",
                          label="sites" if en else "设施"))
    if 0 < len(sites) <= MAX_CIRCLES:
        handles.append(Line2D([], [], color="#2c7fb8", lw=0.8, label="service distance" if en else "服务半径"))
    ax.legend(handles=handles, loc="upper left", fontsize=6.5, framealpha=0.85,
              title="share covered" if en else "网格覆盖比例", title_fontsize=7)


def _table(fig: Figure, y: float, title: str, rows: Sequence[Mapping], *, lang: str, served: bool,
           limit: int | None = None) -> float:
    en = _en(lang)
    fig.text(0.08, y, title, fontsize=11, va="top")
    y -= 0.026
    cols = [(0.08, "Name" if en else "名称", "left"), (0.50, "Population" if en else "人口", "right"),
            (0.64, "Covered" if en else "覆盖人口", "right"), (0.76, "Share" if en else "覆盖比例", "right")]
    if served:
        cols.append((0.92, "Sheltered" if en else "可安置", "right"))
    for x, h, ha in cols:
        fig.text(x, y, h, fontsize=8.5, va="top", ha=ha)
    y -= 0.017
    fig.add_artist(Line2D([0.08, 0.93], [y + 0.003, y + 0.003], color="k", lw=0.6))
    shown = list(rows)[:limit] if limit else list(rows)
    for r in shown:
        if y < 0.05:
            fig.text(0.08, y, "…", fontsize=7.5, va="top")
            return y - 0.015
        name = _wrap(str(r.get("name") or r.get("code") or ""), 40).split("\n")[0]
        fig.text(0.08, y, name, fontsize=7.5, va="top")
        fig.text(0.50, y, f"{float(r.get('population', 0)):,.0f}", fontsize=7.5, va="top", ha="right")
        fig.text(0.64, y, f"{float(r.get('covered', 0)):,.0f}", fontsize=7.5, va="top", ha="right")
        fig.text(0.76, y, f"{float(r.get('share', 0)):.1%}", fontsize=7.5, va="top", ha="right",
                 color=share_color(float(r.get("share", 0))) if float(r.get("share", 0)) <= 0 else "k")
        if served:
            fig.text(0.92, y, f"{float(r.get('served', 0)):,.0f}", fontsize=7.5, va="top", ha="right")
        y -= 0.0145
    return y - 0.01


def coverage_pdf(doc: Mapping[str, Any], cmap: CoverageMap | None = None, *, job_id: int | None = None,
                 created_at: str = "", user: str = "", data_version: str = "", lang: str = "zh") -> bytes:
    """The A4 PDF summary of a coverage run.

    Parameters
    ----------
    doc : mapping
        The result document (``population_total``, ``population_covered``, ``share_covered``,
        ``areas``, ``facilities``, ``kind``, ``radius_m``, ``method``, ``demand``, ...).
    cmap : CoverageMap, optional
        The map; without it page 1 says the map is unavailable.
    job_id, created_at, user, data_version
        Shown in the header (the Job's id, time, who ran it, the data version it read).

    Returns
    -------
    bytes
        A two-page A4 portrait PDF.

    Examples
    --------
    >>> doc = {"kind": "shelters", "radius_m": 500.0, "method": "euclidean", "demand": "grids",
    ...        "population_total": 100.0, "population_covered": 40.0, "share_covered": 0.4,
    ...        "facilities": [], "areas": {"districts": [{"code": "1", "name": "桥东区", "population": 100.0,
    ...        "covered": 40.0, "share": 0.4}], "streets": []}}
    >>> coverage_pdf(doc, created_at="2026-01-01 10:00")[:5]
    b'%PDF-'
    """
    en = _en(lang)
    title = "Coverage analysis summary" if en else "设施服务覆盖分析报告"
    kind = _KIND.get(doc.get("kind"), (str(doc.get("kind")),) * 2)[1 if en else 0]
    buf = io.BytesIO()
    areas = doc.get("areas") or {}
    served = "population_served" in doc
    with matplotlib.rc_context(sheet_rc()), PdfPages(buf, metadata={
            "Title": f"{title} {kind}" + (f" #{job_id}" if job_id is not None else ""),
            "Creator": "gisportal", "CreationDate": None, "ModDate": None}) as pdf:
        # ---- page 1: header, parameters, headline figures, map
        fig = Figure(figsize=A4_INCHES)
        fig.text(0.5, 0.965, f"{title} · {kind}", ha="center", va="top", fontsize=16)
        meta = [*parameter_rows(doc, lang),
                ("Job" if en else "任务", "-" if job_id is None else f"#{job_id}"),
                ("Data version" if en else "数据版本", str(data_version or doc.get("data_version", "-"))),
                ("Rule set" if en else "规则版本", str(doc.get("rules_version", "-"))),
                ("Run by" if en else "分析人", user or "-"),
                ("Run at" if en else "分析时间", created_at or "-")]
        y = 0.925
        for label, text in meta:
            text = _wrap(text, 44)
            fig.text(0.08, y, label, fontsize=8.5, va="top", color="#444444")
            fig.text(0.25, y, text, fontsize=8.5, va="top")
            y -= 0.019 * (1 + text.count("\n"))
        hy = 0.925
        fig.text(0.62, hy, "Headline figures" if en else "主要结果", fontsize=10, va="top")
        hy -= 0.024
        for label, text in headline_rows(doc, lang):
            fig.text(0.62, hy, label, fontsize=9, va="top", color="#444444")
            fig.text(0.92, hy, text, fontsize=10, va="top", ha="right")
            hy -= 0.021
        if doc.get("demand_note"):
            fig.text(0.62, hy, _wrap(str(doc["demand_note"]), 40), fontsize=6.5, va="top", color="#666666")
        map_top = min(y, hy) - 0.015
        rect = (0.08, 0.06, 0.84, map_top - 0.06)
        if cmap is not None:
            _draw_map(fig, rect, cmap, lang)
            fig.text(0.08, 0.045, ("EPSG:4547 metres; grids coloured by the share of their people within reach; "
                                   "no basemap." if en else
                                   "EPSG:4547 平面坐标；网格按服务范围内人口比例着色；地图不含底图。"),
                     fontsize=7, color="#666666", va="top")
        else:
            fig.text(0.5, 0.4, "map unavailable" if en else "（无地图）", ha="center", fontsize=12)
        fig.text(0.92, 0.02, "1 / 2", ha="right", fontsize=7, color="#666666")
        pdf.savefig(fig)

        # ---- page 2: districts, then the least covered streets
        fig = Figure(figsize=A4_INCHES)
        y = 0.965
        y = _table(fig, y, "By district" if en else "分区县覆盖情况", areas.get("districts") or [], lang=lang,
                   served=served)
        streets = sorted((r for r in areas.get("streets") or [] if float(r.get("population", 0)) > 0),
                         key=lambda r: (float(r.get("share", 0)), -float(r.get("population", 0))))
        if streets and y > 0.2:
            n = min(LOWEST_STREETS, len(streets))
            y = _table(fig, y - 0.01, (f"Least covered streets/townships (lowest {n})" if en else
                                       f"覆盖比例最低的街道/乡镇（前 {n} 个）"), streets, lang=lang,
                       served=served, limit=LOWEST_STREETS)
        fig.text(0.92, 0.02, "2 / 2", ha="right", fontsize=7, color="#666666")
        pdf.savefig(fig)
    return buf.getvalue()
