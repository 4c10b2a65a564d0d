"""manage.py reap_jobs: mark running Jobs and import runs whose process is gone as failed.

Run before starting ``db_worker`` (scripts/serve.sh) and whenever the jobs list looks stuck; a live job is
left alone. See :mod:`layers.services_reap`.
"""
from django.core.management.base import BaseCommand

from importers.services import runs_reap_stale
from layers.services_reap import DEFAULT_MAX_AGE_S, jobs_reap_stale


class Command(BaseCommand):
    help = "Mark running jobs and import runs whose process died (or that are older than --max-age-hours) failed."

    def add_arguments(self, parser):
        parser.add_argument("--max-age-hours", type=float, default=DEFAULT_MAX_AGE_S / 3600,
                            help="fail a running row whose process cannot be checked (another host, a web "
                                 "request) once it is this old; 0: only rows whose process is known dead "
                                 "(default: %(default)s)")

    def handle(self, *args, max_age_hours, **o):
        max_age_s = max_age_hours * 3600 if max_age_hours > 0 else None
        jobs = jobs_reap_stale(max_age_s=max_age_s)
        runs = runs_reap_stale(max_age_s=max_age_s)
        self.stdout.write(f"reap_jobs: {len(jobs)} job(s) failed {jobs}, {len(runs)} import run(s) failed {runs}")
