"""Grid maps and grid data for field staff (issue 7): select grids, then write an atlas, sheets or data.

Selection (``grid_selection``): one of district / street / community / grid code, or everything; a user in
group ``field_staff`` (not a superuser) only ever gets the grids whose ``Grid.worker`` is them, and asking
for anyone else's grid is refused (``GridExportDenied``). ``user=None`` is the command-line operator.

Formats (``export_grids``):

- ``pdf``: an atlas — index page(s) with a key map and a table of codes, names and page numbers, then one
  vector page per grid (``layers.analysis.mapsheet``) with neighbour page references. ``per_grid=True``
  writes one PDF per grid into a .zip named ``<grid code>.pdf``.
- ``png``: one sheet at ``dpi``; several grids need ``per_grid`` (a .zip of ``<grid code>.png``).
- ``kml`` / ``kmz``: styled polygons named by grid code, attributes in ``ExtendedData`` (written here with
  ``xml.etree``, which escapes text).
- ``geojson`` / ``gpkg`` / ``shp`` (.zip with ``.prj`` and UTF-8 ``.cpg``) / ``csv`` (formula-injection
  safe): written by the general layer writers of ``importers/exports.py``, fed with the grid rows here.
- ``tif``: a GeoTIFF in EPSG:4547 whose single Int64 band holds the 15-digit grid code itself (0 = no grid).
  15-digit codes need more than 32 bits; Int64 GeoTIFF is read by GDAL >= 3.5 (Debian 12 has 3.6, QGIS
  3.28+), so no side table is needed. The pixel size is ``res_m`` (default: the smallest of 1/2/5/10/20/50
  m that keeps the raster within 4 000 pixels a side). Pixels belong to the grid that contains their
  centre.

All vector data formats are lon/lat EPSG:4326, or GCJ-02 with ``crs="gcj02"`` (for AMap-based apps); the
GeoTIFF stays in EPSG:4547 and refuses ``gcj02``.
"""
from __future__ import annotations

import datetime as dt
import io
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from xml.etree import ElementTree as ET

import matplotlib
import numpy as np
import shapely
from django.conf import settings
from django.contrib.gis.geos import Polygon
from django.db.models import Q

from . import models
from .analysis import mapsheet
from .analysis.gcj02 import geometry_wgs84_to_gcj02
from .operations import recorded_export

FORMATS = ("pdf", "png", "kml", "kmz", "geojson", "gpkg", "shp", "csv", "tif")
FIELD_STAFF_GROUP = "field_staff"
NEIGHBOUR_TOL_M = 1.0
ATTRIBUTES = ("code", "community", "comm_name", "street", "district", "households", "population",
              "worker_name", "is_sample")
TIF_MAX_PX = 4000


class GridExportProblem(ValueError):
    """Bad input: unknown code, empty selection, unsupported option. The message is for the user."""


class GridExportDenied(GridExportProblem):
    """The user may not export (some of) the asked grids."""


@dataclass(frozen=True)
class GridExportResult:
    path: Path
    format: str
    count: int                  # grids exported
    pages: int | None           # PDF pages (index + sheets), None for data formats
    crs: str
    files: tuple[str, ...] = ()  # names inside a .zip (per-grid)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# --- selection ----------------------------------------------------------------------------------
def is_field_worker(user) -> bool:
    """A user in group ``field_staff`` who is not a superuser: sees only their own grids."""
    return bool(user is not None and not user.is_superuser
                and user.groups.filter(name=FIELD_STAFF_GROUP).exists())


