"""Which text encoding a file's attributes are in (pure; no Django).

ArcGIS in China writes .dbf files in GBK, usually without a ``.cpg`` and with language driver id 0, which
GDAL then reads as raw bytes without a warning (PITFALLS.md, 12). We decide the encoding ourselves and tell
GDAL not to recode: a ``.cpg`` is honoured; without one, bytes that are valid UTF-8 are UTF-8, otherwise
GB18030 (a superset of GBK and GB2312, so GBK bytes decode identically); ``--encoding`` overrides both.
The report says which was used and why.
"""
from __future__ import annotations

import codecs
from collections.abc import Iterable
from dataclasses import dataclass

UTF8 = "utf-8"
GB18030 = "gb18030"

# .cpg contents seen in the wild -> Python codec name.
_CPG_ALIASES = {
    "utf-8": UTF8, "utf8": UTF8, "65001": UTF8, "utf_8": UTF8,
    "gbk": GB18030, "cp936": GB18030, "936": GB18030, "ansi 936": GB18030, "gb2312": GB18030,
    "gb18030": GB18030, "54936": GB18030, "ms936": GB18030,
    "big5": "big5", "950": "big5", "cp950": "big5",
    "1252": "cp1252", "ansi 1252": "cp1252", "cp1252": "cp1252",
    "88591": "latin-1", "iso-8859-1": "latin-1", "iso88591": "latin-1", "latin1": "latin-1",
    "ascii": UTF8, "us-ascii": UTF8,
}


class EncodingProblem(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EncodingChoice:
    encoding: str  # a Python codec name
    how: str       # "override" | "cpg" | "detected_utf8" | "detected_gb18030" | "format"


def normalise(name: str) -> str:
    """A user- or .cpg-supplied encoding name as a Python codec name; EncodingProblem if unknown.

    >>> normalise("ANSI 936"), normalise("UTF8"), normalise("gbk")
    ('gb18030', 'utf-8', 'gb18030')
    """
    key = " ".join(name.strip().lower().split())
    if key in _CPG_ALIASES:
        return _CPG_ALIASES[key]
    try:
        return codecs.lookup(key).name
    except LookupError:
        raise EncodingProblem("encoding_unknown", f"未知的字符编码 {name!r}（可用 utf-8、gbk、gb18030）") from None


def from_cpg(text: bytes) -> str:
    """The encoding named by a ``.cpg`` file's contents."""
    return normalise(text.decode("ascii", errors="replace"))


def detect(chunks: Iterable[bytes]) -> EncodingChoice:
    """UTF-8 if every byte decodes as UTF-8, else GB18030 if that decodes, else EncodingProblem.

    >>> detect([("名称".encode("utf-8"))]).encoding
    'utf-8'
    >>> detect([("名称".encode("gbk"))]).encoding
    'gb18030'
    """
    utf8 = codecs.getincrementaldecoder(UTF8)()
    gb = codecs.getincrementaldecoder(GB18030)()
    utf8_ok = gb_ok = True
    for chunk in chunks:
        if utf8_ok:
            try:
                utf8.decode(chunk)
            except UnicodeDecodeError:
                utf8_ok = False
        if gb_ok:
            try:
                gb.decode(chunk)
            except UnicodeDecodeError:
                gb_ok = False
        if not utf8_ok and not gb_ok:
            break
    for ok, dec in ((utf8_ok, utf8), (gb_ok, gb)):
        if ok:
            try:
                dec.decode(b"", final=True)
            except UnicodeDecodeError:
                if dec is utf8:
                    utf8_ok = False
                else:
                    gb_ok = False
    if utf8_ok:
        return EncodingChoice(UTF8, "detected_utf8")
    if gb_ok:
        return EncodingChoice(GB18030, "detected_gb18030")
    raise EncodingProblem("encoding_undetected", "属性文字既不是 UTF-8 也不是 GBK/GB18030：请用 --encoding 指定编码")


def read_chunks(path, start: int = 0, size: int = 1 << 20) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(size):
            yield chunk


def dbf_header_length(path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12:
        return 0
    return int.from_bytes(head[8:10], "little")


def choose_for_dbf(dbf_path, cpg_path=None, override: str | None = None) -> EncodingChoice:
    """The encoding of a shapefile's .dbf: ``--encoding``, else its .cpg, else detected from its bytes.

    The field-name part of the header is scanned too (Chinese field names are common).
    """
    if override:
        return EncodingChoice(normalise(override), "override")
    if cpg_path is not None:
        with open(cpg_path, "rb") as fh:
            return EncodingChoice(from_cpg(fh.read(64)), "cpg")
    # Field names live in 32-byte descriptors from byte 32; skip the binary header fields of each.
    names = []
    hlen = dbf_header_length(dbf_path)
    with open(dbf_path, "rb") as fh:
        header = fh.read(max(hlen, 32))
    for off in range(32, len(header) - 31, 32):
        if header[off] == 0x0D:
            break
        names.append(header[off:off + 11].split(b"\0", 1)[0])
    return detect([b" ".join(names), *read_chunks(dbf_path, start=hlen)])


def choose_for_text(path, override: str | None = None) -> EncodingChoice:
    """The encoding of a text file (CSV, GeoJSON): ``--encoding``, a UTF-8 BOM, else detected."""
    if override:
        return EncodingChoice(normalise(override), "override")
    with open(path, "rb") as fh:
        if fh.read(3) == codecs.BOM_UTF8:
            return EncodingChoice("utf-8-sig", "bom")
    return detect(read_chunks(path))
