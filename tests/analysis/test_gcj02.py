"""GCJ-02 transform: the known Zhangjiakou offset and a sub-millimetre round trip."""
import numpy as np
import pytest
import shapely
from pyproj import Geod

from layers.analysis.gcj02 import (gcj02_to_wgs84, geometry_gcj02_to_wgs84, geometry_wgs84_to_gcj02,
                                   out_of_china, wgs84_to_gcj02)

GEOD = Geod(ellps="WGS84")


def _east_north_m(lon0, lat0, lon1, lat1):
    _, _, east = GEOD.inv(lon0, lat0, lon1, lat0)
    _, _, north = GEOD.inv(lon0, lat0, lon0, lat1)
    return np.sign(lon1 - lon0) * east, np.sign(lat1 - lat0) * north


def test_known_offset_in_zhangjiakou():
    # STANDARDS.md: AMap/Tencent are ~515 m E, 140 m N off in Zhangjiakou.
    glon, glat = wgs84_to_gcj02(114.89, 40.77)
    east, north = _east_north_m(114.89, 40.77, float(glon), float(glat))
    assert 505 < east < 525
    assert 130 < north < 150


def test_round_trip_below_half_a_metre_over_the_city():
    rng = np.random.default_rng(7)
    lon = rng.uniform(113.8, 116.5, 20_000)  # Zhangjiakou's extent with margin
    lat = rng.uniform(39.5, 42.2, 20_000)
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    _, _, err = GEOD.inv(lon, lat, back_lon, back_lat)
    assert err.max() < 0.5
    assert err.max() < 1e-3  # in fact sub-millimetre


def test_inverse_is_not_identity_and_moves_back():
    lon, lat = gcj02_to_wgs84(114.89, 40.77)
    east, north = _east_north_m(114.89, 40.77, float(lon), float(lat))
    assert -525 < east < -505 and -150 < north < -130


def test_outside_china_unchanged():
    assert out_of_china(2.35, 48.85)
    lon, lat = wgs84_to_gcj02(2.35, 48.85)
    assert (float(lon), float(lat)) == (2.35, 48.85)


@pytest.mark.parametrize("wkt", ["POINT (114.89 40.77)", "LINESTRING (114.8 40.7, 114.9 40.8)",
                                 "POLYGON ((114.8 40.7, 114.9 40.7, 114.9 40.8, 114.8 40.7))"])
def test_geometry_round_trip(wkt):
    g = shapely.from_wkt(wkt)
    shifted = geometry_wgs84_to_gcj02(g)
    assert shifted.geom_type == g.geom_type
    assert not shapely.equals_exact(shifted, g, tolerance=1e-4)
    back = geometry_gcj02_to_wgs84(shifted)
    assert shapely.equals_exact(back, g, tolerance=1e-9)
