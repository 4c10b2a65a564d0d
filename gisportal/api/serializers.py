"""Request and response shapes of the API (also the OpenAPI schema's components)."""
from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.contrib.gis.db import models as gis_models
from django.contrib.gis.geos import GEOSGeometry, MultiLineString, MultiPolygon
from django.urls import reverse
from rest_framework import serializers
from rest_framework_gis.serializers import GeoFeatureModelSerializer

from importers import exports as layer_exports
from importers.mapping import SPECS
from layers import models
from layers import services_export as grid_exports
from layers.registry import LAYERS, layer_get


# ------------------------------------------------------------------ layers (writes, admins only)
def _to_storage(geom: GEOSGeometry, field) -> GEOSGeometry:
    """A lon/lat GeoJSON geometry (RFC 7946) in GIS_SRID, promoted to the field's multi type."""
    if geom.srid is None:
        geom.srid = 4326
    if geom.srid != settings.GIS_SRID:
        geom = geom.transform(settings.GIS_SRID, clone=True)
    if isinstance(field, gis_models.MultiPolygonField) and geom.geom_type == "Polygon":
        geom = MultiPolygon(geom, srid=geom.srid)
    elif isinstance(field, gis_models.MultiLineStringField) and geom.geom_type == "LineString":
        geom = MultiLineString(geom, srid=geom.srid)
    if field.geom_type != "GEOMETRY" and geom.geom_type.upper() != field.geom_type:
        raise serializers.ValidationError(f"几何类型应为 {field.geom_type}，收到 {geom.geom_type}")
    return geom


class _FeatureWrite(GeoFeatureModelSerializer):
    def validate(self, attrs):
        for f in self.Meta.model._meta.concrete_fields:
            if isinstance(f, gis_models.GeometryField) and attrs.get(f.name) is not None:
                try:
                    attrs[f.name] = _to_storage(attrs[f.name], f)
                except serializers.ValidationError as exc:
                    raise serializers.ValidationError({f.name: exc.detail}) from None
        return attrs


@lru_cache(maxsize=None)
def feature_serializer(kind: str) -> type[GeoFeatureModelSerializer]:
    """GeoJSON Feature in and out (lon/lat) for layer ``kind``; every editable field."""
    model = layer_get(kind).model
    names = [f.name for f in model._meta.concrete_fields if f.editable and not f.primary_key]
    extra = {f.name: {"transform": 4326} if isinstance(f, gis_models.GeometryField) else {}
             for f in model._meta.concrete_fields if isinstance(f, gis_models.GeometryField)}
    meta = type("Meta", (), {"model": model, "geo_field": "geom", "fields": ["id", *names],
                             "extra_kwargs": extra})
    return type(f"{model.__name__}Feature", (_FeatureWrite,), {"Meta": meta})


# ------------------------------------------------------------------ jobs
class JobSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    url = serializers.SerializerMethodField()
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = models.Job
        fields = ["id", "url", "kind", "status", "progress", "message", "cancel_requested", "params",
                  "data_version", "user", "result", "error", "file_url", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_url(self, job) -> str:
        return self._abs(reverse("api-job", kwargs={"pk": job.pk}))

    def get_file_url(self, job) -> str | None:
        if job.status != models.Job.Status.DONE or not job.result_file:
            return None
        return self._abs(reverse("api-job-file", kwargs={"pk": job.pk}))

    def _abs(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class JobListSerializer(JobSerializer):
    class Meta(JobSerializer.Meta):
        fields = [f for f in JobSerializer.Meta.fields if f != "result"]
        read_only_fields = fields


def _choices(model_choices):
    return [v for v, _label in model_choices]


class CoverageRequest(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["shelters", "fire_stations", "facilities"])
    radius_m = serializers.FloatField(required=False, allow_null=True, min_value=0.001, max_value=100_000)
    level = serializers.ChoiceField(choices=_choices(models.Shelter.Level.choices), required=False, allow_null=True)
    facility_kind = serializers.ChoiceField(
        choices=_choices(models.FireStation.Kind.choices) + _choices(models.ServiceFacility.Kind.choices),
        required=False, allow_null=True)
    method = serializers.ChoiceField(choices=["euclidean", "network"], default="euclidean")
    demand = serializers.ChoiceField(choices=["raster", "grids"], default="raster")
    capacity = serializers.BooleanField(default=False)


#: Largest inline exclusion-zone GeoJSON a siting request may carry (it is stored with the job).
MAX_EXCLUDE_JSON = 1024 * 1024


class SitingRequest(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["shelters", "fire_stations"])
    objective = serializers.ChoiceField(choices=["lscp", "mclp", "cmclp"])
    radius_m = serializers.FloatField(min_value=0.001, max_value=100_000)
    p = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=10_000)
    candidates = serializers.ChoiceField(choices=["generated", "layer"], default="generated")
    spacing_m = serializers.FloatField(default=200.0, min_value=10.0, max_value=100_000)
    area = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    existing = serializers.BooleanField(default=True)
    capacity = serializers.FloatField(required=False, allow_null=True, min_value=0.001)
    method = serializers.ChoiceField(choices=["euclidean", "network"], default="euclidean")
    demand = serializers.ChoiceField(choices=["raster", "grids", "grid_points"], default="raster")
    exclude = serializers.JSONField(required=False, allow_null=True,
                                    help_text="exclusion zones: a GeoJSON FeatureCollection of lon/lat (Multi)Polygons "
                                              "(at most 1 MB); no candidate inside them")
    time_limit_s = serializers.FloatField(default=60.0, min_value=1.0, max_value=600.0)
    curve_k = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)
    level = serializers.ChoiceField(choices=_choices(models.Shelter.Level.choices), required=False, allow_null=True)
    facility_kind = serializers.ChoiceField(choices=_choices(models.FireStation.Kind.choices), required=False,
                                            allow_null=True)

    def validate_exclude(self, value):
        if value is None:
            return None
        import json

        if not isinstance(value, dict) or value.get("type") not in ("FeatureCollection", "Feature"):
            raise serializers.ValidationError("应为 GeoJSON FeatureCollection（经纬度面）")
        if len(json.dumps(value)) > MAX_EXCLUDE_JSON:
            raise serializers.ValidationError(f"排除区域过大（上限 {MAX_EXCLUDE_JSON} 字节）")
        return value

    def to_job_params(self) -> dict:
        d = dict(self.validated_data)
        if d.get("exclude") is None:
            d.pop("exclude", None)  # (so the job's params stay as they were without one)
        d["candidates"] = None if d["candidates"] == "generated" else "layer"
        d["area"] = d.get("area") or None
        return d


