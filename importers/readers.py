"""Readers: a file on disk -> a stream of raw features ``(number, attributes, WKB, problem)``.

Every input is first staged into a temporary directory we own, under names we chose (``data.shp`` …),
after the content and zip checks of :mod:`importers.safety`; GDAL is then given only that path and exactly
one driver. CSV is parsed by Python's ``csv`` module (no GDAL). Features stream one at a time.

Formats: Shapefile (loose or in a .zip), GeoJSON, GeoPackage (``layer``), CSV (lon/lat or x/y columns or
a WKT column, Chinese or English headers), KML/KMZ, DXF (closed polylines and hatches become polygons,
points and block inserts become points, the CAD layer is the ``cad_layer`` attribute).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import shapely
from shapely.geometry import Point

from . import encoding as enc
from . import safety
from .gdalio import GDALReadError, OGRDataset, config

DRIVERS = {"shapefile": "ESRI Shapefile", "geojson": "GeoJSON", "gpkg": "GPKG", "kml": "KML", "dxf": "DXF"}
STAGED_EXT = {"shapefile": ".shp", "geojson": ".geojson", "gpkg": ".gpkg", "kml": ".kml", "dxf": ".dxf",
              "csv": ".csv"}
SHP_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")

LON_NAMES = ("经度", "lon", "lng", "long", "longitude", "经度坐标")
LAT_NAMES = ("纬度", "lat", "latitude", "纬度坐标")
X_NAMES = ("x", "x坐标", "东坐标", "easting", "横坐标")
Y_NAMES = ("y", "y坐标", "北坐标", "northing", "纵坐标")
WKT_NAMES = ("wkt", "geometry", "geom", "几何", "shape", "the_geom")


class ReadProblem(ValueError):
    """The file cannot be read. ``row`` is the 1-based feature/row when known."""

    def __init__(self, code: str, message: str, row: int | None = None):
        super().__init__(message)
        self.code = code
        self.row = row


@dataclass
class RawFeature:
    number: int
    attrs: dict
    wkb: bytes | None
    problem: str | None = None   # a per-feature read problem (machine code or message)


@dataclass
class Source:
    """An opened input. Iterate :meth:`features` once."""

    name: str
    fmt: str
    driver: str
    staged: Path
    layer: str | None = None
    layers: list[str] = field(default_factory=list)
    crs_wkt: str | None = None
    crs_from: str | None = None
    encoding: enc.EncodingChoice | None = None
    fields: list[str] = field(default_factory=list)
    count: int | None = None
    notes: list[str] = field(default_factory=list)
    _iter: object = None

    def features(self) -> Iterator[RawFeature]:
        return self._iter()


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "")


# --- staging -----------------------------------------------------------------------------------

def _stage_shapefile_loose(path: Path, tmp: Path) -> Path:
    siblings = {p.suffix.lower(): p for p in path.parent.iterdir() if p.stem == path.stem and p.is_file()}
    for ext in (".dbf", ".shx"):
        if ext not in siblings:
            raise ReadProblem(f"missing_{ext[1:]}", f"缺少 {path.stem}{ext}：Shapefile 需要 .shp、.shx、.dbf 三个文件"
                              "（最好还有 .prj 和 .cpg），请一起上传或打包成 .zip")
    for ext in SHP_SIDECARS:
        if ext in siblings:
            shutil.copyfile(siblings[ext], tmp / f"data{ext}")
    return tmp / "data.shp"


def _stage_zip(path: Path, tmp: Path, layer: str | None, limits: safety.Limits, kmz: bool) -> tuple[Path, str]:
    infos = safety.check_zip(path, limits)
    datasets = {}
    for info in infos:
        p = Path(info.filename.replace("\\", "/"))
        if p.name.startswith(".") or "__MACOSX" in p.parts:
            continue
        ext = p.suffix.lower()
        fmt = {".shp": "shapefile", ".gpkg": "gpkg", ".geojson": "geojson", ".json": "geojson", ".kml": "kml",
               ".csv": "csv", ".dxf": "dxf"}.get(ext)
        if fmt and (not kmz or fmt == "kml"):
            datasets[str(p.with_suffix(""))] = (fmt, info)
    if not datasets:
        raise ReadProblem("zip_no_dataset", "压缩包中没有可导入的数据文件（.shp/.gpkg/.geojson/.kml/.csv/.dxf）")
    if kmz and len(datasets) > 1:
        pick = next((k for k in datasets if Path(k).name.lower() == "doc"), sorted(datasets)[0])
    elif len(datasets) == 1:
        pick = next(iter(datasets))
    elif layer and any(Path(k).name == layer for k in datasets):
        pick = next(k for k in datasets if Path(k).name == layer)
        layer = None
    else:
        raise ReadProblem("zip_many_datasets", "压缩包中有多个数据文件，请用 --layer 选择其一："
                          + "、".join(sorted(Path(k).name for k in datasets)))
    fmt, info = datasets[pick]
    with zipfile.ZipFile(path) as zf:
        if fmt == "shapefile":
            by_ext = {}
            for other in infos:
                op = Path(other.filename.replace("\\", "/"))
                if str(op.with_suffix("")) == pick:
                    by_ext[op.suffix.lower()] = other
            for ext in (".dbf", ".shx"):
                if ext not in by_ext:
                    raise ReadProblem(f"missing_{ext[1:]}", f"压缩包中缺少 {Path(pick).name}{ext}")
            for ext in SHP_SIDECARS:
                if ext in by_ext:
                    safety.extract_member(zf, by_ext[ext], tmp / f"data{ext}", limits)
        else:
            safety.extract_member(zf, info, tmp / f"data{STAGED_EXT[fmt]}", limits)
    return tmp / f"data{STAGED_EXT[fmt]}", fmt


def stage(path: Path, tmp: Path, *, layer: str | None, limits: safety.Limits) -> tuple[Path, str]:
    """Copy or extract the input into ``tmp``; returns the staged dataset path and its format."""
    fmt = safety.format_from_name(path.name)
    safety.check_size(path, limits)
    safety.check_content(path, fmt)
    if fmt in ("zip", "kmz"):
        staged, fmt = _stage_zip(path, tmp, layer, limits, kmz=fmt == "kmz")
        safety.check_size(staged, limits)
        safety.check_content(staged, fmt)
    elif fmt == "shapefile":
        staged = _stage_shapefile_loose(path, tmp)
    else:
        staged = tmp / f"data{STAGED_EXT[fmt]}"
        shutil.copyfile(path, staged)
    return staged, fmt


# --- opening -----------------------------------------------------------------------------------

_CRS_OK = re.compile(r"^(urn:ogc:def:crs:(epsg::?\d+|ogc:1\.3:crs84)|epsg:\d+)$", re.I)


def _geojson_crs_member(path: Path, offset: int | None) -> dict | None:
    """The top-level ``crs`` member's value (``offset`` is just after its key, from the scan)."""
    if offset is None:
        return None
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read(1 << 16).decode("utf-8", errors="replace")
    text = text.lstrip()
    if not text.startswith(":"):
        raise ReadProblem("crs_member_invalid", "GeoJSON 的 crs 成员无法解析")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[1:].lstrip())
    except ValueError:
        raise ReadProblem("crs_member_invalid", "GeoJSON 的 crs 成员无法解析") from None
    return value if isinstance(value, dict) else {"invalid": value}


