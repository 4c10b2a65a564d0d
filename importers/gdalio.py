"""A thin, streaming OGR reader on the GDAL library GeoDjango loads (ctypes).

GeoDjango's ``DataSource`` opens any dataset name with every driver and no open options. Here a dataset is
opened with exactly one allowed driver, our open options, and only a path we built; features are read one
at a time (``OGR_L_GetNextFeature``) as ``(fid, attribute values, ISO WKB or None)``, with strings handed
back as raw bytes for the caller to decode with the encoding it chose (PITFALLS.md, 12 and 13).
"""
from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import POINTER, c_char_p, c_double, c_int, c_int64, c_uint, c_void_p

from django.contrib.gis.gdal.driver import Driver
from django.contrib.gis.gdal.libgdal import lgdal


def _fn(name, restype, argtypes):
    f = lgdal[name]  # a fresh function object: GeoDjango's own prototypes are left alone
    f.restype = restype
    f.argtypes = argtypes
    return f


_open = _fn("GDALOpenEx", c_void_p, [c_char_p, c_uint, POINTER(c_char_p), POINTER(c_char_p), POINTER(c_char_p)])
_close = _fn("GDALClose", None, [c_void_p])
_layer_count = _fn("GDALDatasetGetLayerCount", c_int, [c_void_p])
_get_layer = _fn("GDALDatasetGetLayer", c_void_p, [c_void_p, c_int])
_layer_name = _fn("OGR_L_GetName", c_char_p, [c_void_p])
_layer_defn = _fn("OGR_L_GetLayerDefn", c_void_p, [c_void_p])
_layer_srs = _fn("OGR_L_GetSpatialRef", c_void_p, [c_void_p])
_feature_count = _fn("OGR_L_GetFeatureCount", c_int64, [c_void_p, c_int])
_next_feature = _fn("OGR_L_GetNextFeature", c_void_p, [c_void_p])
_reset = _fn("OGR_L_ResetReading", None, [c_void_p])
_fd_field_count = _fn("OGR_FD_GetFieldCount", c_int, [c_void_p])
_fd_field = _fn("OGR_FD_GetFieldDefn", c_void_p, [c_void_p, c_int])
_fld_name = _fn("OGR_Fld_GetNameRef", c_char_p, [c_void_p])
_fld_type = _fn("OGR_Fld_GetType", c_int, [c_void_p])
_f_destroy = _fn("OGR_F_Destroy", None, [c_void_p])
_f_fid = _fn("OGR_F_GetFID", c_int64, [c_void_p])
_f_geom = _fn("OGR_F_GetGeometryRef", c_void_p, [c_void_p])
_f_is_set = _fn("OGR_F_IsFieldSetAndNotNull", c_int, [c_void_p, c_int])
_f_int64 = _fn("OGR_F_GetFieldAsInteger64", c_int64, [c_void_p, c_int])
_f_double = _fn("OGR_F_GetFieldAsDouble", c_double, [c_void_p, c_int])
_f_string = _fn("OGR_F_GetFieldAsString", c_char_p, [c_void_p, c_int])
_g_wkb_size = _fn("OGR_G_WkbSize", c_int, [c_void_p])
_g_to_iso_wkb = _fn("OGR_G_ExportToIsoWkb", c_int, [c_void_p, c_int, c_void_p])
_g_is_empty = _fn("OGR_G_IsEmpty", c_int, [c_void_p])
_srs_to_wkt = _fn("OSRExportToWkt", c_int, [c_void_p, POINTER(c_void_p)])
_cpl_free = _fn("VSIFree", None, [c_void_p])
_set_tl_config = _fn("CPLSetThreadLocalConfigOption", None, [c_char_p, c_char_p])
_get_config = _fn("CPLGetConfigOption", c_char_p, [c_char_p, c_char_p])
_err_reset = _fn("CPLErrorReset", None, [])
_err_type = _fn("CPLGetLastErrorType", c_int, [])
_err_msg = _fn("CPLGetLastErrorMsg", c_char_p, [])

GDAL_OF_VECTOR = 0x04
GDAL_OF_READONLY = 0x00
CE_FAILURE = 3
OFT_INTEGER, OFT_REAL, OFT_STRING, OFT_INTEGER64 = 0, 2, 4, 12


class GDALReadError(Exception):
    def __init__(self, message: str, row: int | None = None):
        super().__init__(message)
        self.row = row


