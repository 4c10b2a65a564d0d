"""Security middleware (issue 9): Content-Security-Policy per route, and 503 + Retry-After when the
database is unreachable.

Add to ``settings.MIDDLEWARE``::

    "gisportal.security.DatabaseUnavailableMiddleware",   # first: outermost, sees every 500 it caused
    ...                                                    # (the existing list)
    "gisportal.security.ContentSecurityPolicyMiddleware",  # last: after XFrameOptionsMiddleware

CSP. Our own templates carry no inline script, so every page gets ``script-src 'self'`` (inline
``style`` attributes remain, hence ``style-src 'self' 'unsafe-inline'``; styles cannot run code).
The folium map pages are the exception: folium writes the whole map as inline ``<script>`` blocks. A
nonce or hash added after rendering would bless an injected ``<script>`` along with folium's, so it
would protect nothing; instead those routes (:data:`MAP_ROUTES`) get ``'unsafe-inline'`` for scripts,
scoped to them only, and rely on escaping every attribute value before folium sees it
(``gisportal.mapping.escape_popup``; tests/security/test_hostile.py checks it). The pages that embed a
map with ``<iframe srcdoc>`` (:data:`SRCDOC_ROUTES`) get the same policy, because a srcdoc document
inherits its parent's CSP. Map routes may be framed by our own pages (``frame-ancestors 'self'``,
``X-Frame-Options: SAMEORIGIN``); every other page may not be framed at all (``frame-ancestors 'none'``;
with ``X_FRAME_OPTIONS = "DENY"`` in settings, which ``check --deploy`` asks for).

Database down. A view (or any middleware) that raises ``OperationalError``/``InterfaceError`` gets a
503 page with ``Retry-After`` instead of a 500; the next request opens a new connection, so the
site recovers by itself when the database is back (``CONN_MAX_AGE`` connections that failed are
dropped by Django's ``close_old_connections`` at the end of the request).
"""
from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import got_request_exception
from django.db.utils import InterfaceError, OperationalError
from django.http import HttpResponse
from django.utils.translation import gettext as _

log = logging.getLogger(__name__)

#: URL names whose responses are folium map documents (inline scripts; framed by our pages).
MAP_ROUTES = frozenset({"map_frame", "review_map", "coverage_map", "siting_map"})
#: URL names whose POST responses embed a folium map through ``<iframe srcdoc>`` (which inherits the
#: page's CSP): the unsaved review result. Their GET pages keep the strict policy.
SRCDOC_ROUTES = frozenset({"review", "review_resubmit"})
#: Seconds a client should wait before retrying when the database is unreachable.
RETRY_AFTER_S = 30

_DB_ERRORS = (OperationalError, InterfaceError)


def _tile_hosts() -> list[str]:
    """Origins of the configured basemap's tiles (img-src); none when offline (the default)."""
    kind = getattr(settings, "GISPORTAL_BASEMAP", "none")
    if isinstance(kind, dict):   # {"kind": ..., "url": ...}: the host of its url
        parts = urlsplit(str(kind.get("url") or ""))
        if parts.scheme in ("http", "https") and parts.netloc:
            return [f"{parts.scheme}://{parts.netloc}"]
        kind = str(kind.get("kind") or "none")
    if kind in ("gaode", "amap", "autonavi"):
        return ["https://*.is.autonavi.com"]
    if kind == "osm":
        return ["https://tile.openstreetmap.org"]
    if kind == "tianditu":
        return ["https://*.tianditu.gov.cn"]
    if kind == "local":
        url = getattr(settings, "GISPORTAL_LOCAL_TILES", "") or ""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            return [f"{parts.scheme}://{parts.netloc}"]
    return []


def csp_for(url_name: str | None, method: str = "GET") -> str:
    """The Content-Security-Policy header value for a route (by URL name and request method)."""
    is_map = url_name in MAP_ROUTES
    inline_scripts = is_map or (url_name in SRCDOC_ROUTES and method == "POST")
    directives = [
        "default-src 'self'",
        "script-src 'self'" + (" 'unsafe-inline'" if inline_scripts else ""),
        "style-src 'self' 'unsafe-inline'",
        "img-src " + " ".join(["'self'", "data:", "blob:", *_tile_hosts()]),
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors " + ("'self'" if is_map else "'none'"),
    ]
    return "; ".join(directives)


class ContentSecurityPolicyMiddleware:
    """Set Content-Security-Policy (and X-Frame-Options for the map routes) on HTML responses."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        name = match.url_name if match is not None else None
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = csp_for(name, request.method)
        if name in MAP_ROUTES:
            # runs before XFrameOptionsMiddleware (which leaves a set header alone): our pages frame maps
            response["X-Frame-Options"] = "SAMEORIGIN"
        return response


def unavailable_response() -> HttpResponse:
    body = _("数据库暂时无法连接，请稍后重试。")
    resp = HttpResponse(f"<!doctype html><meta charset=utf-8><title>503</title><p>{body}</p>",
                        status=503, content_type="text/html; charset=utf-8")
    resp["Retry-After"] = str(RETRY_AFTER_S)
    resp["Cache-Control"] = "no-store"
    return resp


def _mark_db_failure(sender, request=None, **kwargs):
    """got_request_exception receiver: remember that the 500 about to be built was a database outage."""
    exc = sys.exc_info()[1]
    if request is not None and isinstance(exc, _DB_ERRORS):
        request._gisportal_db_down = True


got_request_exception.connect(_mark_db_failure, dispatch_uid="gisportal.security.db_down")


class DatabaseUnavailableMiddleware:
    """503 + Retry-After (not 500) when the database cannot be reached.

    ``process_exception`` covers views; for exceptions raised in other middleware (a session read,
    say) Django has already built the 500 when control returns here, so a ``got_request_exception``
    receiver marks the request and ``__call__`` swaps the response. Put this middleware first.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            response = self.get_response(request)
        except _DB_ERRORS as exc:  # only when nothing inside converted it (e.g. DEBUG_PROPAGATE_EXCEPTIONS)
            log.error("database unavailable: %s", exc)
            return unavailable_response()
        if response.status_code == 500 and getattr(request, "_gisportal_db_down", False):
            return unavailable_response()
        return response

    def process_exception(self, request, exception):
        if isinstance(exception, _DB_ERRORS):
            log.error("database unavailable during %s %s: %s", request.method, request.path, exception)
            return unavailable_response()
        return None