class ExportRequest(serializers.Serializer):
    layer = serializers.ChoiceField(choices=list(LAYERS))
    format = serializers.ChoiceField(choices=sorted(set(grid_exports.FORMATS) | set(layer_exports.FORMATS)))
    district = serializers.RegexField(r"^\d{6}$", required=False)
    street = serializers.RegexField(r"^\d{9}$", required=False)
    community = serializers.RegexField(r"^\d{12}$", required=False)
    grid = serializers.RegexField(r"^\d{15}$", required=False)
    crs = serializers.ChoiceField(choices=["wgs84", "gcj02"], default="wgs84")
    paper = serializers.ChoiceField(choices=["A4", "A3"], default="A4")
    per_grid = serializers.BooleanField(default=False)

    def validate(self, attrs):
        where = [k for k in ("district", "street", "community", "grid") if attrs.get(k)]
        if len(where) > 1:
            raise serializers.ValidationError("district、street、community、grid 只能选一个")
        if attrs["layer"] != "grids":
            if attrs.get("grid"):
                raise serializers.ValidationError({"grid": "只适用于网格图层"})
            if attrs["format"] not in layer_exports.FORMATS:
                raise serializers.ValidationError(
                    {"format": f"该图层可导出：{', '.join(layer_exports.FORMATS)}"})
            if attrs["per_grid"]:
                raise serializers.ValidationError({"per_grid": "只适用于网格图层"})
        return attrs


class ImportRequest(serializers.Serializer):
    file = serializers.FileField()
    kind = serializers.ChoiceField(choices=list(SPECS))
    srid = serializers.CharField(required=False, allow_blank=True, max_length=32)
    encoding = serializers.CharField(required=False, allow_blank=True, max_length=32)
    layer = serializers.CharField(required=False, allow_blank=True, max_length=128)
    gcj02 = serializers.BooleanField(default=False)
    mapping = serializers.CharField(required=False, allow_blank=True, max_length=2000,
                                    help_text="field=attribute pairs, comma-separated, e.g. name=MC,code=DM")
    mode = serializers.ChoiceField(choices=["append", "upsert", "replace"], default="append")
    make_valid = serializers.BooleanField(default=False)
    dry_run = serializers.BooleanField(default=False)

    def validate_mapping(self, value: str):
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        if any("=" not in p for p in pairs):
            raise serializers.ValidationError("应为 字段=属性 的列表，以逗号分隔")
        return pairs


# ------------------------------------------------------------------ reviews
class SubmissionRequest(serializers.Serializer):
    submission = serializers.JSONField(help_text="GeoJSON FeatureCollection: the site and its facilities")
    srid = serializers.IntegerField(required=False, allow_null=True)
    save = serializers.BooleanField(default=True)


class DecisionRequest(serializers.Serializer):
    action = serializers.ChoiceField(choices=["in_review", "approved", "rejected", "comment"])
    comment = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    check_comments = serializers.DictField(child=serializers.CharField(max_length=2000), required=False)
    version = serializers.IntegerField(required=False, min_value=1)


class DecisionSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = models.ReviewDecision
        fields = ["id", "action", "comment", "check_comments", "user", "report", "created_at"]
        read_only_fields = fields


class ReportListSerializer(serializers.ModelSerializer):
    reviewer = serializers.SlugRelatedField(slug_field="username", read_only=True)
    project_name = serializers.CharField(source="project.name", read_only=True)

    class Meta:
        model = models.ReviewReport
        fields = ["id", "project", "project_name", "rule_set", "verdict", "reviewer", "created_at"]
        read_only_fields = fields


class ReportSerializer(ReportListSerializer):
    class Meta(ReportListSerializer.Meta):
        fields = ReportListSerializer.Meta.fields + ["checks"]
        read_only_fields = fields


class ProjectSerializer(serializers.ModelSerializer):
    submitted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    district = serializers.SlugRelatedField(slug_field="code", read_only=True)
    population = serializers.IntegerField(read_only=True)

    class Meta:
        model = models.HousingProject
        fields = ["id", "name", "developer", "households", "population_declared", "population", "status",
                  "district", "submitted_by", "created_at", "updated_at", "version"]
        read_only_fields = fields


class ProjectDetailSerializer(ProjectSerializer):
    reports = ReportListSerializer(many=True, read_only=True)
    decisions = DecisionSerializer(many=True, read_only=True)

    class Meta(ProjectSerializer.Meta):
        fields = ProjectSerializer.Meta.fields + ["reports", "decisions"]
        read_only_fields = fields
