"""Population rasters: totals kept across CRSs, cells to points, points to grids (raster.py)."""
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin, rowcol, xy as rio_xy

from layers.analysis.coverage import group_sums
from layers.analysis.raster import cells_to_points, points_in_polygons, reproject_population

# Around Zhangjiakou's centre (114.9E 40.8N).
LONLAT_CASES = [
    ("EPSG:4326", from_origin(114.80, 40.90, 0.001, 0.001), (180, 220)),   # ~85 x 111 m cells
    ("EPSG:4326", from_origin(114.80, 40.90, 0.005, 0.005), (30, 40)),     # ~420 x 555 m: upsampled
    ("EPSG:3857", from_origin(12_790_000, 4_983_000, 75.0, 75.0), (200, 180)),
]


def weighted_centre(xy, w):
    return (xy * w[:, None]).sum(0) / w.sum()


@pytest.mark.parametrize("crs,transform,shape", LONLAT_CASES)
def test_total_kept_without_rescaling(crs, transform, shape):
    rng = np.random.default_rng(42)
    src = rng.gamma(2.0, 40.0, shape)
    dst, dst_tr = reproject_population(src, transform, crs, rescale=False)
    assert dst_tr.a == 100.0 and dst_tr.e == -100.0
    assert dst_tr.c % 100 == 0 and dst_tr.f % 100 == 0  # aligned grid
    assert np.nansum(dst) == pytest.approx(src.sum(), rel=1e-3)
    # Counts, not densities: an average warp would multiply the total by the cell-area ratio.
    assert np.nanmax(dst) < 20 * src.max()


@pytest.mark.parametrize("crs,transform,shape", LONLAT_CASES)
def test_people_stay_where_they_were(crs, transform, shape):
    rng = np.random.default_rng(7)
    src = rng.gamma(2.0, 40.0, shape)
    src[: shape[0] // 3, : shape[1] // 2] *= 5  # a dense north-west quarter
    dst, dst_tr = reproject_population(src, transform, crs)
    assert np.nansum(dst) == pytest.approx(src.sum(), rel=1e-9)
    src_xy, src_pop = cells_to_points(src, transform)
    to_gk = Transformer.from_crs(crs, "EPSG:4547", always_xy=True)
    src_gk = np.column_stack(to_gk.transform(src_xy[:, 0], src_xy[:, 1]))
    dst_xy, dst_pop = cells_to_points(dst, dst_tr)
    shift = np.hypot(*(weighted_centre(src_gk, src_pop) - weighted_centre(dst_xy, dst_pop)))
    assert shift < 10.0  # metres, against cells of 75-555 m
    # The dense quarter keeps its people: compare population west and north of the middle.
    mid = np.median(src_gk, axis=0)
    for axis in (0, 1):
        src_side = src_pop[src_gk[:, axis] < mid[axis]].sum()
        dst_side = dst_pop[dst_xy[:, axis] < mid[axis]].sum()
        assert dst_side == pytest.approx(src_side, rel=0.03)


def test_single_hot_cell_lands_on_its_projected_place():
    src = np.zeros((50, 50))
    src[20, 30] = 1000.0
    tr = from_origin(114.85, 40.83, 0.001, 0.001)
    dst, dst_tr = reproject_population(src, tr, "EPSG:4326", rescale=False)
    assert np.nansum(dst) == pytest.approx(1000.0, rel=1e-3)
    lon, lat = rio_xy(tr, 20, 30)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:4547", always_xy=True).transform(lon, lat)
    dst_xy, dst_pop = cells_to_points(dst, dst_tr)
    assert np.hypot(*(weighted_centre(dst_xy, dst_pop) - [x, y])) < 20.0
    # Spread over at most the 2 x 2 target cells an 85 x 111 m cell can touch.
    assert (dst_pop > 1e-6).sum() <= 4


def test_nodata_is_not_people():
    src = np.full((40, 40), 10.0)
    src[:, :20] = -9999.0
    tr = from_origin(114.85, 40.83, 0.001, 0.001)
    dst, _ = reproject_population(src, tr, "EPSG:4326", nodata=-9999.0)
    assert np.nansum(dst) == pytest.approx(10.0 * 40 * 20, rel=1e-9)
    assert np.isnan(dst).any()  # target cells with no source data are NaN, not zeros
    nan_src = src.copy()
    nan_src[nan_src < 0] = np.nan
    dst2, _ = reproject_population(nan_src, tr, "EPSG:4326")
    np.testing.assert_allclose(dst2, dst, equal_nan=True)
    with pytest.raises(ValueError):
        reproject_population(-src, tr, "EPSG:4326", nodata=9999.0)


def test_already_in_storage_crs_is_an_exact_aggregation():
    rng = np.random.default_rng(3)
    src = rng.integers(0, 50, (6, 8)).astype(float)
    dst, tr = reproject_population(src, from_origin(500_000, 4_500_300, 50, 50), "EPSG:4547",
                                   resolution_m=100, rescale=False)
    expected = src.reshape(3, 2, 4, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(dst, expected)
    assert (tr.c, tr.f) == (500_000, 4_500_300)


# ------------------------------------------------------------------ cells_to_points
def test_cells_to_points_matches_rasterio_xy():
    rng = np.random.default_rng(1)
    arr = rng.integers(-1, 4, (7, 9)).astype(float)
    arr[2, 3] = np.nan
    tr = from_origin(500_000, 4_500_000, 100, 100)
    xy, pop = cells_to_points(arr, tr, nodata=-1)
    rows, cols = np.nonzero(np.nan_to_num(arr) > 0)
    xs, ys = rio_xy(tr, rows, cols)
    np.testing.assert_allclose(xy, np.column_stack([xs, ys]))
    np.testing.assert_array_equal(pop, arr[rows, cols])
    r2, c2 = rowcol(tr, xy[:, 0], xy[:, 1])
    np.testing.assert_array_equal(r2, rows)
    np.testing.assert_array_equal(c2, cols)


# ------------------------------------------------------------------ points_in_polygons
def test_points_in_polygons_brute_force_with_shared_edges():
    rng = np.random.default_rng(5)
    grids = np.array([shapely.box(x, y, x + 10, y + 10) for x in range(0, 50, 10)
                      for y in range(0, 30, 10)])
    pts = np.vstack([rng.uniform(-5, 55, (300, 2)),
                     rng.integers(0, 6, (50, 2)) * 10.0])  # many on shared edges and corners
    idx = points_in_polygons(pts, grids)
    covers = shapely.covers(grids[None, :], shapely.points(pts)[:, None])
    expected = np.where(covers.any(1), covers.argmax(1), -1)
    np.testing.assert_array_equal(idx, expected)
    pop = rng.uniform(0, 10, len(pts))
    sums = group_sums(pop, idx, len(grids))
    assert sums.sum() == pytest.approx(pop[idx >= 0].sum())  # each point counted once


def test_points_in_polygons_empty():
    assert points_in_polygons(np.zeros((0, 2)), [shapely.box(0, 0, 1, 1)]).shape == (0,)
    assert points_in_polygons([[0.5, 0.5]], np.array([], dtype=object)).tolist() == [-1]
