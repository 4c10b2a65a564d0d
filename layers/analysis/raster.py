"""Population rasters as demand: reproject preserving people, cells to points, points to grids.

A population surface (a registered GeoTIFF, DESIGN.md, Demand) arrives in whatever CRS its
producer used — lon/lat (WorldPop, EPSG:4326) or Web Mercator (EPSG:3857) — and holds *counts*
per cell. Counts must not be interpolated like a continuous field: :func:`reproject_population`
resamples with GDAL's area-weighted ``sum`` so the number of people is kept, then
:func:`cells_to_points` turns positive cells into demand points for
:mod:`layers.analysis.coverage`, and :func:`points_in_polygons` assigns them to grids.
"""
from __future__ import annotations

import numpy as np
import rasterio.transform
import rasterio.warp
import shapely
from affine import Affine
from numpy.typing import ArrayLike, NDArray
from rasterio.crs import CRS
from rasterio.warp import Resampling

__all__ = ["cells_to_points", "points_in_polygons", "reproject_population"]


def _valid_mask(array: NDArray[np.float64], nodata: float | None) -> NDArray[np.bool_]:
    valid = np.isfinite(array)
    if nodata is not None and not np.isnan(nodata):
        valid &= array != nodata
    return valid


def _crop_to_data(array: NDArray[np.float64], transform: Affine) -> tuple[NDArray[np.float64], Affine]:
    """Drop the all-NaN rows and columns around the data (the spare border cells)."""
    finite = np.isfinite(array)
    rows = np.flatnonzero(finite.any(axis=1))
    cols = np.flatnonzero(finite.any(axis=0))
    if rows.size == 0:
        return array, transform
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return array[r0:r1, c0:c1].copy(), transform @ Affine.translation(c0, r0)


def reproject_population(src_array: ArrayLike, src_transform: Affine, src_crs,
                         dst_crs="EPSG:4547", resolution_m: float = 100.0,
                         nodata: float | None = None, *,
                         rescale: bool = True) -> tuple[NDArray[np.float64], Affine]:
    """Reproject a population-count raster to a metric grid, keeping the number of people.

    GDAL's ``sum`` resampling adds the source cells into each target cell weighted by the
    share of their area that falls in it, so a count is redistributed, not interpolated (an
    ``average`` or ``bilinear`` warp of counts multiplies the total by the ratio of cell
    areas). The remaining difference in the total, from cells cut at the raster's edge, is
    below 0.1 % (tested); with ``rescale`` (default) it is removed by scaling, so the output
    holds exactly the source's population.

    Parameters
    ----------
    src_array : (rows, cols) array
        People per cell; ``nodata`` and NaN cells are no data (not zero people).
    src_transform : affine.Affine
        The source's geotransform.
    src_crs : CRS, str or int
        The source CRS (anything ``rasterio.crs.CRS.from_user_input`` takes).
    dst_crs : CRS, str or int
        A metric CRS, the storage CRS ``GIS_SRID`` (EPSG:4547) by default.
    resolution_m : float
        Target cell size in metres. The target grid is aligned to multiples of it, so two
        rasters reprojected with the same resolution share one grid.
    nodata : float, optional
        The source's nodata value.
    rescale : bool, keyword-only
        Scale the result so its total equals the source's exactly.

    Returns
    -------
    array : (rows, cols) float64
        People per target cell, NaN where no source data falls.
    transform : affine.Affine
        The target geotransform (north up).

    Examples
    --------
    Four 50 m cells of 10 people each, already in EPSG:4547, onto one 100 m cell:

    >>> from rasterio.transform import from_origin
    >>> arr, tr = reproject_population(np.full((2, 2), 10.0), from_origin(500000, 4500100, 50, 50),
    ...                                "EPSG:4547", resolution_m=100)
    >>> arr.tolist(), (tr.c, tr.f, tr.a)
    ([[40.0]], (500000.0, 4500100.0, 100.0))
    """
    src = np.array(src_array, dtype=np.float64)
    if src.ndim != 2:
        raise ValueError(f"src_array must be 2-d, got shape {src.shape}")
    if not resolution_m > 0:
        raise ValueError("resolution_m must be > 0")
    valid = _valid_mask(src, nodata)
    if (src[valid] < 0).any():
        raise ValueError("population counts must be >= 0")
    src[~valid] = np.nan
    s_crs = CRS.from_user_input(src_crs)
    d_crs = CRS.from_user_input(dst_crs)
    rows, cols = src.shape
    src_bounds = rasterio.transform.array_bounds(rows, cols, src_transform)
    # Densified edges bound the curved image of the source; one spare cell on each side keeps
    # GDAL's warp from cutting people at the border (calculate_default_transform's extent
    # lost 0.6 % of a 30 x 40 lon/lat raster of 0.005 degree cells).
    xmin, ymin, xmax, ymax = rasterio.warp.transform_bounds(s_crs, d_crs, *src_bounds,
                                                            densify_pts=101)
    res = float(resolution_m)
    x0 = (np.floor(xmin / res) - 1) * res
    y1 = (np.ceil(ymax / res) + 1) * res
    width = int(np.ceil(xmax / res) + 1 - np.floor(xmin / res) + 1)
    height = int(np.ceil(ymax / res) + 1 - np.floor(ymin / res) + 1)
    dst_transform = Affine(res, 0.0, x0, 0.0, -res, y1)
    dst = np.full((height, width), np.nan, dtype=np.float64)
    rasterio.warp.reproject(
        src, dst, src_transform=src_transform, src_crs=s_crs, src_nodata=np.nan,
        dst_transform=dst_transform, dst_crs=d_crs, dst_nodata=np.nan,
        init_dest_nodata=True, resampling=Resampling.sum)
    dst, dst_transform = _crop_to_data(dst, dst_transform)
    if rescale:
        src_total = float(np.nansum(src))
        dst_total = float(np.nansum(dst))
        if dst_total > 0:
            dst *= src_total / dst_total
    return dst, dst_transform


