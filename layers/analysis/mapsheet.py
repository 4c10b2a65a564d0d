"""Grid map sheets for field staff (网格员): one printable page per grid, and an atlas of them (issue 7).

Pure: shapely geometries in ``GIS_SRID`` metres (EPSG:4547, CGCS2000 / 3-degree Gauss-Krüger CM 114°E) plus
plain values in, matplotlib figures out; no Django. The service layer (``layers/services_export.py``) gathers
the data and writes the files.

Scale. A sheet is drawn at a round map scale 1:N (the largest of ``SCALES`` at which the grid, with a
margin, fits the map frame). The map axes are placed in millimetres on the paper and their data limits are
set to exactly ``frame_mm * N / 1000`` metres, so one paper millimetre is ``N / 1000`` metres in both
directions and the scale bar, drawn in paper millimetres outside the map, is exact (the tests measure the
axes transform against it). Portrait or landscape is whichever orientation gives the larger scale.

Coordinates. Tick labels are CGCS2000 Gauss-Krüger metres of EPSG:4547 (E = easting with the 500 000 m
false easting, N = northing); the info panel gives the lon/lat (CGCS2000) of the frame corners and the
meridian convergence, since the top of the sheet is grid north, not true north.

Fonts. Chinese text needs a CJK font; we use Debian's ``fonts-wqy-microhei`` (``scripts/bootstrap.sh``
installs it), registered with ``font_manager.addfont`` and embedded in PDFs as TrueType (``pdf.fonttype
42``), so the text is searchable (``pdftotext``) and prints anywhere. No basemap is fetched, ever.
"""
from __future__ import annotations

import functools
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import matplotlib
import numpy as np
import shapely
from matplotlib import font_manager, patheffects
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Polygon as MplPolygon, Rectangle
from matplotlib.path import Path as MplPath
from shapely.geometry.base import BaseGeometry

__all__ = ["CJK_FONT_PATHS", "SCALES", "PAPER_MM", "Feature", "Neighbour", "GridSheet", "SheetLayout",
           "SheetRender", "IndexRow", "cjk_font_family", "sheet_rc", "plan_sheet", "nice_scale_bar_m",
           "metres_per_mm", "render_sheet", "index_page_count", "render_index_pages", "write_atlas",
           "neighbour_idx", "save_sheet", "render_sheets"]

CJK_FONT_PATHS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei (Debian), our default
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk, if present instead
)
PAPER_MM = {"A4": (210.0, 297.0), "A3": (297.0, 420.0)}  # portrait width, height
SCALES = (500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 15000, 20000, 25000, 50000, 100000)
MM_PER_INCH = 25.4

# Layout in paper millimetres.
MARGIN_MM = 10.0
TITLE_MM = 27.0
FOOTER_MM = 9.0
TICK_ROOM_MM = 6.0          # left of / below the map frame, for coordinate labels
PANEL_BOTTOM_MM = 46.0      # portrait: legend, inset and scale below the map
PANEL_RIGHT_MM = 66.0       # landscape: the same column right of the map
GAP_MM = 3.0

GRID_FILL = "#f6bd60"
GRID_EDGE = "#c1121f"
NEIGHBOUR_EDGE = "#3d5a80"
COMMUNITY_EDGE = "#7b2cbf"
ROAD_STYLE = {  # class -> (casing width pt, core width pt, core colour)
    "trunk": (3.2, 2.4, "#f4a259"), "primary": (2.8, 2.0, "#f7d08a"), "secondary": (2.2, 1.5, "#fbe7b5"),
    "branch": (1.9, 1.1, "#ffffff"), "path": (0.0, 0.6, "#8d99ae"),
}
ROAD_CASING = "#8a7f72"
FACILITY_STYLE = {"facilities": ("s", "#1d4e89", "社区服务设施"), "shelters": ("^", "#2a9d8f", "应急避难场所"),
                  "fire_stations": ("D", "#d62828", "消防站")}
HALO = [patheffects.withStroke(linewidth=2.2, foreground="white")]


# --- inputs and outputs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    """A map feature in GIS_SRID metres: a road, a facility, a shelter or a fire station."""
    geom: BaseGeometry
    name: str = ""
    kind: str = ""  # road class, facility kind or shelter level


@dataclass(frozen=True)
class Neighbour:
    """An adjacent grid, labelled with its code and, in an atlas, the page it is on."""
    code: str
    geom: BaseGeometry
    page: int | None = None


@dataclass(frozen=True)
class GridSheet:
    """Everything one sheet shows. Geometries in GIS_SRID metres."""
    code: str
    geom: BaseGeometry
    community_code: str = ""
    community_name: str = ""
    street_name: str = ""
    district_name: str = ""
    households: int = 0
    population: int = 0
    worker_name: str = ""
    community_geom: BaseGeometry | None = None
    community_grids: tuple[BaseGeometry, ...] = ()   # for the overview inset
    neighbours: tuple[Neighbour, ...] = ()
    other_grids: tuple[BaseGeometry, ...] = ()       # further grids in view, outlined only
    roads: tuple[Feature, ...] = ()
    facilities: tuple[Feature, ...] = ()
    shelters: tuple[Feature, ...] = ()
    fire_stations: tuple[Feature, ...] = ()
    is_sample: bool = False
    data_date: str = ""
    page: int | None = None
    page_count: int | None = None
    corner_lonlat: tuple[tuple[float, float], tuple[float, float]] | None = None  # (lower-left, upper-right)
    convergence_deg: float | None = None             # meridian convergence at the grid (grid north vs true)


