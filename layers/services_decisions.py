"""Review decisions (issue 4/8): approve, reject or comment on a housing project, append-only.

One path for the review pages and the REST API. A decision appends a :class:`ReviewDecision` (never
updated or deleted) and moves the project's status; ``expected_version`` guards against two people
deciding on the same version at once (optimistic locking on ``HousingProject.version``).
"""
from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import models
from .analysis.errors import BilingualError

ACTIONS = ("in_review", "approved", "rejected", "comment")
#: Status a project must have for each action (a comment is always allowed).
#: The same workflow as the review pages (gisportal/views_review.py TRANSITIONS).
FROM_STATUS = {"in_review": ("submitted",), "approved": ("in_review",), "rejected": ("in_review",)}


class DecisionProblem(BilingualError):
    """Refused decision: ``code`` is ``action``, ``status`` or ``version``; messages zh/en."""



@transaction.atomic
def review_decide(project: models.HousingProject, *, action: str, user, comment: str = "",
                  check_comments: dict | None = None, expected_version: int | None = None) -> models.ReviewDecision:
    """Record ``action`` on ``project`` by ``user`` (latest report attached); returns the decision."""
    if action not in ACTIONS:
        raise DecisionProblem("action", f"未知的操作 {action}（可选：{'、'.join(ACTIONS)}）",
                              f"unknown action {action!r} (one of: {', '.join(ACTIONS)})")
    check_comments = {str(k): str(v) for k, v in (check_comments or {}).items()}
    locked = models.HousingProject.objects.select_for_update().get(pk=project.pk)
    if expected_version is not None and locked.version != expected_version:
        raise DecisionProblem("version", f"项目已被他人更新（当前版本 {locked.version}），请刷新后重试",
                              f"the project changed meanwhile (now version {locked.version}); reload and retry")
    report = locked.reports.order_by("-created_at", "-pk").first()
    if action != "comment" and locked.status not in FROM_STATUS[action]:
        raise DecisionProblem("status", f"项目状态为“{locked.get_status_display()}”，不能执行该操作",
                              f"the project is {locked.status}; cannot set {action}")
    if action in ("rejected", "comment") and not (comment.strip() or check_comments):
        raise DecisionProblem("comment", "请填写意见", "a comment is required")
    if action == "approved" and report is not None and report.verdict == "fail" and not comment.strip():
        raise DecisionProblem("comment", "审查结论为不通过，批准时请说明理由",
                              "the review failed: give the reason for approving")
    changes = {"version": F("version") + 1, "updated_at": timezone.now()}
    if action != "comment":
        changes["status"] = action
    # The version test is in the UPDATE itself, so of two concurrent deciders exactly one wins even where
    # SELECT ... FOR UPDATE is a no-op (SQLite).
    rows = models.HousingProject.objects.filter(pk=locked.pk, version=locked.version)
    if expected_version is not None:
        rows = rows.filter(version=expected_version)
    if rows.update(**changes) != 1:
        raise DecisionProblem("version", "项目已被他人更新，请刷新后重试",
                              "the project changed meanwhile; reload and retry")
    decision = models.ReviewDecision(project=locked, report=report, action=action, comment=comment,
                                     check_comments=check_comments, user=user if getattr(user, "pk", None) else None)
    decision.save()
    project.refresh_from_db()
    return decision
