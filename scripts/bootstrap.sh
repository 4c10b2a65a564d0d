#!/usr/bin/env bash
# Install what gisportal needs on Debian 12, idempotently: apt packages, then .venv from an interpreter
# whose sqlite3 can load extensions (SpatiaLite), then the pinned requirements.
#   scripts/bootstrap.sh runtime   # make demo
#   scripts/bootstrap.sh test      # make test: + PostGIS, Chromium, test requirements
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"

apt_runtime=(libgdal32 libsqlite3-mod-spatialite libgeos-c1v5 libproj25 python3 python3-venv gettext
             fonts-wqy-microhei)
apt_test=(postgresql-15 postgresql-15-postgis-3 chromium poppler-utils)
pkgs=("${apt_runtime[@]}")
[ "$profile" = test ] && pkgs+=("${apt_test[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing apt packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# SpatiaLite is loaded as an SQLite extension: pyenv/python.org builds often lack enable_load_extension.
can_load() { "$1" -c 'import sqlite3, sys; c = sqlite3.connect(":memory:"); c.enable_load_extension(True); sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)' >/dev/null 2>&1; }
if [ -x .venv/bin/python ] && ! can_load .venv/bin/python; then
  echo "bootstrap: .venv's python cannot load SQLite extensions; rebuilding it"; rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  py=
  for cand in "${GISPORTAL_PYTHON:-}" /usr/bin/python3 /usr/bin/python3.11 /usr/local/bin/python3 "$(command -v python3 || true)"; do
    [ -n "$cand" ] && [ -x "$cand" ] && can_load "$cand" && { py=$cand; break; }
  done
  if [ -z "$py" ]; then
    echo "bootstrap: no Python >= 3.10 whose sqlite3 can load extensions (needed for SpatiaLite)." >&2
    echo "  On Debian 12: apt-get install python3 python3-venv   (Debian's /usr/bin/python3 can)," >&2
    echo "  or point GISPORTAL_PYTHON at such an interpreter." >&2
    exit 1
  fi
  echo "bootstrap: building .venv from $py"
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

reqs=(requirements.txt)
[ "$profile" = test ] && reqs+=(requirements-dev.txt)
stamp=".venv/.installed-$(cat "${reqs[@]}" | sha256sum | cut -c1-16)-$profile"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing ${reqs[*]}"
  args=(); for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/python -m pip install -q "${args[@]}"
  rm -f .venv/.installed-*; touch "$stamp"
  [ "$profile" = test ] && touch ".venv/.installed-$(cat requirements.txt | sha256sum | cut -c1-16)-runtime"
fi
echo "bootstrap: ready ($profile, $(.venv/bin/python -c 'import django, sqlite3; print("Django", django.get_version(), "SQLite", sqlite3.sqlite_version)'))"
