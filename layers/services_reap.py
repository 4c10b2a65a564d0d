"""Recover from a dead process: ``running`` Jobs (and import runs) whose owner is gone end ``failed``.

A SIGKILLed or crashed process cannot record its own end, so its row would say "running" forever. The
rows carry who runs them as a *worker id* ``host:pid:start`` (``start`` is the process's start time in
clock ticks from ``/proc/PID/stat``, so a pid the kernel reused for another process is not taken for the
owner):

* an :class:`importers.models.ImportRun` stores it in ``ImportRun.worker`` (``importers.services``);
* a :class:`layers.models.Job` run by ``manage.py db_worker`` is linked to the worker through the
  django-tasks row of its task (``DBTaskResult.worker_ids``): start the worker with
  ``--worker-id "$(hostname):$$:<start>"`` (scripts/serve.sh does) and the id names its process.

A row whose worker is on this host and whose process is gone is failed with :data:`REASON_DIED`. A row
whose owner cannot be checked (another host, a random worker id, a job run inside a web request, which
records no worker) is failed with :data:`REASON_STALE` once it started more than ``max_age_s`` ago.
There is no heartbeat: an import or an analysis writes in one transaction, and a heartbeat written inside
it is not visible to anyone else until it commits (on SQLite no one else can even write it).
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.utils import timezone

from . import models

REASON_DIED = "进程中断 / interrupted (process died)"
REASON_STALE = "超时未结束（{hours:g} 小时无结果）/ no result after {hours:g} h (owner unknown)"
DEFAULT_MAX_AGE_S = 6 * 3600.0
TASK_PATHS = ("gisportal.tasks.coverage_job", "gisportal.tasks.siting_job", "gisportal.tasks.export_job",
              "gisportal.tasks.import_job")


def _start_ticks(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot) or ``""`` where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may hold spaces: count fields after the last ")"
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


def worker_id(pid: int | None = None) -> str:
    """``host:pid:start`` of this process (or of ``pid`` on this host).

    >>> w = worker_id(); w.split(":")[1] == str(os.getpid()) and worker_alive(w)
    True
    """
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def worker_alive(worker: str) -> bool | None:
    """Whether the process named by ``worker`` still runs; ``None`` when this host cannot tell (another
    host, or not a ``host:pid[:start]`` id).

    >>> worker_alive("elsewhere.example:1:1") is None, worker_alive("random-id") is None
    (True, True)
    """
    parts = (worker or "").split(":")
    if len(parts) not in (2, 3) or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    pid = int(parts[1])
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by another user
        pass
    start = parts[2] if len(parts) == 3 else ""
    now_start = _start_ticks(pid)
    if start and now_start and now_start != start:
        return False           # the pid now belongs to another process
    return _is_running(pid) if now_start else True


def _is_running(pid: int) -> bool:
    """False for a zombie (exited, not yet reaped by its parent): it will never write again."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] != b"Z"


def stale_reason(worker: str, started_at, *, max_age_s: float = DEFAULT_MAX_AGE_S, now=None) -> str | None:
    """Why a running row of ``worker`` started at ``started_at`` is dead, or ``None`` when it may live."""
    alive = worker_alive(worker)
    if alive is False:
        return REASON_DIED
    if alive is None and started_at is not None and max_age_s is not None:
        now = now or timezone.now()
        if started_at < now - timedelta(seconds=max_age_s):
            return REASON_STALE.format(hours=round(max_age_s / 3600, 2))
    return None


def _task_workers() -> dict[int, str]:
    """Job id -> the last worker id of its running django-tasks row (empty without django_tasks_db)."""
    try:
        from django_tasks.base import TaskResultStatus
        from django_tasks_db.models import DBTaskResult
    except ImportError:
        return {}
    out = {}
    for args_kwargs, workers in DBTaskResult.objects.filter(
            status=TaskResultStatus.RUNNING, task_path__in=TASK_PATHS).values_list("args_kwargs", "worker_ids"):
        args = (args_kwargs or {}).get("args") or []
        if args and isinstance(args[0], int) and workers:
            out[args[0]] = workers[-1]
    return out


def _fail_task_rows(job_ids: list[int], reason: str) -> None:
    try:
        from django_tasks.base import TaskResultStatus
        from django_tasks_db.models import DBTaskResult
    except ImportError:
        return
    for row in DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING, task_path__in=TASK_PATHS):
        args = (row.args_kwargs or {}).get("args") or []
        if args and args[0] in job_ids:
            DBTaskResult.objects.filter(pk=row.pk, status=TaskResultStatus.RUNNING).update(
                status=TaskResultStatus.FAILED, finished_at=timezone.now(), return_value=None,
                exception_class_path="layers.services_reap.ProcessDied", traceback=reason)


def jobs_reap_stale(*, max_age_s: float | None = DEFAULT_MAX_AGE_S) -> list[int]:
    """Mark ``running`` Jobs whose owner is gone as ``failed`` with the reason; returns their ids.

    A Job run by a db_worker is judged by the worker id of its task (:func:`worker_alive`); any other
    running Job only by age (``max_age_s``; ``None``: never). The update is conditional on the row still
    being ``running``, so a job that ends meanwhile keeps its own result.
    """
    now = timezone.now()
    workers = _task_workers()
    reaped: dict[str, list[int]] = {}
    for pk, started_at, created_at in models.Job.objects.filter(status=models.Job.Status.RUNNING).values_list(
            "pk", "started_at", "created_at"):
        reason = stale_reason(workers.get(pk, ""), started_at or created_at, max_age_s=max_age_s, now=now)
        if reason and models.Job.objects.filter(pk=pk, status=models.Job.Status.RUNNING).update(
                status=models.Job.Status.FAILED, error=reason, finished_at=now):
            reaped.setdefault(reason, []).append(pk)
    for reason, pks in reaped.items():
        _fail_task_rows(pks, reason)
    return sorted(pk for pks in reaped.values() for pk in pks)
