"""The dashboard's page and assets.

The page is ``index.html`` (kept outside ``static/``, so it is only ever served with its headers)
with its two asset URLs filled in; the assets carry a hash of
their content in the query string, so they are cached for a year and a new release is fetched at
once.  The page itself is never cached and is sent with a strict Content-Security-Policy: scripts
and styles only from this origin, no inline code, so even a job value that slipped past the
script's escaping could not run.  Everything a job holds is untrusted; the script builds the DOM
with ``textContent`` only.
"""
from __future__ import annotations

import hashlib
import html
from importlib import resources

from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.static import QueryStringConstantCacheBuster
from pyramid.view import view_config

ASSETS = "greenjobs.server.dashboard:static/"
#: One year: the URLs change with the content (see the cache buster).
ASSET_MAX_AGE = 365 * 86400
CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _static_files():
    return resources.files("greenjobs.server.dashboard") / "static"


def _content_hash() -> str:
    digest = hashlib.sha256()
    for entry in sorted(_static_files().iterdir(), key=lambda e: e.name):
        if entry.is_file():
            digest.update(entry.name.encode() + b"\0" + entry.read_bytes())
    return digest.hexdigest()[:12]


@view_config(route_name="dashboard", request_method=("GET", "HEAD"), permission=NO_PERMISSION_REQUIRED)
def dashboard(request):
    """The single page; the script asks GET /session whether to show the sign-in form."""
    registry = request.registry
    page = getattr(registry, "greenjobs_dashboard_page", None)
    if page is None:        # built once: the asset paths do not change while the server runs
        template = (resources.files("greenjobs.server.dashboard") / "index.html").read_text(encoding="utf-8")
        for name in ("app.js", "style.css"):
            template = template.replace("{{%s}}" % name, html.escape(request.static_path(ASSETS + name)))
        page = registry.greenjobs_dashboard_page = template.encode("utf-8")
    response = Response(body=page, content_type="text/html", charset="utf-8")
    response.headers.update(HEADERS)
    return response


def includeme(config) -> None:
    """Add the dashboard route and its public static assets, cache-busted by a hash of their content."""
    config.add_route("dashboard", "/")
    config.add_static_view("dashboard/static", ASSETS, cache_max_age=ASSET_MAX_AGE,
                           permission=NO_PERMISSION_REQUIRED)
    config.add_cache_buster(ASSETS, QueryStringConstantCacheBuster(_content_hash()))
    config.scan(__name__)
