"""Resubmitting a housing project (issue 4): the new version replaces the stored one, on the same project.

The storing pieces are those of :func:`layers.services_review.save_review` (its geometry conversion
``_geos``, its kind mapping ``KIND_TO_MODEL``, its facility rows and report row), applied to an existing
project: :func:`store_facilities` and :func:`store_report` build exactly the rows ``save_review`` builds,
so ``save_review`` can call them too (one path for both).

One transaction: the version check (optimistic locking on ``HousingProject.version``, in the UPDATE
itself so of two concurrent resubmissions exactly one wins even on SQLite), the project's fields, its
planned facilities (replaced), a new report and an append-only ``submitted`` history row.
"""
from __future__ import annotations

import shapely
from django.db import transaction

from . import models
from .analysis import rules as R
from .analysis.errors import BilingualError
from .analysis.submission import Submission
from .models_review import ReviewDecision, ReviewReport
from .services_review import KIND_TO_MODEL, _geos

__all__ = ["RESUBMIT_FROM", "ResubmitProblem", "store_facilities", "store_report", "save_resubmission"]

Status = models.HousingProject.Status
#: Statuses from which a project may be resubmitted (back to ``submitted``).
RESUBMIT_FROM = (Status.SUBMITTED, Status.REJECTED)


class ResubmitProblem(BilingualError):
    """Refused resubmission: ``code`` ``version`` (someone changed the project meanwhile, or its status
    no longer allows a resubmission)."""


def store_facilities(project: models.HousingProject, p: R.Project) -> list[models.ServiceFacility]:
    """The submission's facilities as planned ServiceFacility rows of ``project`` (codes ``P<pk>-F<i>``;
    a footprint keeps its polygon and is located at a point on its surface). As ``save_review``."""
    out = []
    for i, f in enumerate(p.facilities, start=1):
        point = f.geom if f.geom.geom_type == "Point" else shapely.point_on_surface(f.geom)
        obj = models.ServiceFacility(
            code=f"P{project.pk}-F{i}", name=(f.name or f"{p.name} {i}")[:128],
            kind=KIND_TO_MODEL.get(f.kind, f.kind), floor_area_m2=f.floor_area_m2,
            status=models.ServiceFacility.Status.PLANNED, project=project, geom=_geos(point),
            footprint=_geos(f.geom) if f.geom.geom_type == "Polygon" else None)
        obj.full_clean()
        obj.save()
        out.append(obj)
    return out


def store_report(project: models.HousingProject, review: R.Review, lang: str = "zh") -> ReviewReport:
    """The automated review as a new ReviewReport of ``project`` (no reviewer: nobody signed it yet)."""
    return ReviewReport.objects.create(project=project, rule_set=review.rule_set, verdict=review.verdict,
                                       checks=review.as_dict(lang), reviewer=None)


def _district(review: R.Review):
    code = review.location["districts"][0]["code"] if review.location["districts"] else None
    return models.District.objects.filter(code=code).first() if code else None


@transaction.atomic
def save_resubmission(project: models.HousingProject, version: int, sub: Submission, review: R.Review, *,
                      user, lang: str = "zh", comment: str = "", changes: dict | None = None) -> ReviewReport:
    """Store a resubmission on ``project``: its site and fields, its planned facilities (replaced), a new
    report, and a ``submitted`` history row by ``user`` with ``comment`` (and ``changes``, if given, under
    the history row's ``check_comments["_changes"]``). Status back to ``submitted``; version + 1.

    ``version`` is the version the user saw. Raises :class:`ResubmitProblem` (nothing stored) when the
    project is no longer at that version or no longer in a status that allows a resubmission.
    Returns the new report.
    """
    if models.HousingProject.objects.filter(pk=project.pk, version=version,
                                            status__in=RESUBMIT_FROM).update(version=version + 1) != 1:
        raise ResubmitProblem("version", "项目已被他人修改，请刷新后重试",
                              "the project changed meanwhile; reload and retry")
    p = sub.project
    project.refresh_from_db()
    project.name, project.developer = p.name[:128], p.developer[:128]
    project.households, project.population_declared = p.households, p.population_declared
    project.district = _district(review)
    project.geom = _geos(p.site)
    project.status = Status.SUBMITTED
    project.full_clean()
    project.save()
    project.facilities.all().delete()
    store_facilities(project, p)
    report = store_report(project, review, lang)
    ReviewDecision.objects.create(project=project, report=report, action=ReviewDecision.Action.SUBMITTED,
                                  user=user if getattr(user, "pk", None) else None, comment=comment,
                                  check_comments={"_changes": changes} if changes is not None else {})
    return report
