"""Admin for every layer, with a map widget that loads OpenLayers from our static files (offline)."""
from django.contrib import admin

from gisportal.widgets import OfflineGISModelAdmin

from . import models


@admin.register(models.District)
class DistrictAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "kind", "approximate", "is_sample")
    list_filter = ("kind", "approximate", "is_sample")
    search_fields = ("code", "name")


@admin.register(models.Street)
class StreetAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "district", "is_sample")
    list_filter = ("district",)
    search_fields = ("code", "name")


@admin.register(models.Community)
class CommunityAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "street", "households", "population", "is_sample")
    list_filter = ("street__district",)
    search_fields = ("code", "name")


@admin.register(models.Grid)
class GridAdmin(OfflineGISModelAdmin):
    list_display = ("code", "community", "households", "population", "worker_name", "worker")
    list_filter = ("community__street__district",)
    search_fields = ("code", "worker_name", "community__name")
    raw_id_fields = ("community", "worker")


@admin.register(models.ServiceFacility)
class ServiceFacilityAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "kind", "floor_area_m2", "status", "community")
    list_filter = ("kind", "status")
    search_fields = ("code", "name")
    raw_id_fields = ("community", "project")


@admin.register(models.Shelter)
class ShelterAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "level", "effective_area_m2", "capacity")
    list_filter = ("level",)
    search_fields = ("code", "name")
    raw_id_fields = ("community",)


@admin.register(models.FireStation)
class FireStationAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "kind", "staff", "on_duty")
    list_filter = ("kind",)
    search_fields = ("code", "name")
    raw_id_fields = ("community",)


@admin.register(models.HousingProject)
class HousingProjectAdmin(OfflineGISModelAdmin):
    list_display = ("name", "developer", "households", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "developer")
    raw_id_fields = ("district", "submitted_by")


@admin.register(models.Road)
class RoadAdmin(OfflineGISModelAdmin):
    list_display = ("name", "road_class")
    list_filter = ("road_class",)
    search_fields = ("name",)


@admin.register(models.CandidateSite)
class CandidateSiteAdmin(OfflineGISModelAdmin):
    list_display = ("code", "name", "capacity_persons")
    search_fields = ("code", "name")


@admin.register(models.PopulationSurface)
class PopulationSurfaceAdmin(OfflineGISModelAdmin):
    list_display = ("name", "srid", "resolution_m", "total", "active", "created_at")
