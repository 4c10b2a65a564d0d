"""Checks on hostile input before GDAL or GEOS see it (PITFALLS.md, 13 and 14).

- Only the formats we support, decided from the content (magic bytes), not the file name: a VRT renamed
  ``.geojson`` is refused, and GDAL only ever gets a path inside a temporary directory we built, with an
  explicit driver (never a client string, URL or ``/vsi…`` path).
- Zip archives (.zip, .kmz): no absolute paths, no ``..``, no links, bounded entry count, total size and
  compression ratio; entries are extracted by us under safe names.
- Size, nesting depth and vertex limits, checked by a streaming scan of the raw text (GeoJSON, KML) or
  the record index (.shx) — GDAL turns a deeply nested GeometryCollection into a NULL geometry silently.

Pure (no Django); the limits are a :class:`Limits` value the service builds from settings.
"""
from __future__ import annotations

import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 512 * 1024 * 1024
    max_zip_entries: int = 200
    max_zip_total_bytes: int = 2 * 1024 * 1024 * 1024
    max_zip_ratio: float = 200.0
    max_nesting: int = 24            # array/object depth in GeoJSON, element depth in KML
    max_vertices_per_feature: int = 250_000
    max_features: int = 5_000_000
    max_csv_cell_bytes: int = 8 * 1024 * 1024


class UnsafeInput(ValueError):
    """Refused before parsing. ``row`` is the 1-based feature number when one is known."""

    def __init__(self, code: str, message: str, row: int | None = None):
        super().__init__(message)
        self.code = code
        self.row = row


# --- formats by content ----------------------------------------------------------------------------

FORMATS = ("shapefile", "geojson", "gpkg", "csv", "kml", "kmz", "dxf", "zip")

_EXT = {".shp": "shapefile", ".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg", ".csv": "csv",
        ".txt": "csv", ".kml": "kml", ".kmz": "kmz", ".dxf": "dxf", ".zip": "zip"}


def format_from_name(name: str) -> str:
    ext = Path(name).suffix.lower()
    if ext not in _EXT:
        raise UnsafeInput("format_unsupported",
                          f"不支持的文件类型 {ext or '（无扩展名）'}：支持 .shp/.zip（Shapefile）、.geojson/.json、"
                          f".gpkg、.csv、.kml/.kmz、.dxf")
    return _EXT[ext]


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _first_text(head: bytes) -> bytes:
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.lstrip()


def check_content(path: Path, fmt: str) -> None:
    """Refuse a file whose bytes are not the format its name claims (a VRT renamed .geojson, say)."""
    head = _head(path)
    text = _first_text(head)
    low = head.lower()
    if b"<ogrvrtdatasource" in low or text.startswith(b"<OGRVRT"):
        raise UnsafeInput("vrt_refused", "文件是 GDAL VRT（可读取其他本地文件），不予导入")
    if not head:
        raise UnsafeInput("empty_file", "文件为空")
    ok = True
    if fmt == "shapefile":
        ok = len(head) >= 100 and struct.unpack(">i", head[:4])[0] == 9994 and \
            struct.unpack("<i", head[28:32])[0] == 1000
    elif fmt == "geojson":
        ok = text.startswith(b"{")
    elif fmt == "gpkg":
        ok = head.startswith(b"SQLite format 3\0") and len(head) >= 72 and head[68:72] in (
            b"GPKG", b"GP10", b"GP11")
    elif fmt in ("zip", "kmz"):
        ok = head.startswith(b"PK\x03\x04")
    elif fmt == "kml":
        ok = text.startswith(b"<") and b"<kml" in low
        if b"<!doctype" in low or b"<!entity" in low:
            raise UnsafeInput("xml_doctype", "KML 中含有 DOCTYPE/ENTITY 声明，不予导入")
    elif fmt == "dxf":
        ok = bool(re.match(rb"(999\s*\r?\n[^\n]*\n\s*)?0\s*\r?\n\s*SECTION", text))
        if head.startswith(b"AutoCAD Binary DXF"):
            raise UnsafeInput("dxf_binary", "二进制 DXF 不受支持：请另存为 ASCII DXF")
    elif fmt == "csv":
        ok = b"\0" not in head
    if not ok:
        raise UnsafeInput("content_mismatch", f"文件内容不是有效的 {fmt} 格式（按文件头判断）")


def check_size(path: Path, limits: Limits) -> int:
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise UnsafeInput("file_too_large",
                          f"文件 {size:,} 字节，超过上限 {limits.max_file_bytes:,} 字节")
    return size


# --- zip archives -------------------------------------------------------------------------------

