"""Grid map sheets (layers/analysis/mapsheet.py): layout and scale arithmetic, a true scale bar, a sheet that is
not blank, Chinese glyphs that are not tofu, neighbours by brute force."""
import io

import matplotlib
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from shapely.geometry import Point, box

from layers.analysis import mapsheet as ms

X0, Y0 = 574_000.0, 4_520_000.0  # Zhangjiakou, EPSG:4547 metres


def _sheet(**kw) -> ms.GridSheet:
    grid = box(X0, Y0, X0 + 400, Y0 + 300)
    community = box(X0 - 200, Y0 - 300, X0 + 800, Y0 + 600)
    neighbours = (ms.Neighbour("130702001001002", box(X0 + 400, Y0, X0 + 800, Y0 + 300), page=3),
                  ms.Neighbour("130702001001003", box(X0, Y0 - 300, X0 + 400, Y0), page=None))
    defaults = dict(
        code="130702001001001", geom=grid, community_code="130702001001", community_name="馨园社区",
        street_name="马路东街道", district_name="桥东区", households=299, population=783, worker_name="姜华",
        community_geom=community, community_grids=(grid, neighbours[0].geom, neighbours[1].geom),
        neighbours=neighbours,
        roads=(ms.Feature(shapely.LineString([(X0 - 100, Y0 + 150), (X0 + 900, Y0 + 160)]), "胜利路", "primary"),
               ms.Feature(shapely.LineString([(X0 + 200, Y0 - 400), (X0 + 210, Y0 + 700)]), "", "branch")),
        facilities=(ms.Feature(Point(X0 + 100, Y0 + 100), "馨园社区卫生服务站", "health_station"),),
        shelters=(ms.Feature(box(X0 + 250, Y0 + 20, X0 + 350, Y0 + 90), "纬三路游园应急避难场所", "emergency"),),
        fire_stations=(ms.Feature(Point(X0 + 300, Y0 + 250), "百货大楼微型消防站", "key_unit_micro"),),
        is_sample=True, data_date="2026-01-01", page=2, page_count=4,
        corner_lonlat=((114.877, 40.814), (114.884, 40.819)), convergence_deg=0.58)
    defaults.update(kw)
    return ms.GridSheet(**defaults)


# --- layout arithmetic ----------------------------------------------------------------------------
def test_plan_sheet_by_hand():
    lay = ms.plan_sheet((0, 0, 400, 250), "A4")
    # 496 m x 310 m with 12 % margins; landscape frame 202 x 148 mm -> 1:2500 (2.46, 2.09 m/mm needed);
    # portrait frame 184 x 186 mm would need 2.70 m/mm -> 1:3000
    assert lay.orientation == "landscape" and lay.scale == 2500
    assert ms.plan_sheet((0, 0, 400, 250), "A4", orientation="portrait").scale == 3000
    w_mm, h_mm = lay.map_box_mm[2:]
    assert (lay.extent[2] - lay.extent[0]) == pytest.approx(w_mm * 2.5)
    assert (lay.extent[3] - lay.extent[1]) == pytest.approx(h_mm * 2.5)
    tall = ms.plan_sheet((0, 0, 300, 600), "A4")
    assert tall.orientation == "portrait"
    assert ms.plan_sheet((0, 0, 300, 600), "A3").scale < tall.scale  # bigger paper, larger scale


@settings(max_examples=40, deadline=None)
@given(w=st.floats(20, 5000), h=st.floats(20, 5000), paper=st.sampled_from(["A4", "A3"]))
def test_plan_sheet_fits_at_the_largest_possible_scale(w, h, paper):
    lay = ms.plan_sheet((X0, Y0, X0 + w, Y0 + h), paper, margin=0.1)
    xmin, ymin, xmax, ymax = lay.extent
    assert xmin <= X0 - 0.1 * w + 1e-6 and xmax >= X0 + 1.1 * w - 1e-6
    assert ymin <= Y0 - 0.1 * h + 1e-6 and ymax >= Y0 + 1.1 * h - 1e-6
    # brute force: no orientation fits at the next larger scale (smaller denominator)
    smaller = [s for s in ms.SCALES if s < lay.scale]
    if smaller:
        for orient in ("portrait", "landscape"):
            _w, _h, _x, _y, fw, fh = ms._frame_mm(paper, orient)
            assert not (fw * smaller[-1] / 1000 >= 1.2 * w and fh * smaller[-1] / 1000 >= 1.2 * h)


