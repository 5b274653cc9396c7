"""Job hooks: the application's code around greenjobs' processes and jobs, named in the ini.

- ``greenjobs.setup = myapp.jobs:setup`` - called once per process that runs jobs (the server, every cpu
  worker) with the settings, before the handler modules are imported: where ``django.setup()`` belongs.  It may
  return middleware (one object or a list) to add after those of ``greenjobs.middleware``.
- ``greenjobs.middleware = myapp.jobs:CloseConnections`` - objects (a class is instantiated with the settings)
  with any of ``before_job(job)`` and ``after_job(job, error)``, called around every attempt in both pools, in
  the job's own greenlet or worker thread, like Dramatiq's middleware: ``before_job`` in order (one that raises
  fails the attempt like its handler would), ``after_job`` in reverse order with the exception the attempt
  ended with (None when it returned), even when a timeout or cancel interrupted it.

Application settings (``[app:main]`` keys outside ``greenjobs.*``) are ``settings.app``, a read-only mapping,
and reach handlers as ``current_job.settings.app["shop.price_api"]``.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

from greenjobs.pool.errors import ConfigurationError

log = logging.getLogger(__name__)


def load_object(spec: str, setting: str) -> Any:
    """``package.module:attr`` (or ``package.module.attr``) -> the object; ConfigurationError says what failed."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"{setting}: {spec!r} must be package.module:name")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigurationError(f"{setting}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise ConfigurationError(f"{setting}: {module_name!r} has no {attr!r}") from None
    return value


def app_object(settings, key: str, adapter: str, example: str) -> Any:
    """The object an ``[app:main]`` key names (``flask.app = myapp:app``), for a framework adapter's setup."""
    spec = settings.app.get(key)
    if not spec:
        raise ConfigurationError(f"{adapter}: set {key} = {example} in [app:main]")
    return load_object(spec, key)


def set_up(settings) -> "Middleware":
    """Run the ini's setup hooks (once, in this process) and build its middleware; returns the middleware."""
    extra: list = []
    for spec in settings.setup:
        hook = load_object(spec, "greenjobs.setup")
        if not callable(hook):
            raise ConfigurationError(f"greenjobs.setup: {spec!r} is not a function")
        returned = hook(settings)
        if returned is not None:
            extra.extend(returned if isinstance(returned, (list, tuple)) else [returned])
    items = []
    for spec in settings.middleware:
        value = load_object(spec, "greenjobs.middleware")
        items.append(value(settings) if isinstance(value, type) else value)
    return Middleware(items + extra)


class Middleware:
    """The middleware of this process, in order; falsy when there is none (then jobs pay nothing for it)."""

    def __init__(self, items: list):
        for item in items:
            if not (hasattr(item, "before_job") or hasattr(item, "after_job")):
                raise ConfigurationError(f"greenjobs.middleware: {item!r} has neither before_job nor after_job")
        self.items = list(items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def call(self, job, fn: Callable, args: list, kwargs: dict) -> Any:
        """``fn(*args, **kwargs)`` with every middleware around it (see the module docstring): the ``after_job``
        of each middleware whose ``before_job`` ran (or that has none) runs, in reverse order."""
        error: BaseException | None = None
        entered = []
        try:
            for item in self.items:
                before = getattr(item, "before_job", None)
                if before is not None:
                    before(job)
                entered.append(item)
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            for item in reversed(entered):
                after = getattr(item, "after_job", None)
                if after is None:
                    continue
                try:
                    after(job, error)
                except Exception:
                    log.exception("middleware %r failed after job %s; the job's outcome stands", item, job.id)


def load_handlers(settings, strict: bool = True):
    """What a process that runs jobs does first: put the ini's folder on ``sys.path`` (handler modules beside
    config.ini import as they are), run the setup hooks, then import the handler modules.  Returns (registry,
    middleware).  ``strict=False`` (cpu workers): a handler module that fails to import is recorded, not fatal."""
    import sys

    from greenjobs.pool.registry import Registry
    here = getattr(settings, "here", None)
    if here and here not in sys.path:
        sys.path.append(here)
    middleware = set_up(settings)
    return Registry().load(settings.handlers, strict=strict), middleware
