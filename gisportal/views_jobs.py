"""Grid exports for field staff, and the job pages (list, status with progress, cancel, download).

Thin: an export is a queued Job run by the background worker (``gisportal.tasks``, the same path as the
API); the status page refreshes itself while the job runs (a meta refresh, no script), and offers the
file when it is done. A field worker only ever gets their own grids (``services_export`` enforces it).

Pages that queue an analysis (coverage, siting) redirect with :func:`job_wait_redirect`: the status page
with ``?follow=1``, which shows progress (and cancel) while the job runs and, once it is done, redirects
to the job's result page (:data:`RESULT_PAGES`); a failed job stays on the status page with its error
and a link back to the form.
"""
from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods, require_POST

from layers import models
from layers.services_export import FORMATS

from . import tasks
from .permissions import can_cancel_job, can_view_layer, grids_visible, jobs_visible


class GridExportForm(forms.Form):
    scope = forms.ChoiceField(label=_("导出范围"), choices=[("community", _("社区")), ("grid", _("网格")),
                                                       ("street", _("街道")), ("district", _("区县"))])
    code = forms.RegexField(label=_("代码"), regex=r"^\d{6,15}$", max_length=15,
                            error_messages={"invalid": _("代码应为 6–15 位数字")})
    format = forms.ChoiceField(label=_("格式"), choices=[(f, f.upper()) for f in FORMATS], initial="pdf")
    crs = forms.ChoiceField(label=_("坐标"), initial="wgs84", choices=[
        ("wgs84", _("CGCS2000 / WGS84 经纬度")), ("gcj02", _("GCJ-02（高德等手机应用）"))])
    paper = forms.ChoiceField(label=_("纸张"), choices=[("A4", "A4"), ("A3", "A3")], initial="A4")
    per_grid = forms.BooleanField(label=_("每个网格一个文件（.zip）"), required=False)


@login_required
@require_http_methods(["GET", "POST"])
def grid_export(request: HttpRequest) -> HttpResponse:
    if not can_view_layer(request.user, "grids"):
        raise Http404
    mine = grids_visible(request.user).select_related("community").order_by("code")
    if request.method == "POST":
        form = GridExportForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            params = {"layer": "grids", "format": d["format"], "crs": d["crs"], "paper": d["paper"],
                      "per_grid": d["per_grid"], d["scope"]: d["code"]}
            job = tasks.job_queue(models.Job.Kind.EXPORT, params, user=request.user)
            tasks.job_enqueue(job)
            return redirect("job_detail", pk=job.pk)
    else:
        first = mine.first()
        form = GridExportForm(initial={"code": first.community.code if first else ""})
    communities = (models.Community.objects.filter(grids__in=mine).distinct().order_by("code")
                   .values_list("code", "name"))
    return render(request, "jobs/export.html", {"form": form, "communities": list(communities[:200]),
                                                "grid_count": mine.count()})


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = jobs_visible(request.user).select_related("user").order_by("-created_at")[:100]
    return render(request, "jobs/list.html", {"jobs": jobs})


def _visible_job(request, pk: int) -> models.Job:
    return get_object_or_404(jobs_visible(request.user), pk=pk)


#: Job kinds with a page of their own: kind -> (result URL name taking ``pk``, form URL name).
RESULT_PAGES = {models.Job.Kind.COVERAGE: ("coverage_result", "coverage"),
                models.Job.Kind.SITING: ("siting_result", "siting")}


def _url(name: str, **kwargs) -> str | None:
    try:
        return reverse(name, kwargs=kwargs or None)
    except NoReverseMatch:  # a test URLconf without that page
        return None


def job_result_url(job: models.Job) -> str | None:
    """The result page of a finished coverage or siting job (None for other kinds or unfinished jobs)."""
    if job.kind not in RESULT_PAGES or job.status != models.Job.Status.DONE or not job.result:
        return None
    return _url(RESULT_PAGES[job.kind][0], pk=job.pk)


def job_wait_redirect(job: models.Job) -> HttpResponse:
    """Send the browser to the job's status page, which follows on to the result page once the job is
    done (``?follow=1``). For pages that queue a job instead of running it in the request."""
    return redirect(reverse("job_detail", kwargs={"pk": job.pk}) + "?follow=1")


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _visible_job(request, pk)
    running = job.status in (models.Job.Status.QUEUED, models.Job.Status.RUNNING)
    result_url = job_result_url(job)
    if result_url and request.GET.get("follow") == "1":
        return redirect(result_url)
    form_url = _url(RESULT_PAGES[job.kind][1]) if job.kind in RESULT_PAGES else None
    return render(request, "jobs/detail.html", {"job": job, "running": running,
                                                "percent": round(100 * job.progress),
                                                "can_cancel": running and can_cancel_job(request.user, job),
                                                "result_url": result_url, "form_url": form_url,
                                                "error_text": _error_text(job)})


def _error_text(job: models.Job) -> str:
    """A failed job's message: its error, else the Chinese text of a recorded input error."""
    if job.error:
        return job.error
    err = job.result.get("error") if isinstance(job.result, dict) else None
    return str(err.get("zh", "")) if isinstance(err, dict) else ""


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = _visible_job(request, pk)
    if not can_cancel_job(request.user, job):
        raise Http404
    models.Job.objects.filter(pk=job.pk, status__in=[models.Job.Status.QUEUED, models.Job.Status.RUNNING]
                              ).update(cancel_requested=True)
    return redirect("job_detail", pk=job.pk)


@login_required
def job_download(request: HttpRequest, pk: int) -> FileResponse:
    job = _visible_job(request, pk)
    if job.status != models.Job.Status.DONE or not job.result_file:
        raise Http404
    name = (job.result or {}).get("file_name") or job.result_file.name.rsplit("/", 1)[-1]
    return FileResponse(job.result_file.open("rb"), as_attachment=True, filename=name)


urlpatterns = [
    path("exports/grids/", grid_export, name="grid_export"),
    path("jobs/", job_list, name="job_list"),
    path("jobs/<int:pk>/", job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/download/", job_download, name="job_download"),
]