@pytest.mark.parametrize("mpm", [0.5, 1.0, 2.5, 3.0, 7.5, 25.0, 100.0])
def test_scale_bar_length_is_round_and_the_longest_that_fits(mpm):
    bar = ms.nice_scale_bar_m(mpm, 40.0)
    mant = bar / 10 ** np.floor(np.log10(bar))
    assert round(mant, 6) in (1.0, 2.0, 2.5, 5.0)
    assert bar / mpm <= 40.0 + 1e-9
    candidates = [m * 10.0 ** k for k in range(-2, 6) for m in (1, 2, 2.5, 5) if m * 10.0 ** k / mpm <= 40.0]
    assert bar == pytest.approx(max(candidates))


# --- the rendered sheet ---------------------------------------------------------------------------
@pytest.mark.parametrize("bounds", [(X0, Y0, X0 + 400, Y0 + 300), (X0, Y0, X0 + 250, Y0 + 700)])
def test_scale_bar_matches_the_map_scale(bounds):
    sheet = _sheet(geom=box(*bounds))
    r = ms.render_sheet(sheet, paper="A4", dpi=72)
    mx, my = ms.metres_per_mm(r.figure, r.map_axes)  # measured from the axes transform
    assert mx == pytest.approx(r.layout.scale / 1000, rel=1e-6)
    assert my == pytest.approx(mx, rel=1e-6)  # no aspect distortion
    drawn_m = r.scale_bar_mm * mx
    assert abs(drawn_m - r.scale_bar_m) / r.scale_bar_m < 0.01
    # the bar is drawn where the render says, in paper mm: check it against the paper axes too
    x0, x1 = r.scale_bar_x_mm
    p = r.figure.axes[0].transData.transform([(x0, 0), (x1, 0)])
    length_mm = (p[1, 0] - p[0, 0]) / r.figure.dpi * 25.4
    assert abs(length_mm * mx - r.scale_bar_m) / r.scale_bar_m < 0.01
    # and the map shows the grid
    xmin, ymin, xmax, ymax = r.layout.extent
    assert xmin < bounds[0] and xmax > bounds[2] and ymin < bounds[1] and ymax > bounds[3]


def test_rendered_png_is_not_blank_and_shows_the_grid():
    sheet = _sheet()
    buf = io.BytesIO()
    r = ms.save_sheet(sheet, buf, fmt="png", dpi=60)
    img = matplotlib.image.imread(io.BytesIO(buf.getvalue()))[..., :3]
    h, w = img.shape[:2]
    assert abs(w - r.layout.width_mm / 25.4 * 60) <= 1 and abs(h - r.layout.height_mm / 25.4 * 60) <= 1
    ink = (img.sum(axis=2) < 2.9).mean()
    assert ink > 0.02  # a sheet, not an empty page
    # the grid's outline colour is present at the grid centre's neighbourhood
    c = shapely.box(*sheet.geom.bounds).exterior.interpolate(0.1, normalized=True)
    px = r.map_axes.transData.transform([(c.x, c.y)])[0] * 60 / r.figure.dpi
    col, row = int(px[0]), int(h - px[1])
    patch = img[row - 3:row + 4, col - 3:col + 4]
    red = np.array([0xC1, 0x12, 0x1F]) / 255
    assert np.min(np.abs(patch - red).sum(axis=2)) < 0.25


def _ink(text: str, family: str) -> np.ndarray:
    fig = Figure(figsize=(0.6, 0.6), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, text, family=family, fontsize=28, ha="center", va="center")
    fig.canvas.draw()
    return (np.asarray(fig.canvas.buffer_rgba())[..., :3].sum(axis=2) < 384)


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_chinese_glyph_is_not_tofu():
    family = ms.cjk_font_family()
    with matplotlib.rc_context({"font.family": [family]}):
        wang, shu = _ink("网", family), _ink("数", family)
        tofu = _ink("\U0010fffd", family)  # a code point no font has: drawn as .notdef
    assert wang.sum() > 40 and shu.sum() > 40
    assert (wang != tofu).sum() > 40 and (shu != tofu).sum() > 40
    assert (wang != shu).sum() > 40  # two different characters, two different glyphs


