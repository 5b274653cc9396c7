"""Build the Pyramid app: settings parsed and validated once, handlers loaded, runtime started.

Importing this module imports Pyramid, so it must come after monkey-patching (server/app.py).
"""
from __future__ import annotations

import logging
import os
import sys

from pyramid.config import Configurator
from pyramid.response import Response

from greenjobs.pool.hooks import load_handlers
from greenjobs.pool.observe import signals
from greenjobs.pool.runtime import Runtime
from greenjobs.server import settings as settings_module
from greenjobs.server.lifecycle import ServerStopping

log = logging.getLogger(__name__)


#: Pyramid's command-line tools load the app to look at it (routes, views, a shell): they must never run jobs,
#: adopt a server's orphans, fire its schedules or start cpu workers on its ledger.
TOOLS = frozenset(("pshell", "proutes", "pviews", "prequest", "ptweens", "pdistreport"))


def loaded_by_tool() -> bool:
    """Whether this process is one of Pyramid's tools (``pshell config.ini``, ``python -m pyramid.scripts.proutes``),
    or was told not to run jobs (``GREENJOBS_RUNTIME=off``)."""
    name = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "")
    return name.removesuffix(".py") in TOOLS or os.environ.get("GREENJOBS_RUNTIME", "").lower() == "off"


def make_app(global_config, **raw_settings):
    """Build the WSGI app and start its runtime (not under Pyramid's tools: see TOOLS); raises ConfigurationError
    naming every bad key."""
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
    if loaded_by_tool():
        log.info("loaded by %s: the job runtime is not started (no job runs here, no worker starts); in pshell,"
                 " `jobs` reads the ledger", os.path.basename(sys.argv[0] or "a tool"))
    else:
        runtime.start()
    return app


class LedgerReader:
    """``jobs`` in ``pshell config.ini``: read the ledger (``jobs.get(id)``, ``jobs.list(state=, handler=,
    limit=)``, ``jobs.counts()``) without running anything; the store opens at the first read."""

    def __init__(self, runtime):
        self._runtime = runtime
        self._open = False

    def _store(self):
        if not self._open:
            self._runtime.store.open()
            self._open = True
        return self._runtime.store

    def get(self, job_id: str):
        return self._store().get(job_id)

    def list(self, state: str | None = None, handler: str | None = None, limit: int = 20):
        return self._store().list(state=state, handler=handler, limit=limit)[0]

    def counts(self) -> list[tuple[str, str, int]]:
        return self._store().active_counts()

    def __repr__(self) -> str:
        return f"<greenjobs ledger {self._runtime.store.where}: jobs.get(id), jobs.list(state=, handler=), jobs.counts()>"


def pshell_setup(env) -> None:
    """``[pshell] setup = greenjobs.server.wsgi:pshell_setup``: ``jobs``, a read-only view of the ledger."""
    runtime = env["registry"].greenjobs_runtime
    env["jobs"] = LedgerReader(runtime)
    env["greenjobs_settings"] = env["registry"].greenjobs_settings


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
    config.scan("greenjobs.server.cluster")
    config.scan("greenjobs.server.streams")
    config.scan("greenjobs.server.openapi")
    config.include("greenjobs.server.dashboard")