@dataclass(frozen=True)
class SheetLayout:
    """Where things go on the paper (mm from the lower-left corner) and at what scale.

    ``extent`` is the map's (xmin, ymin, xmax, ymax) in metres; ``metres_per_mm = scale / 1000`` holds in
    both directions by construction.
    """
    paper: str
    orientation: str
    width_mm: float
    height_mm: float
    map_box_mm: tuple[float, float, float, float]   # x0, y0, width, height
    scale: int
    extent: tuple[float, float, float, float]

    @property
    def metres_per_mm(self) -> float:
        return self.scale / 1000.0


@dataclass(frozen=True)
class SheetRender:
    """A drawn sheet: the figure, its layout, the map axes, and the scale bar as drawn (paper mm)."""
    figure: Figure
    layout: SheetLayout
    map_axes: object
    scale_bar_m: float
    scale_bar_mm: float           # drawn length on paper
    scale_bar_x_mm: tuple[float, float]


@dataclass(frozen=True)
class IndexRow:
    code: str
    community_name: str
    street_name: str
    worker_name: str
    page: int
    geom: BaseGeometry | None = None   # for the key map


# --- fonts --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def cjk_font_family(paths: tuple[str, ...] = CJK_FONT_PATHS) -> str:
    """Register the first CJK font found in ``paths`` with matplotlib and return its family name.

    >>> cjk_font_family()
    'WenQuanYi Micro Hei'
    """
    for p in paths:
        if Path(p).is_file():
            font_manager.fontManager.addfont(p)
            return font_manager.FontProperties(fname=p).get_name()
    raise FileNotFoundError("no CJK font found (tried %s); install Debian's fonts-wqy-microhei "
                            "(scripts/bootstrap.sh does)" % ", ".join(paths))


def sheet_rc() -> dict:
    """matplotlib rcParams for sheets: the CJK font, TrueType embedding in PDF, no timestamps, no hinting."""
    return {"font.family": [cjk_font_family(), "DejaVu Sans"], "pdf.fonttype": 42, "ps.fonttype": 42,
            "axes.unicode_minus": False, "svg.fonttype": "none", "pdf.compression": 6,
            "path.simplify": True, "path.simplify_threshold": 0.3, "text.parse_math": False,
            # Vector output needs no hinting, and FreeType lays text out ~2x faster without it.
            "text.hinting": "no_hinting"}


# --- layout -------------------------------------------------------------------------------------
def _frame_mm(paper: str, orientation: str) -> tuple[float, float, float, float, float, float]:
    pw, ph = PAPER_MM[paper]
    w, h = (pw, ph) if orientation == "portrait" else (ph, pw)
    x0 = MARGIN_MM + TICK_ROOM_MM
    top = h - MARGIN_MM - TITLE_MM
    if orientation == "portrait":
        y0 = MARGIN_MM + FOOTER_MM + PANEL_BOTTOM_MM + GAP_MM + TICK_ROOM_MM
        x1 = w - MARGIN_MM
    else:
        y0 = MARGIN_MM + FOOTER_MM + TICK_ROOM_MM
        x1 = w - MARGIN_MM - PANEL_RIGHT_MM - GAP_MM
    return w, h, x0, y0, x1 - x0, top - y0


def plan_sheet(bounds: Sequence[float], paper: str = "A4", *, margin: float = 0.12,
               orientation: str | None = None) -> SheetLayout:
    """Choose orientation and a round scale so that ``bounds`` (+ ``margin`` each side) fit the map frame.

    The extent is centred on the bounds and sized exactly ``frame_mm * scale / 1000`` metres.

    A 400 m × 250 m grid (496 m × 310 m with margins) fits A4 landscape's 202 mm × 148 mm frame at 1:2 500,
    the upright 184 mm × 186 mm frame only at 1:3 000; on equal scales the grid's own shape decides:

    >>> lay = plan_sheet((0, 0, 400, 250))
    >>> lay.orientation, lay.scale, round(lay.extent[2] - lay.extent[0], 1)
    ('landscape', 2500, 505.0)
    >>> plan_sheet((0, 0, 400, 300)).orientation, plan_sheet((0, 0, 300, 400)).orientation
    ('landscape', 'portrait')
    """
    if paper not in PAPER_MM:
        raise ValueError(f"unknown paper {paper!r}; choose from {sorted(PAPER_MM)}")
    xmin, ymin, xmax, ymax = map(float, bounds)
    need_w = max(xmax - xmin, 1.0) * (1 + 2 * margin)
    need_h = max(ymax - ymin, 1.0) * (1 + 2 * margin)
    best = None
    for orient in ([orientation] if orientation else ["portrait", "landscape"]):
        w, h, x0, y0, fw, fh = _frame_mm(paper, orient)
        exact = max(need_w / fw, need_h / fh) * 1000.0
        scale = next((s for s in SCALES if s >= exact), int(math.ceil(exact / 1000.0) * 1000))
        shape_match = (orient == "landscape") == (need_w > need_h)
        key = (scale, not shape_match)
        if best is None or key < best[0]:
            best = (key, orient, w, h, (x0, y0, fw, fh))
    (scale, _), orient, w, h, box = best
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    half_w, half_h = box[2] * scale / 2000.0, box[3] * scale / 2000.0
    return SheetLayout(paper, orient, w, h, box, scale, (cx - half_w, cy - half_h, cx + half_w, cy + half_h))


def nice_scale_bar_m(metres_per_mm: float, target_mm: float = 40.0) -> float:
    """A round scale-bar length (1, 2, 2.5 or 5 × 10^k m) close to ``target_mm`` on paper, not longer.

    >>> nice_scale_bar_m(2.5)   # 1:2 500 -> 40 mm is 100 m
    100.0
    >>> nice_scale_bar_m(3.0)   # 1:3 000 -> 120 m wanted, 100 m drawn
    100.0
    """
    want = metres_per_mm * target_mm
    k = 10.0 ** math.floor(math.log10(want))
    return max(m * k for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * k <= want * 1.0000001)


