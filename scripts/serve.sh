#!/usr/bin/env bash
# Serve the portal (gunicorn, static files by whitenoise) with the background-job worker beside it.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
host=${HOST:-127.0.0.1}; port=${PORT:-8000}
# Jobs whose process died (a killed worker, a reboot) are marked failed with the reason before a new worker
# starts; the worker's id names its process (host:pid:start) so the next reap can tell whether it is alive.
.venv/bin/python manage.py reap_jobs
bash -c 'exec "$0" manage.py db_worker --worker-id "$(hostname | cut -c1-40):$$:$(cut -d" " -f22 /proc/$$/stat)"' \
  .venv/bin/python >var/worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null || true' EXIT INT TERM
echo "gisportal: http://$host:$port/   (background jobs: var/worker.log; Ctrl-C to stop)"
.venv/bin/gunicorn gisportal.wsgi --bind "$host:$port" --workers 2 --threads 4 --timeout 300 \
  --access-logfile - --error-logfile -