def grid_selection(*, district: str | None = None, street: str | None = None, community: str | None = None,
                   grid: str | None = None, user=None):
    """The grids to export, ordered by code. Raises GridExportProblem / GridExportDenied with a reason.

    At most one of district / street / community / grid; none means every grid the user may see.
    """
    given = [(k, v) for k, v in (("district", district), ("street", street), ("community", community),
                                 ("grid", grid)) if v]
    if len(given) > 1:
        raise GridExportProblem("--district、--street、--community、--grid 只能选一个")
    qs = models.Grid.objects.all()
    if given:
        level, code = given[0]
        model, lookup, label = {
            "district": (models.District, "community__street__district__code", "区县"),
            "street": (models.Street, "community__street__code", "街道"),
            "community": (models.Community, "community__code", "社区"),
            "grid": (models.Grid, "code", "网格")}[level]
        if not model.objects.filter(code=code).exists():
            raise GridExportProblem(f"没有代码为 {code} 的{label}")
        qs = qs.filter(**{lookup: code})
    if user is not None:
        if not user.is_active:
            raise GridExportDenied(f"用户 {user.get_username()} 已停用")
        if is_field_worker(user):
            mine = qs.filter(worker=user)
            if not mine.exists():
                raise GridExportDenied(f"用户 {user.get_username()} 是网格员，只能导出分配给本人的网格；"
                                       "所选范围内没有分配给他/她的网格")
            if level_is_single_grid(given) and not mine.filter(code=given[0][1]).exists():
                raise GridExportDenied(f"网格 {given[0][1]} 未分配给用户 {user.get_username()}")
            qs = mine
        elif not (user.is_superuser or user.has_perm("layers.view_grid")):
            raise GridExportDenied(f"用户 {user.get_username()} 无权查看网格")
    if not qs.exists():
        raise GridExportProblem("所选范围内没有网格")
    return qs.order_by("code")


def level_is_single_grid(given) -> bool:
    return bool(given) and given[0][0] == "grid"


# --- loading ------------------------------------------------------------------------------------
def _shp(geom) -> shapely.Geometry:
    return shapely.from_wkb(bytes(geom.wkb))


@dataclass(frozen=True)
class _GridRow:
    pk: int
    code: str
    community_id: int
    community_code: str
    community_name: str
    street_name: str
    district_name: str
    households: int
    population: int
    worker_name: str
    is_sample: bool
    geom: shapely.Geometry


def _grid_rows(qs) -> list[_GridRow]:
    out = []
    for r in qs.values_list("pk", "code", "community_id", "community__code", "community__name",
                            "community__street__name", "community__street__district__name", "households",
                            "population", "worker_name", "worker__username", "is_sample", "geom"):
        out.append(_GridRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9] or (r[10] or ""),
                            r[11], _shp(r[12])))
    return out


def _geos_box(bounds) -> Polygon:
    box = Polygon.from_bbox(tuple(bounds))
    box.srid = settings.GIS_SRID
    return box


class _Context:
    """Everything drawn around the selected grids, loaded once, queried per sheet with STRtrees."""

    def __init__(self, rows: list[_GridRow], layouts: list[mapsheet.SheetLayout]):
        ext = np.array([lay.extent for lay in layouts])
        env = _geos_box((ext[:, 0].min(), ext[:, 1].min(), ext[:, 2].max(), ext[:, 3].max()))
        community_ids = sorted({r.community_id for r in rows})
        grids = list(models.Grid.objects.filter(Q(geom__intersects=env) | Q(community_id__in=community_ids))
                     .values_list("code", "community_id", "geom"))
        self.grid_codes = [g[0] for g in grids]
        self.grid_community = np.array([g[1] for g in grids])
        self.grid_geoms = np.array([_shp(g[2]) for g in grids], dtype=object)
        self.grid_tree = shapely.STRtree(self.grid_geoms)
        self.communities = {pk: _shp(g) for pk, g in
                            models.Community.objects.filter(pk__in=community_ids).values_list("pk", "geom")}

        def load(qs, fields):
            vals = list(qs.filter(geom__intersects=env).values_list(*fields, "geom"))
            geoms = np.array([_shp(v[-1]) for v in vals], dtype=object)
            return vals, geoms, shapely.STRtree(geoms)

        self.roads = load(models.Road.objects.all(), ("name", "road_class"))
        self.facilities = load(models.ServiceFacility.objects.all(), ("name", "kind"))
        self.shelters = load(models.Shelter.objects.all(), ("name", "level"))
        self.fire_stations = load(models.FireStation.objects.all(), ("name", "kind"))

    def features(self, which: str, frame, clip: bool = False) -> tuple[mapsheet.Feature, ...]:
        vals, geoms, tree = getattr(self, which)
        idx = np.sort(tree.query(frame, predicate="intersects"))
        out = []
        for i in idx:
            g = geoms[i]
            if clip:
                g = g.intersection(frame)
                if g.is_empty:
                    continue
            out.append(mapsheet.Feature(g, vals[i][0] or "", vals[i][1] or ""))
        return tuple(out)


