"""Export a layer (optionally one district/street/community of it) as GeoJSON, GeoPackage, Shapefile .zip,
CSV, KML or KMZ, in lon/lat (EPSG:4326, RFC 7946) or, with ``crs="gcj02"``, in GCJ-02 for phone apps.

- GeoJSON, CSV and KML are written here, streaming rows from the database.
- GeoPackage and Shapefile are written by pyogrio (its own GDAL); the Shapefile .zip carries a ``.prj`` and a
  UTF-8 ``.cpg``. Shapefile field names are cut to 10 characters by the format; the mapping is the
  identity for every layer's fields (all are <= 10 characters except those listed in ``SHP_NAMES``).
- CSV cells that start with ``= + - @`` (or tab/CR) are prefixed with ``'`` against formula injection;
  numbers are written as numbers, so a negative value is not mangled.

Re-importing an export gives the same features (tests/importers/test_exports.py).
"""
from __future__ import annotations

import csv
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import shapely
from django.conf import settings

from layers.analysis.gcj02 import geometry_wgs84_to_gcj02
from layers.operations import recorded_export

from . import crs as crsmod
from .mapping import SPECS

FORMATS = ("geojson", "gpkg", "shp", "csv", "kml", "kmz")
SHP_NAMES = {"households": "households", "population": "population", "worker_name": "worker",
             "floor_area_m2": "floor_area", "effective_area_m2": "eff_area", "capacity_persons": "capacity",
             "road_class": "road_class", "approximate": "approx", "service_radius_m": "svc_radius"}
CHUNK = 2000


class ExportProblem(ValueError):
    pass


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    count: int
    crs: str


def export_fields(kind: str) -> list[str]:
    """The attributes exported for a KIND: its mapping fields, plus the parent's code."""
    spec = SPECS[kind]
    names = [f.name for f in spec.fields]
    if spec.parent is not None:
        names.append(spec.parent.field)
    return names


def queryset(kind: str, *, district: str | None = None, street: str | None = None,
             community: str | None = None):
    spec = SPECS[kind]
    qs = spec.model.objects.all()
    given = [(k, v) for k, v in (("district", district), ("street", street), ("community", community)) if v]
    if len(given) > 1:
        raise ExportProblem("--district、--street、--community 只能选一个")
    if given:
        level, code = given[0]
        parent_model = {"district": "District", "street": "Street", "community": "Community"}[level]
        from layers import models
        try:
            area = getattr(models, parent_model).objects.get(code=code).geom
        except getattr(models, parent_model).DoesNotExist:
            raise ExportProblem(f"没有代码为 {code} 的{level}") from None
        chain = {"streets": {"district": "district__code"},
                 "communities": {"district": "street__district__code", "street": "street__code"},
                 "grids": {"district": "community__street__district__code", "street": "community__street__code",
                           "community": "community__code"}}
        if kind in chain and level in chain[kind]:
            qs = qs.filter(**{chain[kind][level]: code})
        elif kind == "districts" and level == "district":
            qs = qs.filter(code=code)
        else:
            qs = qs.filter(geom__intersects=area)
    return qs.order_by("pk")


def _rows(kind: str, qs):
    """(attributes dict, shapely geometry in lon/lat) per row, streamed."""
    spec = SPECS[kind]
    names = [f.name for f in spec.fields]
    parent = spec.parent.field if spec.parent else None
    values = names + ([f"{parent}__code"] if parent else []) + ["geom"]
    tr = crsmod.transformer(crsmod.from_srid(settings.GIS_SRID).wkt, crsmod.WGS84)
    batch = []

    def flush():
        geoms = shapely.from_wkb([bytes(r[-1].wkb) for r in batch])
        geoms = shapely.transform(geoms, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
        for r, g in zip(batch, geoms):
            attrs = dict(zip(names, r[:len(names)]))
            if parent:
                attrs[parent] = r[len(names)]
            yield attrs, g
        batch.clear()

    for r in qs.values_list(*values).iterator(chunk_size=CHUNK):
        batch.append(r)
        if len(batch) >= CHUNK:
            yield from flush()
    if batch:
        yield from flush()


def _shift(g, target_crs: str):
    return geometry_wgs84_to_gcj02(g) if target_crs == "gcj02" else g


def _csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, float) else str(v)
    s = str(v)
    if s and s[0] in "=+-@\t\r":
        return "'" + s
    return s


@recorded_export()
def export_layer(kind: str, fmt: str, out, *, district: str | None = None, street: str | None = None,
                 community: str | None = None, crs: str = "wgs84", rows_qs=None) -> ExportResult:
    """Write layer ``kind`` to ``out`` in format ``fmt`` (see module docstring); returns what was written.

    ``rows_qs``: write exactly these rows of the layer (a queryset the caller has already limited to what
    its user may see and searched for) instead of the layer filtered by district / street / community.
    """
    if kind not in SPECS:
        raise ExportProblem(f"未知图层 {kind!r}")
    if fmt not in FORMATS:
        raise ExportProblem(f"未知格式 {fmt!r}；可选：{', '.join(FORMATS)}")
    if crs not in ("wgs84", "gcj02"):
        raise ExportProblem("--crs 只能是 wgs84 或 gcj02")
    out = Path(out)
    if rows_qs is not None:
        if rows_qs.model is not SPECS[kind].model:
            raise ExportProblem(f"查询集不属于图层 {kind!r}")
        qs = rows_qs.order_by("pk")
    else:
        qs = queryset(kind, district=district, street=street, community=community)
    rows = ((a, _shift(g, crs)) for a, g in _rows(kind, qs))
    fields = export_fields(kind)
    if fmt == "geojson":
        n = _write_geojson(out, rows, kind, crs)
    elif fmt == "csv":
        n = _write_csv(out, rows, fields)
    elif fmt in ("kml", "kmz"):
        n = _write_kml(out, rows, fields, kind, kmz=fmt == "kmz")
    else:
        n = _write_ogr(out, rows, fields, kind, fmt)
    return ExportResult(out, fmt, n, "GCJ-02" if crs == "gcj02" else "EPSG:4326")


