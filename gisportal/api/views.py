"""The REST API, version 1. Thin: check the request and the role, call one selector or service, answer.

Long jobs (coverage, siting, exports, imports) answer ``202 Accepted`` with a Job; poll
``/api/v1/jobs/<id>/`` for status, progress and result, ``POST .../cancel/`` to stop it, and
``GET .../file/`` for an export's file.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import FloatField, IntegerField, Q
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import translation
from django.utils.text import get_valid_filename
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers as drf_serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_gis.pagination import GeoJsonPagination

from layers import geojson_cache, models, services, services_decisions, services_review
from layers.registry import LAYERS

from .. import permissions as rules
from .. import tasks
from . import serializers as s
from .permissions import Imports, LayerAccess, Reviews, RunsAnalysis


def _lang() -> str:
    return "en" if (translation.get_language() or "").startswith("en") else "zh"


class BadRequest(exceptions.ValidationError):
    pass


# ================================================================== index
class IndexView(APIView):
    """Where everything is."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        def url(name, **kw):
            return request.build_absolute_uri(reverse(name, kwargs=kw or None))

        return Response({
            "layers": url("api-layers"), "projects": url("api-projects"), "reviews": url("api-reviews"),
            "jobs": url("api-jobs"), "coverage": url("api-coverage"), "siting": url("api-siting"),
            "exports": url("api-exports"), "imports": url("api-imports"), "token": url("api-token"),
            "schema": url("api-schema"), "docs": url("api-docs"),
        })


# ================================================================== layers
class FeaturePagination(GeoJsonPagination):
    page_size = 500
    max_page_size = 5000


RESERVED = {"bbox", "page", "page_size", "ordering", "search"}


def _parse_bbox(raw: str):
    parts = raw.split(",")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise BadRequest({"bbox": "bbox 应为 4 个数字：西,南,东,北（经纬度）"}) from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise BadRequest({"bbox": "bbox 超出经纬度范围或西≥东、南≥北"})
    return west, south, east, north


def _filter_spec(kind: str) -> dict[str, tuple[str, object]]:
    """Allowed query parameters -> (ORM lookup, field): each attribute, numbers also ``__gte``/``__lte``."""
    layer = LAYERS[kind]
    spec = {}
    for name in layer.fields:
        field = layer.model._meta.get_field(name)
        spec[name] = (name, field)
        if isinstance(field, (IntegerField, FloatField)):
            spec[f"{name}__gte"] = (f"{name}__gte", field)
            spec[f"{name}__lte"] = (f"{name}__lte", field)
    spec["is_sample"] = ("is_sample", layer.model._meta.get_field("is_sample"))
    return spec


def _filtered(kind: str, qs, params):
    """Apply bbox, allow-listed attribute filters, search and ordering; unknown names -> 400."""
    layer = LAYERS[kind]
    spec = _filter_spec(kind)
    unknown = sorted(set(params) - RESERVED - set(spec))
    if unknown:
        raise BadRequest({"detail": f"未知的筛选参数：{', '.join(unknown)}；可用：{', '.join(sorted(spec))}"})
    if params.get("bbox"):
        qs = qs.in_bbox(*_parse_bbox(params["bbox"]))
    for name in params:
        if name in RESERVED:
            continue
        lookup, field = spec[name]
        raw = params.get(name)
        try:
            value = field.to_python(raw)
        except DjangoValidationError:
            raise BadRequest({name: f"无效的值：{raw}"}) from None
        qs = qs.filter(**{lookup: value})
    search = (params.get("search") or "").strip()
    if search:
        text = [f for f in ("code", "name") if f in layer.fields]
        if not text:
            raise BadRequest({"search": "该图层不支持按名称或代码搜索"})
        q = Q()
        for f in text:
            q |= Q(**{f"{f}__icontains": search})
        qs = qs.filter(q)
    ordering = [o.strip() for o in (params.get("ordering") or "").split(",") if o.strip()]
    allowed = {"id", *layer.fields}
    bad = [o for o in ordering if o.lstrip("-") not in allowed]
    if bad:
        raise BadRequest({"ordering": f"不能按 {', '.join(bad)} 排序；可用：{', '.join(sorted(allowed))}"})
    return qs.order_by(*[o.replace("id", "pk") if o.lstrip("-") == "id" else o for o in ordering], "pk")


def _kind(kind: str) -> str:
    if kind not in LAYERS:
        raise exceptions.NotFound(f"未知图层 {kind}；可选：{', '.join(LAYERS)}")
    return kind


