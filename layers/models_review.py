"""Review reports and decisions (issue 4). Imported by ``layers/models.py`` (app label ``layers``).

ReviewReport: one run of the rule set on a project (verdict, the checks document, rule-set version).
ReviewDecision: append-only history of the workflow (submitted -> in review -> approved / rejected),
with the user, the time and per-check comments; rows are never updated or deleted.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.gis.db import models
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _


class ReviewReport(models.Model):
    class Verdict(models.TextChoices):
        PASS = "pass", _("通过")
        FAIL = "fail", _("不通过")

    project = models.ForeignKey("layers.HousingProject", models.CASCADE, related_name="reports",
                                verbose_name=_("住宅项目"))
    rule_set = models.CharField(_("规则版本"), max_length=64)
    verdict = models.CharField(_("结论"), max_length=8, choices=Verdict.choices)
    checks = models.JSONField(_("审查结果"))  # the review_project --json document
    created_at = models.DateTimeField(_("审查时间"), auto_now_add=True)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                                 related_name="review_reports", verbose_name=_("审查人"))

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("审查报告")
        verbose_name_plural = _("审查报告")

    def __str__(self) -> str:
        return f"{self.project_id} {self.verdict} ({self.rule_set})"


class ReviewDecision(models.Model):
    class Action(models.TextChoices):
        SUBMITTED = "submitted", _("已提交")
        IN_REVIEW = "in_review", _("审查中")
        APPROVED = "approved", _("已批准")
        REJECTED = "rejected", _("已退回")
        COMMENT = "comment", _("意见")

    project = models.ForeignKey("layers.HousingProject", models.CASCADE, related_name="decisions",
                                verbose_name=_("住宅项目"))
    report = models.ForeignKey(ReviewReport, models.PROTECT, null=True, blank=True, related_name="decisions",
                               verbose_name=_("审查报告"))
    action = models.CharField(_("操作"), max_length=16, choices=Action.choices)
    comment = models.TextField(_("意见"), blank=True)
    check_comments = models.JSONField(_("逐项意见"), default=dict, blank=True)  # {rule code: text}
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True,
                             related_name="review_decisions", verbose_name=_("操作人"))
    created_at = models.DateTimeField(_("时间"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("审查记录")
        verbose_name_plural = _("审查记录")

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError(_("审查记录只能追加，不能修改"))
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError(_("审查记录只能追加，不能删除"))