def cells_to_points(array: ArrayLike, transform: Affine,
                    nodata: float | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centres and values of the cells holding people (value > 0, not nodata, not NaN).

    Parameters
    ----------
    array : (rows, cols) array
    transform : affine.Affine
    nodata : float, optional

    Returns
    -------
    xy : (n, 2) float64
        Cell centres in the raster's CRS, in row-major order.
    pop : (n,) float64
        The cells' values.

    Examples
    --------
    >>> from rasterio.transform import from_origin
    >>> xy, pop = cells_to_points([[0., 5.], [-9., 2.]], from_origin(0, 20, 10, 10), nodata=-9)
    >>> xy.tolist(), pop.tolist()
    ([[15.0, 15.0], [15.0, 5.0]], [5.0, 2.0])
    """
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"array must be 2-d, got shape {arr.shape}")
    mask = _valid_mask(arr, nodata) & (arr > 0)
    r, c = np.nonzero(mask)
    col = c + 0.5
    row = r + 0.5
    t = transform
    xy = np.column_stack([t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f])
    return xy, arr[r, c]


def points_in_polygons(xy: ArrayLike, geoms: ArrayLike) -> NDArray[np.int64]:
    """Index of the polygon containing each point, -1 when none does.

    A point on an edge shared by two polygons (grids tile a community) is given to the one
    with the lower index, so every point is counted exactly once.

    Parameters
    ----------
    xy : (n, 2) array of float
    geoms : (m,) array of shapely polygons

    Returns
    -------
    group_idx : (n,) int64
        Feed it to :func:`layers.analysis.coverage.group_sums`.

    Examples
    --------
    Two unit squares side by side; (1, 0.5) lies on their shared edge.

    >>> import shapely
    >>> points_in_polygons([[0.5, 0.5], [1.5, 0.5], [1.0, 0.5], [5, 5]],
    ...                    [shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)]).tolist()
    [0, 1, 0, -1]
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(geoms, dtype=object).reshape(-1)
    out = np.full(len(pts), -1, dtype=np.int64)
    if len(pts) == 0 or len(g) == 0:
        return out
    tree = shapely.STRtree(g)
    pt_idx, geom_idx = tree.query(shapely.points(pts), predicate="intersects")
    best = np.full(len(pts), len(g), dtype=np.int64)
    np.minimum.at(best, pt_idx, geom_idx)
    hit = best < len(g)
    out[hit] = best[hit]
    return out
