#!/usr/bin/env bash
# The whole suite: on SpatiaLite (with the pure analysis tests and doctests), then on a private PostGIS.
set -euo pipefail
cd "$(dirname "$0")/.."
export GISPORTAL_DEV_KEY=1 DJANGO_DEBUG=0 PYTHONDONTWRITEBYTECODE=1
py=.venv/bin/python
$py manage.py compilemessages --ignore=.venv -v 0

echo "=== tests on SpatiaLite ==="
unset DATABASE_URL
$py -m pytest -q --doctest-modules layers/analysis tests "$@"

echo "=== tests on PostGIS ==="
pgdir=$(mktemp -d /tmp/gisportal-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir"' EXIT
DATABASE_URL=$(scripts/pg.sh start "$pgdir")
export DATABASE_URL
$py -m pytest -q tests --ignore=tests/analysis -m "not spatialite_only" "$@"
