"""CRS recognition and encoding detection (pure; no database)."""
import pytest
from pyproj import CRS

from importers import crs, encoding


@pytest.mark.parametrize("family,datum,text", [
    (crs.CGCS2000_3DEG_ZONE, "CGCS2000", "3-degree Gauss-Kruger zone"),
    (crs.CGCS2000_3DEG_CM, "CGCS2000", "3-degree Gauss-Kruger CM"),
    (crs.CGCS2000_6DEG_ZONE, "CGCS2000", "Gauss-Kruger zone"),
    (crs.CGCS2000_6DEG_CM, "CGCS2000", "Gauss-Kruger CM"),
    (crs.XIAN80_3DEG_ZONE, "Xian 1980", "3-degree Gauss-Kruger zone"),
    (crs.XIAN80_3DEG_CM, "Xian 1980", "3-degree Gauss-Kruger CM"),
    (crs.XIAN80_6DEG_ZONE, "Xian 1980", "Gauss-Kruger zone"),
    (crs.XIAN80_6DEG_CM, "Xian 1980", "Gauss-Kruger CM"),
    (crs.BEIJING54_3DEG_ZONE, "Beijing 1954", "3-degree Gauss-Kruger zone"),
    (crs.BEIJING54_3DEG_CM, "Beijing 1954", "3-degree Gauss-Kruger CM"),
    (crs.BEIJING54_6DEG_ZONE, "Beijing 1954", "Gauss-Kruger zone"),
    (crs.BEIJING54_6DEG_CM, "Beijing 1954", "Gauss-Kruger CM"),
])
def test_epsg_families_are_what_they_claim(family, datum, text):
    for code in (family[0], family[-1]):
        name = CRS.from_epsg(code).name
        assert name.startswith(datum) and text in name
        assert crs.from_wkt(CRS.from_epsg(code).to_wkt()).srid == code
        assert crs.srid_override(code) == code


def test_esri_prj_of_cgcs2000_cm114_is_4547():
    esri = CRS.from_epsg(4547).to_wkt(version="WKT1_ESRI")
    assert crs.from_wkt(esri).srid == 4547


@pytest.mark.parametrize("bad", ["EPSG:4547", "4547.5", "32650", "", "3857; DROP"])
def test_srid_override_only_allow_listed_ints(bad):
    with pytest.raises(crs.CRSProblem):
        crs.srid_override(bad)


def test_zone_suggestions():
    # 3-degree zone 38 with prefix (CM 114E), 6-degree zone 20 with prefix (CM 117E)
    assert "--srid 4526" in crs.suggest_for_projected([38_512_345.0], [4_512_345.0])
    assert "--srid 4498" in crs.suggest_for_projected([20_512_345.0], [4_512_345.0])
    assert "--srid 4547" in crs.suggest_for_projected([512_345.0], [4_512_345.0])
    assert "3857" in crs.suggest_for_projected([12_800_000.0], [4_970_000.0])


def test_resolve_rules():
    assert crs.resolve(None, [115.0], [40.6]).how == "assumed_lonlat"
    with pytest.raises(crs.CRSProblem) as e:
        crs.resolve(None, [40.6, 40.7], [115.0, 115.1])
    assert e.value.code == "swapped_axes"
    with pytest.raises(crs.CRSProblem) as e:
        crs.resolve(None, [38_512_345.0], [4_512_345.0])
    assert e.value.code == "crs_missing" and "4526" in str(e.value)
    assert crs.resolve(None, [38_512_345.0], [4_512_345.0], srid=4526).srid == 4526
    with pytest.raises(crs.CRSProblem) as e:
        crs.resolve(CRS.from_epsg(4547).to_wkt(), [512_345.0], [4_512_345.0], gcj02=True)
    assert e.value.code == "gcj02_not_lonlat"


def test_china_ranges_do_not_overlap():
    # every plausible longitude is an impossible latitude and vice versa: swap detection is certain
    assert crs.CHINA_LAT[1] < crs.CHINA_LON[0]


@pytest.mark.parametrize("text,expected", [("UTF-8", "utf-8"), ("65001", "utf-8"), ("GBK", "gb18030"),
                                           ("ANSI 936", "gb18030"), ("936", "gb18030"), ("GB2312", "gb18030"),
                                           ("1252", "cp1252")])
def test_cpg_names(text, expected):
    assert encoding.from_cpg(text.encode()) == expected


def test_detection_utf8_vs_gbk_and_neither():
    names = "张家口市桥东区红旗楼社区；宣化区"
    assert encoding.detect([names.encode("utf-8")]).how == "detected_utf8"
    gbk = names.encode("gbk")
    assert encoding.detect([gbk[:7], gbk[7:]]).how == "detected_gb18030"  # split mid-character
    assert gbk.decode(encoding.detect([gbk]).encoding) == names
    with pytest.raises(encoding.EncodingProblem):
        encoding.detect([b"\xff\xfe\x80\x80"])
    assert encoding.detect([b"plain ascii"]).encoding == "utf-8"
