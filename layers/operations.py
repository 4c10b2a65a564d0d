"""Operations that leave a record: imports and exports announce how they ended.

A Job (API, pages, the worker) is its own record. An import or export run outside a Job — ``manage.py
import_layer`` / ``export_layer`` / ``export_grids``, the import page — is announced by the decorators
below with the signal :data:`operation_finished`, once, when the call ends (ok, refused / failed, or
cancelled); ``gisportal.audit`` listens and appends it to the audit log. Inside a Job
(:func:`inside_job`, set by ``gisportal.tasks``) they stay silent, so nothing is recorded twice.
Dry runs are not announced. The decorators are applied where the services are defined, so what is
recorded is visible in the service's own source.

Receivers get ``action`` ("import" / "export"), ``user``, ``object_type``, ``object_id``, ``summary``,
``params``, ``result``, ``result_digest`` and ``status`` ("ok" / "failed" / "cancelled"). A receiver must
not raise for a database fault: the operation's own outcome stands (see ``gisportal.audit``).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
from pathlib import Path

from django.dispatch import Signal

__all__ = ["operation_finished", "inside_job", "in_job", "recorded_export", "recorded_import", "file_sha256",
           "DB_FAULTS"]

operation_finished = Signal()

_IN_JOB: contextvars.ContextVar = contextvars.ContextVar("gisportal_operation_in_job", default=None)

#: Import error codes of a database fault (``importers.services.db_fault``): nothing was written, and a
#: record would wait on the same fault — such imports are not announced.
DB_FAULTS = frozenset({"database_busy", "disk_full"})
IMPORT_PARAMS = ("kind", "srid", "encoding", "layer", "gcj02", "mapping", "mode", "make_valid")


@contextlib.contextmanager
def inside_job(job_id: int):
    """Within the block the Job ``job_id`` is the record of any import or export (they stay silent)."""
    token = _IN_JOB.set(job_id)
    try:
        yield
    finally:
        _IN_JOB.reset(token)


def in_job() -> bool:
    return _IN_JOB.get() is not None


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _announce(action: str, **kwargs) -> None:
    operation_finished.send(sender=action, action=action, **kwargs)


def _ended_by(exc: BaseException) -> str:
    from .services import JobCancelled

    return "cancelled" if isinstance(exc, JobCancelled) else "failed"


def recorded_export(layer: str | None = None):
    """Decorator for an export service ``fn(..., out, ..., user=None, progress=None)`` returning an object
    with ``path`` (and ``count``, ``crs``): each call outside a Job is announced when it ends."""
    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if in_job():
                return fn(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            params = {k: v for k, v in bound.arguments.items() if k not in ("progress", "user") and v is not None}
            params["out"] = Path(str(params.get("out", ""))).name   # the file name, not the server path
            if layer:
                params["layer"] = layer
            user = bound.arguments.get("user")
            what = f"{params.get('layer', params.get('kind', ''))} → {params['out']}"
            entry = {"user": user, "object_type": "export", "object_id": params["out"]}
            try:
                res = fn(*args, **kwargs)
            except Exception as exc:
                _announce("export", **entry, params=params, summary=f"{what}：{exc}"[:2000], result=None,
                          result_digest="", status=_ended_by(exc))
                raise
            path = Path(res.path)
            count = getattr(res, "count", None)
            _announce("export", **entry, summary=f"{what}（{count}）", result=None,
                      params={**params, "count": count, "crs": getattr(res, "crs", "")},
                      result_digest=file_sha256(path) if path.is_file() else "", status="ok")
            return res
        return wrapper
    return decorate


def recorded_import(fn):
    """Decorator for ``importers.services.import_file``: each import outside a Job is announced once, when
    it ends (ok, refused, failed, or interrupted by an exception); dry runs and database faults are not."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        a = sig.bind(*args, **kwargs).arguments
        if in_job() or a.get("dry_run"):
            return fn(*args, **kwargs)
        user = a.get("user")
        name = a.get("file_name") or Path(str(a.get("path", ""))).name
        params = {k: a[k] for k in IMPORT_PARAMS if a.get(k) not in (None, "", False)}
        params["file_name"] = name
        try:
            report = fn(*args, **kwargs)
        except Exception as exc:
            _announce("import", user=user, object_type="importers.import_file", object_id="",
                      summary=f"{params.get('kind', '')} ← {name}：{type(exc).__name__}: {exc}"[:2000],
                      params=params, result=None, result_digest="", status=_ended_by(exc))
            raise
        if getattr(report, "status", "") == "dry_run":
            return report
        if report.status == "failed" and {i.code for i in report.errors} & DB_FAULTS:
            return report
        ok = report.status == "ok"
        params.update(sha256=report.sha256, size_bytes=report.size_bytes, import_run_id=report.run_id)
        counts = {"status": report.status, "features_read": report.features_read, "created": report.created,
                  "updated": report.updated, "deleted": report.deleted, "error_count": len(report.errors)}
        if ok:
            summary = f"{report.kind} ← {name}：+{report.created} ~{report.updated} -{report.deleted}"
        else:
            first = str(report.errors[0]) if report.errors else ""
            summary = f"{report.kind} ← {name}：{report.status}，{len(report.errors)} 个错误 {first}"
        obj = ("importers.ImportRun", report.run_id) if report.run_id else ("importers.import_file", "")
        _announce("import", user=user, object_type=obj[0], object_id=obj[1], summary=summary[:2000],
                  params=params, result=counts, result_digest=None, status="ok" if ok else "failed")
        return report
    return wrapper