def metres_per_mm(fig: Figure, ax) -> tuple[float, float]:
    """Measure the map axes' metres per paper millimetre in x and y from its data transform.

    Independent of how the layout was planned: 1 000 m of data are sent through ``ax.transData`` to
    display pixels, and pixels become millimetres by the figure's dpi.
    """
    x0, y0 = ax.get_xlim()[0], ax.get_ylim()[0]
    p = ax.transData.transform([(x0, y0), (x0 + 1000.0, y0), (x0, y0 + 1000.0)])
    px_per_mm = fig.dpi / MM_PER_INCH
    return 1000.0 / ((p[1, 0] - p[0, 0]) / px_per_mm), 1000.0 / ((p[2, 1] - p[0, 1]) / px_per_mm)


def neighbour_idx(geoms: Sequence[BaseGeometry], target: BaseGeometry, *, tol_m: float = 1.0,
                  tree: shapely.STRtree | None = None) -> np.ndarray:
    """Indices of ``geoms`` within ``tol_m`` of ``target`` (sharing a boundary), excluding equal ones.

    >>> from shapely.geometry import box
    >>> g = [box(0, 0, 1, 1), box(1, 0, 2, 1), box(5, 5, 6, 6)]
    >>> neighbour_idx(g, g[0]).tolist()
    [1]
    """
    tree = tree if tree is not None else shapely.STRtree(np.asarray(geoms, dtype=object))
    idx = np.sort(tree.query(target, predicate="dwithin", distance=tol_m))
    keep = [i for i in idx if not tree.geometries[i].equals(target)]
    return np.asarray(keep, dtype=np.int64)


# --- drawing helpers ----------------------------------------------------------------------------
def _polygons(geom) -> list:
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def _poly_path(geom) -> MplPath | None:
    verts, codes = [], []
    for poly in _polygons(geom):
        for ring in [poly.exterior, *poly.interiors]:
            c = np.asarray(ring.coords)[:, :2]
            if len(c) < 3:
                continue
            verts.append(c)
            codes.append(np.r_[MplPath.MOVETO, np.full(len(c) - 2, MplPath.LINETO), MplPath.CLOSEPOLY])
    if not verts:
        return None
    return MplPath(np.concatenate(verts), np.concatenate(codes).astype(np.uint8))


def _add_poly(ax, geom, **kw) -> None:
    path = _poly_path(geom)
    if path is not None:
        ax.add_patch(PathPatch(path, **kw))


def _lines(geom) -> list[np.ndarray]:
    if geom is None or geom.is_empty:
        return []
    t = geom.geom_type
    if t in ("LineString", "LinearRing"):
        return [np.asarray(geom.coords)[:, :2]]
    if t == "Polygon":
        return [np.asarray(r.coords)[:, :2] for r in [geom.exterior, *geom.interiors]]
    if hasattr(geom, "geoms"):
        return [a for g in geom.geoms for a in _lines(g)]
    return []


def _fmt_int(v: int) -> str:
    return f"{int(v):,}".replace(",", " ")


def _label_point(geom, frame) -> tuple[float, float] | None:
    """A point inside the part of ``geom`` within the (shrunk) frame, for a label; None if none is."""
    part = geom.intersection(frame)
    if part.is_empty or part.area < 1.0:
        return None
    p = part.representative_point() if hasattr(part, "area") else part.centroid
    return p.x, p.y


def _tick_step(span_m: float) -> float:
    for s in (50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000):
        if span_m / s <= 6:
            return float(s)
    return 20000.0


