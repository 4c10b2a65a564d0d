"""Import a file into one layer: read -> validate everything -> ONE atomic write -> record an ImportRun.

:func:`import_file` is the single path the ``import_layer`` command, the upload page and the REST API call.
It never raises for bad input: the :class:`ImportReport` it returns lists every problem (file, feature/row,
reason, location) and ``report.ok`` says whether anything was written. Nothing is written unless the whole
file passes (``--dry-run`` stops just before the write and reports the same).
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import shapely
from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry, Polygon as GEOSPolygon
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from shapely.strtree import STRtree

from layers import models as layer_models
from layers.analysis.gcj02 import geometry_gcj02_to_wgs84
from layers.operations import recorded_import
from layers.services_reap import DEFAULT_MAX_AGE_S, stale_reason, worker_id

from . import crs as crsmod
from . import mapping as fieldmap
from . import readers, safety
from .encoding import EncodingProblem
from .models import ImportRun

MODES = ("append", "upsert", "replace")
BATCH = 2000
WRITE_BATCH = 1000
OVERLAP_TOLERANCE_M2 = 1.0       # digitising slivers below this are ignored
GAP_TOLERANCE_M2 = 100.0
OUTSIDE_TOLERANCE_M = layer_models.CONTAINMENT_TOLERANCE_M

ProgressFn = Callable[[str, int, int | None], None]


@dataclass
class Issue:
    level: str            # "error" | "warning" | "note"
    code: str             # machine-readable reason, e.g. "invalid_geometry"
    message: str          # what is wrong and what to do (Chinese; the product's first language)
    file: str
    row: int | None = None
    location: list[float] | None = None   # [lon, lat] (EPSG:4326) where known

    def __str__(self) -> str:
        where = f"{self.file}" + (f"，第 {self.row} 个要素/行" if self.row is not None else "")
        loc = f"（位置 {self.location[0]:.6f}, {self.location[1]:.6f}）" if self.location else ""
        return f"{where}：{self.message}{loc}"


@dataclass
class ImportReport:
    kind: str
    file: str
    mode: str = "append"
    dry_run: bool = False
    sha256: str = ""
    size_bytes: int = 0
    format: str | None = None
    layer: str | None = None
    crs: dict = field(default_factory=dict)
    encoding: dict = field(default_factory=dict)
    mapping: dict = field(default_factory=dict)
    parent_attribute: str | None = None
    unknown_attributes: list[str] = field(default_factory=list)
    features_read: int = 0
    features_valid: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    repaired: int = 0
    area_change_m2: float = 0.0
    issues: list[Issue] = field(default_factory=list)
    status: str = "pending"   # ok | dry_run | refused
    run_id: int | None = None
    elapsed_s: float = 0.0

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, level: str, code: str, message: str, row: int | None = None, location=None) -> Issue:
        issue = Issue(level, code, str(message), self.file, row,
                      [round(float(location[0]), 7), round(float(location[1]), 7)] if location is not None else None)
        self.issues.append(issue)
        return issue

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["error_count"] = len(self.errors)
        d["warning_count"] = len(self.warnings)
        d["issues"] = [dict(asdict(i), text=str(i)) for i in self.issues]
        return d


class _Stop(Exception):
    """Abort reading: the report already holds the error."""


def limits_from_settings() -> safety.Limits:
    extra = getattr(settings, "GISPORTAL_IMPORT_LIMITS", {}) or {}
    return safety.Limits(max_file_bytes=int(getattr(settings, "GISPORTAL_MAX_UPLOAD_BYTES",
                                                    safety.Limits.max_file_bytes)), **extra)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_READ_MESSAGES = {
    "too_many_vertices": "顶点数超过上限 {max_vertices:,}",
    "geometry_collection": "几何集合（GeometryCollection）不能导入",
    "coordinates_unparsable": "坐标无法解析（空、非数字或 NaN/Inf）",
}
_GEOM_TYPES = {"multipolygon": ("Polygon", "MultiPolygon"), "point": ("Point", "MultiPoint"),
               "multilinestring": ("LineString", "MultiLineString")}
_TYPE_ENUM = {"Point": "POINT", "MultiPoint": "MULTIPOINT", "Polygon": "POLYGON", "MultiPolygon": "MULTIPOLYGON",
              "LineString": "LINESTRING", "MultiLineString": "MULTILINESTRING"}
_GEOM_LABEL = {"multipolygon": "面（Polygon/MultiPolygon）", "point": "点（Point）",
               "multilinestring": "线（LineString/MultiLineString）"}


@dataclass
class _Record:
    row: int
    values: dict
    geom: object          # shapely geometry in GIS_SRID
    code: str | None
    parent_code: str | None
    parent_pk: int | None = None


@recorded_import
def import_file(kind: str, path, *, srid: int | str | None = None, encoding: str | None = None,
                layer: str | None = None, gcj02: bool = False, mapping: dict | list | None = None,
                mode: str = "append", make_valid: bool = False, dry_run: bool = False, user=None,
                progress: ProgressFn | None = None, file_name: str | None = None,
                limits: safety.Limits | None = None) -> ImportReport:
    """Import the file at ``path`` into layer ``kind``; see the module docstring.

    ``mapping`` is ``{"name": "MC"}`` or ``["name=MC"]`` (the ``--map`` options). ``file_name`` is
    the name shown in messages (the upload's original name); it defaults to the path's name.
    """
    t0 = time.perf_counter()
    _sqlite_busy_timeout()
    path = Path(path)
    report = ImportReport(kind=kind, file=file_name or path.name, mode=mode, dry_run=dry_run)
    limits = limits or limits_from_settings()
    try:
        _run(report, kind, path, srid=srid, encoding=encoding, layer=layer, gcj02=gcj02,
             overrides=mapping, mode=mode, make_valid=make_valid, dry_run=dry_run, user=user,
             progress=progress, limits=limits)
    except _Stop:
        pass
    except DatabaseError as exc:
        fault = db_fault(exc)
        if fault is None:
            _run_failed(report, exc)
            raise
        report.add("error", *fault)
        report.status = "failed"
        report.elapsed_s = round(time.perf_counter() - t0, 3)
        _run_failed(report, exc)
    except BaseException as exc:   # a bug, a cancelled job, Ctrl-C: the run says so, the caller sees it
        _run_failed(report, exc)
        raise
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    if report.errors:
        if report.status != "failed":
            report.status = "refused"
        report.created = report.updated = report.deleted = 0
        if not dry_run and report.sha256 and report.status == "refused":
            _record(report, user, ImportRun.Status.REFUSED)
    return report


def _sqlite_busy_timeout() -> None:
    """Make SQLite wait the settings' ``OPTIONS["timeout"]`` for a concurrent writer.

    Loading mod_spatialite resets the connection's busy timeout to 5 s (after Django applied
    ``timeout``), so without this a second import gave up after 5 s instead of the configured 20 s.
    """
    if connection.vendor != "sqlite":
        return
    timeout = connection.settings_dict.get("OPTIONS", {}).get("timeout")
    if timeout:
        connection.ensure_connection()
        connection.connection.execute(f"PRAGMA busy_timeout = {int(float(timeout) * 1000)}")


#: Database faults an import reports as an error (code, message) instead of a traceback; nothing of the
#: import was written when they happen (the write is one transaction).
DISK_FULL = ("disk_full", "磁盘已满，未写入任何数据；请清理数据库所在磁盘后重试（database or disk is full）")
BUSY = ("database_busy", "数据库正忙，请稍后重试；未写入任何数据（database is busy, try again）")
CONFLICT = ("code_conflict", "编码与同时写入的数据重复（可能同一文件正被另一个导入写入），未写入任何数据；"
                             "请检查后重试（duplicate code written concurrently, nothing imported）")


def db_fault(exc: BaseException) -> tuple[str, str] | None:
    """The user error for a database fault during an import, or ``None`` for anything else.

    SQLite: "database or disk is full" (also ``PRAGMA max_page_count`` reached), "database is locked"
    (the busy timeout ran out while another process held the write lock). PostgreSQL: SQLSTATE class 53
    (insufficient resources: disk full, out of memory), 55P03 (lock not available), 40P01 / 40001 (deadlock,
    serialization failure: the transaction was rolled back, try again), 23505 (a unique
    violation by a concurrent writer: the codes were checked before the write).
    """
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or ""
    text = str(cause).lower()
    if sqlstate.startswith("53") or "disk is full" in text or "no space left" in text:
        return DISK_FULL
    if sqlstate in ("55P03", "40P01", "40001") or "database is locked" in text or "database is busy" in text:
        return BUSY
    if isinstance(exc, IntegrityError) and (sqlstate == "23505" or "unique constraint" in text):
        return CONFLICT
    return None


def _run_failed(report: ImportReport, exc: BaseException) -> None:
    """Mark the import's running ImportRun failed with the reason (best effort: the database may be the
    fault; a run left running is failed later by :func:`runs_reap_stale`)."""
    if report.run_id is None:
        return
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        ImportRun.objects.filter(pk=report.run_id, status=ImportRun.Status.RUNNING).update(
            status=ImportRun.Status.FAILED, error=reason, finished_at=timezone.now(),
            error_count=len(report.errors), report=report.as_dict())
    except DatabaseError:
        pass


def runs_reap_stale(*, max_age_s: float | None = DEFAULT_MAX_AGE_S) -> list[int]:
    """Mark ``running`` ImportRuns whose process is gone ``failed`` with the reason; returns their ids.

    A run records its writer as ``host:pid:start`` (:func:`layers.services_reap.worker_id`); on this host a
    dead writer is certain ("进程中断 / interrupted (process died)"); a writer on another host is judged by
    age (``max_age_s``; ``None``: never). A live import is left alone.
    """
    now = timezone.now()
    reaped = []
    for pk, worker, started_at in ImportRun.objects.filter(status=ImportRun.Status.RUNNING).values_list(
            "pk", "worker", "started_at"):
        reason = stale_reason(worker, started_at, max_age_s=max_age_s, now=now)
        if reason and ImportRun.objects.filter(pk=pk, status=ImportRun.Status.RUNNING).update(
                status=ImportRun.Status.FAILED, error=reason, finished_at=now):
            reaped.append(pk)
    return reaped


def _run(report: ImportReport, kind, path, *, srid, encoding, layer, gcj02, overrides, mode, make_valid,
         dry_run, user, progress, limits) -> None:
    if kind not in fieldmap.SPECS:
        report.add("error", "kind_unknown", f"未知图层 {kind!r}；可选：{', '.join(fieldmap.SPECS)}")
        raise _Stop
    if mode not in MODES:
        report.add("error", "mode_unknown", f"未知导入方式 {mode!r}；可选：{', '.join(MODES)}")
        raise _Stop
    if not path.is_file():
        report.add("error", "file_missing", "文件不存在或不是普通文件")
        raise _Stop
    spec = fieldmap.SPECS[kind]
    report.size_bytes = path.stat().st_size
    report.sha256 = _sha256(path)
    if srid is not None:
        try:
            srid = crsmod.srid_override(srid)
        except crsmod.CRSProblem as exc:
            report.add("error", exc.code, str(exc))
            raise _Stop from None
    with tempfile.TemporaryDirectory(prefix="gisportal-import-") as tmp:
        try:
            src = readers.open_source(path, Path(tmp), name=report.file, layer=layer, encoding=encoding,
                                      limits=limits)
        except (safety.UnsafeInput, readers.ReadProblem) as exc:
            report.add("error", exc.code, str(exc), row=exc.row)
            raise _Stop from None
        except EncodingProblem as exc:
            report.add("error", exc.code, str(exc))
            raise _Stop from None
        report.format = src.fmt
        report.layer = src.layer
        if src.encoding:
            report.encoding = {"name": src.encoding.encoding, "how": src.encoding.how}
        try:
            overrides = fieldmap.parse_map_options(overrides)
            resolved = fieldmap.resolve(spec, src.fields, overrides)
        except fieldmap.MappingProblem as exc:
            report.add("error", exc.code, str(exc))
            raise _Stop from None
        report.mapping = dict(resolved.fields)
        report.parent_attribute = resolved.parent_attr
        report.unknown_attributes = resolved.unknown
        if resolved.unknown:
            report.add("note", "unknown_attributes", f"未使用的属性：{', '.join(resolved.unknown)}")
        for f in spec.fields:
            if f.required and f.name not in resolved.fields:
                report.add("error", "field_missing",
                           f"找不到必填字段 {f.name}（别名：{'、'.join(f.aliases[:6])}）；可用 --map {f.name}=属性名 指定；"
                           f"文件中的属性：{', '.join(src.fields) or '（无）'}")
        if report.errors:
            raise _Stop
        records = _read_and_check(report, spec, src, resolved, srid=srid, gcj02=gcj02, make_valid=make_valid,
                                  progress=progress, limits=limits)
    if report.features_read == 0 and not report.errors:
        report.add("error", "no_features", "文件中没有要素")
    if report.errors:
        raise _Stop
    _check_duplicates(report, spec, records, mode)
    _resolve_parents(report, spec, records)
    _check_city(report, spec, records)
    if spec.kind == "grids":
        _check_grid_tiling(report, records, mode)
    if report.errors:
        raise _Stop
    report.features_valid = len(records)
    if dry_run:
        _count_plan(report, spec, records, mode)
        report.status = "dry_run"
        return
    _write(report, spec, records, mode, user, progress)


# --- reading and per-feature checks --------------------------------------------------------------

def _read_and_check(report, spec, src, resolved, *, srid, gcj02, make_valid, progress, limits) -> list[_Record]:
    records: list[_Record] = []
    choices = {f.name: fieldmap.choice_lookup(spec, f.name) for f in spec.fields if f.type == "choice"}
    fspecs = {f.name: f for f in spec.fields}
    state = {"crs": None, "zm": 0}
    batch = []
    total = src.count

    def flush():
        if batch:
            records.extend(_check_batch(report, spec, src, batch, state, resolved, fspecs, choices,
                                        srid=srid, gcj02=gcj02, make_valid=make_valid, limits=limits))
            batch.clear()
            if progress:
                progress("read", report.features_read, total)

    try:
        for raw in src.features():
            report.features_read += 1
            if raw.problem:
                code = raw.problem.split(":")[0]
                if code == "csv_columns":
                    _c, got, want = raw.problem.split(":")
                    msg = f"列数 {got} 与表头的 {want} 列不一致"
                elif code.startswith("gdal"):
                    msg = raw.problem[6:] or "GDAL 读取错误"
                    code = "read_failed"
                else:
                    msg = _READ_MESSAGES.get(code, code).format(max_vertices=limits.max_vertices_per_feature)
                report.add("error", code, msg, row=raw.number)
                continue
            if raw.wkb is None:
                report.add("error", "geometry_missing", "几何为空或无法读取（例如多层嵌套的几何集合）", row=raw.number)
                continue
            batch.append(raw)
            if len(batch) >= BATCH:
                flush()
            if len(report.issues) > 1000 and len(report.errors) > 1000:
                report.add("error", "too_many_errors", "错误超过 1000 个，已停止检查")
                raise _Stop
        flush()
    except readers.ReadProblem as exc:
        report.add("error", exc.code, str(exc), row=exc.row)
    except crsmod.CRSProblem as exc:
        report.add("error", exc.code, str(exc))
    if state["zm"]:
        report.add("note", "zm_dropped", f"{state['zm']} 个要素带 Z/M 坐标，已去掉（只保存平面坐标）")
    c = state["crs"]
    if c is not None:
        report.crs = {"srid": c.srid, "name": c.name, "how": c.how, "gcj02": bool(gcj02),
                      "stored_srid": settings.GIS_SRID}
        if c.how == "assumed_lonlat":
            report.add("note", "crs_assumed", "文件未声明坐标系；坐标是中国范围内的经纬度，按 WGS84/CGCS2000 经纬度导入")
    return records


def _centroid_lonlat(geom_srid, geoms) -> np.ndarray:
    b = shapely.bounds(geoms)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    if geom_srid == crsmod.WGS84:
        return np.column_stack([cx, cy])
    tr = crsmod.to_lonlat(crsmod.from_srid(geom_srid).wkt)
    lon, lat = tr.transform(cx, cy)
    return np.column_stack([lon, lat])


def _transform(geoms, tr):
    def f(coords):
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])
    return shapely.transform(geoms, f)


def _check_batch(report, spec, src, batch, state, resolved, fspecs, choices, *, srid, gcj02, make_valid,
                 limits) -> list[_Record]:
    rows = np.array([r.number for r in batch])
    geoms = shapely.from_wkb([r.wkb for r in batch], on_invalid="ignore")
    keep = np.ones(len(batch), dtype=bool)
    for i in np.flatnonzero(shapely.is_missing(geoms)):
        report.add("error", "geometry_unreadable", "几何数据损坏，无法解析", row=int(rows[i]))
        keep[i] = False
    geoms = np.where(keep, geoms, None)
    # Z/M dropped
    zm = shapely.has_z(geoms) | shapely.has_m(geoms)
    if zm.any():
        state["zm"] += int(zm.sum())
        geoms[zm] = shapely.force_2d(geoms[zm])
    # geometry type, emptiness, finite coordinates (vectorised; messages only for the bad ones)
    allowed = _GEOM_TYPES[spec.geom]
    tid = shapely.get_type_id(geoms)
    n_parts = shapely.get_num_geometries(geoms)
    empty = shapely.is_empty(geoms)
    coords, owner = shapely.get_coordinates(np.where(keep, geoms, None), return_index=True)
    bad_coord = np.zeros(len(geoms), dtype=bool)
    bad_coord[owner[~np.isfinite(coords).all(axis=1)]] = True
    type_ok = np.isin(tid, [int(getattr(shapely.GeometryType, _TYPE_ENUM[t])) for t in allowed])
    suspect = keep & (~type_ok | ((tid == shapely.GeometryType.MULTIPOINT) & (n_parts != 1)) | empty | bad_coord)
    for i in np.flatnonzero(suspect):   # messages only for these; the checks below in the same order
        t = geoms[i].geom_type
        if t not in allowed:
            report.add("error", "geometry_type", f"几何类型为 {t}，{spec.kind} 需要{_GEOM_LABEL[spec.geom]}",
                       row=int(rows[i]))
            keep[i] = False
        elif t == "MultiPoint" and n_parts[i] != 1:
            report.add("error", "geometry_type", f"多点（{n_parts[i]} 个点），{spec.kind} 需要单个点",
                       row=int(rows[i]))
            keep[i] = False
        elif empty[i]:
            report.add("error", "geometry_empty", "几何为空", row=int(rows[i]))
            keep[i] = False
        elif bad_coord[i]:
            report.add("error", "coordinates_not_finite", "坐标含 NaN 或无穷大", row=int(rows[i]))
            keep[i] = False
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return []
    geoms = geoms[idx]
    rows = rows[idx]
    batch = [batch[i] for i in idx]
    # CRS, decided on the first usable batch
    if state["crs"] is None:
        xy = shapely.get_coordinates(geoms[:500])
        state["crs"] = crsmod.resolve(src.crs_wkt, xy[:, 0], xy[:, 1], srid=srid, gcj02=gcj02)
    c = state["crs"]
    ok = np.ones(len(geoms), dtype=bool)
    if c.geographic:
        b = shapely.bounds(geoms)
        inside = crsmod.in_china_mask(b[:, 0], b[:, 1]) & crsmod.in_china_mask(b[:, 2], b[:, 3])
        swapped = crsmod.in_china_mask(b[:, 1], b[:, 0]) & crsmod.in_china_mask(b[:, 3], b[:, 2])
        for i in np.flatnonzero(~inside):
            if swapped[i]:
                report.add("error", "swapped_axes", "经纬度顺序颠倒（纬度, 经度）：请交换坐标列或字段",
                           row=int(rows[i]))
            else:
                report.add("error", "outside_china", f"坐标 ({b[i, 0]:.4f}, {b[i, 1]:.4f}) 不在中国范围内的经纬度："
                           "若是投影坐标请用 --srid 指定坐标系", row=int(rows[i]))
        ok &= inside
        if gcj02:
            geoms = geometry_gcj02_to_wgs84(geoms)
    target = settings.GIS_SRID
    if c.srid != target:
        src_wkt = crsmod.CRS.from_epsg(crsmod.WGS84).to_wkt() if gcj02 else c.wkt
        geoms = _transform(geoms, crsmod.transformer(src_wkt, target))
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    finite = np.ones(len(geoms), dtype=bool)
    finite[owner[~np.isfinite(coords).all(axis=1)]] = False
    for i in np.flatnonzero(ok & ~finite):
        report.add("error", "transform_failed", f"坐标无法从 {c.name} 转换到 EPSG:{target}", row=int(rows[i]))
    ok &= finite
    if not c.geographic and ok.any():
        ll = _centroid_lonlat(target, geoms[ok])
        out = ~crsmod.in_china_mask(ll[:, 0], ll[:, 1])
        for j, i in enumerate(np.flatnonzero(ok)):
            if out[j]:
                report.add("error", "outside_china",
                           f"按坐标系 {c.name} 解释，要素落在中国以外（{ll[j, 0]:.3f}, {ll[j, 1]:.3f}）：坐标系是否正确？"
                           + " " + crsmod.suggest_for_projected(*shapely.get_coordinates(geoms[i])[:1].T),
                           row=int(rows[i]))
                ok[i] = False
    # validity
    valid = shapely.is_valid(geoms)
    for i in np.flatnonzero(ok & ~valid):
        reason = shapely.is_valid_reason(geoms[i])
        loc = _reason_location(reason, target)
        if make_valid:
            fixed = _repair(geoms[i], spec.geom)
            if fixed is None or fixed.is_empty:
                report.add("error", "invalid_geometry", f"几何无效且无法修复：{reason}", row=int(rows[i]),
                           location=loc)
                ok[i] = False
                continue
            before = float(shapely.area(geoms[i]))
            after = float(fixed.area)
            report.repaired += 1
            report.area_change_m2 += abs(after - before)
            report.add("warning", "geometry_repaired",
                       f"几何无效（{reason}），已修复；面积 {before:,.1f} → {after:,.1f} 平方米", row=int(rows[i]),
                       location=loc)
            geoms[i] = fixed
        else:
            report.add("error", "invalid_geometry", f"几何无效：{reason}（可加 --make-valid 修复）",
                       row=int(rows[i]), location=loc)
            ok[i] = False
    # promote to the model's geometry type, vectorised (no per-feature Python constructors)
    geoms = _promote(geoms, spec.geom)
    out = []
    for i in np.flatnonzero(ok):
        raw = batch[i]
        values, bad = _values(report, spec, raw, resolved, fspecs, choices)
        if bad:
            continue
        code = values.get("code") if spec.code_field else None
        pcode = None
        if resolved.parent_attr:
            pv = raw.attrs.get(resolved.parent_attr)
            if isinstance(pv, float) and pv.is_integer():
                pv = int(pv)
            pcode = str(pv).strip() if pv not in (None, "") else None
        out.append(_Record(raw.number, values, geoms[i], code, pcode))
    return out


def _promote(geoms: np.ndarray, geom_kind: str) -> np.ndarray:
    """Polygon -> MultiPolygon, LineString -> MultiLineString, one-point MultiPoint -> Point (vectorised)."""
    geoms = np.asarray(geoms, dtype=object).copy()
    tid = shapely.get_type_id(geoms)
    if geom_kind == "multipolygon":
        m = tid == shapely.GeometryType.POLYGON
        if m.any():
            geoms[m] = shapely.multipolygons(geoms[m], indices=np.arange(int(m.sum())))
    elif geom_kind == "multilinestring":
        m = tid == shapely.GeometryType.LINESTRING
        if m.any():
            geoms[m] = shapely.multilinestrings(geoms[m], indices=np.arange(int(m.sum())))
    elif geom_kind == "point":
        m = tid == shapely.GeometryType.MULTIPOINT
        if m.any():
            geoms[m] = shapely.get_geometry(geoms[m], 0)
    return geoms


def _reason_location(reason: str, srid: int):
    import re
    m = re.search(r"\[([-\d.eE+]+) ([-\d.eE+]+)\]", reason or "")
    if not m:
        return None
    x, y = float(m.group(1)), float(m.group(2))
    if srid == crsmod.WGS84:
        return (x, y)
    lon, lat = crsmod.to_lonlat(crsmod.from_srid(srid).wkt).transform(x, y)
    return (lon, lat)


def _repair(g, geom_kind):
    fixed = shapely.make_valid(g)
    want = {"multipolygon": ("Polygon", "MultiPolygon"), "multilinestring": ("LineString", "MultiLineString"),
            "point": ("Point",)}[geom_kind]
    if fixed.geom_type == "GeometryCollection":
        parts = [p for p in fixed.geoms if p.geom_type in want]
        if not parts:
            return None
        fixed = shapely.union_all(parts)
    if fixed.geom_type not in want and not fixed.geom_type.startswith("Multi"):
        return None
    return fixed


def _values(report, spec, raw, resolved, fspecs, choices) -> tuple[dict, bool]:
    values = {}
    bad = False
    for name, attr in resolved.fields.items():
        f = fspecs[name]
        try:
            v = fieldmap.coerce(spec, f, raw.attrs.get(attr), choices.get(name))
        except ValueError as exc:
            report.add("error", "value_invalid", f"属性 {attr}：{exc}", row=raw.number)
            bad = True
            continue
        if v is not None:
            values[name] = v
    for f in spec.fields:
        if f.required and values.get(f.name) in (None, ""):
            if f.name in resolved.fields:
                report.add("error", "value_missing", f"必填字段 {f.name}（属性 {resolved.fields[f.name]}）为空",
                           row=raw.number)
                bad = True
    if spec.kind == "districts" and "kind" not in values and values.get("name"):
        name = values["name"]
        for suffix, k in (("管理区", "management_area"), ("开发区", "development_zone"), ("县", "county"),
                          ("区", "district")):
            if name.endswith(suffix):
                values["kind"] = k
                break
    if spec.kind == "fire_stations" and values.get("on_duty", 0) > values.get("staff", values.get("on_duty", 0)):
        report.add("error", "value_invalid", "每班执勤人数大于人员总数", row=raw.number)
        bad = True
    return values, bad


# --- whole-file checks ---------------------------------------------------------------------------

def _check_duplicates(report, spec, records, mode) -> None:
    if not spec.code_field:
        return
    first: dict[str, int] = {}
    for r in records:
        if r.code in first:
            report.add("error", "duplicate_code", f"代码 {r.code} 与第 {first[r.code]} 个要素重复", row=r.row)
        else:
            first[r.code] = r.row
    if mode == "append" and first:
        existing = _existing_codes(spec.model, list(first))
        for r in records:
            if r.code in existing:
                report.add("error", "code_exists",
                           f"代码 {r.code} 已在数据库中（更新已有数据请用 --mode upsert 或 replace）", row=r.row)


def _in_chunk() -> int:
    """Values per ``__in`` lookup: as many as the backend binds in one query (SQLite 999), at most 10,000."""
    limit = connection.features.max_query_params
    return min(limit - 10, 10_000) if limit else 10_000


def _existing_codes(model, codes: list[str]) -> set[str]:
    """The codes already in the table: one query per chunk of :func:`_in_chunk` codes, or, when the table
    holds no more rows than there are codes, one scan of its codes (no parameters to bind)."""
    found = set()
    if not codes:
        return found
    if model.objects.count() <= len(codes):
        wanted = set(codes)
        return {c for c in model.objects.values_list("code", flat=True).iterator(chunk_size=10_000)
                if c in wanted}
    step = _in_chunk()
    for i in range(0, len(codes), step):
        found.update(model.objects.filter(code__in=codes[i:i + step]).values_list("code", flat=True))
    return found


def _load_parents(model, codes) -> dict[str, tuple[int, object]]:
    out = {}
    codes = sorted(set(codes))
    for i in range(0, len(codes), 500):
        for pk, code, geom in model.objects.filter(code__in=codes[i:i + 500]).values_list("pk", "code", "geom"):
            out[code] = (pk, shapely.from_wkb(bytes(geom.wkb)))
    return out


def _resolve_parents(report, spec, records) -> None:
    p = spec.parent
    if p is None or not records:
        return
    label = p.model._meta.verbose_name
    wanted = {}
    for r in records:
        if r.parent_code:
            wanted[r.row] = r.parent_code
            if r.code and p.code_len and not r.code.startswith(r.parent_code):
                report.add("error", "code_parent_mismatch",
                           f"代码 {r.code} 与上级{label}代码 {r.parent_code} 不一致", row=r.row)
        elif r.code and p.code_len:
            wanted[r.row] = r.code[:p.code_len]
    parents = _load_parents(p.model, wanted.values())
    spatial = [r for r in records if r.row not in wanted]
    for r in records:
        pc = wanted.get(r.row)
        if pc is None:
            continue
        if pc in parents:
            r.parent_pk = parents[pc][0]
        else:
            report.add("error" if p.required else "warning", "parent_missing",
                       f"上级{label} {pc} 不在数据库中（请先导入上级图层，或用 --map {p.field}=属性名 指定）", row=r.row)
    if spatial:
        _parents_by_geometry(report, spec, spatial)
    if spec.kind == "grids":
        _check_inside_parents(report, records, wanted, parents)


def _check_inside_parents(report, records, wanted, parents) -> None:
    """Grids must lie inside their community (0.5 m tolerance, 1 m2 allowed): one prepared buffer per
    community and a vectorised ``covers``; the difference is computed only for the grids not covered."""
    by_parent = defaultdict(list)
    for i, r in enumerate(records):
        pc = wanted.get(r.row)
        if r.parent_pk is not None and pc in parents and parents[pc][1] is not None:
            by_parent[pc].append(i)
    found = []
    for pc, idx in by_parent.items():
        buf = parents[pc][1].buffer(OUTSIDE_TOLERANCE_M)
        shapely.prepare(buf)
        geoms = np.array([records[i].geom for i in idx], dtype=object)
        for j in np.flatnonzero(~shapely.covers(buf, geoms)):
            outside = geoms[j].difference(buf)
            if not outside.is_empty and outside.area > 1.0:
                found.append((idx[j], pc, outside))
    for i, pc, outside in sorted(found, key=lambda t: t[0]):
        c = outside.representative_point()
        report.add("error", "outside_parent", f"网格超出所属社区 {pc} 范围 {outside.area:,.1f} 平方米",
                   row=records[i].row, location=_lonlat(c))


def _lonlat(pt):
    lon, lat = crsmod.to_lonlat(crsmod.from_srid(settings.GIS_SRID).wkt).transform(pt.x, pt.y)
    return (lon, lat)


def _extent_polygon(geoms) -> GEOSPolygon:
    b = shapely.total_bounds(np.array(geoms, dtype=object))
    poly = GEOSPolygon.from_bbox(tuple(float(v) for v in b))
    poly.srid = settings.GIS_SRID
    return poly


def _parents_by_geometry(report, spec, records) -> None:
    p = spec.parent
    label = p.model._meta.verbose_name
    qs = p.model.objects.filter(geom__bboverlaps=_extent_polygon([r.geom for r in records]))
    rows = list(qs.values_list("pk", "code", "geom"))
    if not rows:
        for r in records:
            report.add("error" if p.required else "warning", "parent_missing",
                       f"找不到包含该要素的{label}（没有代码时按空间位置确定上级）", row=r.row)
        return
    pgeoms = np.array([shapely.from_wkb(bytes(g.wkb)) for _pk, _c, g in rows], dtype=object)
    tree = STRtree(pgeoms)
    geoms = np.array([r.geom for r in records], dtype=object)
    # every (record, parent) pair whose geometries intersect, vectorised; sorted by record, then parent
    ri, pj = tree.query(geoms, predicate="intersects")
    order = np.lexsort((pj, ri))
    ri, pj = ri[order], pj[order]
    best = np.full(len(records), -1)
    if p.by_geometry == "contains_point":
        hit = shapely.covers(pgeoms[pj], geoms[ri])
        ri, pj = ri[hit], pj[hit]
        first = np.unique(ri, return_index=True)[1]        # the first covering parent (lowest index)
        best[ri[first]] = pj[first]
    elif ri.size:
        area = shapely.area(shapely.intersection(geoms[ri], pgeoms[pj]))
        keep = area > 0.0
        ri, pj, area = ri[keep], pj[keep], area[keep]
        # the largest area per record; ties go to the lowest parent index (the first one met)
        order = np.lexsort((pj, -area, ri))
        ri, pj = ri[order], pj[order]
        first = np.unique(ri, return_index=True)[1]
        best[ri[first]] = pj[first]
    for i, r in enumerate(records):
        if best[i] < 0:
            report.add("error" if p.required else "warning", "parent_missing",
                       f"找不到包含该要素的{label}", row=r.row)
        else:
            r.parent_pk = rows[best[i]][0]


def _check_city(report, spec, records) -> None:
    if spec.kind == "districts" or not records:
        return
    geoms = list(layer_models.District.objects.values_list("geom", flat=True))
    if not geoms:
        report.add("note", "city_unknown", "区县图层为空，未检查要素是否在城市范围内")
        return
    city = shapely.union_all([shapely.from_wkb(bytes(g.wkb)) for g in geoms]).buffer(OUTSIDE_TOLERANCE_M)
    shapely.prepare(city)
    arr = np.array([r.geom for r in records], dtype=object)
    inside = shapely.covers(city, arr)
    for i in np.flatnonzero(~inside):
        pt = arr[i].representative_point()
        report.add("warning", "outside_city", "要素（部分）位于区县图层范围之外", row=records[i].row,
                   location=_lonlat(pt))


def _overlapping_pairs(left_geoms, right_geoms, same: bool = False):
    """Pairs ``(i, j, area, intersection)`` whose intersection area exceeds OVERLAP_TOLERANCE_M2.

    Candidates come from an STRtree on bounding boxes; a pair whose bounding boxes overlap by no more than the
    tolerance cannot overlap by more (the intersection lies inside both boxes), so only the rest are
    intersected, vectorised. Sorted by ``(i, j)``; with ``same`` only ``i < j``.
    """
    if len(left_geoms) == 0 or len(right_geoms) == 0:
        return []
    tree = STRtree(right_geoms)
    li, rj = tree.query(left_geoms)
    if same:
        keep = li < rj
        li, rj = li[keep], rj[keep]
    bl, br = shapely.bounds(left_geoms), shapely.bounds(right_geoms)
    w = np.minimum(bl[li, 2], br[rj, 2]) - np.maximum(bl[li, 0], br[rj, 0])
    h = np.minimum(bl[li, 3], br[rj, 3]) - np.maximum(bl[li, 1], br[rj, 1])
    keep = (w > 0) & (h > 0) & (w * h > OVERLAP_TOLERANCE_M2)
    li, rj = li[keep], rj[keep]
    if li.size == 0:
        return []
    inter = shapely.intersection(left_geoms[li], right_geoms[rj])
    area = shapely.area(inter)
    keep = area > OVERLAP_TOLERANCE_M2
    order = np.lexsort((rj[keep], li[keep]))
    return [(int(a), int(b), float(ar), g) for a, b, ar, g in
            zip(li[keep][order], rj[keep][order], area[keep][order], inter[keep][order])]


def _union(geoms):
    """``union_all`` of polygons; when they form a valid coverage (no overlaps, edges matched vertex for
    vertex, as a tiling exported from one GIS layer does) GEOS's coverage union gives the same result
    several times faster."""
    arr = np.array(geoms, dtype=object)
    if len(arr) > 1 and bool(shapely.coverage_is_valid(arr)):
        return shapely.coverage_union_all(arr)
    return shapely.union_all(arr)


def _check_grid_tiling(report, records, mode) -> None:
    """Grids must not overlap each other; gaps left in their community are reported with the area."""
    if not records:
        return
    file_codes = {r.code for r in records}
    by_comm = defaultdict(list)
    for r in records:
        if r.parent_pk is not None:
            by_comm[r.parent_pk].append(r)
    # grids already stored in those communities and staying (append/upsert keep codes not in the file)
    existing = defaultdict(list)
    if mode != "replace":
        for cpk, code, g in layer_models.Grid.objects.filter(community_id__in=list(by_comm)).values_list(
                "community_id", "code", "geom"):
            if code not in file_codes:
                existing[cpk].append((code, shapely.from_wkb(bytes(g.wkb))))
    arr = np.array([r.geom for r in records], dtype=object)
    for a, b, area, inter in _overlapping_pairs(arr, arr, same=True):
        pt = inter.representative_point()
        report.add("error", "grid_overlap", f"网格 {records[a].code} 与第 {records[b].row} 个要素（{records[b].code}）"
                   f"重叠 {area:,.1f} 平方米", row=records[a].row, location=_lonlat(pt))
    ex_list = [(cpk, code, g) for cpk, items in existing.items() for code, g in items]
    if ex_list:
        ex_comm = np.array([c for c, _code, _g in ex_list])
        rec_comm = np.array([r.parent_pk if r.parent_pk is not None else -1 for r in records])
        ex_arr = np.array([g for _c, _code, g in ex_list], dtype=object)
        hits = [(a, b, area) for a, b, area, _i in _overlapping_pairs(arr, ex_arr) if rec_comm[a] == ex_comm[b]]
        for a, b, area in sorted(hits):
            report.add("error", "grid_overlap",
                       f"网格 {records[a].code} 与已有网格 {ex_list[b][1]} 重叠 {area:,.1f} 平方米", row=records[a].row)
    comm_geoms = dict((pk, shapely.from_wkb(bytes(g.wkb))) for pk, g in
                      layer_models.Community.objects.filter(pk__in=list(by_comm)).values_list("pk", "geom"))
    for cpk, recs in by_comm.items():
        cg = comm_geoms.get(cpk)
        if cg is None:
            continue
        covered = _union([r.geom for r in recs] + [g for _c, g in existing.get(cpk, [])])
        gap = cg.difference(covered)
        if gap.area > GAP_TOLERANCE_M2:
            report.add("warning", "grid_gap", f"社区（{recs[0].code[:12] if recs[0].code else cpk}）内有 "
                       f"{gap.area:,.1f} 平方米未被网格覆盖", row=None, location=_lonlat(gap.representative_point()))


# --- the write ---------------------------------------------------------------------------------

def _count_plan(report, spec, records, mode) -> None:
    if spec.code_field:
        existing = _existing_codes(spec.model, [r.code for r in records]) if mode != "append" else set()
        report.updated = sum(1 for r in records if r.code in existing)
        report.created = len(records) - report.updated
        if mode == "replace":
            report.deleted = spec.model.objects.count() - len(existing)
    else:
        report.created = len(records)
        if mode == "replace":
            report.deleted = spec.model.objects.count()


def _instance_kwargs(spec, r: _Record, file_name: str, geom=None) -> dict:
    """Field values of one record (``attname -> value``); ``geom`` is the GEOS geometry when already built
    (``False``: leave it out)."""
    kw = dict(r.values)
    if geom is not False:   # False: the caller writes the geometry itself
        kw["geom"] = geom if geom is not None else _geos([r.geom])[0]
    if spec.parent is not None:
        kw[f"{spec.parent.field}_id"] = r.parent_pk
    if spec.kind == "districts" and "source" not in kw:
        kw["source"] = f"import: {file_name}"[:200]
    return kw


def _geos(geoms) -> list[GEOSGeometry]:
    """Shapely geometries -> GEOS geometries in GIS_SRID: one vectorised WKB export for the batch.

    The geometries were type-checked (Point / MultiPolygon / MultiLineString, never a collection), so
    GEOSGeometry's Python walk of the WKB for nested collections is skipped (``max_geom_collections=None``).
    """
    srid = settings.GIS_SRID
    wkbs = shapely.to_wkb(np.asarray(geoms, dtype=object))
    return [GEOSGeometry(memoryview(w), srid=srid, max_geom_collections=None) for w in wkbs]


class _InstanceFactory:
    """Builds unsaved model instances from ``attname -> value`` dicts through the positional form of
    ``Model(*values)`` (the form ``Model.from_db`` uses), with the field defaults for the rest."""

    def __init__(self, model):
        self.model = model
        fields = model._meta.concrete_fields
        self.index = {f.attname: i for i, f in enumerate(fields)}
        self.template = []
        self.callables = []
        for i, f in enumerate(fields):
            if f.primary_key:
                self.template.append(None)
            elif f.has_default() and callable(f.default):
                self.template.append(None)
                self.callables.append((i, f))
            else:
                self.template.append(f.get_default())

    def __call__(self, kw: dict, pk=None):
        row = list(self.template)
        for i, f in self.callables:
            row[i] = f.get_default()
        index = self.index
        for k, v in kw.items():
            row[index[k]] = v
        if pk is not None:
            row[index[self.model._meta.pk.attname]] = pk
        return self.model(*row)


#: Field types whose Python values from :func:`importers.mapping.coerce` (str, int, float, bool, None) are
#: already what both database drivers take: Django's ``get_db_prep_save`` returns them unchanged.
_PLAIN_TYPES = frozenset({"CharField", "TextField", "SlugField", "IntegerField", "PositiveIntegerField",
                          "PositiveSmallIntegerField", "PositiveBigIntegerField", "SmallIntegerField",
                          "BigIntegerField", "FloatField", "BooleanField", "ForeignKey"})
_PLAIN_VALUES = (str, int, float, bool, type(None))


class _RowInserter:
    """INSERT new rows of one layer without model instances, in the caller's transaction.

    The columns are the model's concrete fields except the auto primary key; a field the record does not
    set gets its default (``Field.get_default``, prepared once per batch), exactly what ``bulk_create``
    stores. The geometry goes as binary: SpatiaLite/SQLite ``executemany`` of ``INSERT … GeomFromWKB(?,
    srid)`` (one prepared statement; the R*Tree triggers still run per row); PostGIS one ``COPY … FROM
    STDIN`` per batch with the geometry as hex EWKB. Database errors come out as Django's (``db_fault``
    classifies them). Like ``bulk_create``, no signals are sent.
    """

    def __init__(self, spec, file_name: str):
        from django.db.models import AutoField, BigAutoField, SmallAutoField

        self.spec = spec
        self.file_name = file_name
        model = spec.model
        self.srid = settings.GIS_SRID
        self.fields = [f for f in model._meta.concrete_fields
                       if not (f.primary_key and isinstance(f, (AutoField, BigAutoField, SmallAutoField)))]
        self.index = {f.attname: i for i, f in enumerate(self.fields)}
        self.geom_i = self.index["geom"]
        self.plain = [f.get_internal_type() in _PLAIN_TYPES for f in self.fields]
        qn = connection.ops.quote_name
        table = qn(model._meta.db_table)
        cols = ", ".join(qn(f.column) for f in self.fields)
        self.postgres = connection.vendor == "postgresql"
        if self.postgres:
            self.sql = f"COPY {table} ({cols}) FROM STDIN"
        else:
            marks = ["%s"] * len(self.fields)
            marks[self.geom_i] = f"GeomFromWKB(%s, {int(self.srid)})"
            self.sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join(marks)})"

    def _template(self) -> list:
        out = []
        for f in self.fields:
            out.append(None if f.attname == "geom" else f.get_db_prep_save(f.get_default(), connection))
        return out

    def rows(self, records) -> list[list]:
        """The database values of ``records`` (column order of :attr:`fields`)."""
        geoms = np.array([r.geom for r in records], dtype=object)
        if self.postgres:
            wkbs = shapely.to_wkb(shapely.set_srid(geoms, self.srid), hex=True, include_srid=True)
        else:
            wkbs = shapely.to_wkb(geoms)
        template, index, plain, fields = self._template(), self.index, self.plain, self.fields
        out = []
        for r, wkb in zip(records, wkbs):
            row = list(template)
            for k, v in _instance_kwargs(self.spec, r, self.file_name, geom=False).items():
                i = index[k]
                row[i] = v if plain[i] and isinstance(v, _PLAIN_VALUES) else \
                    fields[i].get_db_prep_save(v, connection)
            row[self.geom_i] = wkb
            out.append(row)
        return out

    def __call__(self, records) -> None:
        rows = self.rows(records)
        with connection.cursor() as cur:
            if self.postgres:
                with connection.wrap_database_errors, cur.cursor.copy(self.sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany(self.sql, rows)


def _write(report, spec, records, mode, user, progress) -> None:
    """One transaction. New rows go in batches of WRITE_BATCH through :class:`_RowInserter` (no model
    instances); updated rows through ``bulk_update``, one batch of instances alive at a time."""
    model = spec.model
    runs_reap_stale()   # runs of dead importers (a killed command, worker or web process) end failed
    _run_begin(report, user)
    try:
        with transaction.atomic():
            existing = {}
            if spec.code_field and mode in ("upsert", "replace"):
                codes = [r.code for r in records]
                step = _in_chunk()
                for i in range(0, len(codes), step):
                    existing.update(model.objects.filter(code__in=codes[i:i + step]).values_list("code", "pk"))
            if mode == "replace":
                stale = model.objects.all()
                if spec.code_field:
                    keep_pks = set(existing.values())
                    stale_pks = [pk for pk in stale.values_list("pk", flat=True) if pk not in keep_pks]
                    for i in range(0, len(stale_pks), 500):
                        report.deleted += model.objects.filter(pk__in=stale_pks[i:i + 500]).delete()[1].get(
                            model._meta.label, 0)
                else:
                    report.deleted = stale.delete()[1].get(model._meta.label, 0)
            make = _InstanceFactory(model)
            new_recs = [r for r in records if r.code not in existing]
            upd_recs = [r for r in records if r.code in existing]
            done = 0
            insert = _RowInserter(spec, report.file)
            for i in range(0, len(new_recs), WRITE_BATCH):
                chunk = new_recs[i:i + WRITE_BATCH]
                insert(chunk)
                done += len(chunk)
                if progress:
                    progress("write", done, len(records))
            if upd_recs:
                keys = {"geom"} | {k for r in upd_recs for k in r.values}
                if spec.parent is not None:
                    keys.add(spec.parent.field)
                if spec.kind == "districts":
                    keys.add("source")
                fields = sorted(keys - {"code"})
                for i in range(0, len(upd_recs), WRITE_BATCH):
                    chunk = upd_recs[i:i + WRITE_BATCH]
                    objs = [make(_instance_kwargs(spec, r, report.file, g), pk=existing[r.code])
                            for r, g in zip(chunk, _geos([r.geom for r in chunk]))]
                    model.objects.bulk_update(objs, fields)
                    done += len(chunk)
                    if progress:
                        progress("write", done, len(records))
            report.created, report.updated = len(new_recs), len(upd_recs)
            report.status = "ok"
            _record(report, user, ImportRun.Status.OK)
    except ProtectedError as exc:
        n = len(exc.protected_objects)
        report.add("error", "replace_protected",
                   f"--mode replace 需要删除的数据仍被 {n} 条下级数据引用；请改用 --mode upsert，或先处理下级图层")
        report.status = "refused"
        raise _Stop from None


def _run_begin(report: ImportReport, user) -> None:
    """Record the import as running, committed before the write (in autocommit), with its process: if
    the process dies in the write, the row says so and :func:`runs_reap_stale` can fail it."""
    run = ImportRun.objects.create(
        user=user if getattr(user, "pk", None) else None, kind=report.kind, file_name=report.file[:255],
        sha256=report.sha256, size_bytes=report.size_bytes, mode=report.mode, status=ImportRun.Status.RUNNING,
        features_read=report.features_read, worker=worker_id()[:128])
    report.run_id = run.pk


def _record(report: ImportReport, user, status) -> None:
    if report.run_id is not None:   # the running row of this import (updated in the write's transaction)
        ImportRun.objects.filter(pk=report.run_id).update(
            status=status, features_read=report.features_read, created=report.created, updated=report.updated,
            deleted=report.deleted, error_count=len(report.errors), report=report.as_dict(),
            finished_at=timezone.now())
        return
    run = ImportRun.objects.create(
        user=user if getattr(user, "pk", None) else None, kind=report.kind, file_name=report.file[:255],
        sha256=report.sha256, size_bytes=report.size_bytes, mode=report.mode, status=status,
        features_read=report.features_read, created=report.created, updated=report.updated,
        deleted=report.deleted, error_count=len(report.errors), report={}, finished_at=timezone.now())
    report.run_id = run.pk
    run.report = report.as_dict()
    run.save(update_fields=["report"])
