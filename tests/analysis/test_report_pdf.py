"""layers/analysis/report_pdf.py: the review map layers and the printable report (no database)."""
import re
import shutil
import subprocess

import numpy as np
import pytest
import shapely
from hypothesis import given, settings, strategies as st

from layers.analysis import report_pdf as P
from layers.analysis import rules as R

needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")


def _case():
    """A 200 x 150 m site; the service station 20 m outside (FAC-IN-SITE fails), 140 m² for 500 households
    (FAC-AREA fails: 150 required); one shelter 200 m east; the micro station 300 m west of the site."""
    site = shapely.box(0, 0, 200, 150)
    rs = R.RuleSet(version="t-1")
    proj = R.Project("示例·花园", "示例置业", 500, site,
                     (R.ProjectFacility("community_service", 140.0, shapely.Point(220, 60), "服务站"),))
    ctx = R.ReviewContext(shelter_geoms=[shapely.box(400, 0, 450, 50), shapely.box(4000, 0, 4050, 50)],
                          shelter_levels=("emergency", "emergency"), shelter_capacity=[5000, 10],
                          fire_geoms=[shapely.Point(-300, 0), shapely.Point(-100, 0), shapely.Point(0, 2000)],
                          fire_kinds=("community_micro", "standard", "community_micro"))
    return proj, ctx, rs, R.review(proj, ctx, rs)


def _text(pdf: bytes, tmp_path) -> str:
    p = tmp_path / "r.pdf"
    p.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(p), "-"], capture_output=True, text=True, check=True).stdout


def test_map_layers_keep_what_the_reach_rules_use():
    proj, ctx, rs, rv = _case()
    L = P.review_map_layers(rv, ctx, rs)
    assert [g.bounds for g in L.shelters] == [(400, 0, 450, 50)]        # 200 m away; the 3,800 m one is left out
    assert [(g.x, g.y) for g in L.fire_stations] == [(-300.0, 0.0)]      # a "standard" station does not count
    assert L.facility_names == ("服务站",) and L.facilities[0].equals(shapely.Point(220, 60))
    codes = {c for c, _s, _g in L.problems}
    assert "FAC-IN-SITE" in codes and all(s in ("fail", "warn") for _c, s, _g in L.problems)
    assert {c.code for c in rv.checks if c.status == "fail" and c.evidence is not None} <= codes
    x0, y0, x1, y1 = L.bounds(10.0)
    assert (x0, y0, x1) == (-10.0, -10.0, 230.0) and y1 >= 160.0
    assert L.bounds(0.0, targets=True)[0] == -300.0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-1500, 1500), st.floats(-1500, 1500)), min_size=1, max_size=12),
       st.floats(50, 800))
def test_shelter_filter_matches_brute_force(points, reach):
    site = shapely.box(0, 0, 100, 60)
    geoms = [shapely.Point(x, y).buffer(10, quad_segs=4) for x, y in points]
    rs = R.RuleSet(version="t", shelter_reach_m=reach)
    ctx = R.ReviewContext(shelter_geoms=geoms, shelter_levels=("emergency",) * len(geoms),
                          shelter_capacity=np.ones(len(geoms)))
    rv = R.Review("pass", "t", R.Project("p", "d", 1, site), 3, {}, ())
    got = {g.wkb for g in P.review_map_layers(rv, ctx, rs).shelters}
    # brute force: the distance from a shelter's vertices/edges to the site, by dense sampling of both
    want = set()
    for g in geoms:
        d = min(site.distance(shapely.Point(p)) for p in shapely.segmentize(g.exterior, 0.5).coords)
        if g.intersects(site):
            d = 0.0
        if d <= reach - 1e-6:
            want.add(g.wkb)
        elif d > reach + 0.1:
            assert g.wkb not in got
    assert want <= got


@pytest.mark.parametrize("value,text", [
    (None, "-"), (3, "3"), (1234.5, "1,234.5"), (150.0, "150"), (0.125, "0.12"), (float("nan"), "-"),
    ({"kindergarten": 120.04, "culture_sport": None}, "kindergarten 120.04; culture_sport -"),
    ([{"code": "130702", "name": "桥东区", "share": 0.5}, {"code": "130703", "share": 0.5}], "桥东区 50.0%, 130703 50.0%"),
])
def test_format_value(value, text):
    assert P.format_value(value) == text


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="项目用地abc 12,.米", max_size=80), st.integers(6, 40))
def test_wrap_keeps_every_character_within_width(text, width):
    out = P._wrap(text, width)
    assert all(P._width(line) <= width or len(line) == 1 for line in out.split("\n"))
    assert out.replace("\n", "").replace(" ", "") == text.replace(" ", "")


@needs_poppler
def test_pdf_has_the_verdict_rule_codes_and_chinese_text(tmp_path):
    _proj, ctx, rs, rv = _case()
    assert rv.verdict == "fail"
    doc = rv.as_dict("zh")
    pdf = P.review_pdf(doc, P.review_map_layers(rv, ctx, rs), created_at="2025-03-04 05:06",
                       reviewer="审查员甲", extra=[("建设单位", "示例置业")], history=["2025-03-04 提交 planner"])
    assert pdf.startswith(b"%PDF-")
    text = _text(pdf, tmp_path)
    assert "结论：不通过" in text and "verdict=fail" in text
    for c in rv.checks:
        assert c.code in text
    assert "t-1" in text and "2025-03-04 05:06" in text and "审查员甲" in text and "示例·花园" in text
    assert "住宅项目配套设施与安全审查报告" in text and "逐项审查结果" in text and "审查记录" in text
    assert text.count("不通过") >= 1 + sum(c.status == "fail" for c in rv.checks)
    info = subprocess.run(["pdfinfo", str(tmp_path / "r.pdf")], capture_output=True, text=True).stdout
    assert re.search(r"^Pages:\s+2$", info, re.M) and "(A4)" in info
    fonts = subprocess.run(["pdffonts", str(tmp_path / "r.pdf")], capture_output=True, text=True).stdout
    assert "WenQuanYi" in fonts and "Type 3" not in fonts  # TrueType (fonttype 42) embedded, not Type 3


@needs_poppler
def test_pdf_without_map_and_in_english(tmp_path):
    doc = {"verdict": "pass", "rule_set": "r-9", "project": {"name": "P", "households": 1, "population": 3},
           "location": {"districts": [{"code": "130702", "name": "Qiaodong", "share": 1.0}]},
           "checks": [{"code": "FAC-AREA", "status": "pass", "value": 30.0, "required": 30.0, "unit": "m2",
                       "message": "enough floor area", "basis": "NDRC 2022"}]}
    text = _text(P.review_pdf(doc, None, created_at="t0", lang="en"), tmp_path)
    assert "Verdict: pass" in text and "map unavailable" in text and "FAC-AREA" in text
    assert "Qiaodong 100.0%" in text and "r-9" in text
