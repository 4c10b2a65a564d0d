"""The dashboard (issue 8): layer counts, shelter and fire coverage per district, reviews waiting.

Read-only and cheap: counts from ``layers.selectors.layer_counts``, coverage from the latest recorded
coverage Job per kind (the figures ``manage.py coverage`` and the coverage page stored; nothing is
recomputed here), and the housing projects waiting for a decision that this user may see.
"""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from layers import models, selectors
from layers.registry import LAYERS

from .views_coverage import PERMISSION as COVERAGE_PERMISSION
from .views_coverage import share_color
from .views_review import VIEW_PERMISSION as REVIEW_PERMISSION
from .views_review import projects_for

COVERAGE_KINDS = ("shelters", "fire_stations")
WAITING = (models.HousingProject.Status.SUBMITTED, models.HousingProject.Status.IN_REVIEW)


def latest_coverage_jobs() -> dict[str, models.Job | None]:
    """The latest finished coverage Job per kind (None when never computed)."""
    done = models.Job.objects.filter(kind=models.Job.Kind.COVERAGE, status=models.Job.Status.DONE,
                                     result__isnull=False).order_by("-finished_at", "-pk")
    return {k: done.filter(params__kind=k).first() for k in COVERAGE_KINDS}


def district_coverage(jobs: dict[str, models.Job | None]) -> list[dict]:
    """One row per district: population and the share covered by each kind's latest job."""
    rows: dict[str, dict] = {}
    for kind, job in jobs.items():
        if job is None:
            continue
        for d in (job.result.get("areas") or {}).get("districts", []):
            row = rows.setdefault(d["code"], {"code": d["code"], "name": d["name"], "population": d["population"]})
            row[kind] = {"share": d["share"], "covered": d["covered"], "color": share_color(d["share"])}
    return sorted(rows.values(), key=lambda r: r["code"])


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    counts = selectors.layer_counts()
    ctx = {"layers": [{"kind": k, "label": layer.label, "count": counts.get(k, 0), "color": layer.color}
                      for k, layer in LAYERS.items()]}
    if request.user.has_perm(COVERAGE_PERMISSION):
        jobs = latest_coverage_jobs()
        ctx["coverage"] = {"jobs": [(k, LAYERS[k].label, jobs[k]) for k in COVERAGE_KINDS],
                           "districts": district_coverage(jobs)}
    if request.user.has_perm(REVIEW_PERMISSION):
        qs = projects_for(request.user).filter(status__in=WAITING)
        ctx["reviews"] = {"submitted": qs.filter(status=WAITING[0]).count(),
                          "in_review": qs.filter(status=WAITING[1]).count(),
                          "projects": list(qs.order_by("created_at")[:20])}
    return render(request, "dashboard/page.html", ctx)


#: Add to gisportal/urls.py: ``urlpatterns += views_dashboard.urlpatterns``.
urlpatterns = [
    path("dashboard/", dashboard, name="dashboard"),
]