def _transformer(to_epsg: int = 4326):
    from .analysis.transform import transformer
    return transformer(settings.GIS_SRID, to_epsg)


def _sheets(rows: list[_GridRow], layouts, pages: dict[str, int] | None, data_date: str,
            page_count: int | None) -> Iterator[mapsheet.GridSheet]:
    from pyproj import Proj

    ctx = _Context(rows, layouts)
    tr = _transformer()
    proj = Proj(f"EPSG:{settings.GIS_SRID}")
    by_community: dict[int, tuple] = {}
    for row, lay in zip(rows, layouts):
        frame = shapely.box(*lay.extent)
        clip_box = frame.buffer((lay.extent[2] - lay.extent[0]) * 0.02, join_style="mitre")
        in_view = np.sort(ctx.grid_tree.query(frame, predicate="intersects"))
        near = set(mapsheet.neighbour_idx(ctx.grid_geoms, row.geom, tol_m=NEIGHBOUR_TOL_M,
                                          tree=ctx.grid_tree).tolist())
        neighbours = tuple(mapsheet.Neighbour(ctx.grid_codes[i], ctx.grid_geoms[i],
                                              (pages or {}).get(ctx.grid_codes[i])) for i in sorted(near))
        others = tuple(ctx.grid_geoms[i] for i in in_view
                       if i not in near and ctx.grid_codes[i] != row.code)
        if row.community_id not in by_community:
            by_community[row.community_id] = tuple(ctx.grid_geoms[ctx.grid_community == row.community_id])
        lon, lat = tr.transform([lay.extent[0], lay.extent[2]], [lay.extent[1], lay.extent[3]])
        c = row.geom.centroid
        clon, clat = tr.transform(c.x, c.y)
        conv = float(proj.get_factors(clon, clat).meridian_convergence)
        yield mapsheet.GridSheet(
            code=row.code, geom=row.geom, community_code=row.community_code,
            community_name=row.community_name, street_name=row.street_name or "",
            district_name=row.district_name or "", households=row.households, population=row.population,
            worker_name=row.worker_name, community_geom=ctx.communities.get(row.community_id),
            community_grids=by_community[row.community_id], neighbours=neighbours, other_grids=others,
            roads=ctx.features("roads", clip_box, clip=True), facilities=ctx.features("facilities", frame),
            shelters=ctx.features("shelters", clip_box, clip=True),
            fire_stations=ctx.features("fire_stations", frame), is_sample=row.is_sample,
            data_date=data_date, page=(pages or {}).get(row.code), page_count=page_count,
            corner_lonlat=((float(lon[0]), float(lat[0])), (float(lon[1]), float(lat[1]))),
            convergence_deg=conv)


def grid_sheets(qs, *, paper: str = "A4", data_date: str | None = None,
                first_page: int | None = None) -> Iterator[mapsheet.GridSheet]:
    """The pure sheets of the grids in ``qs`` (lazily), numbered from ``first_page`` when given."""
    rows = _grid_rows(qs)
    layouts = [mapsheet.plan_sheet(r.geom.bounds, paper) for r in rows]
    pages = {r.code: first_page + i for i, r in enumerate(rows)} if first_page else None
    total = (first_page - 1 + len(rows)) if first_page else None
    return _sheets(rows, layouts, pages, data_date or dt.date.today().isoformat(), total)


