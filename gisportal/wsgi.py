"""WSGI entry point (gunicorn gisportal.wsgi)."""
import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gisportal.settings")
application = get_wsgi_application()


def _freeze_startup_heap() -> None:
    """Import every view now (the URLconf: Django, DRF, numpy, scipy, shapely, ...) and move the start-up
    heap (~240,000 objects) to the collector's permanent generation: a full collection otherwise walks all
    of it (~200 ms of CPU, inside whichever request triggers it: the load benchmark's p99 spikes). Imports
    only, no database access; gunicorn imports this module in each worker, so each freezes its own heap."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (the property imports the URLconf and its views)
    gc.collect()
    gc.freeze()


_freeze_startup_heap()
