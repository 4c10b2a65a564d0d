"""The audit record of every import (DESIGN.md: long jobs are recorded as rows)."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ImportRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", _("运行中")
        OK = "ok", _("已导入")
        REFUSED = "refused", _("已拒绝")
        FAILED = "failed", _("失败")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                             related_name="import_runs", verbose_name=_("操作人"))
    started_at = models.DateTimeField(_("开始时间"), auto_now_add=True)
    finished_at = models.DateTimeField(_("结束时间"), null=True, blank=True)
    kind = models.CharField(_("图层"), max_length=32)
    file_name = models.CharField(_("文件名"), max_length=255)
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    size_bytes = models.BigIntegerField(_("文件大小（字节）"), default=0)
    mode = models.CharField(_("方式"), max_length=16, default="append")
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices)
    features_read = models.PositiveIntegerField(_("读取要素数"), default=0)
    created = models.PositiveIntegerField(_("新增"), default=0)
    updated = models.PositiveIntegerField(_("更新"), default=0)
    deleted = models.PositiveIntegerField(_("删除"), default=0)
    error_count = models.PositiveIntegerField(_("错误数"), default=0)
    report = models.JSONField(_("报告"), default=dict)
    #: ``host:pid:start`` of the process writing the import (``start``: the process's start time in clock
    #: ticks from /proc, so a reused pid is not taken for the writer). A ``running`` run whose process is
    #: gone is marked ``failed`` by :func:`importers.services.runs_reap_stale`.
    worker = models.CharField(_("进程"), max_length=128, blank=True)
    error = models.TextField(_("失败原因"), blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = _("导入记录")
        verbose_name_plural = _("导入记录")

    def __str__(self) -> str:
        return f"{self.kind} {self.file_name} ({self.status})"