def _check_geojson_crs(member: dict | None) -> bool:
    if member is None:
        return False
    name = ((member.get("properties") or {}).get("name") if isinstance(member.get("properties"), dict)
            else None)
    if member.get("type") != "name" or not isinstance(name, str) or not _CRS_OK.match(name.strip()):
        raise ReadProblem("crs_url", "GeoJSON 的 crs 成员只接受 EPSG 名称（如 urn:ogc:def:crs:EPSG::4490）；"
                          f"不接受链接或 URL：{json.dumps(member, ensure_ascii=False)[:200]}")
    return True


def _decoder(encoding: str):
    def dec(value, number):
        if isinstance(value, bytes):
            try:
                return value.decode(encoding)
            except UnicodeDecodeError:
                raise ReadProblem("encoding_error", f"属性文字无法按 {encoding} 解码（可用 --encoding 指定）",
                                  row=number) from None
        return value
    return dec


def open_source(path: Path, tmp: Path, *, name: str, layer: str | None = None, encoding: str | None = None,
                limits: safety.Limits = safety.Limits()) -> Source:
    """Stage and open ``path``; raises :class:`ReadProblem` or :class:`safety.UnsafeInput`."""
    staged, fmt = stage(path, tmp, layer=layer, limits=limits)
    if fmt == "csv":
        return _open_csv(staged, name, encoding, limits)
    if fmt == "kml":
        safety.scan_kml(staged, limits)
        return _open_kml(staged, name, layer, limits)
    src = Source(name=name, fmt=fmt, driver=DRIVERS[fmt], staged=staged)
    open_options = {}
    cfg = {}
    text_encoding = enc.UTF8
    if fmt == "shapefile":
        safety.scan_shx(staged.with_suffix(".shx"), limits)
        cpg = staged.with_suffix(".cpg")
        src.encoding = enc.choose_for_dbf(staged.with_suffix(".dbf"), cpg if cpg.exists() else None, encoding)
        text_encoding = src.encoding.encoding
        open_options["ENCODING"] = ""  # no recoding by GDAL: we decode the raw bytes ourselves
        if not staged.with_suffix(".prj").exists():
            src.notes.append("no_prj")
    elif fmt == "geojson":
        choice = enc.choose_for_text(staged, encoding)
        if choice.encoding not in (enc.UTF8, "utf-8-sig"):
            utf8 = staged.with_name("data.utf8.geojson")
            with open(staged, encoding=choice.encoding) as fin, open(utf8, "w", encoding="utf-8") as fout:
                shutil.copyfileobj(fin, fout)
            staged = utf8
        src.encoding = choice
        _n, crs_offset = safety.scan_geojson(staged, limits)
        has_crs = _check_geojson_crs(_geojson_crs_member(staged, crs_offset))
        src.crs_from = "geojson_crs" if has_crs else None
    elif fmt == "kml":
        safety.scan_kml(staged, limits)
        src.encoding = enc.EncodingChoice(enc.UTF8, "format")
    elif fmt == "dxf":
        cfg["DXF_INLINE_BLOCKS"] = "FALSE"
        cfg["DXF_MERGE_BLOCK_GEOMETRIES"] = "FALSE"
        if encoding:
            cfg["DXF_ENCODING"] = enc.normalise(encoding).upper()
        src.encoding = enc.EncodingChoice(enc.normalise(encoding) if encoding else enc.UTF8,
                                          "override" if encoding else "format")
    elif fmt == "gpkg":
        src.encoding = enc.EncodingChoice(enc.UTF8, "format")
    # GDAL never fetches anything: no network, no sibling scanning beyond our own directory.
    cfg.update(GDAL_HTTP_TIMEOUT="1", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".none", GDAL_DISABLE_READDIR_ON_OPEN="TRUE"
               if fmt != "shapefile" else "EMPTY_DIR", OGR_GEOJSON_MAX_OBJ_SIZE="0")
    with config(**cfg):
        try:
            ds = OGRDataset(str(staged), DRIVERS[fmt], open_options)
        except GDALReadError as exc:
            raise ReadProblem("open_failed", str(exc)) from None
        names = [n.decode(text_encoding, errors="replace") for n in ds.layer_names()]
    src.layers = names
    if fmt == "dxf":
        indices = [names.index("entities")] if "entities" in names else [0]
    elif layer is not None and fmt in ("gpkg", "kml", "geojson"):
        if layer not in names:
            ds.close()
            raise ReadProblem("layer_missing", f"没有名为 {layer!r} 的图层；可选：{'、'.join(names)}")
        indices = [names.index(layer)]
    elif fmt == "gpkg" and len(names) > 1:
        ds.close()
        raise ReadProblem("layer_required", f"GeoPackage 有多个图层，请用 --layer 选择：{'、'.join(names)}")
    else:
        indices = list(range(len(names)))
    if not indices:
        ds.close()
        raise ReadProblem("no_layers", "文件中没有图层")
    layers = [ds.layer(i) for i in indices]
    src.layer = ", ".join(names[i] for i in indices)
    lay0 = layers[0]
    try:
        src.fields = [n.decode(text_encoding) for n in lay0.field_names_raw]
    except UnicodeDecodeError:
        ds.close()
        raise ReadProblem("encoding_error", f"字段名无法按 {text_encoding} 解码（可用 --encoding 指定编码）") from None
    if fmt == "dxf":
        src.fields = list(DXF_FIELDS)
    wkt = lay0.srs_wkt()
    if fmt == "geojson" and src.crs_from is None:
        wkt = None  # GDAL reports WGS 84 for every GeoJSON; without a crs member we check the coordinates
    src.crs_wkt = wkt
    src.crs_from = src.crs_from or ("file" if wkt else None)
    counts = [lay.feature_count() for lay in layers]
    src.count = None if any(c is None for c in counts) else sum(counts)
    if src.count is not None and src.count > limits.max_features:
        ds.close()
        raise safety.UnsafeInput("too_many_features", f"要素数 {src.count:,} 超过上限 {limits.max_features:,}")
    decode = _decoder(text_encoding)
    max_wkb = 16 * limits.max_vertices_per_feature + 4096
    dxf_layer = layer if fmt == "dxf" else None

    def iterate():
        number = 0
        try:
            with config(**cfg):
                for lay in layers:
                    fnames = [n.decode(text_encoding, errors="replace") for n in lay.field_names_raw]
                    try:
                        for _n, values, wkb, problem in lay.features(max_wkb):
                            number += 1
                            attrs = dict(zip(fnames, values))
                            for k, v in attrs.items():   # strings come back as bytes: decode those only
                                if v.__class__ is bytes:
                                    attrs[k] = decode(v, number)
                            if fmt == "dxf":
                                attrs = _dxf_attrs(attrs)
                                if dxf_layer and attrs.get("cad_layer") != dxf_layer:
                                    continue
                                wkb = _dxf_geom(wkb)
                            yield RawFeature(number, attrs, wkb, problem)
                    except GDALReadError as exc:
                        raise ReadProblem("read_failed", str(exc), row=number + 1) from None
        finally:
            ds.close()

    src._iter = iterate
    return src