def _cstrings(items):
    if not items:
        return None
    arr = (c_char_p * (len(items) + 1))()
    arr[:-1] = [s.encode() for s in items]
    arr[-1] = None
    return arr


def last_error() -> str:
    msg = _err_msg()
    return msg.decode("utf-8", errors="replace") if msg else ""


@contextmanager
def config(**options: str | None):
    """Thread-local GDAL config options for the duration of the block."""
    keys = [k.encode() for k in options]
    old = [_get_config(k, None) for k in keys]
    try:
        for k, v in zip(keys, options.values()):
            _set_tl_config(k, None if v is None else v.encode())
        yield
    finally:
        for k, v in zip(keys, old):
            _set_tl_config(k, v)


class OGRDataset:
    """One dataset opened read-only with exactly one driver."""

    def __init__(self, path: str, driver: str, open_options: dict[str, str] | None = None):
        Driver.ensure_registered()
        opts = [f"{k}={v}" for k, v in (open_options or {}).items()]
        _err_reset()
        self._ptr = _open(str(path).encode(), GDAL_OF_VECTOR | GDAL_OF_READONLY, _cstrings([driver]),
                          _cstrings(opts), None)
        if not self._ptr:
            raise GDALReadError(f"GDAL 无法以 {driver} 格式打开文件：{last_error() or '格式不符或文件损坏'}")

    def close(self) -> None:
        if self._ptr:
            _close(self._ptr)
            self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def layer_names(self) -> list[bytes]:
        return [_layer_name(_get_layer(self._ptr, i)) for i in range(_layer_count(self._ptr))]

    def layer(self, index: int) -> OGRLayer:
        return OGRLayer(_get_layer(self._ptr, index), self)


class OGRLayer:
    def __init__(self, ptr, ds: OGRDataset):
        self._ptr = ptr
        self._ds = ds  # keep the dataset alive
        defn = _layer_defn(ptr)
        self.field_names_raw: list[bytes] = []
        self.field_types: list[int] = []
        for i in range(_fd_field_count(defn)):
            fd = _fd_field(defn, i)
            self.field_names_raw.append(_fld_name(fd))
            self.field_types.append(_fld_type(fd))

    @property
    def name_raw(self) -> bytes:
        return _layer_name(self._ptr)

    def srs_wkt(self) -> str | None:
        srs = _layer_srs(self._ptr)
        if not srs:
            return None
        out = c_void_p()
        if _srs_to_wkt(srs, ctypes.byref(out)) != 0 or not out.value:
            return None
        try:
            return ctypes.string_at(out.value).decode("utf-8", errors="replace")
        finally:
            _cpl_free(out)

    def feature_count(self) -> int | None:
        n = _feature_count(self._ptr, 0)
        return None if n < 0 else int(n)

    def features(self, max_wkb_bytes: int) -> Iterator[tuple[int, list, bytes | None, str | None]]:
        """Yield ``(number, values, wkb, problem)``; number is 1-based in file order.

        Strings come back as bytes. A geometry whose WKB would exceed ``max_wkb_bytes`` is not exported
        (``problem`` says so); a read error ends the iteration with :class:`GDALReadError`.
        """
        _reset(self._ptr)
        types = self.field_types
        n_fields = len(types)
        number = 0
        while True:
            _err_reset()
            feat = _next_feature(self._ptr)
            if not feat:
                if _err_type() >= CE_FAILURE:
                    raise GDALReadError(f"读取失败（文件损坏或被截断）：{last_error()}", row=number + 1)
                return
            number += 1
            try:
                values = []
                for i in range(n_fields):
                    if not _f_is_set(feat, i):
                        values.append(None)
                    elif types[i] in (OFT_INTEGER, OFT_INTEGER64):
                        values.append(int(_f_int64(feat, i)))
                    elif types[i] == OFT_REAL:
                        values.append(float(_f_double(feat, i)))
                    else:
                        values.append(_f_string(feat, i))
                geom = _f_geom(feat)
                wkb = None
                problem = None
                if geom:
                    size = _g_wkb_size(geom)
                    if size > max_wkb_bytes:
                        problem = "too_many_vertices"
                    else:
                        buf = (ctypes.c_ubyte * size)()
                        _g_to_iso_wkb(geom, 1, buf)
                        wkb = bytes(buf)
                if _err_type() >= CE_FAILURE:
                    problem = problem or f"gdal: {last_error()}"
                yield number, values, wkb, problem
            finally:
                _f_destroy(feat)