# --- the sheet ----------------------------------------------------------------------------------
class _Canvas:
    """A sheet's figure for one paper and orientation: the static parts (frames, legend, coordinate note,
    north arrow) are drawn once; ``draw`` removes the previous sheet's artists and adds the next one's.
    An atlas reuses one canvas per orientation, which is what makes 500 pages take seconds, not minutes.
    """

    def __init__(self, paper: str, orientation: str, dpi: float = 100.0):
        self.family = family = cjk_font_family()
        W, H, mx, my, mw, mh = _frame_mm(paper, orientation)
        self.paper, self.orientation, self.W, self.H = paper, orientation, W, H
        self.map_box = (mx, my, mw, mh)
        fig = self.figure = Figure(figsize=(W / MM_PER_INCH, H / MM_PER_INCH), dpi=dpi)
        fig.patch.set_facecolor("white")

        def axes_mm(x, y, w, h, **kw):
            a = fig.add_axes((x / W, y / H, w / W, h / H), **kw)
            a.set_axis_off()
            return a

        pax = self.paper_ax = axes_mm(0, 0, W, H, zorder=0)
        pax.set_xlim(0, W)
        pax.set_ylim(0, H)
        ax = self.ax = axes_mm(mx, my, mw, mh, zorder=2)
        ax.set_autoscale_on(False)
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="#fbfaf7", edgecolor="none",
                               zorder=0))
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="none", edgecolor="#1b1b1b",
                               linewidth=0.8, zorder=20, clip_on=False))

        # panel boxes
        if orientation == "portrait":
            py0 = MARGIN_MM + FOOTER_MM
            pw = W - 2 * MARGIN_MM
            legend_box = (MARGIN_MM, py0, 0.36 * pw, PANEL_BOTTOM_MM)
            inset_box = (MARGIN_MM + 0.38 * pw, py0, 0.27 * pw, PANEL_BOTTOM_MM)
            info_box = (MARGIN_MM + 0.67 * pw, py0, 0.33 * pw, PANEL_BOTTOM_MM)
        else:
            px0 = W - MARGIN_MM - PANEL_RIGHT_MM
            ptop = mh + my
            ph = ptop - (MARGIN_MM + FOOTER_MM)
            inset_box = (px0, ptop - 0.34 * ph, PANEL_RIGHT_MM, 0.34 * ph)
            legend_box = (px0, ptop - 0.72 * ph, PANEL_RIGHT_MM, 0.36 * ph)
            info_box = (px0, MARGIN_MM + FOOTER_MM, PANEL_RIGHT_MM, 0.28 * ph)
        self.info_box = info_box

        def text(x, y, s, size=8.0, **kw):
            return pax.text(x, y, s, fontsize=size, family=family, **kw)
        self.text = text

        top = H - MARGIN_MM
        pax.plot([MARGIN_MM, W - MARGIN_MM], [top - TITLE_MM + 2.5] * 2, color="#1b1b1b", linewidth=0.8)
        # legend, drawn by hand (a matplotlib Legend costs ~0.1 s a page)
        lx, ly, lw, lh = legend_box
        text(lx, ly + lh - 1, "图例", 8, va="top")
        entries = [("patch", dict(facecolor=GRID_FILL + "66", edgecolor=GRID_EDGE, linewidth=1.8), "本网格"),
                   ("line", dict(color=NEIGHBOUR_EDGE, linewidth=0.9), "相邻网格（代码、页码）"),
                   ("line", dict(color=COMMUNITY_EDGE, linewidth=1.4, linestyle=(0, (7, 2, 1.5, 2))), "社区边界")]
        for cls, label in (("primary", "主干路 / 快速路"), ("secondary", "次干路"), ("branch", "支路")):
            casing, core, colour = ROAD_STYLE[cls]
            entries.append(("road", (casing, core, colour), label))
        entries.append(("line", dict(color="#8d99ae", linewidth=0.7, linestyle=(0, (3, 2))), "步行道"))
        entries.append(("patch", dict(facecolor="#2a9d8f33", edgecolor="#2a9d8f", linewidth=0.6, hatch="///"),
                        "避难场所范围"))
        for layer in ("facilities", "shelters", "fire_stations"):
            marker, colour, label = FACILITY_STYLE[layer]
            entries.append(("marker", dict(marker=marker, color=colour, markeredgecolor="white",
                                           markersize=6, linestyle="none"), label))
        dy = min(3.6, (lh - 6) / len(entries))
        for i, (kind, style, label) in enumerate(entries):
            y = ly + lh - 6.5 - i * dy
            x0, x1 = lx + 1, lx + 8
            if kind == "patch":
                pax.add_patch(Rectangle((x0, y - 1.1), x1 - x0, 2.2, **style))
            elif kind == "line":
                pax.plot([x0, x1], [y, y], **style)
            elif kind == "road":
                casing, core, colour = style
                pax.plot([x0, x1], [y, y], color=ROAD_CASING, linewidth=casing, solid_capstyle="butt")
                pax.plot([x0, x1], [y, y], color=colour, linewidth=core, solid_capstyle="butt")
            else:
                pax.plot([(x0 + x1) / 2], [y], **style)
            text(x1 + 2, y, label, 7, va="center")

        ix, iy, iw, ih = inset_box
        self.inset_box = inset_box
        text(ix, iy + ih - 1, "位置示意（本网格在社区中）", 7.5, va="top")
        ins = self.ins = fig.add_axes((ix / W, iy / H, iw / W, (ih - 6) / H))
        ins.set_xticks([])
        ins.set_yticks([])
        ins.set_autoscale_on(False)
        for s in ins.spines.values():
            s.set_linewidth(0.5)

        fx, fy, fw, fh = info_box
        ax_x, ax_y = fx + fw - 6, fy + fh - 12
        pax.add_patch(MplPolygon([(ax_x, ax_y + 10), (ax_x - 3, ax_y), (ax_x, ax_y + 2.5)], closed=True,
                                 facecolor="#1b1b1b", edgecolor="#1b1b1b", linewidth=0.5))
        pax.add_patch(MplPolygon([(ax_x, ax_y + 10), (ax_x + 3, ax_y), (ax_x, ax_y + 2.5)], closed=True,
                                 facecolor="white", edgecolor="#1b1b1b", linewidth=0.5))
        text(ax_x, ax_y + 10.8, "北", 8, ha="center", va="bottom")
        self.static = {a: set(a.get_children()) for a in (pax, ax, ins)}

    def reset(self) -> None:
        for a, keep in self.static.items():
            for child in a.get_children():
                if child not in keep:
                    child.remove()

    def draw(self, sheet: GridSheet, lay: SheetLayout) -> SheetRender:
        assert (lay.paper, lay.orientation) == (self.paper, self.orientation)
        self.reset()
        family, text, ax, pax, W, H = self.family, self.text, self.ax, self.paper_ax, self.W, self.H
        mx, my, mw, mh = self.map_box
        xmin, ymin, xmax, ymax = lay.extent
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)  # the limits have the frame's proportions: 1 mm = scale/1000 m both ways
        mpm = lay.metres_per_mm
        frame = shapely.box(xmin, ymin, xmax, ymax)
        inner = shapely.box(xmin + 0.04 * (xmax - xmin), ymin + 0.04 * (ymax - ymin),
                            xmax - 0.04 * (xmax - xmin), ymax - 0.04 * (ymax - ymin))

        # coordinate ticks (GK metres), drawn in paper mm outside the frame, and a light grid inside
        step = _tick_step(xmax - xmin)
        xt = np.arange(math.ceil(xmin / step) * step, xmax, step)
        yt = np.arange(math.ceil(ymin / step) * step, ymax, step)
        segs = [[(v, ymin), (v, ymax)] for v in xt] + [[(xmin, v), (xmax, v)] for v in yt]
        ax.add_collection(LineCollection(segs, colors="#c9c9c9", linewidths=0.3, linestyles=(0, (4, 4)),
                                         zorder=0.5))
        ticks = []
        for v in xt:
            x = mx + (v - xmin) / mpm
            ticks += [[(x, my), (x, my - 1.5)], [(x, my + mh), (x, my + mh + 1.5)]]
            text(x, my - 2.2, _fmt_int(v), 6, ha="center", va="top")
        for v in yt:
            y = my + (v - ymin) / mpm
            ticks += [[(mx, y), (mx - 1.5, y)], [(mx + mw, y), (mx + mw + 1.5, y)]]
            text(mx - 2.2, y, _fmt_int(v), 6, ha="right", va="center", rotation=90, rotation_mode="anchor")
        pax.add_collection(LineCollection(ticks, colors="#1b1b1b", linewidths=0.5))
        text(mx + mw, my - 5.2, "E（米）", 6, ha="right", va="top", color="#555555")

        if sheet.community_geom is not None:  # the community in white on the off-white page
            _add_poly(ax, sheet.community_geom, facecolor="#ffffff", edgecolor="none", zorder=0.6)
        others = [p for g in sheet.other_grids for p in _lines(g)]
        if others:
            ax.add_collection(LineCollection(others, colors="#9aa5b1", linewidths=0.5, zorder=1))
        by_class: dict[str, list[np.ndarray]] = {}
        for r in sheet.roads:
            by_class.setdefault(r.kind if r.kind in ROAD_STYLE else "branch", []).extend(_lines(r.geom))
        for z, part in ((1.5, 0), (1.6, 1)):
            for cls in ("path", "branch", "secondary", "primary", "trunk"):
                segs = by_class.get(cls)
                casing, core, colour = ROAD_STYLE[cls]
                if not segs or (part == 0 and casing == 0):
                    continue
                ax.add_collection(LineCollection(
                    segs, linewidths=casing if part == 0 else core, colors=ROAD_CASING if part == 0 else colour,
                    linestyles="solid" if cls != "path" else (0, (3, 2)), capstyle="round", zorder=z))
        for s in sheet.shelters:
            if s.geom.geom_type in ("Polygon", "MultiPolygon"):
                _add_poly(ax, s.geom, facecolor="#2a9d8f33", edgecolor="#2a9d8f", linewidth=0.6, hatch="///",
                          zorder=1.7)
        _add_poly(ax, sheet.geom, facecolor=GRID_FILL + "66", edgecolor="none", zorder=1.8)
        nb = [p for n in sheet.neighbours for p in _lines(n.geom)]
        if nb:
            ax.add_collection(LineCollection(nb, colors=NEIGHBOUR_EDGE, linewidths=0.9, zorder=2.5))
        if sheet.community_geom is not None:
            _add_poly(ax, sheet.community_geom, facecolor="none", edgecolor=COMMUNITY_EDGE, linewidth=1.6,
                      linestyle=(0, (7, 2, 1.5, 2)), zorder=2.8)
        _add_poly(ax, sheet.geom, facecolor="none", edgecolor=GRID_EDGE, linewidth=2.2, zorder=3)

        label_box = dict(boxstyle="square,pad=0.12", facecolor="white", edgecolor="none", alpha=0.75)
        named: dict[str, BaseGeometry] = {}
        for r in sheet.roads:
            if r.name:
                clipped = r.geom.intersection(inner)
                if not clipped.is_empty and (r.name not in named or clipped.length > named[r.name].length):
                    named[r.name] = clipped
        for name, g in named.items():
            c = max(_lines(g), key=lambda a: np.hypot(*np.diff(a, axis=0).T).sum())
            if len(c) < 2 or np.hypot(*np.diff(c, axis=0).T).sum() < 0.12 * (xmax - xmin):
                continue
            mid = shapely.LineString(c).interpolate(0.5, normalized=True)
            i = min(max(int(np.argmin(np.hypot(c[:, 0] - mid.x, c[:, 1] - mid.y))), 1), len(c) - 1)
            ang = math.degrees(math.atan2(c[i, 1] - c[i - 1, 1], c[i, 0] - c[i - 1, 0]))
            ang = ang - 180 if ang > 90 else ang + 180 if ang < -90 else ang
            ax.text(mid.x, mid.y, name, fontsize=6.5, family=family, color="#5c4b3b", rotation=ang,
                    rotation_mode="anchor", ha="center", va="center", bbox=label_box, zorder=4, clip_on=True)

        for layer in ("facilities", "shelters", "fire_stations"):
            marker, colour, _label = FACILITY_STYLE[layer]
            pts = []
            for f in getattr(sheet, layer):
                p = f.geom if f.geom.geom_type == "Point" else f.geom.representative_point()
                if not inner.contains(p):
                    continue
                pts.append((p.x, p.y))
                if f.name:
                    ax.text(p.x, p.y - 1.6 * mpm, f.name, fontsize=6.2, family=family, color=colour,
                            ha="center", va="top", bbox=label_box, zorder=5, clip_on=True)
            if pts:
                a = np.asarray(pts)
                ax.plot(a[:, 0], a[:, 1], marker=marker, markersize=6.5, color=colour, markeredgecolor="white",
                        markeredgewidth=0.8, linestyle="none", zorder=5.5)

        for n in sheet.neighbours:
            lp = _label_point(n.geom, inner)
            if lp is not None:
                ax.text(*lp, n.code + (f"\n见第 {n.page} 页" if n.page else ""), fontsize=6.3, family=family,
                        color=NEIGHBOUR_EDGE, ha="center", va="center", linespacing=1.15, bbox=label_box,
                        zorder=6, clip_on=True)
        gp = sheet.geom.representative_point()
        ax.text(gp.x, gp.y, f"{sheet.code}\n{sheet.worker_name}" if sheet.worker_name else sheet.code,
                fontsize=9, family=family, color=GRID_EDGE, ha="center", va="center", linespacing=1.25,
                bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=GRID_EDGE, linewidth=0.6,
                          alpha=0.85), zorder=7)
        if sheet.is_sample:
            ax.text(0.5, 0.5, "示例数据", transform=ax.transAxes, fontsize=60, family=family, color="#d62828",
                    alpha=0.07, rotation=30, ha="center", va="center", zorder=8)

        # title block
        top = H - MARGIN_MM
        text(MARGIN_MM, top - 7, f"网格 {sheet.code}", 17, va="baseline", color="#1b1b1b")
        names = " · ".join(x for x in (sheet.district_name, sheet.street_name,
                                       f"{sheet.community_name}（{sheet.community_code}）" if sheet.community_code
                                       else sheet.community_name) if x)
        text(MARGIN_MM, top - 14.5, names, 10.5, va="baseline")
        text(MARGIN_MM, top - 21.5, f"户数 {sheet.households:,}    人口 {sheet.population:,}    "
             f"网格员 {sheet.worker_name or '（未指定）'}", 10, va="baseline")
        if sheet.is_sample:
            text(W - MARGIN_MM, top - 6, "示例数据", 12, ha="right", va="baseline", color="#d62828",
                 bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#d62828", linewidth=1))
            text(W - MARGIN_MM, top - 12, "生成的演示数据，不是官方数据", 6.5, ha="right", va="baseline",
                 color="#d62828")
        if sheet.page:
            text(W - MARGIN_MM, top - 21.5, f"第 {sheet.page} 页"
                 + (f" / 共 {sheet.page_count} 页" if sheet.page_count else ""), 9, ha="right", va="baseline")

        # inset: the grid within its community, equal scale both ways
        ins = self.ins
        ix, iy, iw, ih = self.inset_box
        ih -= 6
        cg = [p for g in sheet.community_grids for p in _lines(g)]
        if cg:
            ins.add_collection(LineCollection(cg, colors="#adb5bd", linewidths=0.35))
        if sheet.community_geom is not None:
            _add_poly(ins, sheet.community_geom, facecolor="none", edgecolor=COMMUNITY_EDGE, linewidth=0.9)
        _add_poly(ins, sheet.geom, facecolor=GRID_EDGE, edgecolor=GRID_EDGE, linewidth=0.5)
        ins.add_patch(Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, facecolor="none", edgecolor="#333333",
                                linewidth=0.5, linestyle=(0, (2, 1.5))))
        base = sheet.community_geom if sheet.community_geom is not None else sheet.geom
        bx0, by0, bx1, by1 = shapely.union(base, frame).bounds
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        half = 0.54 * max(bx1 - bx0, (by1 - by0) * iw / ih)
        ins.set_xlim(cx - half, cx + half)
        ins.set_ylim(cy - half * ih / iw, cy + half * ih / iw)

        # scale bar (paper mm, from the layout's scale), scale, coordinates, data date
        fx, fy, fw, fh = self.info_box
        bar_m = nice_scale_bar_m(mpm, target_mm=min(40.0, fw - 16))
        bar_mm = bar_m / mpm
        bx, by = fx, fy + fh - 9
        for i in range(4):
            pax.add_patch(Rectangle((bx + i * bar_mm / 4, by), bar_mm / 4, 1.6, linewidth=0.5,
                                    edgecolor="#1b1b1b", facecolor="#1b1b1b" if i % 2 == 0 else "white"))
        text(bx, by + 2.4, "0", 6.5, ha="center", va="bottom")
        text(bx + bar_mm / 2, by + 2.4, f"{bar_m / 2:g}", 6.5, ha="center", va="bottom")
        text(bx + bar_mm, by + 2.4, f"{bar_m:g} 米", 6.5, ha="center", va="bottom")
        text(bx, by - 2.0, f"比例尺 1:{_fmt_int(lay.scale)}（{lay.paper} 原大打印，勿缩放）", 7, va="top")
        lines = ["坐标：CGCS2000 高斯-克吕格 3°带", "中央经线 114°E（EPSG:4547），刻度为米"]
        if sheet.corner_lonlat:
            (lo0, la0), (lo1, la1) = sheet.corner_lonlat
            lines.append(f"图廓经度 {lo0:.4f}°E – {lo1:.4f}°E")
            lines.append(f"图廓纬度 {la0:.4f}°N – {la1:.4f}°N")
        if sheet.convergence_deg is not None:
            lines.append(f"图上方为坐标北，子午线收敛角 {sheet.convergence_deg:+.2f}°")
        if sheet.data_date:
            lines.append(f"数据日期 {sheet.data_date}")
        text(fx, by - 7, "\n".join(lines), 6.3, va="top", linespacing=1.35, color="#333333")

        if sheet.neighbours:
            refs = "、".join(n.code + (f"（第 {n.page} 页）" if n.page else "") for n in sheet.neighbours)
            wrapped = textwrap.wrap("相邻网格：" + refs, width=int((W - 2 * MARGIN_MM) / 2.05))
            text(MARGIN_MM, MARGIN_MM + FOOTER_MM - 1.5, "\n".join(wrapped[:2]), 6.5, va="top",
                 color="#333333", linespacing=1.3)
        return SheetRender(self.figure, lay, ax, bar_m, bar_mm, (bx, bx + bar_mm))