# --- data rows ----------------------------------------------------------------------------------
def _attrs(r: _GridRow) -> dict:
    return {"code": r.code, "community": r.community_code, "comm_name": r.community_name,
            "street": r.street_name or "", "district": r.district_name or "", "households": r.households,
            "population": r.population, "worker_name": r.worker_name, "is_sample": int(bool(r.is_sample))}


def grid_rows_lonlat(rows: list[_GridRow], crs: str = "wgs84") -> Iterator[tuple[dict, shapely.Geometry]]:
    """(attributes, geometry in EPSG:4326 or GCJ-02) per grid row."""
    tr = _transformer()
    geoms = shapely.transform(np.array([r.geom for r in rows], dtype=object),
                              lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    for r, g in zip(rows, geoms):
        yield _attrs(r), (geometry_wgs84_to_gcj02(g) if crs == "gcj02" else g)


KML_NS = "http://www.opengis.net/kml/2.2"
FIELD_LABELS = {"code": "网格代码", "community": "社区代码", "comm_name": "社区", "street": "街道",
                "district": "区县", "households": "户数", "population": "人口", "worker_name": "网格员",
                "is_sample": "示例数据"}


def _kml_coords(ring) -> str:
    return " ".join(f"{x:.7f},{y:.7f}" for x, y in np.asarray(ring.coords)[:, :2])


def write_kml(out: Path, rows: Iterator[tuple[dict, shapely.Geometry]], *, title: str, kmz: bool = False,
              crs: str = "wgs84") -> int:
    """Styled KML/KMZ: one Placemark per grid, named by code, attributes in ExtendedData."""
    ET.register_namespace("", KML_NS)
    k = lambda tag: f"{{{KML_NS}}}{tag}"  # noqa: E731
    root = ET.Element(k("kml"))
    doc = ET.SubElement(root, k("Document"))
    ET.SubElement(doc, k("name")).text = title
    ET.SubElement(doc, k("description")).text = (
        "网格范围（" + ("GCJ-02 坐标，适用于高德等地图" if crs == "gcj02" else "WGS84/CGCS2000 经纬度") + "）")
    for sid, fill, line in (("grid", "55f6bd60", "ff1f12c1"), ("grid_sample", "40f6bd60", "ff1f12c1")):
        style = ET.SubElement(doc, k("Style"), id=sid)
        ls = ET.SubElement(style, k("LineStyle"))
        ET.SubElement(ls, k("color")).text = line  # aabbggrr: #c1121f
        ET.SubElement(ls, k("width")).text = "2.5"
        ps = ET.SubElement(style, k("PolyStyle"))
        ET.SubElement(ps, k("color")).text = fill
        lab = ET.SubElement(style, k("LabelStyle"))
        ET.SubElement(lab, k("scale")).text = "0.8"
    n = 0
    for attrs, g in rows:
        pm = ET.SubElement(doc, k("Placemark"))
        ET.SubElement(pm, k("name")).text = attrs["code"]
        ET.SubElement(pm, k("description")).text = (
            f"{attrs['district']} {attrs['street']} {attrs['comm_name']}；户数 {attrs['households']}，"
            f"人口 {attrs['population']}；网格员 {attrs['worker_name'] or '（未指定）'}"
            + ("；示例数据" if attrs["is_sample"] else ""))
        ET.SubElement(pm, k("styleUrl")).text = "#grid_sample" if attrs["is_sample"] else "#grid"
        ext = ET.SubElement(pm, k("ExtendedData"))
        for key, value in attrs.items():
            d = ET.SubElement(ext, k("Data"), name=key)
            ET.SubElement(d, k("displayName")).text = FIELD_LABELS.get(key, key)
            ET.SubElement(d, k("value")).text = str(value)
        mg = ET.SubElement(pm, k("MultiGeometry"))
        for poly in mapsheet._polygons(g):
            pg = ET.SubElement(mg, k("Polygon"))
            ob = ET.SubElement(ET.SubElement(pg, k("outerBoundaryIs")), k("LinearRing"))
            ET.SubElement(ob, k("coordinates")).text = _kml_coords(poly.exterior)
            for hole in poly.interiors:
                ib = ET.SubElement(ET.SubElement(pg, k("innerBoundaryIs")), k("LinearRing"))
                ET.SubElement(ib, k("coordinates")).text = _kml_coords(hole)
        n += 1
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    if kmz:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("doc.kml", data)
    else:
        Path(out).write_bytes(data)
    return n


def tif_resolution_m(bounds, max_px: int = TIF_MAX_PX) -> float:
    """The finest of 1, 2, 5, 10, 20, 50, 100 m keeping the raster within ``max_px`` a side."""
    span = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    return next((r for r in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0) if span / r <= max_px), 200.0)