def _write_geojson(out: Path, rows, kind: str, crs: str) -> int:
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        fh.write('{"type":"FeatureCollection","name":' + json.dumps(kind))
        if crs == "gcj02":
            fh.write(',"coordinate_system":"GCJ-02"')
        fh.write(',"features":[\n')
        for attrs, g in rows:
            if n:
                fh.write(",\n")
            fh.write(json.dumps({"type": "Feature", "properties": attrs,
                                 "geometry": json.loads(shapely.to_geojson(g))}, ensure_ascii=False,
                                separators=(",", ":")))
            n += 1
        fh.write("\n]}\n")
    return n


def _write_csv(out: Path, rows, fields: list[str]) -> int:
    n = 0
    with open(out, "w", encoding="utf-8-sig", newline="") as fh:  # BOM: Excel opens UTF-8 correctly
        w = csv.writer(fh)
        w.writerow(fields + ["lon", "lat", "wkt"])
        for attrs, g in rows:
            c = g if g.geom_type == "Point" else g.representative_point()
            w.writerow([_csv_cell(attrs.get(f)) for f in fields]
                       + [f"{c.x:.7f}", f"{c.y:.7f}", shapely.to_wkt(g, rounding_precision=7)])
            n += 1
    return n


def _kml_geom(g) -> str:
    def coords(seq):
        return " ".join(f"{x:.7f},{y:.7f}" for x, y in seq)
    t = g.geom_type
    if t == "Point":
        return f"<Point><coordinates>{coords(g.coords)}</coordinates></Point>"
    if t == "LineString":
        return f"<LineString><coordinates>{coords(g.coords)}</coordinates></LineString>"
    if t == "Polygon":
        inner = "".join(f"<innerBoundaryIs><LinearRing><coordinates>{coords(r.coords)}</coordinates></LinearRing>"
                        "</innerBoundaryIs>" for r in g.interiors)
        return (f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{coords(g.exterior.coords)}</coordinates>"
                f"</LinearRing></outerBoundaryIs>{inner}</Polygon>")
    return "<MultiGeometry>" + "".join(_kml_geom(p) for p in g.geoms) + "</MultiGeometry>"


def _write_kml(out: Path, rows, fields: list[str], kind: str, kmz: bool) -> int:
    n = 0
    target = out if not kmz else Path(tempfile.mkstemp(suffix=".kml")[1])
    try:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">'
                     f"<Document><name>{escape(kind)}</name>\n")
            for attrs, g in rows:
                title = attrs.get("name") or attrs.get("code") or ""
                data = "".join(f'<Data name="{escape(k)}"><value>{escape(str(v))}</value></Data>'
                               for k, v in attrs.items() if v is not None and k != "name")
                fh.write(f"<Placemark><name>{escape(str(title))}</name><ExtendedData>{data}</ExtendedData>"
                         f"{_kml_geom(g)}</Placemark>\n")
                n += 1
            fh.write("</Document></kml>\n")
        if kmz:
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(target, "doc.kml")
    finally:
        if kmz:
            target.unlink(missing_ok=True)
    return n


def _write_ogr(out: Path, rows, fields: list[str], kind: str, fmt: str) -> int:
    import pyogrio.raw

    spec = SPECS[kind]
    types = {f.name: f.type for f in spec.fields}
    cols: dict[str, list] = {f: [] for f in fields}
    geoms = []
    for attrs, g in rows:  # one layer in memory for the writer (exports are per layer / per area)
        for f in fields:
            cols[f].append(attrs.get(f))
        geoms.append(g)
    field_data = []
    for f in fields:
        vals = cols[f]
        if types.get(f) == "int" and None not in vals:
            field_data.append(np.array(vals, dtype=np.int64))
        elif types.get(f) == "int":  # nullable: NaN is written as NULL
            field_data.append(np.array([np.nan if v is None else v for v in vals], dtype=np.float64))
        elif types.get(f) == "float":
            field_data.append(np.array([np.nan if v is None else v for v in vals], dtype=np.float64))
        elif types.get(f) == "bool":
            field_data.append(np.array([int(bool(v)) for v in vals], dtype=np.int64))
        else:
            field_data.append(np.array(["" if v is None else str(v) for v in vals], dtype=object))
    gtype = {"multipolygon": "MultiPolygon", "point": "Point", "multilinestring": "MultiLineString"}[spec.geom]
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    if fmt == "gpkg":
        out.unlink(missing_ok=True)
        pyogrio.raw.write(str(out), wkb, field_data, fields, driver="GPKG", layer=kind, crs="EPSG:4326",
                          geometry_type=gtype, promote_to_multi=spec.geom != "point")
        return len(geoms)
    names = [SHP_NAMES.get(f, f)[:10] for f in fields]
    with tempfile.TemporaryDirectory(prefix="gisportal-export-") as tmp:
        shp = Path(tmp) / f"{kind}.shp"
        pyogrio.raw.write(str(shp), wkb, field_data, names, driver="ESRI Shapefile", crs="EPSG:4326",
                          geometry_type=gtype, encoding="UTF-8", promote_to_multi=spec.geom != "point")
        (Path(tmp) / f"{kind}.cpg").write_text("UTF-8", encoding="ascii")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                zf.write(Path(tmp) / f"{kind}{ext}", f"{kind}{ext}")
    return len(geoms)