def render_sheet(sheet: GridSheet, *, paper: str = "A4", layout: SheetLayout | None = None,
                 dpi: float = 100.0) -> SheetRender:
    """Draw one grid's sheet on a new figure; returns it (not saved) with its layout and scale bar.

    Call inside ``matplotlib.rc_context(sheet_rc())`` when saving, so PDFs embed the TrueType font.
    """
    lay = layout or plan_sheet(sheet.geom.bounds, paper)
    return _Canvas(lay.paper, lay.orientation, dpi).draw(sheet, lay)


# --- atlas --------------------------------------------------------------------------------------
INDEX_ROWS_FIRST = 22   # under the key map
INDEX_ROWS = 52


def index_page_count(n_rows: int) -> int:
    """Pages the atlas index takes for ``n_rows`` grids (a key map and 22 rows, then 52 rows a page).

    >>> index_page_count(10), index_page_count(22), index_page_count(23), index_page_count(500)
    (1, 1, 2, 11)
    """
    if n_rows <= INDEX_ROWS_FIRST:
        return 1
    return 1 + math.ceil((n_rows - INDEX_ROWS_FIRST) / INDEX_ROWS)


def render_index_pages(rows: Sequence[IndexRow], *, title: str, paper: str = "A4", is_sample: bool = False,
                       data_date: str = "") -> list[Figure]:
    """The atlas index: a key map of the selection with page numbers, then a table of code, names, page."""
    family = cjk_font_family()
    W, H = PAPER_MM[paper]
    figs = []
    n_pages = index_page_count(len(rows))
    chunks = [rows[:INDEX_ROWS_FIRST]] + [rows[INDEX_ROWS_FIRST + i * INDEX_ROWS:
                                                INDEX_ROWS_FIRST + (i + 1) * INDEX_ROWS]
                                           for i in range(n_pages - 1)]
    row_h = (H - 2 * MARGIN_MM - 30) / INDEX_ROWS
    for k, chunk in enumerate(chunks):
        fig = Figure(figsize=(W / MM_PER_INCH, H / MM_PER_INCH))
        pax = fig.add_axes((0, 0, 1, 1))
        pax.set_xlim(0, W)
        pax.set_ylim(0, H)
        pax.set_axis_off()
        top = H - MARGIN_MM
        pax.text(MARGIN_MM, top - 7, "网格地图集 · 索引" + (f"（续 {k + 1}）" if k else ""), fontsize=16,
                 family=family, va="baseline")
        pax.text(MARGIN_MM, top - 14, title, fontsize=10, family=family, va="baseline")
        pax.text(W - MARGIN_MM, top - 14, f"共 {len(rows)} 个网格 · 索引第 {k + 1}/{n_pages} 页"
                 + (f" · 数据日期 {data_date}" if data_date else ""), fontsize=8, family=family,
                 ha="right", va="baseline")
        if is_sample:
            pax.text(W - MARGIN_MM, top - 6, "示例数据", fontsize=12, family=family, color="#d62828",
                     ha="right", va="baseline",
                     bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#d62828"))
        y = top - 22
        if k == 0:
            geoms = [r.geom for r in rows if r.geom is not None]
            if geoms:
                kh = H - 2 * MARGIN_MM - 30 - (INDEX_ROWS_FIRST + 1) * row_h - 6
                kax = fig.add_axes((MARGIN_MM / W, (y - kh) / H, (W - 2 * MARGIN_MM) / W, kh / H))
                kax.set_xticks([])
                kax.set_yticks([])
                for r in rows:
                    if r.geom is None:
                        continue
                    _add_poly(kax, r.geom, facecolor=GRID_FILL + "55", edgecolor=GRID_EDGE, linewidth=0.4)
                size = 7 if len(rows) <= 60 else 5 if len(rows) <= 200 else 3.5
                for r in rows:
                    if r.geom is not None:
                        p = r.geom.representative_point()
                        kax.text(p.x, p.y, str(r.page), fontsize=size, family=family, ha="center",
                                 va="center")
                kax.set_aspect("equal", adjustable="datalim")
                kax.autoscale_view()
                kax.set_title("索引图（数字为页码）", fontsize=8, family=family, loc="left")
                y -= kh + 4
        cols = (MARGIN_MM, MARGIN_MM + 42, MARGIN_MM + 82, MARGIN_MM + 125, W - MARGIN_MM)
        heads = ("网格代码", "社区", "街道", "网格员", "页码")
        for x, h in zip(cols, heads):
            pax.text(x, y, h, fontsize=8.5, family=family, va="baseline", ha="right" if h == "页码" else "left")
        pax.plot([MARGIN_MM, W - MARGIN_MM], [y - 1.5] * 2, color="#1b1b1b", linewidth=0.6)
        for j, r in enumerate(chunk):
            yy = y - (j + 1) * row_h - 1
            vals = (r.code, r.community_name, r.street_name, r.worker_name or "—", str(r.page))
            for x, v in zip(cols, vals):
                pax.text(x, yy, v, fontsize=7.5, family=family, va="baseline",
                         ha="right" if x == cols[-1] else "left")
            if j % 2 == 1:
                pax.add_patch(Rectangle((MARGIN_MM, yy - 1.3), W - 2 * MARGIN_MM, row_h, facecolor="#f1f3f5",
                                        edgecolor="none", zorder=-1))
        pax.text(W / 2, MARGIN_MM - 4, f"第 {k + 1} 页", fontsize=8, family=family, ha="center")
        figs.append(fig)
    return figs


def write_atlas(path, sheets: Iterable[GridSheet], index_rows: Sequence[IndexRow], *, title: str,
                paper: str = "A4", is_sample: bool = False, data_date: str = "",
                progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> int:
    """Write the index and one page per sheet to a multi-page PDF at ``path``; returns the page count.

    ``sheets``' ``page`` numbers should follow the index, i.e. start at
    ``index_page_count(len(index_rows)) + 1``. With ``workers`` > 1 (default: the number of cores, at most
    4) and at least ``PARALLEL_MIN_PAGES`` sheets, the sheets are rendered in parts by that many processes
    and the parts joined in order (:func:`_join_pdfs`); the pages are the same drawings either way (only
    each part embeds its own font subset). ``progress(done, total)`` is called after each sheet (one
    process) or each part (several); an exception it raises stops the work and removes the parts.
    With one process ``sheets`` is consumed lazily (one figure in memory at a time).
    """
    from matplotlib.backends.backend_pdf import PdfPages

    total = len(index_rows)
    workers = _atlas_workers(workers)
    if workers > 1 and total >= PARALLEL_MIN_PAGES:
        return _write_atlas_parallel(path, list(sheets), index_rows, title=title, paper=paper,
                                     is_sample=is_sample, data_date=data_date, progress=progress,
                                     workers=workers)
    pages = 0
    with matplotlib.rc_context(sheet_rc()):
        with PdfPages(path, metadata={"Title": title, "Creator": "gisportal", "CreationDate": None}) as pdf:
            for fig in render_index_pages(index_rows, title=title, paper=paper, is_sample=is_sample,
                                          data_date=data_date):
                pdf.savefig(fig)
                pages += 1
            for i, r in enumerate(render_sheets(sheets, paper=paper)):
                pdf.savefig(r.figure)
                pages += 1
                if progress:
                    progress(i + 1, total)
    return pages


#: Below this many sheets an atlas is drawn in this process (starting workers costs ~1-2 s).
PARALLEL_MIN_PAGES = 40


def _atlas_workers(workers: int | None) -> int:
    import os

    if workers is None:
        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, int(workers))


def _render_part(path: str, sheets: list[GridSheet], paper: str) -> int:
    """Worker: draw ``sheets`` into the PDF ``path`` (one part of an atlas); returns the page count."""
    from matplotlib.backends.backend_pdf import PdfPages

    matplotlib.use("agg")
    n = 0
    with matplotlib.rc_context(sheet_rc()):
        with PdfPages(path, metadata={"Creator": "gisportal", "CreationDate": None}) as pdf:
            for r in render_sheets(sheets, paper=paper):
                pdf.savefig(r.figure)
                n += 1
    return n


def _join_pdfs(out, parts: Sequence, *, title: str) -> int:
    """Concatenate the PDFs ``parts`` into ``out`` in order; returns the page count."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for part in parts:
        writer.append(str(part))
    writer.add_metadata({"/Title": title, "/Creator": "gisportal"})
    writer.write(str(out) if not hasattr(out, "write") else out)
    return len(writer.pages)


def _write_atlas_parallel(path, sheets: list[GridSheet], index_rows: Sequence[IndexRow], *, title: str,
                          paper: str, is_sample: bool, data_date: str,
                          progress: Callable[[int, int], None] | None, workers: int) -> int:
    import multiprocessing
    import tempfile
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from matplotlib.backends.backend_pdf import PdfPages

    total = len(sheets)
    size = max(10, math.ceil(total / (workers * 4)))   # ~4 parts per worker: progress, and balance
    chunks = [sheets[i:i + size] for i in range(0, total, size)]
    with tempfile.TemporaryDirectory(prefix="gisportal-atlas-") as tmp:
        tmp = Path(tmp)
        parts = [tmp / f"part{k:04d}.pdf" for k in range(len(chunks) + 1)]
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(_render_part, str(parts[k + 1]), chunk, paper): len(chunk)
                       for k, chunk in enumerate(chunks)}
            with matplotlib.rc_context(sheet_rc()):   # the index, here, while the workers draw
                with PdfPages(parts[0], metadata={"Creator": "gisportal", "CreationDate": None}) as pdf:
                    for fig in render_index_pages(index_rows, title=title, paper=paper, is_sample=is_sample,
                                                  data_date=data_date):
                        pdf.savefig(fig)
            done, pending = 0, set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()   # a worker's exception surfaces here
                    done += futures[f]
                    if progress:
                        progress(done, total)
        except BaseException:   # cancelled or failed: stop the workers now, the parts go with ``tmp``
            procs = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(10)
            raise
        pool.shutdown(wait=True)
        return _join_pdfs(path, parts, title=title)


def render_sheets(sheets: Iterable[GridSheet], *, paper: str = "A4", dpi: float = 100.0) -> Iterator[SheetRender]:
    """Render sheets one after another on one reused figure per orientation (much faster than
    ``render_sheet`` each); each yielded figure is valid until the next one is drawn on it."""
    canvases: dict[str, _Canvas] = {}
    for sheet in sheets:
        lay = plan_sheet(sheet.geom.bounds, paper)
        if lay.orientation not in canvases:
            canvases[lay.orientation] = _Canvas(paper, lay.orientation, dpi)
        yield canvases[lay.orientation].draw(sheet, lay)


def save_sheet(sheet: GridSheet, path_or_file, *, fmt: str = "pdf", paper: str = "A4", dpi: float = 150.0) -> SheetRender:
    """Render one sheet and save it as PDF (vector) or PNG (at ``dpi``)."""
    with matplotlib.rc_context(sheet_rc()):
        r = render_sheet(sheet, paper=paper, dpi=dpi)
        if fmt == "pdf":
            r.figure.savefig(path_or_file, format="pdf", metadata={"Creator": "gisportal", "CreationDate": None})
        else:
            r.figure.savefig(path_or_file, format=fmt, dpi=dpi)
    return r