def _safe_member(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\0" in name:
        return False
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." not in parts


def check_zip(path: Path, limits: Limits) -> list[zipfile.ZipInfo]:
    """The archive's file entries after the safety checks; UnsafeInput names the first bad entry."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeInput("zip_corrupt", f"压缩包损坏：{exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_zip_entries:
            raise UnsafeInput("zip_too_many_entries",
                              f"压缩包有 {len(infos)} 个条目，超过上限 {limits.max_zip_entries}")
        total = 0
        files = []
        for info in infos:
            if not _safe_member(info.filename):
                raise UnsafeInput("zip_unsafe_path", f"压缩包条目路径不安全：{info.filename!r}")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeInput("zip_symlink", f"压缩包条目是符号链接：{info.filename!r}")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise UnsafeInput("zip_encrypted", f"压缩包条目已加密：{info.filename!r}")
            total += info.file_size
            if info.file_size > limits.max_file_bytes or total > limits.max_zip_total_bytes:
                raise UnsafeInput("zip_too_large", f"压缩包解压后超过大小上限（条目 {info.filename!r}）")
            if info.file_size > 1 << 20 and info.file_size > limits.max_zip_ratio * max(info.compress_size, 1):
                raise UnsafeInput("zip_ratio", f"压缩包条目 {info.filename!r} 压缩比异常"
                                  f"（{info.file_size:,} / {info.compress_size:,}），疑似压缩炸弹")
            files.append(info)
        return files


def extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, limits: Limits) -> None:
    """Copy one entry to ``dest`` (a name we chose), counting bytes so a lying header cannot overflow."""
    written = 0
    with zf.open(info) as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > info.file_size or written > limits.max_file_bytes:
                raise UnsafeInput("zip_too_large", f"压缩包条目 {info.filename!r} 实际大小超过声明")
            out.write(chunk)


# --- streaming scans ----------------------------------------------------------------------------

_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]|"')


def scan_geojson(path: Path, limits: Limits) -> tuple[int, int | None]:
    """Check nesting depth and per-feature vertex counts of a GeoJSON file without parsing it.

    Counts ``[`` per feature (each coordinate pair opens one) at depth > the feature's own depth.
    Returns the number of features seen and the byte offset just after a top-level ``"crs"`` key (GDAL
    would interpret its value, so the caller checks it). Reads in chunks; strings are skipped so brackets in names do
    not count.
    """
    depth = 0
    feature_depth = None   # depth of the "features" array
    vertices = 0
    features = 0
    carry = b""
    crs_offset = None
    consumed = 0  # file offset of data[0]
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            data = carry + chunk
            carry = b""
            if not data:
                break
            pos = 0
            for m in _JSON_TOKENS.finditer(data):
                tok = m.group()
                if tok == b'"':  # an unterminated string at the chunk end: keep it for the next chunk
                    if chunk:
                        carry = data[m.start():]
                        pos = len(data)
                        break
                    raise UnsafeInput("json_truncated", "GeoJSON 文件被截断（字符串未结束）", row=features or None)
                pos = m.end()
                if tok.startswith(b'"'):
                    if tok == b'"crs"' and depth == 1 and crs_offset is None:
                        crs_offset = consumed + m.end()
                    if tok == b'"features"' and feature_depth is None:
                        feature_depth = depth + 1
                    continue
                if tok in (b"[", b"{"):
                    depth += 1
                    if depth > limits.max_nesting:
                        raise UnsafeInput("nesting_too_deep",
                                          f"嵌套层数超过 {limits.max_nesting}（例如多层嵌套的几何集合）",
                                          row=max(features, 1) if feature_depth else None)
                    if feature_depth is not None and depth == feature_depth + 1:
                        features += 1
                        vertices = 0
                        if features > limits.max_features:
                            raise UnsafeInput("too_many_features", f"要素数超过上限 {limits.max_features:,}")
                    elif tok == b"[" and (feature_depth is None or depth > feature_depth + 1):
                        vertices += 1
                        if vertices > limits.max_vertices_per_feature + 64:
                            raise UnsafeInput("too_many_vertices",
                                              f"要素的顶点数超过上限 {limits.max_vertices_per_feature:,}",
                                              row=max(features, 1))
                else:
                    depth -= 1
            consumed += len(data) - len(carry)
            if not chunk:
                break
    if depth != 0:
        raise UnsafeInput("json_truncated", "GeoJSON 文件被截断（括号未闭合）", row=features or None)
    return features, crs_offset


_KML_TOKENS = re.compile(rb"<(/?)([A-Za-z_][\w:.-]*)[^>]*?(/?)>|<coordinates>|[,\s]+")


def scan_kml(path: Path, limits: Limits) -> None:
    """Element depth and DOCTYPE/ENTITY checks for KML, streaming."""
    depth = 0
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            data = tail + chunk
            low = data.lower()
            if b"<!doctype" in low or b"<!entity" in low:
                raise UnsafeInput("xml_doctype", "KML 中含有 DOCTYPE/ENTITY 声明，不予导入")
            cut = data.rfind(b"<")
            body, tail = (data[:cut], data[cut:]) if cut > 0 else (data, b"")
            for m in re.finditer(rb"<(/?)([A-Za-z_][\w:.-]*)[^>]*?(/?)>", body):
                if m.group(1):
                    depth -= 1
                elif not m.group(3):
                    depth += 1
                    if depth > limits.max_nesting + 8:
                        raise UnsafeInput("nesting_too_deep", f"KML 元素嵌套超过 {limits.max_nesting + 8} 层")


def scan_shx(shx_path: Path, limits: Limits) -> None:
    """Per-record size from the .shx index: a polygon of more vertices than allowed is refused here."""
    max_bytes = 16 * limits.max_vertices_per_feature + 4 * 1024
    with open(shx_path, "rb") as fh:
        header = fh.read(100)
        if len(header) < 100 or struct.unpack(">i", header[:4])[0] != 9994:
            raise UnsafeInput("shx_corrupt", ".shx 索引文件损坏")
        row = 0
        while rec := fh.read(8 * 4096):
            n = len(rec) // 8
            for i in range(n):
                row += 1
                _off, length_words = struct.unpack(">ii", rec[8 * i:8 * i + 8])
                if length_words * 2 > max_bytes:
                    raise UnsafeInput("too_many_vertices",
                                      f"要素的顶点数超过上限 {limits.max_vertices_per_feature:,}", row=row)
            if row > limits.max_features:
                raise UnsafeInput("too_many_features", f"要素数超过上限 {limits.max_features:,}")
