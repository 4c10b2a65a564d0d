"""Importer test helpers: a tiny test hierarchy (codes 999…) on the test square of fixtures/make_fixtures.py."""
from pathlib import Path

import numpy as np
import pytest
import shapely
from django.contrib.gis.geos import GEOSGeometry
from pyproj import Transformer
from shapely.geometry import MultiPolygon, box

from layers import models

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
FORMATS = ROOT / "formats"
BAD = ROOT / "bad"
LON0, LAT0, STEP = 115.05, 40.60, 0.02
_TR = Transformer.from_crs(4326, 4547, always_xy=True)

LAYER_MODELS = [models.District, models.Street, models.Community, models.Grid, models.ServiceFacility,
                models.Shelter, models.FireStation, models.Road, models.CandidateSite, models.HousingProject]


def geos_4547(g):
    g = shapely.transform(g, lambda c: np.column_stack(_TR.transform(c[:, 0], c[:, 1])))
    if g.geom_type == "Polygon":
        g = MultiPolygon([g])
    return GEOSGeometry(memoryview(shapely.to_wkb(g)), srid=4547)


def counts() -> dict:
    return {m.__name__: m.objects.count() for m in LAYER_MODELS}


@pytest.fixture
def hierarchy(db):
    """District 999001 > street 999001001 > communities 999001001001 (west half) and …002 (east half)."""
    sq = box(LON0, LAT0, LON0 + STEP, LAT0 + STEP)
    d = models.District.objects.create(code="999001", name="测试区", geom=geos_4547(sq))
    s = models.Street.objects.create(code="999001001", name="测试街道", district=d, geom=geos_4547(sq))
    west = box(LON0, LAT0, LON0 + STEP / 2, LAT0 + STEP)
    east = box(LON0 + STEP / 2, LAT0, LON0 + STEP, LAT0 + STEP)
    c1 = models.Community.objects.create(code="999001001001", name="西社区", street=s, geom=geos_4547(west))
    c2 = models.Community.objects.create(code="999001001002", name="东社区", street=s, geom=geos_4547(east))
    return {"district": d, "street": s, "communities": (c1, c2)}
