"""The audit log (issue 9, item 6): :func:`record` appends an entry, :func:`verify_chain` checks the chain.

What is recorded, and from where (connected in ``GisportalConfig.ready()``, so the services stay as
they are):

* ``coverage`` / ``siting`` — a :class:`layers.models.Job` reaching done / failed / cancelled
  (``services.job_finish`` saves with ``update_fields``; progress uses ``QuerySet.update``, which sends
  no signal, so each Job is recorded once, when it ends).
* ``export`` and ``import`` — an export or import Job when it ends, with the Job's user and parameters
  (an export: the SHA-256 of the file; an import: the file's SHA-256 and the ImportRun id in ``params``).
  Outside a Job — ``manage.py export_grids`` / ``export_layer`` / ``import_layer``, the import page —
  the services announce their end with ``layers.operations.operation_finished`` (their decorators
  ``recorded_export`` / ``recorded_import``), silent inside a Job, so each is recorded once. Dry runs
  are not recorded.
* ``review_submit`` — the first :class:`ReviewReport` of a project (``save_review``: page, API,
  ``review_project --save``); a resubmission, by its ``submitted`` :class:`ReviewDecision`.
* ``review_decision`` — every other ReviewDecision (in review, approved, rejected, comment).

Entries from model receivers are written in the caller's transaction (when the work rolls back, so does
its entry); an import's or export's after the service returned or raised.
"""
from __future__ import annotations

import functools
import getpass
import hashlib
import logging
import os
import random
import socket
import time
from pathlib import Path

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models.signals import post_save
from django.utils import timezone, translation

from .models import GENESIS_HASH, AuditEntry, canonical_json, jsonable

log = logging.getLogger(__name__)

Action = AuditEntry.Action
Status = AuditEntry.Status

__all__ = ["record", "verify_chain", "digest_json", "digest_file", "connect", "Action", "Status"]

#: Attempts to take the next place in the chain when concurrent appends collide on ``seq``.
APPEND_ATTEMPTS = 50
#: Collisions retried in this process (a figure for the tests).
append_retries = 0