DXF_FIELDS = ("cad_layer", "handle", "text", "block", "cad_entity")


def _dxf_attrs(attrs: dict) -> dict:
    out = {"cad_layer": attrs.get("Layer"), "handle": attrs.get("EntityHandle")}
    if attrs.get("Text"):
        out["text"] = attrs["Text"]
    if attrs.get("BlockName"):
        out["block"] = attrs["BlockName"]
    out["cad_entity"] = attrs.get("SubClasses") or ""
    return {k: out.get(k) for k in DXF_FIELDS}


def _dxf_geom(wkb: bytes | None) -> bytes | None:
    """Closed polylines become polygons; everything else is passed through."""
    if wkb is None:
        return None
    g = shapely.from_wkb(wkb)
    g = shapely.force_2d(g)
    if g.geom_type == "LineString" and g.is_closed and len(g.coords) >= 4:
        g = shapely.Polygon(g.coords)
    elif g.geom_type == "MultiLineString" and all(p.is_closed and len(p.coords) >= 4 for p in g.geoms):
        g = shapely.MultiPolygon([shapely.Polygon(p.coords) for p in g.geoms])
    return shapely.to_wkb(g)


# --- CSV -----------------------------------------------------------------------------------------

def _find(headers: list[str], names: tuple[str, ...]) -> str | None:
    normed = {_norm(h): h for h in headers}
    for n in names:
        if _norm(n) in normed:
            return normed[_norm(n)]
    return None


