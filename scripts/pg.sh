#!/usr/bin/env bash
# A private PostgreSQL 15 + PostGIS cluster on a loopback port, for the test suite.
#   scripts/pg.sh start DIR   -> prints DATABASE_URL=... ; scripts/pg.sh stop DIR
set -euo pipefail
cmd=$1; dir=$2
bin=/usr/lib/postgresql/15/bin
runas() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
case "$cmd" in
start)
  mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  runas "$bin/initdb -D '$dir/data' -U postgres -A trust --encoding=UTF8 --locale=C.UTF-8" >/dev/null
  runas "$bin/pg_ctl -D '$dir/data' -l '$dir/log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off\" start" >/dev/null
  psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -q)
  "${psql[@]}" -d template1 -c "CREATE EXTENSION IF NOT EXISTS postgis;"
  "${psql[@]}" -d postgres -c "CREATE ROLE gisportal LOGIN SUPERUSER PASSWORD '$pw';" -c "CREATE DATABASE gisportal OWNER gisportal;"
  echo "postgis://gisportal:$pw@127.0.0.1:$port/gisportal"
  ;;
stop)
  [ -d "$dir/data" ] && runas "$bin/pg_ctl -D '$dir/data' -m fast -w stop" >/dev/null || true
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2;;
esac
