"""Build the Pyramid app: settings parsed and validated once, handlers loaded, runtime started.

Importing this module imports Pyramid, so it must come after monkey-patching (server/app.py).
"""
from __future__ import annotations

import logging
import os

from pyramid.config import Configurator

from handlers.registry import Registry
from pool import signals
from pool.runtime import Runtime
from server import settings as settings_module
from server.lifecycle import ServerStopping

log = logging.getLogger(__name__)


def make_app(global_config, **raw_settings):
    """Build the WSGI app and start its runtime; raises ConfigurationError naming every bad key."""
    here = global_config.get("here") or os.getcwd()
    settings = settings_module.load(raw_settings, here)
    registry = Registry().load(settings.handlers)
    signals.connect_listed(settings.signals)
    with Configurator(settings=raw_settings) as config:
        config.registry.greenjobs_settings = settings
        config.registry.greenjobs_handlers = registry
        config.registry.greenjobs_global_config = global_config   # server.security reads the bind address
        config.include(includeme)
        runtime = Runtime(settings, registry, ini=global_config.get("__file__"))
        config.registry.greenjobs_runtime = runtime
        config.add_subscriber(lambda event: runtime.shutdown(event.grace), ServerStopping)
        config.include("server.metrics")        # needs the runtime
        app = config.make_wsgi_app()
    runtime.start()
    return app


def includeme(config) -> None:
    config.include("server.routes")
    config.include("server.security")
    config.include("server.problems")
    config.scan("server.views")
    config.scan("server.streams")
    config.scan("server.openapi")
    config.include("server.dashboard")
