"""Build the Pyramid app: settings parsed and validated once, handlers loaded, runtime started.

Importing this module imports Pyramid, so it must come after monkey-patching (server/app.py).
"""
from __future__ import annotations

import logging
import os

from pyramid.config import Configurator
from pyramid.response import Response

from greenjobs.pool.hooks import load_handlers
from greenjobs.pool.observe import signals
from greenjobs.pool.runtime import Runtime
from greenjobs.server import settings as settings_module
from greenjobs.server.lifecycle import ServerStopping

log = logging.getLogger(__name__)


def make_app(global_config, **raw_settings):
    """Build the WSGI app and start its runtime; raises ConfigurationError naming every bad key."""
    here = global_config.get("here") or os.getcwd()
    settings = settings_module.load(raw_settings, here)
    registry, middleware = load_handlers(settings)
    signals.connect_listed(settings.signals)
    with Configurator(settings=raw_settings) as config:
        config.registry.greenjobs_settings = settings
        config.registry.greenjobs_handlers = registry
        config.registry.greenjobs_global_config = global_config   # greenjobs.server.security reads the bind address
        config.include(includeme)
        runtime = Runtime(settings, registry, ini=global_config.get("__file__"), middleware=middleware)
        config.registry.greenjobs_runtime = runtime
        config.add_subscriber(lambda event: runtime.shutdown(event.grace), ServerStopping)
        config.include("greenjobs.server.metrics")        # needs the runtime
        app = config.make_wsgi_app()
    runtime.start()
    return app


class RelativeLocationResponse(Response):
    """A response whose Location stays as the view set it (``/jobs/{id}``): WebOb would make it absolute
    from the request's Host header, which a client chooses (``Host: evil.example``)."""

    def _abs_headerlist(self, environ):
        return list(self.headerlist)


def includeme(config) -> None:
    """The app's routes, security, error views, views, streams, OpenAPI and dashboard."""
    config.include("greenjobs.server.guard")
    config.set_response_factory(lambda request: RelativeLocationResponse())
    config.include("greenjobs.server.routes")
    config.include("greenjobs.server.security")
    config.include("greenjobs.server.problems")
    config.scan("greenjobs.server.views")
    config.scan("greenjobs.server.schedules")
    config.scan("greenjobs.server.workflows")
    config.scan("greenjobs.server.streams")
    config.scan("greenjobs.server.openapi")
    config.include("greenjobs.server.dashboard")