class LayerListView(APIView):
    """The layers this user may read, with counts."""

    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="layers_list")
    def get(self, request):
        out = []
        for kind, layer in LAYERS.items():
            if rules.can_view_layer(request.user, kind):
                out.append({"kind": kind, "label": str(layer.label), "fields": list(layer.fields),
                            "count": rules.layer_queryset(request.user, kind).count(),
                            "editable": rules.can_edit_layer(request.user, kind),
                            "url": request.build_absolute_uri(reverse("api-layer", kwargs={"kind": kind}))})
        return Response({"layers": out})


_LAYER_PARAMS = [
    OpenApiParameter("bbox", str, description="west,south,east,north in lon/lat (EPSG:4326)"),
    OpenApiParameter("search", str, description="code or name contains"),
    OpenApiParameter("ordering", str, description="comma-separated layer fields (or id), '-' for descending"),
    OpenApiParameter("page", int), OpenApiParameter("page_size", int, description="at most 5000"),
]


class LayerFeaturesView(APIView):
    """GET: a page of features as a GeoJSON FeatureCollection; POST (admins): add a feature."""

    permission_classes = [IsAuthenticated, LayerAccess]

    @extend_schema(parameters=_LAYER_PARAMS, responses=OpenApiTypes.OBJECT, operation_id="layer_features_list",
                   description="Attribute filters: any of the layer's fields (numbers also __gte, __lte) "
                               "and is_sample; unknown parameters are refused with 400.")
    def get(self, request, kind: str):
        _kind(kind)
        base = rules.layer_queryset(request.user, kind)
        qs = _filtered(kind, base, request.query_params)
        keyed = None
        params = request.query_params
        if (params.get("bbox") and set(params) <= {"bbox", "page", "page_size", "ordering"}
                and params.get("ordering", "id") in ("", "id") and geojson_cache.is_whole_table(base)):
            # only a box over a whole table: the in-memory index (key order, as order_by("pk") gives)
            keyed = geojson_cache.keyed_in_bbox(LAYERS[kind].model, _parse_bbox(params["bbox"]), None)
        paginator = FeaturePagination()
        page = paginator.paginate_queryset(geojson_cache.keyed(qs) if keyed is None else keyed, request, view=self)
        # The body of GeoJsonPagination.get_paginated_response (type, count, next, previous, features) with
        # the features spliced in as text: DRF's JSONRenderer would dump a dict per feature again.
        head = json.dumps({"type": "FeatureCollection", "count": paginator.page.paginator.count,
                           "next": paginator.get_next_link(), "previous": paginator.get_previous_link()},
                          ensure_ascii=False, separators=(",", ":"))
        # allow_nan=False: the same refusal of NaN/Infinity as DRF's JSONRenderer (STRICT_JSON)
        texts = geojson_cache.feature_texts(LAYERS[kind].model, LAYERS[kind].fields, page, allow_nan=False)
        body = head[:-1] + ',"features":[' + ",".join(texts) + "]}"
        return HttpResponse(body.encode(), content_type="application/json")

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, kind: str):
        ser = s.feature_serializer(_kind(kind))(data=request.data)
        ser.is_valid(raise_exception=True)
        obj = _full_clean_save(ser.Meta.model(**ser.validated_data))
        return Response(s.feature_serializer(kind)(obj).data, status=status.HTTP_201_CREATED)


def _full_clean_save(obj):
    try:
        obj.full_clean()
    except DjangoValidationError as exc:
        raise exceptions.ValidationError(exc.message_dict if hasattr(exc, "message_dict") else exc.messages) \
            from None
    obj.save()
    return obj


class LayerFeatureView(APIView):
    """One feature: GET (if visible), PUT/PATCH/DELETE (admins)."""

    permission_classes = [IsAuthenticated, LayerAccess]

    def _object(self, request, kind, pk):
        return get_object_or_404(rules.layer_queryset(request.user, _kind(kind)), pk=pk)

    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="layer_feature_retrieve")
    def get(self, request, kind: str, pk: int):
        return Response(s.feature_serializer(kind)(self._object(request, kind, pk)).data)

    def _write(self, request, kind, pk, partial):
        obj = self._object(request, kind, pk)
        ser = s.feature_serializer(kind)(obj, data=request.data, partial=partial)
        ser.is_valid(raise_exception=True)
        for k, v in ser.validated_data.items():
            setattr(obj, k, v)
        _full_clean_save(obj)
        return Response(s.feature_serializer(kind)(obj).data)

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def put(self, request, kind: str, pk: int):
        return self._write(request, kind, pk, partial=False)

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def patch(self, request, kind: str, pk: int):
        return self._write(request, kind, pk, partial=True)

    @extend_schema(responses={204: None})
    def delete(self, request, kind: str, pk: int):
        from django.db.models import ProtectedError

        obj = self._object(request, kind, pk)
        try:
            obj.delete()
        except ProtectedError:
            raise exceptions.ValidationError("仍有下级数据引用该要素，不能删除") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# ================================================================== jobs
class JobPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def _accepted(request, job: models.Job) -> Response:
    job.refresh_from_db()
    data = s.JobSerializer(job, context={"request": request}).data
    return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


def _start(request, kind: str, params: dict) -> Response:
    job = tasks.job_queue(kind, params, user=request.user)
    tasks.job_enqueue(job)
    return _accepted(request, job)


class JobListView(generics.ListAPIView):
    """Jobs this user may see (their own; shared coverage and siting runs for analysts; all for admins)."""

    serializer_class = s.JobListSerializer
    pagination_class = JobPagination

    @extend_schema(parameters=[OpenApiParameter("kind", str, enum=models.Job.Kind.values),
                               OpenApiParameter("status", str, enum=models.Job.Status.values)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        unknown = sorted(set(params) - {"kind", "status", "page", "page_size"})
        if unknown:
            raise BadRequest({"detail": f"未知参数：{', '.join(unknown)}"})
        qs = rules.jobs_visible(self.request.user).select_related("user").order_by("-pk")
        for name, values in (("kind", models.Job.Kind.values), ("status", models.Job.Status.values)):
            if params.get(name):
                if params[name] not in values:
                    raise BadRequest({name: f"可选：{', '.join(values)}"})
                qs = qs.filter(**{name: params[name]})
        return qs


class JobDetailView(generics.RetrieveAPIView):
    """A job: status, progress and (when done) the result."""

    serializer_class = s.JobSerializer

    def get_queryset(self):
        return rules.jobs_visible(self.request.user).select_related("user")


class JobCancelView(APIView):
    """Ask a queued or running job to stop (a queued one stops at once)."""

    @extend_schema(request=None, responses={202: s.JobSerializer})
    def post(self, request, pk: int):
        job = get_object_or_404(rules.jobs_visible(request.user), pk=pk)
        if not rules.can_cancel_job(request.user, job):
            raise exceptions.PermissionDenied("只有发起人或管理员可以取消该任务")
        if job.status not in (models.Job.Status.QUEUED, models.Job.Status.RUNNING):
            return Response({"detail": f"任务已结束（{job.status}）"}, status=status.HTTP_409_CONFLICT)
        models.Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        if models.Job.objects.filter(pk=job.pk, status=models.Job.Status.QUEUED).exists():
            job.refresh_from_db()
            services.job_finish(job, cancelled=True)
        return _accepted(request, job)


class JobFileView(APIView):
    """Download a finished job's file (exports)."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        job = get_object_or_404(rules.jobs_visible(request.user), pk=pk)
        if job.status != models.Job.Status.DONE or not job.result_file:
            raise exceptions.NotFound("该任务没有可下载的文件")
        name = (job.result or {}).get("file_name") or Path(job.result_file.name).name
        return FileResponse(job.result_file.open("rb"), as_attachment=True, filename=name)


class CoverageView(APIView):
    """Start a coverage run (emergency officials, admins)."""

    permission_classes = [IsAuthenticated, RunsAnalysis]

    @extend_schema(request=s.CoverageRequest, responses={202: s.JobSerializer})
    def post(self, request):
        ser = s.CoverageRequest(data=request.data)
        ser.is_valid(raise_exception=True)
        return _start(request, models.Job.Kind.COVERAGE, dict(ser.validated_data))


class SitingView(APIView):
    """Start a siting run (emergency officials, admins)."""

    permission_classes = [IsAuthenticated, RunsAnalysis]

    @extend_schema(request=s.SitingRequest, responses={202: s.JobSerializer})
    def post(self, request):
        ser = s.SitingRequest(data=request.data)
        ser.is_valid(raise_exception=True)
        return _start(request, models.Job.Kind.SITING, ser.to_job_params())


class ExportView(APIView):
    """Export a layer (any reader of it), or grid maps/data (field workers: their own grids)."""

    @extend_schema(request=s.ExportRequest, responses={202: s.JobSerializer})
    def post(self, request):
        ser = s.ExportRequest(data=request.data)
        ser.is_valid(raise_exception=True)
        d = dict(ser.validated_data)
        if not rules.can_view_layer(request.user, d["layer"]):
            raise exceptions.PermissionDenied("无权导出该图层")
        return _start(request, models.Job.Kind.EXPORT, d)


class ImportView(APIView):
    """Upload a file (multipart) and import it into a layer (admins; candidate sites: emergency officials)."""

    permission_classes = [IsAuthenticated, Imports]

    @extend_schema(request={"multipart/form-data": s.ImportRequest}, responses={202: s.JobSerializer})
    def post(self, request):
        limit = int(settings.GISPORTAL_MAX_UPLOAD_BYTES)
        upload = request.FILES.get("file")
        if upload is not None and upload.size > limit:
            return Response({"detail": f"文件过大：{upload.size} 字节，上限 {limit} 字节"},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        ser = s.ImportRequest(data=request.data)
        ser.is_valid(raise_exception=True)
        d = dict(ser.validated_data)
        if not rules.can_import(request.user, d["kind"]):
            raise exceptions.PermissionDenied(f"无权导入图层 {d['kind']}")
        upload = d.pop("file")
        name = get_valid_filename(Path(upload.name).name) or "upload"
        folder = Path("uploads") / uuid.uuid4().hex
        dest = Path(settings.MEDIA_ROOT) / folder
        dest.mkdir(parents=True, exist_ok=True)
        with open(dest / name, "wb") as fh:
            for chunk in upload.chunks():
                fh.write(chunk)
        d.update(upload=str(folder / name), file_name=Path(upload.name).name[:255], srid=d.get("srid") or None)
        return _start(request, models.Job.Kind.IMPORT, d)


# ================================================================== projects and reviews
class ProjectListView(generics.ListAPIView):
    """Housing projects: a planner's own, or all for admins."""

    serializer_class = s.ProjectSerializer
    pagination_class = JobPagination
    permission_classes = [IsAuthenticated, Reviews]

    def get_queryset(self):
        return rules.projects_visible(self.request.user).select_related("submitted_by", "district")


class ProjectDetailView(generics.RetrieveAPIView):
    serializer_class = s.ProjectDetailSerializer
    permission_classes = [IsAuthenticated, Reviews]

    def get_queryset(self):
        return rules.projects_visible(self.request.user).select_related("submitted_by", "district")


class DecisionView(APIView):
    """Approve, reject, or comment on a project (its planner, or an admin)."""

    permission_classes = [IsAuthenticated, Reviews]

    @extend_schema(request=s.DecisionRequest, responses={201: s.DecisionSerializer})
    def post(self, request, pk: int):
        project = get_object_or_404(rules.projects_visible(request.user), pk=pk)
        ser = s.DecisionRequest(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        try:
            decision = services_decisions.review_decide(
                project, action=d["action"], user=request.user, comment=d.get("comment", ""),
                check_comments=d.get("check_comments"), expected_version=d.get("version"))
        except services_decisions.DecisionProblem as exc:
            code = status.HTTP_409_CONFLICT if exc.code in ("version", "status") else status.HTTP_400_BAD_REQUEST
            return Response({"detail": exc.message(_lang()), "code": exc.code}, status=code)
        return Response(s.DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)


class ReviewListView(generics.ListCreateAPIView):
    """GET: review reports (a planner's own projects); POST: review a GeoJSON submission (and save it)."""

    serializer_class = s.ReportListSerializer
    pagination_class = JobPagination
    permission_classes = [IsAuthenticated, Reviews]

    def get_queryset(self):
        return rules.reports_visible(self.request.user).select_related("project", "reviewer").order_by("-pk")

    @extend_schema(request=s.SubmissionRequest,
                   responses={200: OpenApiTypes.OBJECT, 201: OpenApiTypes.OBJECT,
                              422: inline_serializer("SubmissionRefused", {
                                  "detail": drf_serializers.CharField(), "code": drf_serializers.CharField()})})
    def post(self, request, *args, **kwargs):
        ser = s.SubmissionRequest(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        lang = _lang()
        try:
            sub = services_review.parse_submission(d["submission"], srid=d.get("srid"))
            review = services_review.review_submission(sub)
        except services_review.SubmissionError as exc:
            return Response({"detail": exc.message(lang), "code": exc.code},
                            status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        doc = {"review": review.as_dict(lang)}
        if not d["save"]:
            return Response(doc)
        project = services_review.save_review(sub, review, user=request.user, lang=lang)
        report = project.reports.order_by("-pk").first()
        if report is not None and report.reviewer_id is None:
            models.ReviewReport.objects.filter(pk=report.pk).update(reviewer=request.user)
        doc.update(project=project.pk, report=report.pk if report else None,
                   url=request.build_absolute_uri(reverse("api-project", kwargs={"pk": project.pk})))
        return Response(doc, status=status.HTTP_201_CREATED)


class ReviewDetailView(generics.RetrieveAPIView):
    serializer_class = s.ReportSerializer
    permission_classes = [IsAuthenticated, Reviews]

    def get_queryset(self):
        return rules.reports_visible(self.request.user).select_related("project", "reviewer")