def digest_json(value) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def digest_file(path_or_file) -> str:
    """SHA-256 (hex) of a file's bytes (a path, or a binary file object read from its start)."""
    h = hashlib.sha256()
    if isinstance(path_or_file, (str, Path)):
        with open(path_or_file, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    else:
        while chunk := path_or_file.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _clean(text, limit: int | None = None) -> str:
    s = ("" if text is None else str(text)).replace("\x00", "")
    return s[:limit] if limit else s


@functools.lru_cache(maxsize=1)
def _os_user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no login name (a container without passwd entry)
        name = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{name}@{socket.gethostname()}"


def record(action: str, *, user=None, object_type: str = "", object_id="", summary: str = "",
           params: dict | None = None, result=None, status: str = "ok", result_digest: str | None = None,
           using: str = "default") -> AuditEntry:
    """Append one entry to the audit log and return it.

    ``result`` is digested (SHA-256 of its canonical JSON; of the bytes for ``bytes``; of the file for a
    ``Path``) unless ``result_digest`` is given. Safe under concurrent appends: ``seq`` is unique, so of
    two appends that read the same last entry one fails and retries on top of the other (SQLite takes
    the write lock at BEGIN anyway: the settings use IMMEDIATE transactions).
    """
    global append_retries
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    if status not in Status.values:
        raise ValueError(f"unknown audit status {status!r}")
    if result_digest is None:
        if result is None:
            result_digest = ""
        elif isinstance(result, (bytes, bytearray, memoryview)):
            result_digest = hashlib.sha256(bytes(result)).hexdigest()
        elif isinstance(result, Path):
            result_digest = digest_file(result)
        else:
            result_digest = digest_json(result)
    has_user = getattr(user, "pk", None) is not None
    params = dict(params or {})
    if not has_user:  # a management command or a worker: who ran it is the system account
        params.setdefault("_os_user", _os_user())
    fields = {"user": user if has_user else None,
              "username": _clean(user.get_username(), 150) if has_user else "",
              "action": action, "object_type": _clean(object_type, 64), "object_id": _clean(object_id, 64),
              "summary": _clean(summary, 2000), "params": jsonable(params),
              "result_digest": _clean(result_digest, 64), "status": status}
    for attempt in range(APPEND_ATTEMPTS):
        try:
            with transaction.atomic(using=using):
                last = (AuditEntry.objects.using(using).order_by("-seq")
                        .values_list("seq", "entry_hash").first())
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                entry = AuditEntry(seq=seq, prev_hash=prev, created_at=timezone.now(), **fields)
                entry.entry_hash = entry.compute_hash()
                entry.save(_append=True, using=using)
            return entry
        except IntegrityError:
            if attempt == APPEND_ATTEMPTS - 1:
                raise
            append_retries += 1
            time.sleep(random.uniform(0.001, 0.02) * (1 + attempt))
    raise AssertionError("unreachable")


def verify_chain(*, using: str = "default") -> AuditEntry | None:
    """The first entry whose chain link is broken (``chain_error`` says how), or None when intact.

    Broken: ``seq`` not the next number (an entry was removed), ``prev_hash`` not the previous entry's
    hash (removed or reordered), or ``entry_hash`` not the hash of the entry's own fields (changed).
    Removing the newest entries leaves a shorter valid chain: compare the head shown on the audit page
    (``seq`` and hash) with a copy kept elsewhere to catch that.
    """
    prev_hash, expected_seq = GENESIS_HASH, 1
    for entry in AuditEntry.objects.using(using).order_by("seq").iterator(chunk_size=2000):
        error = None
        if entry.seq != expected_seq:
            error = "seq"
        elif entry.prev_hash != prev_hash:
            error = "prev_hash"
        elif entry.compute_hash() != entry.entry_hash:
            error = "entry_hash"
        if error:
            entry.chain_error = error
            return entry
        prev_hash, expected_seq = entry.entry_hash, entry.seq + 1
    return None


# ------------------------------------------------------------------ what gets recorded
TERMINAL = {"done": Status.OK, "failed": Status.FAILED, "cancelled": Status.CANCELLED}
JOB_ACTION = {"import": Action.IMPORT, "coverage": Action.COVERAGE, "siting": Action.SITING,
              "export": Action.EXPORT, "review": Action.REVIEW_DECISION}

def _in_chinese(receiver):
    """Summaries are stored in the product's first language, whatever the request's language."""
    @functools.wraps(receiver)
    def wrapper(*args, **kwargs):
        with translation.override("zh-hans"):
            return receiver(*args, **kwargs)
    return wrapper


def _recorded(object_type: str, object_id, action: str | None = None) -> bool:
    qs = AuditEntry.objects.filter(object_type=object_type, object_id=str(object_id))
    return (qs.filter(action=action) if action else qs).exists()


def _job_file_digest(job) -> str:
    if not job.result_file:
        return ""
    try:
        with job.result_file.open("rb") as fh:
            return digest_file(fh)
    except OSError:
        log.warning("audit: job %s: cannot read %s", job.pk, job.result_file.name)
        return ""


@_in_chinese
def on_job_saved(sender, instance, created, update_fields=None, raw=False, **kwargs):
    """A Job that ends (done / failed / cancelled) is recorded once."""
    job = instance
    if raw or job.status not in TERMINAL or job.kind not in JOB_ACTION:
        return
    if update_fields is not None and "status" not in update_fields:
        return
    extra = {}
    if job.kind == "import":
        if (job.params or {}).get("dry_run"):
            return  # a dry run imports nothing (as outside a Job)
        result = job.result if isinstance(job.result, dict) else {}
        extra = {k: result[v] for k, v in (("sha256", "sha256"), ("import_run_id", "run_id"),
                                            ("import_status", "status")) if result.get(v) is not None}
    if _recorded("layers.Job", job.pk):
        return
    digest = _job_file_digest(job) if job.kind == "export" else ""
    summary = f"{job.get_kind_display()} #{job.pk}: {job.get_status_display()}"
    if job.error:
        summary += f" — {job.error[:500]}"
    record(JOB_ACTION[job.kind], user=job.user, object_type="layers.Job", object_id=job.pk, summary=summary,
           params={"job_id": job.pk, "data_version": job.data_version, **(job.params or {}), **extra},
           result=job.result, result_digest=digest or None, status=TERMINAL[job.status])


@_in_chinese
def on_review_report_saved(sender, instance, created, raw=False, **kwargs):
    """A project's first report is its submission (a resubmission is recorded by its decision)."""
    if raw or not created:
        return
    report = instance
    if type(report).objects.filter(project_id=report.project_id).exclude(pk=report.pk).exists():
        return
    project = report.project
    user = report.reviewer or project.submitted_by
    record(Action.REVIEW_SUBMIT, user=user, object_type="layers.ReviewReport", object_id=report.pk,
           summary=f"{project.name}：{report.get_verdict_display()}（{report.rule_set}）",
           params={"project_id": project.pk, "report_id": report.pk, "rule_set": report.rule_set,
                   "verdict": report.verdict},
           result=report.checks)


@_in_chinese
def on_review_decision_saved(sender, instance, created, raw=False, **kwargs):
    """Every decision; a ``submitted`` one unless its report already recorded the submission."""
    if raw or not created:
        return
    d = instance
    params = {"project_id": d.project_id, "decision_id": d.pk, "report_id": d.report_id, "action": d.action,
              "comment": d.comment, "check_comments": d.check_comments}
    result = {k: params[k] for k in ("project_id", "report_id", "action", "comment", "check_comments")}
    summary = f"{d.project.name}：{d.get_action_display()}" + (f" — {d.comment[:200]}" if d.comment else "")
    if d.action == "submitted":
        if d.report_id is not None and _recorded("layers.ReviewReport", d.report_id, Action.REVIEW_SUBMIT):
            return
        obj = ("layers.ReviewReport", d.report_id) if d.report_id is not None else ("layers.ReviewDecision", d.pk)
        record(Action.REVIEW_SUBMIT, user=d.user, object_type=obj[0], object_id=obj[1], summary=summary,
               params=params, result=result)
        return
    record(Action.REVIEW_DECISION, user=d.user, object_type="layers.ReviewDecision", object_id=d.pk,
           summary=summary, params=params, result=result)


# ------------------------------------------------------------------ imports and exports outside a Job
def on_operation_finished(sender, action, user=None, object_type="", object_id="", summary="", params=None,
                          result=None, result_digest=None, status="ok", **kwargs):
    """An import or export that ran outside a Job (``layers.operations``), after it ended: a database
    fault while writing the entry is logged, not raised, so the caller still sees the operation's own
    outcome (its import or export stands)."""
    try:
        with translation.override("zh-hans"):
            record(action, user=user, object_type=object_type, object_id=object_id, summary=summary,
                   params=params, result=result, result_digest=result_digest, status=status)
    except DatabaseError as exc:  # one line, no traceback: the service already reported the outcome
        log.warning("audit: could not record %s: %s: %s", action, type(exc).__name__, exc)


def connect() -> None:
    """Connect the receivers (idempotent; from ``AppConfig.ready``)."""
    from layers.models import Job, ReviewDecision, ReviewReport

    post_save.connect(on_job_saved, sender=Job, dispatch_uid="gisportal.audit.job")
    post_save.connect(on_review_report_saved, sender=ReviewReport, dispatch_uid="gisportal.audit.review_report")
    post_save.connect(on_review_decision_saved, sender=ReviewDecision,
                      dispatch_uid="gisportal.audit.review_decision")
    from layers.operations import operation_finished

    operation_finished.connect(on_operation_finished, dispatch_uid="gisportal.audit.operation")
