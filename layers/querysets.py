"""Reusable spatial filters, written with GeoDjango lookups that SpatiaLite and PostGIS both support."""
from __future__ import annotations

from django.conf import settings
from django.contrib.gis.db import models
from django.contrib.gis.geos import GEOSGeometry, Polygon
from django.contrib.gis.measure import D


class SpatialQuerySet(models.QuerySet):
    def in_bbox(self, xmin: float, ymin: float, xmax: float, ymax: float, srid: int = 4326):
        """Rows whose geometry intersects the box (given in ``srid``, lon/lat by default)."""
        if srid != settings.GIS_SRID:
            # a cached pyproj transformer on a densified ring: GEOS' transform() builds the PROJ
            # operation again on every call (~100 ms of CPU per request)
            import shapely

            from .analysis.transform import bbox_polygon

            ring = bbox_polygon(srid, settings.GIS_SRID, xmin, ymin, xmax, ymax)
            box = GEOSGeometry(memoryview(shapely.to_wkb(ring)), srid=settings.GIS_SRID)
        else:
            box = Polygon.from_bbox((xmin, ymin, xmax, ymax))
            box.srid = srid
        return self.filter(geom__intersects=box)

    def near(self, geom: GEOSGeometry, distance_m: float):
        """Rows within ``distance_m`` metres of ``geom`` (metres are native in GIS_SRID)."""
        if geom.srid != settings.GIS_SRID:
            geom = geom.transform(settings.GIS_SRID, clone=True)
        return self.filter(geom__dwithin=(geom, D(m=distance_m)))
