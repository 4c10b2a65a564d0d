"""Background jobs (issue 8): imports, coverage, siting and exports, run outside the request.

Django's task interface (the ``django-tasks`` backport; ``django.tasks`` from Django 6): the API
records a :class:`layers.models.Job` (status ``queued``) with the request's parameters, then enqueues
one of the tasks below with the Job's id. The task calls the one service for the job — the same path
as the page and the command — with a progress callback that stores progress on the Job and raises
:class:`layers.services.JobCancelled` once ``Job.cancel_requested`` is set. A cancelled job's own
writes roll back (the services write in one transaction), its partial files are removed, and it ends
``cancelled``. A result document goes to ``Job.result``, a file to ``Job.result_file``.

The default backend keeps tasks as rows of our database and ``manage.py db_worker`` runs them (no
extra server); settings ``TASKS`` switches to a broker-based backend when a bureau needs several
workers on several machines. Tests use the ImmediateBackend (the task runs inside ``enqueue``).

Coverage and siting record their run on a Job themselves (``services.job_start``); a task makes the
service *adopt* the queued Job instead of creating a second row (:func:`job_adopt`), so the id the API
returned is the id of the recorded run.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.utils import timezone
from django_tasks import task

from layers import models, operations, services
from layers.analysis.errors import BilingualError

log = logging.getLogger(__name__)
Job = models.Job

__all__ = ["job_queue", "job_enqueue", "job_adopt", "coverage_job", "siting_job", "export_job", "import_job",
           "TASK_FOR_KIND", "EXPORT_SUFFIX"]

job_adopt = services.job_adopt


def job_queue(kind: str, params: dict, *, user=None) -> Job:
    """Record a queued job (committed at once, so a worker and a status request can see it)."""
    return Job.objects.create(kind=kind, params=params, status=Job.Status.QUEUED,
                              user=user if getattr(user, "pk", None) else None)


def job_enqueue(job: Job, *, backend: str | None = None):
    """Enqueue the task for ``job``; returns the task result handle."""
    t = TASK_FOR_KIND[job.kind]
    if backend:
        t = t.using(backend=backend)
    return t.enqueue(job.pk)


def _step(job: Job):
    def progress(fraction: float, message: str = "") -> None:
        services.job_progress(job, fraction, message)
    return progress


def _still_running(job: Job) -> bool:
    return Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).exists()


def _run(job_id: int, work) -> str:
    """Run ``work(job) -> result`` for a queued Job and record how it ended; returns the status."""
    job = Job.objects.select_related("user").filter(pk=job_id).first()
    if job is None:
        log.warning("job %s: no such job", job_id)
        return "missing"
    if job.status != Job.Status.QUEUED:
        return job.status  # already run (a re-delivered task)
    if job.cancel_requested:
        services.job_finish(job, cancelled=True)
        return Job.Status.CANCELLED
    job.status, job.started_at = Job.Status.RUNNING, timezone.now()
    job.save(update_fields=["status", "started_at"])
    try:
        with operations.inside_job(job.pk):   # the Job is the record: its import/export stays silent
            result = work(job)
    except services.JobCancelled:
        if _still_running(job):
            services.job_finish(job, cancelled=True)
    except _InputError as exc:
        if _still_running(job):
            services.job_finish(job, result={"error": exc.doc}, error=exc.doc["zh"])
    except Exception as exc:  # recorded on the Job; the worker goes on with the next task
        log.exception("job %s failed", job.pk)
        if _still_running(job):
            services.job_finish(job, error=f"{type(exc).__name__}: {exc}")
    else:
        if _still_running(job):
            error = result.pop("_error", "") if isinstance(result, dict) else ""
            services.job_finish(job, result=result, error=error)
    return Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()


class _InputError(BilingualError):
    """Bad input found by a service: recorded on the Job as ``{"error": {code, zh, en}}``."""

    @property
    def doc(self) -> dict:
        return {"code": self.code, "zh": self.zh, "en": self.en}


# --------------------------------------------------------------------------------------------
# the work
# --------------------------------------------------------------------------------------------
COVERAGE_PARAMS = ("kind", "radius_m", "level", "facility_kind", "method", "demand", "capacity")
SITING_PARAMS = ("kind", "objective", "radius_m", "p", "candidates", "spacing_m", "area", "existing",
                 "capacity", "method", "time_limit_s", "curve_k", "level", "facility_kind", "demand")


def _coverage(job: Job) -> dict:
    from layers import services_coverage as svc

    kwargs = {k: job.params[k] for k in COVERAGE_PARAMS if k in job.params}
    try:
        with job_adopt(job):
            return svc.coverage_compute(**kwargs, user=job.user)
    except svc.CoverageInputError as exc:
        raise _InputError(exc.code, exc.zh, exc.en) from None


def _siting(job: Job) -> dict:
    from layers import services_siting as svc

    kwargs = {k: job.params[k] for k in SITING_PARAMS if k in job.params}
    if kwargs.get("candidates") not in (None, "layer"):  # never a server path from a request
        raise _InputError("candidates", "候选点只能是自动生成或候选选址图层", "candidates: generated or \"layer\" only")
    zone = job.params.get("exclude")  # inline GeoJSON (the API), written to a private file
    if zone is not None and not isinstance(zone, dict):
        raise _InputError("exclude_file", "排除区域应为 GeoJSON 对象", "exclude: a GeoJSON object")
    try:
        with tempfile.TemporaryDirectory(prefix="gisportal-siting-") as tmp:
            if zone is not None:
                path = Path(tmp) / "exclude.geojson"
                path.write_text(json.dumps(zone), encoding="utf-8")
                kwargs["exclude"] = str(path)
            with job_adopt(job):
                return svc.siting_compute(**kwargs, user=job.user)
    except svc.SitingInputError as exc:
        raise _InputError(exc.code, exc.zh, exc.en) from None


#: File suffix of an export per format (Shapefiles and per-grid sheets come zipped).
EXPORT_SUFFIX = {"geojson": "geojson", "gpkg": "gpkg", "shp": "zip", "csv": "csv", "kml": "kml", "kmz": "kmz",
                 "pdf": "pdf", "png": "png", "tif": "tif"}


def _export(job: Job) -> dict:
    from importers import exports as layer_exports
    from layers import services_export as grid_exports

    p = job.params
    layer, fmt = p["layer"], p["format"]
    per_grid = bool(p.get("per_grid"))
    suffix = "zip" if per_grid else EXPORT_SUFFIX[fmt]
    name = f"{layer}-{job.pk}.{suffix}"
    where = {k: p.get(k) or None for k in ("district", "street", "community")}
    step = _step(job)
    with tempfile.TemporaryDirectory(prefix="gisportal-export-") as tmp:
        out = Path(tmp) / name
        step(0.01, "start")
        try:
            if layer == "grids":  # grid maps and data: a field worker only ever gets their own grids
                res = grid_exports.export_grids(
                    fmt, out, **where, grid=p.get("grid") or None, user=job.user, crs=p.get("crs", "wgs84"),
                    paper=p.get("paper", "A4"), per_grid=per_grid, progress=step)
                info = {"count": res.count, "pages": res.pages, "crs": res.crs}
            else:
                res = layer_exports.export_layer(layer, fmt, out, **where, crs=p.get("crs", "wgs84"))
                info = {"count": res.count, "crs": res.crs}
        except (grid_exports.GridExportProblem, layer_exports.ExportProblem) as exc:
            code = "denied" if isinstance(exc, grid_exports.GridExportDenied) else "export"
            raise _InputError(code, str(exc), str(exc)) from None
        step(0.99, "saving")  # last chance to cancel before the file is kept
        with open(out, "rb") as fh:
            job.result_file.save(f"{job.pk}/{name}", File(fh, name=name), save=False)
    Job.objects.filter(pk=job.pk).update(result_file=job.result_file.name)
    return {"layer": layer, "format": fmt, "file_name": name, "size_bytes": job.result_file.size, **info}


def _import(job: Job) -> dict:
    from importers.services import import_file

    p = job.params
    upload = Path(settings.MEDIA_ROOT) / p["upload"]

    def progress(stage: str, done: int, total: int | None) -> None:
        share = done / total if total else 0.0
        fraction = 0.05 + 0.6 * share if stage == "read" else 0.7 + 0.29 * share
        services.job_progress(job, fraction, f"{stage} {done}/{total if total else '?'}")

    try:
        report = import_file(
            p["kind"], upload, srid=p.get("srid"), encoding=p.get("encoding") or None, layer=p.get("layer") or None,
            gcj02=bool(p.get("gcj02")), mapping=p.get("mapping") or None, mode=p.get("mode", "append"),
            make_valid=bool(p.get("make_valid")), dry_run=bool(p.get("dry_run")), user=job.user,
            progress=progress, file_name=p.get("file_name"))
    finally:
        shutil.rmtree(upload.parent, ignore_errors=True)  # the upload's own folder
    doc = report.as_dict()
    if not report.ok:
        doc["_error"] = f"{len(report.errors)} 个错误，未导入：{report.errors[0]}"
    return doc


# --------------------------------------------------------------------------------------------
# the tasks (arguments are JSON: the Job's id)
# --------------------------------------------------------------------------------------------
@task()
def coverage_job(job_id: int) -> str:
    """Run a queued coverage Job."""
    return _run(job_id, _coverage)


@task()
def siting_job(job_id: int) -> str:
    """Run a queued siting Job."""
    return _run(job_id, _siting)


@task()
def export_job(job_id: int) -> str:
    """Run a queued export Job (a layer, or grid maps/data) and keep the file."""
    return _run(job_id, _export)


@task()
def import_job(job_id: int) -> str:
    """Run a queued import Job on its uploaded file (removed afterwards)."""
    return _run(job_id, _import)


TASK_FOR_KIND = {Job.Kind.COVERAGE: coverage_job, Job.Kind.SITING: siting_job, Job.Kind.EXPORT: export_job,
                 Job.Kind.IMPORT: import_job}
