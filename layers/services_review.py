"""Housing project review (issue 4): submission -> nearby layers as arrays -> pure rules -> report.

One path for the web page, the REST API and ``manage.py review_project``:

* :func:`parse_path` / :func:`parse_submission` read a submission (GeoJSON; a Shapefile .zip, GeoPackage
  or DXF through the importers' readers and the hook
  :func:`layers.analysis.submission.project_from_features`);
* :func:`gather_context` fetches, with spatial lookups only (``intersects`` / ``dwithin``, which use
  the spatial index on PostGIS; no Python loop over the city's features), the districts, streets,
  communities and grids under the site, the shelters and fire stations within reach, the demand
  already assigned to those shelters (grid population within the shelters' service distance) and
  the facilities near the site;
* :func:`review_submission` runs :func:`layers.analysis.rules.review` (with ``reach_method="network"`` in
  the rule set, the reach rules walk the roads near the site: :func:`_road_network`);
* :func:`save_review` stores the project, its facilities and (once the models exist) the report,
  in one transaction.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from functools import reduce
from operator import or_
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import numpy as np
import shapely
import shapely.geometry
from django.conf import settings
from django.contrib.gis.db.models.functions import AsWKB
from django.contrib.gis.geos import GEOSGeometry, Polygon
from django.contrib.gis.measure import D
from django.db import transaction
from django.db.models import Q

from . import models
from .analysis import rules as R
from .analysis import submission as submission_mod
from .analysis.submission import Submission, SubmissionError, parse_submission as _parse

__all__ = ["rule_set", "parse_submission", "parse_path", "gather_context", "review_submission",
           "review_path", "save_review", "SubmissionError"]

#: Submission kinds -> ServiceFacility.Kind (the submission default is ``community_service``).
KIND_TO_MODEL = {"community_service": "community_service_centre"}


def rule_set() -> R.RuleSet:
    """The active rule set, from ``settings.GISPORTAL_RULES``."""
    return R.RuleSet.from_settings(settings.GISPORTAL_RULES)


def parse_submission(data, *, srid: int | None = None) -> Submission:
    """GeoJSON text/bytes/dict -> :class:`Submission` in ``GIS_SRID`` (raises SubmissionError)."""
    return _parse(data, srid=srid, storage_srid=settings.GIS_SRID)


def parse_path(path, *, srid: int | None = None, attrs: Mapping[str, Any] | None = None) -> Submission:
    """Read a submission file: GeoJSON, or a Shapefile ``.zip`` / loose ``site.shp``, a GeoPackage or a DXF.

    GeoJSON goes to :func:`parse_submission` unchanged. The other formats are read by the importers'
    readers (:func:`importers.readers.open_source`: staging in a temporary directory, the zip and size
    limits, the .cpg / GBK detection) and handed to :func:`project_from_features`:

    * the layer ``site`` (GeoPackage layer, ``site.shp`` in the zip, DXF CAD layer ``site``: closed
      polylines) gives the one site, the layer ``facility`` the facilities (points, block inserts or
      footprints); the role comes from the layer name, attributes by name (``households``, ``name``,
      ``developer``, ``population``, ``kind``, ``floor_area_m2`` -- also ``floor_area`` as a Shapefile
      truncates it -- or the Chinese 户数 / 名称 / 建设单位 / 人口 / 类型 / 建筑面积);
    * DXF has no attributes: TEXT / MTEXT entities ``key=value`` on layer ``site`` fill the site, those on
      layer ``facility`` the nearest facility; DXF has no CRS either, so ``srid`` is required;
    * the CRS: ``srid`` (an EPSG code the importers allow), else the file's (.prj, GeoPackage), else
      lon/lat when the coordinates are lon/lat in China; otherwise refused;
    * ``attrs`` fills the site properties the file leaves empty (``name``, ``developer``, ``households``,
      ``population`` only: a facility's floor area always comes from the file).

    Raises SubmissionError with the reason; nothing is stored.
    """
    p = Path(path)
    if not p.is_file():
        raise SubmissionError("file", f"找不到文件 {p}", f"no such file: {p}")
    suffix = p.suffix.lower()
    if suffix in LAYERED_SUFFIXES:
        return _parse_layered(p, suffix, srid=srid, attrs=attrs)
    if attrs:
        raise SubmissionError("attrs", "GeoJSON 报审文件的属性请写在要素的 properties 中（attrs 只用于 .zip/.gpkg/.dxf）",
                              "put a GeoJSON submission's attributes in its properties (attrs is for .zip/.gpkg/.dxf)")
    return parse_submission(p.read_bytes(), srid=srid)


# --------------------------------------------------------------------------------------------
# Shapefile (.zip) / GeoPackage / DXF submissions, through the importers' readers
# --------------------------------------------------------------------------------------------
LAYERED_SUFFIXES = (".zip", ".shp", ".gpkg", ".dxf")
SITE_LAYER, FACILITY_LAYER = "site", "facility"
#: Site properties that ``attrs`` may fill (a facility's floor area never has a default).
ATTR_KEYS = ("name", "developer", "households", "population")
#: Attribute names -> submission property (normalised: lower case, no spaces / underscores).
_PROP_ALIASES = {
    "name": ("name", "名称", "项目名称", "设施名称"),
    "developer": ("developer", "建设单位", "开发商", "开发单位"),
    "households": ("households", "户数", "总户数"),
    "population": ("population", "人口", "人口数"),
    "kind": ("kind", "类型", "设施类型"),
    "floor_area_m2": ("floor_area_m2", "floorarea", "floorarea_", "flooraream", "area_m2", "建筑面积", "面积"),
}
_ALIAS = {a.replace("_", "").replace(" ", "").lower(): k for k, names in _PROP_ALIASES.items() for a in names}
_KV_RE = re.compile(r"^\s*([^=:：＝]+?)\s*[=:：＝]\s*(.*?)\s*$")

#: English for the importers' refusal codes (their messages are Chinese).
_READ_EN = {
    "zip_corrupt": "the zip archive is corrupt",
    "zip_too_many_entries": "the zip archive has too many entries",
    "zip_unsafe_path": "the zip archive has an unsafe entry path (absolute or ..)",
    "zip_symlink": "the zip archive holds a symbolic link",
    "zip_encrypted": "the zip archive holds an encrypted entry",
    "zip_too_large": "the zip archive unpacks to more than the size limit",
    "zip_ratio": "a zip entry has an abnormal compression ratio (a zip bomb?)",
    "zip_no_dataset": "the zip archive holds no dataset",
    "zip_many_datasets": "the zip archive holds several datasets",
    "missing_dbf": "the Shapefile's .dbf is missing",
    "missing_shx": "the Shapefile's .shx is missing",
    "file_too_large": "the file is larger than the limit",
    "empty_file": "the file is empty",
    "content_mismatch": "the file's content is not the format its name says",
    "vrt_refused": "GDAL VRT files are refused",
    "format_unsupported": "unsupported file type",
    "open_failed": "the file cannot be opened",
    "read_failed": "the file cannot be read",
    "layer_missing": "the layer is missing",
    "layer_required": "several layers; the layer must be chosen",
    "no_layers": "the file has no layers",
    "too_many_features": "too many features",
    "too_many_vertices": "too many vertices in one feature",
    "geometry_collection": "a GeometryCollection cannot be a site or facility",
    "encoding_error": "the attribute text cannot be decoded in the declared/detected encoding (check the .cpg)",
    "encoding_undetected": "the attribute text is neither UTF-8 nor GBK/GB18030",
    "encoding_unknown": "unknown character encoding",
    "crs_missing": "the file has no CRS and its coordinates are not lon/lat in China; give srid",
    "crs_unreadable": "the file's CRS cannot be read; give srid",
    "swapped_axes": "latitude and longitude are swapped",
    "srid_not_int": "srid must be an integer EPSG code",
    "srid_not_allowed": "srid is not one of the allowed CRSs (CGCS2000, Xian 80, Beijing 54 zones, WGS84, 3857)",
}


def _read_error(exc) -> SubmissionError:
    code = getattr(exc, "code", "read_failed")
    row = getattr(exc, "row", None)
    at_zh = f"（第 {row} 个要素）" if row else ""
    at_en = f" (feature {row})" if row else ""
    return SubmissionError(code, f"{exc}{at_zh}", f"{_READ_EN.get(code, 'the file cannot be read')}{at_en}: {exc}")


def _limits():
    from importers.services import limits_from_settings
    lim = limits_from_settings()
    return dataclasses.replace(
        lim, max_file_bytes=min(lim.max_file_bytes, submission_mod.MAX_BYTES),
        max_zip_total_bytes=min(lim.max_zip_total_bytes, 4 * submission_mod.MAX_BYTES),
        max_features=min(lim.max_features, submission_mod.MAX_FEATURES),
        max_vertices_per_feature=min(lim.max_vertices_per_feature, submission_mod.MAX_VERTICES))


def _props(raw_attrs: Mapping[str, Any]) -> dict:
    """File attributes -> submission properties (known names only; empty values dropped)."""
    out = {}
    for k, v in raw_attrs.items():
        key = _ALIAS.get(str(k).replace("_", "").replace(" ", "").lower())
        if key is None or v is None or (isinstance(v, str) and not v.strip()):
            continue
        out.setdefault(key, v.strip() if isinstance(v, str) else v)
    return out


def _single(g):
    """2-D; a one-part Multi* becomes its part (Shapefile / GeoPackage layers are often Multi)."""
    g = shapely.force_2d(g)
    if g.geom_type in ("MultiPoint", "MultiPolygon") and len(g.geoms) == 1:
        g = g.geoms[0]
    return g


def _raw_features(src, role: str) -> list[tuple[dict, Any]]:
    out = []
    from importers.readers import ReadProblem
    try:
        for raw in src.features():
            if raw.problem:
                code = raw.problem.split(":")[0]
                raise SubmissionError(code if code in _READ_EN else "read_failed",
                                      f"{role} 图层第 {raw.number} 个要素无法读取：{raw.problem}",
                                      f"layer {role}, feature {raw.number} cannot be read: {raw.problem}")
            if raw.wkb is None:
                raise SubmissionError("geometry", f"{role} 图层第 {raw.number} 个要素没有几何",
                                      f"layer {role}, feature {raw.number} has no geometry")
            out.append((raw.attrs, shapely.from_wkb(raw.wkb)))
            if len(out) > submission_mod.MAX_FEATURES:
                raise SubmissionError("too_large", "要素过多", "too many features")
    except ReadProblem as exc:
        raise _read_error(exc) from None
    return out


def _zip_members(p: Path, limits) -> dict[str, str]:
    """Dataset name (file stem, as written) -> format, of the datasets in a zip (after the safety checks)."""
    from importers import safety
    out = {}
    for info in safety.check_zip(p, limits):
        q = PurePosixPath(info.filename.replace("\\", "/"))
        if q.name.startswith(".") or "__MACOSX" in q.parts:
            continue
        fmt = {".shp": "shapefile", ".gpkg": "gpkg", ".dxf": "dxf"}.get(q.suffix.lower())
        if fmt:
            out[q.stem] = fmt
    return out


def _open(p: Path, tmp: Path, sub: str, **kw):
    from importers import readers
    d = tmp / sub
    d.mkdir()
    return readers.open_source(p, d, name=p.name, limits=kw.pop("limits"), **kw)


def _layered_sources(p: Path, suffix: str, tmp: Path, limits):
    """{role: (features, crs_wkt)} and the format; raises the importers' exceptions."""
    from importers import readers
    fmt = {".zip": None, ".shp": "shapefile", ".gpkg": "gpkg", ".dxf": "dxf"}[suffix]
    names: dict[str, str] = {}
    if suffix == ".zip":
        members = _zip_members(p, limits)
        shps = {k: v for k, v in members.items() if v == "shapefile"}
        if shps:
            fmt = "shapefile"
            names = {k.lower(): k for k in shps}
        elif len(members) == 1:
            fmt = next(iter(members.values()))
        else:
            raise SubmissionError("no_site", "压缩包中应有 site.shp（及 facility.shp），或一个 .gpkg / .dxf 文件",
                                  "the zip must hold site.shp (and facility.shp), or one .gpkg or .dxf file")
    elif suffix == ".shp":
        if p.stem.lower() != SITE_LAYER:
            raise SubmissionError("no_site", "Shapefile 报审文件应命名为 site.shp（设施为同目录的 facility.shp），"
                                  "或打包成 .zip", "a Shapefile submission must be site.shp (facilities in "
                                  "facility.shp beside it), or a .zip of both")
    out = {}
    if fmt == "dxf":
        # GDAL reads a DXF without $DWGCODEPAGE as Latin-1 (also an AutoCAD 2007+ UTF-8 file): decide
        # the encoding from the bytes (UTF-8, else GBK/GB18030) when they are not plain ASCII
        encoding = None
        if suffix == ".dxf":
            from importers import encoding as enc
            from importers import safety
            safety.check_size(p, limits)
            if any(max(chunk, default=0) > 0x7F for chunk in enc.read_chunks(p)):
                encoding = enc.detect(enc.read_chunks(p)).encoding
        src = _open(p, tmp, "dxf", limits=limits, encoding=encoding)
        feats = _raw_features(src, "dxf")
        for role in (SITE_LAYER, FACILITY_LAYER):
            out[role] = ([(a, g) for a, g in feats if str(a.get("cad_layer") or "").strip().lower() == role], None)
        return out, fmt
    if fmt == "gpkg":
        try:
            src = _open(p, tmp, "site", layer=SITE_LAYER, limits=limits)
        except readers.ReadProblem as exc:
            if exc.code == "layer_missing":
                raise SubmissionError("no_site", f"GeoPackage 中没有名为 site 的图层（{exc}）",
                                      "the GeoPackage has no layer named site") from None
            raise
        out[SITE_LAYER] = (_raw_features(src, SITE_LAYER), src.crs_wkt)
        if FACILITY_LAYER in src.layers:
            fsrc = _open(p, tmp, "facility", layer=FACILITY_LAYER, limits=limits)
            out[FACILITY_LAYER] = (_raw_features(fsrc, FACILITY_LAYER), fsrc.crs_wkt)
        return out, fmt
    # Shapefiles: site.shp and the optional facility.shp, each staged on its own
    for role in (SITE_LAYER, FACILITY_LAYER):
        if suffix == ".zip":
            if role not in names:
                if role == SITE_LAYER:
                    raise SubmissionError("no_site", "压缩包中没有 site.shp（项目用地图层）",
                                          "the zip holds no site.shp (the site layer)")
                continue
            src = _open(p, tmp, role, layer=names[role], limits=limits)
        else:
            q = p if role == SITE_LAYER else next(
                (s for s in p.parent.iterdir() if s.suffix.lower() == ".shp" and s.stem.lower() == role), None)
            if q is None:
                continue
            src = _open(q, tmp, role, limits=limits)
        out[role] = (_raw_features(src, role), src.crs_wkt)
    return out, fmt


def _dxf_texts(items):
    """Split DXF entities into geometries and ``key=value`` texts (Point texts with a ``text`` attribute)."""
    geoms, texts = [], []
    for a, g in items:
        if a.get("text") and g.geom_type == "Point":
            kv = {}
            for line in re.split(r"[\n;；]|\\P", str(a["text"])):
                m = _KV_RE.match(line)
                if m:
                    kv[m.group(1)] = m.group(2)
                elif line.strip():
                    kv.setdefault("name", line.strip())
            texts.append((_props(kv), g))
        else:
            geoms.append(({}, _single(g)))
    return geoms, texts


def _dxf_features(layers) -> tuple[list[tuple[dict, Any]], list[tuple[dict, Any]]]:
    """The site and facility features of a DXF, with their TEXT / MTEXT ``key=value`` attributes."""
    site, site_texts = _dxf_texts(layers[SITE_LAYER][0])
    facs, fac_texts = _dxf_texts(layers[FACILITY_LAYER][0])
    for a, g in site:
        if g.geom_type == "LineString":
            raise SubmissionError("invalid_polygon", "DXF 的 site 图层应为闭合多段线（项目用地边界未闭合）",
                                  "the DXF site layer must be a closed polyline (the site boundary is open)")
    props = {}
    for kv, _ in site_texts:
        props.update(kv)
    site = [(dict(props), g) for _, g in site]
    if facs:
        fg = np.array([g for _, g in facs], dtype=object)
        for kv, pt in fac_texts:
            i = int(np.argmin(shapely.distance(fg, pt)))
            facs[i][0].update(kv)
    return site, facs


def _parse_layered(p: Path, suffix: str, *, srid, attrs) -> Submission:
    from importers import crs as crsmod
    from importers import safety
    from importers.encoding import EncodingProblem
    from importers.readers import ReadProblem
    extra = {}
    for k, v in dict(attrs or {}).items():
        if k not in ATTR_KEYS:
            raise SubmissionError("attrs", f"attrs 只能补充项目用地的 {', '.join(ATTR_KEYS)}，不接受 {k!r}",
                                  f"attrs may only fill the site's {', '.join(ATTR_KEYS)}, not {k!r}")
        if v not in (None, ""):
            extra[k] = v
    limits = _limits()
    if srid is not None:
        try:
            srid = crsmod.srid_override(srid)
        except crsmod.CRSProblem as exc:
            raise _read_error(exc) from None
    with tempfile.TemporaryDirectory(prefix="gisportal-review-") as tmp:
        try:
            layers, fmt = _layered_sources(p, suffix, Path(tmp), limits)
        except (safety.UnsafeInput, ReadProblem, EncodingProblem) as exc:
            raise _read_error(exc) from None
    if fmt == "dxf":
        if srid is None:
            raise SubmissionError("crs", "DXF 文件不含坐标系：请指定 srid（例如 4547）",
                                  "a DXF file has no CRS: give srid (e.g. 4547)")
        site, facs = _dxf_features(layers)
    else:
        site = [(_props(a), _single(g)) for a, g in layers[SITE_LAYER][0]]
        facs = [(_props(a), _single(g)) for a, g in layers.get(FACILITY_LAYER, ([], None))[0]]
    if not site:
        raise SubmissionError("no_site", "site 图层中没有项目用地要素", "the site layer has no feature")
    # the CRS: srid, else the file's, else lon/lat in China (importers.crs.resolve); one for both layers
    resolved = set()
    for role in (SITE_LAYER, FACILITY_LAYER):
        feats = site if role == SITE_LAYER else facs
        if not feats:
            continue
        xy = shapely.get_coordinates(np.array([g for _, g in feats], dtype=object))
        wkt = None if fmt == "dxf" else layers[role][1]
        try:
            r = crsmod.resolve(wkt, xy[:, 0], xy[:, 1], srid=srid)
        except crsmod.CRSProblem as exc:
            raise _read_error(exc) from None
        if r.srid is None:
            raise SubmissionError("crs", f"{role} 图层的坐标系 {r.name} 没有 EPSG 代码：请指定 srid",
                                  f"the {role} layer's CRS {r.name!r} has no EPSG code; give srid")
        resolved.add(r.srid)
    if len(resolved) > 1:
        raise SubmissionError("crs", f"site 与 facility 图层的坐标系不同（EPSG:{sorted(resolved)}）",
                              f"the site and facility layers are in different CRSs (EPSG {sorted(resolved)})")
    features = []
    for role, items in ((SITE_LAYER, site), (FACILITY_LAYER, facs)):
        for props, g in items:
            props = dict(props)
            if role == SITE_LAYER:
                for k, v in extra.items():
                    if props.get(k) in (None, ""):
                        props[k] = v
            props["role"] = role
            features.append({"type": "Feature", "properties": props,
                             "geometry": shapely.geometry.mapping(g)})
    return submission_mod.project_from_features(features, source_srid=resolved.pop(),
                                                storage_srid=settings.GIS_SRID)


# --------------------------------------------------------------------------------------------
# ORM <-> shapely
# --------------------------------------------------------------------------------------------
def _geos(geom) -> GEOSGeometry:
    return GEOSGeometry(memoryview(shapely.to_wkb(geom)), srid=settings.GIS_SRID)


def _rows(qs, *fields) -> list[tuple]:
    """``values_list(*fields, wkb)`` with the geometry as raw WKB from the database (``AsWKB``):
    no GEOS object is built per row, the caller parses all of them at once with shapely."""
    return list(qs.annotate(_wkb=AsWKB("geom")).values_list(*fields, "_wkb"))


def _from_wkb(rows, col: int = -1) -> np.ndarray:
    if not rows:
        return np.empty(0, dtype=object)
    return shapely.from_wkb([bytes(r[col]) for r in rows])


def _bbox_diag(geom) -> float:
    x0, y0, x1, y1 = geom.bounds
    return math.hypot(x1 - x0, y1 - y0)


def _box(b) -> Polygon:
    poly = Polygon.from_bbox(tuple(float(v) for v in b))
    poly.srid = settings.GIS_SRID
    return poly


_SHELTER_FIELDS = ("pk", "level", "effective_area_m2", "capacity_persons")


# the columns each table's snapshot keeps (layers.snapshots): what gather_context reads
_SNAPSHOT_SPECS = {
    models.District: ("code", "name"), models.Street: ("code", "name"), models.Community: ("code", "name"),
    models.Grid: ("code", "population"), models.Shelter: _SHELTER_FIELDS[1:],
    models.FireStation: ("kind",), models.ServiceFacility: ("kind",),
}


class _Source:
    """One table's rows for gather_context: from its in-memory snapshot when it has one, else the ORM.
    Both give ``(rows, geoms)``: rows as ``(pk, *fields)`` tuples in database order (``Meta.ordering``)."""

    def __init__(self, model, snap):
        self.model, self.snap = model, snap

    def _pick(self, idx, fields) -> tuple[list, np.ndarray]:
        snap = self.snap
        cols = [0 if f == "pk" else 1 + snap.fields.index(f) for f in fields]
        return [tuple(snap.rows[i][c] for c in cols) for i in idx], snap.geoms[idx]

    def _orm(self, qs, fields) -> tuple[list, np.ndarray]:
        rows = _rows(qs, *fields)
        return [r[:-1] for r in rows], _from_wkb(rows)

    def intersecting(self, site, g_site, fields):
        if self.snap is not None:
            return self._pick(self.snap.intersects(site), fields)
        return self._orm(self.model.objects.filter(geom__intersects=g_site), fields)

    def within(self, geom, g_geom, distance, fields, *, kinds=None, exclude_pks=()):
        if self.snap is not None:
            idx = self.snap.dwithin(geom, distance)
            if kinds is not None:
                kind = self.snap.fields.index("kind") + 1
                idx = idx[[self.snap.rows[i][kind] in kinds for i in idx]] if idx.size else idx
            if exclude_pks:
                idx = idx[[self.snap.rows[i][0] not in exclude_pks for i in idx]] if idx.size else idx
            return self._pick(idx, fields)
        qs = self.model.objects.filter(geom__dwithin=(g_geom, D(m=distance)))
        if kinds is not None:
            qs = qs.filter(kind__in=list(kinds))
        if exclude_pks:
            qs = qs.exclude(pk__in=exclude_pks)
        return self._orm(qs, fields)

    def box_overlapping(self, boxes, fields):
        if self.snap is not None:
            return self._pick(self.snap.bbox_overlaps(boxes), fields)
        return self._orm(self.model.objects.filter(reduce(or_, [Q(geom__bboverlaps=_box(b)) for b in boxes])),
                         fields)


def gather_context(site, rs: R.RuleSet) -> R.ReviewContext:
    """The nearby layers for :func:`layers.analysis.rules.review`, as arrays in GIS_SRID.

    Reach rules get every target within ``max(2 r, r + site diagonal)`` of the site: any point of
    the site whose nearest target is within r is then served by a fetched target, so pass/fail is
    exact and the farthest distance is exact whenever it is at most that query distance.

    Capacity: the shelters S1 within their service distance of the site; the demand D = grids
    within the service distance of some S1 shelter (population at the grid's representative
    point); the LP's shelters = those within the largest service distance of D (so demand in D
    can use its other shelters). Demand beyond D that also uses those other shelters is not
    modelled (a second-ring boundary effect).

    Speed: the tables come from their per-process snapshots (``layers.snapshots``: one query for the
    tables' revision tokens, then STRtree lookups in memory) when they have at most
    ``GISPORTAL_SNAPSHOT_ROWS`` rows, else from spatial-index queries with the geometry as WKB
    (``AsWKB``); either way the same rows in the same order (tested both ways on every fixture).
    """
    from . import snapshots

    g_site = _geos(site)
    diag = _bbox_diag(site)
    snaps = snapshots.snapshots(_SNAPSHOT_SPECS)
    src = {m: _Source(m, snaps.get(m)) for m in _SNAPSHOT_SPECS}
    ctx: dict = {}
    for key, model in (("districts", models.District), ("streets", models.Street),
                       ("communities", models.Community)):
        rows, geoms = src[model].intersecting(site, g_site, ("code", "name"))
        ctx[key] = R.Areas(tuple(r[0] for r in rows), tuple(r[1] for r in rows), geoms) if rows else R.Areas()
    rows, geoms = src[models.Grid].intersecting(site, g_site, ("code",))
    ctx["grids"] = R.Areas(tuple(r[0] for r in rows), ("",) * len(rows), geoms) if rows else R.Areas()

    # shelters: the reach rule's query distance, and the capacity rule's service distances. One
    # dwithin at the largest of them, then the exact per-level distances with shapely: an OR of one
    # dwithin per level costs PostgreSQL's planner so much (PostGIS functions are costed high) that it
    # JIT-compiles the query once the tables have statistics (40 ms to 0.9 s; see the report).
    reach_q = max(2 * rs.shelter_reach_m, rs.shelter_reach_m + diag)
    levels = dict(rs.shelter_service_distance_m)
    d_all = max(levels.values()) if levels else rs.shelter_reach_m
    shelters = src[models.Shelter]
    near, near_g = shelters.within(site, g_site, max(d_all, reach_q), _SHELTER_FIELDS)
    dist = shapely.distance(near_g, site) if near else np.zeros(0)
    lv_d = np.array([levels.get(r[1], -1.0) for r in near], dtype=np.float64)
    keep = np.flatnonzero((dist <= lv_d) | (dist <= reach_q))
    near, near_g, dist = [near[i] for i in keep], near_g[keep], dist[keep]
    # demand: grids within the service distance of a shelter that reaches the site
    near_d = np.array([levels.get(r[1], rs.shelter_reach_m) for r in near], dtype=np.float64)
    s1 = np.flatnonzero(dist <= near_d)
    demand_xy, demand_pop = np.empty((0, 2)), np.empty(0)
    lp_rows, lp_g = list(near), [near_g]
    if s1.size:
        # candidates: grids whose box meets a S1 shelter's box grown by its service distance (index
        # only, no distance in SQL); then the exact distances with shapely
        boxes = shapely.bounds(near_g[s1]) + near_d[s1, None] * np.array([-1.0, -1.0, 1.0, 1.0])
        grid_rows, gg = src[models.Grid].box_overlapping(boxes, ("population",))
        if grid_rows:
            # exact: within the service distance of one of the S1 shelters (their own distances)
            # the grids' bounding discs once: their points p are the representative points (the
            # demand points), the same as shapely.point_on_surface of the hit grids
            g_discs = R._inner_discs(gg)
            hit = np.unique(R.dwithin_pairs(gg, near_g[s1], near_d[s1], a_discs=g_discs)[0])
            demand_xy = g_discs[0][hit]
            demand_pop = np.array([grid_rows[i][0] for i in hit], dtype=np.float64)
        if demand_pop.size:
            x0, y0 = demand_xy.min(axis=0)
            x1, y1 = demand_xy.max(axis=0)
            box = Polygon.from_bbox((x0, y0, x1, y1)) if (x1 > x0 and y1 > y0) else \
                GEOSGeometry(f"POINT ({x0} {y0})")
            box.srid = settings.GIS_SRID
            box_s = shapely.box(x0, y0, x1, y1) if (x1 > x0 and y1 > y0) else shapely.Point(x0, y0)
            seen = {r[0] for r in near}
            more, more_g = shelters.within(box_s, box, d_all, _SHELTER_FIELDS, exclude_pks=seen)
            lp_rows += more
            lp_g.append(more_g)
    per_capita = dict(rs.shelter_per_capita_m2)
    cap = [float(c) if c is not None else float(a // per_capita.get(lv, 1.0)) for _, lv, a, c in lp_rows]
    ctx["shelter_geoms"] = np.concatenate(lp_g) if lp_rows else np.empty(0, dtype=object)
    ctx["shelter_levels"] = tuple(r[1] for r in lp_rows)
    ctx["shelter_capacity"] = np.array(cap, dtype=np.float64)
    ctx["demand_xy"], ctx["demand_pop"] = demand_xy, demand_pop

    fire_q = max(2 * rs.fire_response_distance_m, rs.fire_response_distance_m + diag)
    fire, fire_g = src[models.FireStation].within(site, g_site, fire_q, ("kind",),
                                                  kinds=set(rs.fire_station_kinds))
    ctx["fire_geoms"] = fire_g
    ctx["fire_kinds"] = tuple(r[0] for r in fire)

    if rs.life_circle_m:
        lim = max(rs.life_circle_m.values())
        fac, fac_g = src[models.ServiceFacility].within(site, g_site, max(2 * lim, lim + diag), ("kind",),
                                                        kinds=set(rs.life_circle_m))
    else:
        fac, fac_g = [], np.empty(0, dtype=object)
    ctx["facility_geoms"] = fac_g
    ctx["facility_kinds"] = tuple(r[0] for r in fac)
    if rs.reach_method == "network":
        ctx["road_network"], ctx["roads_loaded"] = _road_network(g_site, max(reach_q, fire_q))
    return R.ReviewContext(**ctx)


def _road_network(g_site, query_m: float):
    """(network of the roads within ``query_m`` of the site or None, whether any road is loaded).

    The roads within the reach rules' query distance q suffice: a walk of length L <= q from a point
    of the site stays within L of it, so every road on it (and the road each end snaps to, which lies
    on it) is within q of the site, and a crossing with a road farther away is not on it. Network
    distances up to q, hence pass / fail, are those of the whole network. Built and cached by
    :func:`layers.services_coverage.network_cached` (one network code for coverage and review).
    """
    from .services_coverage import network_cached
    if not models.Road.objects.exists():
        return None, False
    rows = _rows(models.Road.objects.filter(geom__dwithin=(g_site, D(m=query_m))), "pk")
    if not rows:
        return None, True
    rows.sort(key=lambda r: r[0])  # a stable order: the cache key is the lines' version
    _key, net = network_cached(_from_wkb(rows))
    return net, True


def review_submission(sub: Submission, *, rs: R.RuleSet | None = None) -> R.Review:
    """Review a parsed submission against the layers in the database.

    Raises SubmissionError (``outside_city``) when the site touches no district at all.
    """
    rs = rs or rule_set()
    ctx = gather_context(sub.project.site, rs)
    shares = R.area_shares(sub.project.site, ctx.districts.geoms)
    if not (shares * sub.project.site.area > rs.area_tolerance_m2).any():
        raise SubmissionError("outside_city", "项目用地不在本市范围内", "the site lies outside the city")
    return R.review(sub.project, ctx, rs)


def review_path(path, *, srid: int | None = None,
                attrs: Mapping[str, Any] | None = None) -> tuple[Submission, R.Review]:
    """Parse and review a submission file (:func:`parse_path`)."""
    sub = parse_path(path, srid=srid, attrs=attrs)
    return sub, review_submission(sub)


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
@transaction.atomic
def save_review(sub: Submission, review: R.Review, *, user=None, lang: str = "zh"):
    """Store the project (status ``in_review``), its facilities and the report; one transaction.

    Returns the HousingProject. Facilities and report rows are built by the same functions as a
    resubmission's (:mod:`layers.services_resubmit`).
    """
    p = sub.project
    district_code = review.location["districts"][0]["code"] if review.location["districts"] else None
    district = models.District.objects.filter(code=district_code).first() if district_code else None
    project = models.HousingProject(
        name=p.name[:128], developer=p.developer[:128], households=p.households,
        population_declared=p.population_declared, status=models.HousingProject.Status.IN_REVIEW,
        district=district, submitted_by=user if getattr(user, "is_authenticated", False) else None,
        geom=_geos(p.site))
    project.full_clean()
    project.save()
    from .services_resubmit import store_facilities, store_report   # one way to store both (imports us)

    store_facilities(project, p)
    store_report(project, review, lang)
    return project
