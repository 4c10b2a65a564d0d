"""The audit log (issue 9, item 6): an append-only, hash-chained record of every import, review
submission and decision, coverage and siting run and export.

Rows are written only through :func:`gisportal.audit.record`. The ORM refuses to change or delete them
(``save`` of a stored row, ``delete``, ``QuerySet.update`` / ``QuerySet.delete``); a change made behind
the ORM (direct SQL) breaks the hash chain, which :func:`gisportal.audit.verify_chain` detects.

``entry_hash = sha256(prev_hash + "\\n" + canonical JSON of the entry's fields)``, where the fields are
``seq, created_at, username, action, object_type, object_id, summary, params, result_digest, status``.
``user_id`` is left out on purpose: deleting a user sets it to NULL (the copied ``username`` keeps
who it was), and that must not read as tampering.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import numbers

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64


def jsonable(value):
    """``value`` as plain JSON data: dict keys as text, tuples as lists, non-finite floats and other
    objects (dates, paths, decimals) as text, so it is stored and read back unchanged on both databases."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=canonical_json) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            return str(x)
        # jsonb keeps numbers as numeric and prints 1e+16 as an integer: store it as one from the start
        return int(x) if x.is_integer() and abs(x) >= 1e15 else x
    return str(value)


def canonical_json(value) -> str:
    """Sorted keys, no spaces, UTF-8 text: the same document always gives the same string."""
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


class AuditQuerySet(models.QuerySet):
    """Refuses bulk changes: the log is append-only."""

    def update(self, **kwargs):
        raise ValidationError(_("审计日志只能追加，不能修改"))

    def delete(self):
        raise ValidationError(_("审计日志只能追加，不能删除"))

    def bulk_update(self, objs, fields, batch_size=None):
        raise ValidationError(_("审计日志只能追加，不能修改"))

    def bulk_create(self, objs, *args, **kwargs):  # each entry needs its place in the chain
        raise ValidationError(_("审计日志只能通过 gisportal.audit.record 追加"))

    def update_or_create(self, *args, **kwargs):
        raise ValidationError(_("审计日志只能追加，不能修改"))


class AuditEntry(models.Model):
    class Action(models.TextChoices):
        IMPORT = "import", _("导入")
        REVIEW_SUBMIT = "review_submit", _("项目提交审查")
        REVIEW_DECISION = "review_decision", _("审查决定")
        COVERAGE = "coverage", _("覆盖分析")
        SITING = "siting", _("选址优化")
        EXPORT = "export", _("导出")
        BACKUP = "backup", _("备份")
        RESTORE = "restore", _("恢复")

    class Status(models.TextChoices):
        OK = "ok", _("成功")
        FAILED = "failed", _("失败")
        CANCELLED = "cancelled", _("已取消")

    seq = models.PositiveBigIntegerField(_("序号"), unique=True, editable=False)
    created_at = models.DateTimeField(_("时间"), default=timezone.now, db_index=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                             related_name="audit_entries", verbose_name=_("用户"))
    username = models.CharField(_("用户名"), max_length=150, blank=True, db_index=True)
    action = models.CharField(_("操作"), max_length=20, choices=Action.choices, db_index=True)
    object_type = models.CharField(_("对象类型"), max_length=64, blank=True)
    object_id = models.CharField(_("对象编号"), max_length=64, blank=True)
    summary = models.TextField(_("摘要"), blank=True)
    params = models.JSONField(_("参数"), default=dict, blank=True)
    result_digest = models.CharField(_("结果摘要（SHA-256）"), max_length=64, blank=True)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.OK)
    prev_hash = models.CharField(_("上一条哈希"), max_length=64, editable=False)
    entry_hash = models.CharField(_("本条哈希"), max_length=64, unique=True, editable=False)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        verbose_name = _("审计记录")
        verbose_name_plural = _("审计日志")
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.username or '-'} {self.status}"

    def hashed_fields(self) -> dict:
        """The fields the entry hash covers, in their stored form."""
        created = self.created_at
        if timezone.is_naive(created):
            created = timezone.make_aware(created, dt.timezone.utc)
        stamp = created.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
        return {"seq": int(self.seq), "created_at": stamp,
                "username": self.username, "action": self.action, "object_type": self.object_type,
                "object_id": self.object_id, "summary": self.summary, "params": self.params,
                "result_digest": self.result_digest, "status": self.status}

    def compute_hash(self) -> str:
        data = (self.prev_hash + "\n" + canonical_json(self.hashed_fields())).encode("utf-8")
        return hashlib.sha256(data).hexdigest()

    def save(self, *args, **kwargs):
        if self.pk is not None or not kwargs.pop("_append", False):
            raise ValidationError(_("审计日志只能通过 gisportal.audit.record 追加，不能修改"))
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError(_("审计日志只能追加，不能删除"))