_POINT_WKB = struct.Struct("<BIdd")


def _num(text: str) -> float:
    v = float(text.strip())
    if not math.isfinite(v):
        raise ValueError("not finite")
    return v


def _open_csv(staged: Path, name: str, encoding: str | None, limits: safety.Limits) -> Source:
    choice = enc.choose_for_text(staged, encoding)
    csv.field_size_limit(limits.max_csv_cell_bytes)
    try:
        with open(staged, encoding=choice.encoding, newline="") as fh:
            first = fh.readline()
    except UnicodeDecodeError:
        raise ReadProblem("encoding_error", f"CSV 无法按 {choice.encoding} 解码（可用 --encoding 指定编码）") from None
    if not first.strip():
        raise ReadProblem("csv_no_header", "CSV 第一行应为表头（例如 名称,经度,纬度）", row=1)
    delimiter = max(",;\t|", key=first.count)
    headers = next(csv.reader(io.StringIO(first), delimiter=delimiter))
    headers = [h.strip() for h in headers]
    lon, lat = _find(headers, LON_NAMES), _find(headers, LAT_NAMES)
    x, y = _find(headers, X_NAMES), _find(headers, Y_NAMES)
    wkt = _find(headers, WKT_NAMES)
    if wkt:  # the full geometry wins over point columns (our own CSV exports carry both)
        cols, kind = (wkt,), "wkt"
    elif lon and lat:
        cols, kind = (lon, lat), "lonlat"
    elif x and y:
        cols, kind = (x, y), "xy"
    else:
        raise ReadProblem("csv_no_geometry", "CSV 中找不到坐标列：需要 经度/纬度（lon/lat）、X/Y 或 WKT 列", row=1)
    geo_cols = set(cols) | ({lon, lat} - {None} if kind == "wkt" else set())
    src = Source(name=name, fmt="csv", driver="csv", staged=staged, encoding=choice,
                 fields=[h for h in headers if h not in geo_cols])
    src.crs_from = None
    src.notes.append(f"csv_geometry_{kind}")
    max_wkt = limits.max_vertices_per_feature * 48

    def iterate():
        with open(staged, encoding=choice.encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                next(reader)
                for number, row in enumerate(reader, start=1):
                    if not any(c.strip() for c in row):
                        continue
                    if len(row) != len(headers):
                        yield RawFeature(number, {}, None, f"csv_columns:{len(row)}:{len(headers)}")
                        continue
                    rec = dict(zip(headers, row))
                    attrs = {k: v for k, v in rec.items() if k not in geo_cols}
                    try:
                        if kind == "wkt":
                            text = rec[wkt].strip()
                            if len(text) > max_wkt or text.count(",") > limits.max_vertices_per_feature:
                                yield RawFeature(number, attrs, None, "too_many_vertices")
                                continue
                            if text.upper().startswith("GEOMETRYCOLLECTION"):
                                yield RawFeature(number, attrs, None, "geometry_collection")
                                continue
                            if re.search(r"\b(nan|inf)", text, re.I):
                                raise ValueError("not finite")
                            g = shapely.from_wkt(text)
                        else:  # little-endian WKB Point, without a round trip through GEOS
                            yield RawFeature(number, attrs, _POINT_WKB.pack(1, 1, _num(rec[cols[0]]),
                                                                            _num(rec[cols[1]])))
                            continue
                    except (ValueError, shapely.errors.GEOSException):
                        yield RawFeature(number, attrs, None, "coordinates_unparsable")
                        continue
                    yield RawFeature(number, attrs, shapely.to_wkb(g))
            except UnicodeDecodeError:
                raise ReadProblem("encoding_error", f"CSV 无法按 {choice.encoding} 解码（可用 --encoding 指定编码）", row=None) from None
            except csv.Error as exc:
                raise ReadProblem("csv_malformed", f"CSV 格式错误：{exc}", row=reader.line_num) from None

    src._iter = iterate
    return src


# --- KML (parsed here: the plain KML driver drops ExtendedData, LIBKML may follow network links) ------

_KML_NS = "{http://www.opengis.net/kml/2.2}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _kml_coords(text: str | None, limits: safety.Limits) -> list[tuple[float, float]]:
    out = []
    for tup in (text or "").split():
        parts = tup.split(",")
        if len(parts) < 2:
            raise ValueError("bad coordinate tuple")
        x, y = float(parts[0]), float(parts[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError("not finite")
        out.append((x, y))
        if len(out) > limits.max_vertices_per_feature:
            raise OverflowError
    return out


def _kml_geometry(el, limits: safety.Limits, depth: int = 0):
    tag = _local(el.tag)
    if depth > 8:
        raise OverflowError
    if tag == "Point":
        c = _kml_coords(el.findtext(f"{_KML_NS}coordinates") or el.findtext("coordinates"), limits)
        return Point(c[0])
    if tag == "LineString":
        return shapely.LineString(_kml_coords(el.findtext(f"{_KML_NS}coordinates") or el.findtext("coordinates"),
                                              limits))
    if tag == "Polygon":
        rings = []
        for child in el:
            if _local(child.tag) in ("outerBoundaryIs", "innerBoundaryIs"):
                for ring in child:
                    if _local(ring.tag) == "LinearRing":
                        coords = None
                        for c in ring:
                            if _local(c.tag) == "coordinates":
                                coords = _kml_coords(c.text, limits)
                        rings.append((_local(child.tag), coords or []))
        outer = [c for k, c in rings if k == "outerBoundaryIs"]
        if not outer:
            return shapely.Polygon()
        return shapely.Polygon(outer[0], [c for k, c in rings if k == "innerBoundaryIs"])
    if tag == "MultiGeometry":
        parts = [_kml_geometry(c, limits, depth + 1) for c in el if _local(c.tag) in
                 ("Point", "LineString", "Polygon", "MultiGeometry")]
        types = {p.geom_type for p in parts}
        if types == {"Polygon"}:
            return shapely.MultiPolygon(parts)
        if types == {"LineString"}:
            return shapely.MultiLineString(parts)
        if types == {"Point"}:
            return shapely.MultiPoint(parts)
        return shapely.GeometryCollection(parts)
    return None


def _open_kml(staged: Path, name: str, layer: str | None, limits: safety.Limits) -> Source:
    import xml.etree.ElementTree as ET

    fields: list[str] = ["name", "description"]
    # a first pass for the attribute names (streaming; cheap next to the import itself)
    try:
        for _ev, el in ET.iterparse(staged, events=("end",)):
            t = _local(el.tag)
            if t == "Data" and el.get("name") and el.get("name") not in fields:
                fields.append(el.get("name"))
            elif t == "SimpleData" and el.get("name") and el.get("name") not in fields:
                fields.append(el.get("name"))
            elif t == "Placemark":
                el.clear()
    except ET.ParseError as exc:
        raise ReadProblem("kml_malformed", f"KML 格式错误：{exc}") from None
    src = Source(name=name, fmt="kml", driver="kml", staged=staged, fields=fields,
                 encoding=enc.EncodingChoice(enc.UTF8, "format"))
    src.crs_wkt = None  # KML is always WGS84 lon/lat; checked like any lon/lat
    src.layer = layer

    def iterate():
        number = 0
        folder: list[str] = []
        try:
            for ev, el in ET.iterparse(staged, events=("start", "end")):
                t = _local(el.tag)
                if t == "Folder":
                    if ev == "start":
                        folder.append("")
                    else:
                        folder.pop()
                    continue
                if t == "name" and ev == "end" and folder and not folder[-1]:
                    folder[-1] = (el.text or "").strip()
                if ev != "end" or t != "Placemark":
                    continue
                number += 1
                attrs = {"name": None, "description": None}
                geom = None
                problem = None
                for child in el:
                    ct = _local(child.tag)
                    if ct in ("name", "description"):
                        attrs[ct] = (child.text or "").strip()
                    elif ct == "ExtendedData":
                        for d in child.iter():
                            dt = _local(d.tag)
                            if dt == "Data" and d.get("name"):
                                attrs[d.get("name")] = (d.findtext(f"{_KML_NS}value") or d.findtext("value") or "").strip()
                            elif dt == "SimpleData" and d.get("name"):
                                attrs[d.get("name")] = (d.text or "").strip()
                    elif ct in ("Point", "LineString", "Polygon", "MultiGeometry"):
                        try:
                            geom = _kml_geometry(child, limits)
                        except OverflowError:
                            problem = "too_many_vertices"
                        except (ValueError, IndexError):
                            problem = "coordinates_unparsable"
                el.clear()
                if layer is not None and (not folder or folder[-1] != layer):
                    continue
                if geom is not None and geom.geom_type == "GeometryCollection" and not problem:
                    problem = "geometry_collection"
                yield RawFeature(number, attrs, None if geom is None or problem else shapely.to_wkb(geom), problem)
        except ET.ParseError as exc:
            raise ReadProblem("kml_malformed", f"KML 格式错误（文件损坏或被截断）：{exc}", row=number + 1) from None

    src._iter = iterate
    return src
