"""The coverage summary PDF (layers/analysis/coverage_pdf.py): valid A4 PDF, searchable Chinese text with
the headline figures, the district table, and the map palette."""
import shutil
import subprocess

import numpy as np
import pytest
import shapely

from layers.analysis import coverage_pdf as cp

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")


def _doc(capacity=False):
    districts = [{"code": "130702", "name": "桥东区", "population": 12345.0, "covered": 10000.0, "share": 0.81},
                 {"code": "130703", "name": "桥西区", "population": 5000.0, "covered": 0.0, "share": 0.0}]
    streets = [{"code": f"130702{i:03d}", "name": f"测试街道{i}", "population": 100.0 * (i + 1),
                "covered": 10.0 * i, "share": 0.1 * i / (i + 1)} for i in range(30)]
    doc = {"kind": "shelters", "radius_m": {"emergency": 500.0, "fixed_short": 1000.0}, "method": "euclidean",
           "demand": "raster", "population_total": 17345.0, "population_covered": 10000.0,
           "share_covered": 10000.0 / 17345.0, "facilities": [{"code": "S1"}, {"code": "S2"}],
           "facility_radius_overrides": 1, "rules_version": "zjk-2026.1", "data_version": "abcd1234",
           "areas": {"districts": districts, "streets": streets, "communities": []}}
    if capacity:
        doc.update(population_served=8000.0, population_short=2000.0, population_unreachable=7345.0)
    return doc


def _map():
    grids = np.array([shapely.box(x, 0, x + 400, 400) for x in range(0, 4000, 400)], dtype=object)
    share = np.linspace(0, 1, len(grids))
    share[3] = np.nan
    sites = np.array([shapely.Point(600, 200), shapely.box(2000, 100, 2100, 200)], dtype=object)
    return cp.CoverageMap(grids, share, sites, np.array([500.0, 1000.0]))


def _text(pdf: bytes, tmp_path) -> str:
    p = tmp_path / "c.pdf"
    p.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(p), "-"], capture_output=True, check=True,
                          text=True).stdout


def _pages(pdf: bytes, tmp_path) -> int:
    p = tmp_path / "i.pdf"
    p.write_bytes(pdf)
    out = subprocess.run(["pdfinfo", str(p)], capture_output=True, check=True, text=True).stdout
    size = next(line for line in out.splitlines() if line.startswith("Page size"))
    assert "595" in size and "841" in size  # A4 in points (595.28 x 841.89)
    return int(next(line for line in out.splitlines() if line.startswith("Pages")).split()[-1])


@pytest.mark.parametrize("capacity", [False, True])
def test_pdf_has_the_headline_figures_and_the_districts(tmp_path, capacity):
    doc = _doc(capacity)
    pdf = cp.coverage_pdf(doc, _map(), job_id=42, created_at="2026-11-26 10:00", user="emergency_demo",
                          data_version="abcd1234")
    assert pdf[:5] == b"%PDF-"
    assert _pages(pdf, tmp_path) == 2
    text = _text(pdf, tmp_path)
    for label, value in cp.headline_rows(doc):
        assert label in text and value in text, (label, value)
    assert "17,345" in text and "10,000" in text and "57.7%" in text and "7,345" in text
    assert ("8,000" in text) == capacity
    assert "设施服务覆盖分析报告" in text and "abcd1234" in text and "emergency_demo" in text and "#42" in text
    assert "桥东区" in text and "桥西区" in text and "81.0%" in text
    assert "个设施单独设定" in text
    # the lowest-share streets: LOWEST_STREETS of them, the lowest first
    shown = [i for i in range(30) if f"测试街道{i} " in text or f"测试街道{i}\n" in text]
    assert len(shown) == cp.LOWEST_STREETS and shown == list(range(cp.LOWEST_STREETS))


def test_english_and_without_map(tmp_path):
    doc = _doc()
    text = _text(cp.coverage_pdf(doc, None, lang="en"), tmp_path)
    assert "Coverage analysis summary" in text and "map unavailable" in text and "Share covered" in text
    assert "57.7%" in text


def test_empty_map_still_renders(tmp_path):
    empty = cp.CoverageMap(np.empty(0, dtype=object), np.empty(0), np.empty(0, dtype=object), np.empty(0))
    assert empty.bounds() is None
    assert cp.coverage_pdf(_doc(), empty)[:5] == b"%PDF-"


def test_share_color_buckets_match_quarters():
    rng = np.random.default_rng(5)
    for s in np.concatenate([rng.random(200), [0.0, 0.25, 0.5, 0.75, 1.0, 1e-9]]):
        want = cp.SHARE_COLORS[0] if s <= 0 else cp.SHARE_COLORS[min(4, int(np.ceil(s * 4)))]
        assert cp.share_color(float(s)) == want, s
    assert cp.share_color(float("nan")) == cp.NO_PEOPLE_COLOR


def test_parameter_rows_name_the_run():
    rows = dict(cp.parameter_rows({"kind": "facilities", "radius_m": 300.0, "method": "network",
                                   "demand": "grids", "facility_kind": "kindergarten", "facilities": [{}]}))
    assert rows["设施类别"] == "社区服务设施（1 个）" and rows["距离"] == "沿道路"
    assert rows["服务半径（米）"] == "300" and rows["设施类型"] == "kindergarten"
