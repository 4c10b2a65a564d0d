# gisportal: two commands on a fresh Debian 12 machine (as root, or with sudo).
#   make demo   install, migrate, load the Zhangjiakou demo, serve http://127.0.0.1:8000
#   make test   install (+ PostGIS, Chromium), run the whole suite on SpatiaLite and on PostGIS
.PHONY: demo test install install-test migrate load-demo serve bench clean

PY := .venv/bin/python
export GISPORTAL_DEV_KEY ?= 1
HOST ?= 127.0.0.1
PORT ?= 8000

demo: install migrate load-demo serve

install:
	scripts/bootstrap.sh runtime

install-test:
	scripts/bootstrap.sh test

migrate:
	$(PY) manage.py compilemessages --ignore=.venv -v 0
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py collectstatic --noinput -v 0

load-demo:
	$(PY) manage.py load_demo
	$(PY) manage.py create_demo_users

serve:
	HOST=$(HOST) PORT=$(PORT) scripts/serve.sh

test: install-test
	scripts/test.sh

clean:
	rm -rf var/static var/test_* .pytest_cache