def test_pdf_embeds_truetype_and_keeps_text(tmp_path):
    out = tmp_path / "sheet.pdf"
    ms.save_sheet(_sheet(), out, fmt="pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF") and b"/FontFile2" in data  # TrueType (Type 42) embedded
    import shutil
    import subprocess
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True).stdout
        assert "130702001001001" in text and "馨园社区" in text and "示例数据" in text


def test_atlas_pages_and_neighbour_references(tmp_path):
    sheets = [_sheet(page=2), _sheet(code="130702001001002", geom=box(X0 + 400, Y0, X0 + 800, Y0 + 300), page=3)]
    rows = [ms.IndexRow(s.code, s.community_name, s.street_name, s.worker_name, s.page, s.geom) for s in sheets]
    out = tmp_path / "atlas.pdf"
    assert ms.write_atlas(out, iter(sheets), rows, title="测试") == 3
    import shutil
    import subprocess
    if shutil.which("pdftotext"):
        pages = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True,
                               check=True).stdout.split("\f")
        assert "130702001001002" in pages[0] and "索引" in pages[0]
        assert "130702001001001" in pages[1] and "第 3 页" in pages[1]


def _atlas_pages_text(path) -> list[str]:
    from pypdf import PdfReader
    return [p.extract_text() for p in PdfReader(str(path)).pages]


def test_parallel_atlas_has_the_same_pages_in_the_same_order(tmp_path, monkeypatch):
    """Workers draw parts that are joined in order: page for page the same text as the one-process atlas."""
    monkeypatch.setattr(ms, "PARALLEL_MIN_PAGES", 2)
    n = 12   # two parts of 10 and 2 sheets
    k = ms.index_page_count(n)
    sheets = [_sheet(code=f"1307020010010{i:02d}", geom=box(X0 + 400 * i, Y0, X0 + 400 * (i + 1), Y0 + 300),
                     page=k + 1 + i, page_count=k + n) for i in range(n)]
    rows = [ms.IndexRow(s.code, s.community_name, s.street_name, s.worker_name, s.page, s.geom) for s in sheets]
    seen = []
    one, two = tmp_path / "one.pdf", tmp_path / "two.pdf"
    assert ms.write_atlas(one, iter(sheets), rows, title="测试", workers=1) == k + n
    assert ms.write_atlas(two, iter(sheets), rows, title="测试", workers=2,
                          progress=lambda done, total: seen.append((done, total))) == k + n
    a, b = _atlas_pages_text(one), _atlas_pages_text(two)
    assert len(a) == len(b) == k + n
    assert a == b
    for i, s in enumerate(sheets):   # and each sheet is on the page the index promised
        assert s.code in b[s.page - 1]
    assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_parallel_atlas_stops_and_leaves_no_parts_when_cancelled(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(ms, "PARALLEL_MIN_PAGES", 2)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    sheets = [_sheet(code=f"1307020010010{i:02d}", page=2 + i) for i in range(12)]
    rows = [ms.IndexRow(s.code, "", "", "", s.page) for s in sheets]

    class Stop(Exception):
        pass

    def progress(done, total):
        raise Stop

    with pytest.raises(Stop):
        ms.write_atlas(tmp_path / "x.pdf", iter(sheets), rows, title="测试", workers=2, progress=progress)
    assert list((tmp_path / "t").iterdir()) == []   # the parts went with their temp folder
    assert not (tmp_path / "x.pdf").exists()


# --- neighbours ----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=2, max_size=20, unique=True),
       st.integers(0, 19))
def test_neighbour_idx_matches_brute_force(cells, k):
    geoms = [box(i * 10, j * 10, i * 10 + 10, j * 10 + 10) for i, j in cells]
    target = geoms[k % len(geoms)]
    got = ms.neighbour_idx(geoms, target, tol_m=1.0).tolist()
    want = [i for i, g in enumerate(geoms) if g.distance(target) <= 1.0 and not g.equals(target)]
    assert got == want