def write_tif(out: Path, rows: list[_GridRow], *, res_m: float | None = None) -> dict:
    """GeoTIFF (EPSG:4547) of grid codes: Int64 band, 0 = no grid, pixel owned by the grid holding its centre."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    geoms = [r.geom for r in rows]
    xmin, ymin, xmax, ymax = shapely.total_bounds(np.array(geoms, dtype=object))
    res = float(res_m or tif_resolution_m((xmin, ymin, xmax, ymax)))
    x0, y1 = math.floor(xmin / res) * res, math.ceil(ymax / res) * res
    width = int(math.ceil((xmax - x0) / res))
    height = int(math.ceil((y1 - ymin) / res))
    transform = from_origin(x0, y1, res, res)
    band = rasterize(((g, int(r.code)) for g, r in zip(geoms, rows)), out_shape=(height, width),
                     transform=transform, fill=0, dtype="int64")
    with rasterio.open(out, "w", driver="GTiff", width=width, height=height, count=1, dtype="int64",
                       crs=f"EPSG:{settings.GIS_SRID}", transform=transform, nodata=0, compress="deflate",
                       predictor=2, tiled=width > 256 and height > 256) as dst:
        dst.write(band, 1)
        dst.set_band_description(1, "grid code (15 digits, Int64; 0 = no grid)")
        dst.update_tags(GRID_CODE_TYPE="Int64 15-digit code", RESOLUTION_M=str(res), CRS="EPSG:4547")
    return {"res_m": res, "width": width, "height": height}


# --- the export ---------------------------------------------------------------------------------
def _title(rows: list[_GridRow], given: dict) -> str:
    level = next((k for k, v in given.items() if v), None)
    r = rows[0]
    if level == "district":
        return f"{r.district_name}（{given['district']}）"
    if level == "street":
        return f"{r.district_name} · {r.street_name}（{given['street']}）"
    if level in ("community", "grid"):
        return f"{r.district_name} · {r.street_name} · {r.community_name}（{r.community_code}）"
    return "全部网格" if len(rows) > 1 else r.code


@recorded_export("grids")
def export_grids(fmt: str, out, *, district: str | None = None, street: str | None = None,
                 community: str | None = None, grid: str | None = None, user=None, crs: str = "wgs84",
                 paper: str = "A4", dpi: int = 150, per_grid: bool = False, res_m: float | None = None,
                 data_date: str | None = None,
                 progress: Callable[[float, str], None] | None = None) -> GridExportResult:
    """Export the selected grids (see module docstring) to ``out``; returns what was written.

    Raises GridExportProblem (bad input, empty selection) or GridExportDenied (user not allowed).
    """
    t0 = time.perf_counter()
    progress = progress or (lambda f, m: None)
    if fmt not in FORMATS:
        raise GridExportProblem(f"未知格式 {fmt!r}；可选：{', '.join(FORMATS)}")
    if crs not in ("wgs84", "gcj02"):
        raise GridExportProblem("--crs 只能是 wgs84 或 gcj02")
    if paper not in mapsheet.PAPER_MM:
        raise GridExportProblem(f"--paper 只能是 {' 或 '.join(mapsheet.PAPER_MM)}")
    if not (30 <= int(dpi) <= 600):
        raise GridExportProblem("--dpi 应在 30 到 600 之间")
    if per_grid and fmt not in ("pdf", "png"):
        raise GridExportProblem("--per-grid 只用于 pdf 或 png")
    if crs == "gcj02" and fmt in ("pdf", "png", "tif"):
        raise GridExportProblem(f"{fmt} 以 CGCS2000（EPSG:4547）输出，不支持 --crs gcj02")
    out = Path(out)
    given = {"district": district, "street": street, "community": community, "grid": grid}
    qs = grid_selection(user=user, **given)
    rows = _grid_rows(qs)
    n = len(rows)
    if fmt == "png" and n > 1 and not per_grid:
        raise GridExportProblem(f"所选范围有 {n} 个网格；PNG 每个文件一张图，请加 --per-grid（输出 .zip）")
    progress(0.02, f"{n} 个网格")
    date = data_date or dt.date.today().isoformat()
    crs_label = "GCJ-02" if crs == "gcj02" else "EPSG:4326"
    title = _title(rows, given)
    sample = any(r.is_sample for r in rows)

    if fmt in ("pdf", "png"):
        layouts = [mapsheet.plan_sheet(r.geom.bounds, paper) for r in rows]
        if fmt == "pdf" and not per_grid:
            first = mapsheet.index_page_count(n) + 1
            pages = {r.code: first + i for i, r in enumerate(rows)}
            index = [mapsheet.IndexRow(r.code, r.community_name, r.street_name or "", r.worker_name,
                                       pages[r.code], r.geom) for r in rows]
            count = mapsheet.write_atlas(
                out, _sheets(rows, layouts, pages, date, first - 1 + n), index, title=title, paper=paper,
                is_sample=sample, data_date=date,
                progress=lambda i, t: progress(0.05 + 0.95 * i / t, f"第 {i}/{t} 个网格"))
            return GridExportResult(out, fmt, n, count, "EPSG:4547", (), time.perf_counter() - t0)
        names = []
        save_kw = {"metadata": {"Creator": "gisportal", "CreationDate": None}} if fmt == "pdf" else {"dpi": dpi}
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) if per_grid else _nullzip() as zf, \
                matplotlib.rc_context(mapsheet.sheet_rc()):
            renders = mapsheet.render_sheets(_sheets(rows, layouts, None, date, None), paper=paper, dpi=dpi)
            for i, (row, r) in enumerate(zip(rows, renders)):
                buf = io.BytesIO() if per_grid else out
                r.figure.savefig(buf, format=fmt, **save_kw)
                if per_grid:
                    names.append(f"{row.code}.{fmt}")
                    zf.writestr(names[-1], buf.getvalue())
                progress(0.05 + 0.95 * (i + 1) / n, f"第 {i + 1}/{n} 个网格")
        return GridExportResult(out, fmt, n, n if fmt == "pdf" else None, "EPSG:4547", tuple(names),
                                time.perf_counter() - t0)

    if fmt == "tif":
        info = write_tif(out, rows, res_m=res_m)
        progress(1.0, "GeoTIFF")
        return GridExportResult(out, fmt, n, None, "EPSG:4547", (), time.perf_counter() - t0, info)

    data = grid_rows_lonlat(rows, crs)
    if fmt in ("kml", "kmz"):
        count = write_kml(out, data, title=f"网格 · {title}", kmz=fmt == "kmz", crs=crs)
    else:
        # the general layer writers (importers/exports.py), fed with our rows; kind "grids" gives the types
        from importers import exports as layer_exports

        if fmt == "geojson":
            count = layer_exports._write_geojson(out, data, "grids", crs)
        elif fmt == "csv":
            count = layer_exports._write_csv(out, data, list(ATTRIBUTES))
        else:
            count = layer_exports._write_ogr(out, data, list(ATTRIBUTES), "grids", fmt)
    progress(1.0, fmt)
    return GridExportResult(out, fmt, count, None, crs_label, (), time.perf_counter() - t0)


class _nullzip:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def username_user(username: str):
    """The user called ``username``, or GridExportProblem."""
    from django.contrib.auth import get_user_model

    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise GridExportProblem(f"没有用户 {username}") from None

