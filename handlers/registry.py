"""``@handler``: how a handler module declares its jobs, without side effects.

The decorator only marks a function; the registry (``greenjobs.pool.registry``) imports the modules
listed in ``greenjobs.handlers`` and registers what they mark, in the server and in every CPU worker.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

from greenjobs.pool.errors import ConfigurationError, Retry
from greenjobs.pool.flow import handler_rules
from greenjobs.pool.job import KINDS
from greenjobs.pool.registry import MARK, NAME_RE, Handler, Registry

__all__ = ["Handler", "Registry", "Retry", "handler"]


def handler(name: str, *, kind: str = "io", timeout: float | None = 60.0, max_retries: int = 0,
            queue: str = "cpu", retry_on: Iterable[type[BaseException]] = (),
            validate: Callable[[list, dict], None] | None = None, rate_limit: str | None = None,
            rate_key: str | None = None, max_running: int | None = None) -> Callable[[Callable], Callable]:
    """Declare a job handler.  Nothing is registered until the module is loaded by a Registry.

    ``timeout`` (seconds) and ``max_retries`` are defaults a job may override; ``queue`` routes
    cpu jobs to the workers consuming that queue; ``validate(args, kwargs)`` runs at submit time
    and raises ValueError("kwargs.x: what to fix") so bad params get a 422 instead of a failed job.
    ``rate_limit="N/s|m|h"`` spaces the starts of its jobs across the cluster (a job may ask for a lower
    rate), per rendered ``rate_key`` (a template over the kwargs: ``"{host}"``, ``"{url.host}"``);
    ``max_running=N`` lets at most N run at once across the cluster (greenjobs.pool.flow).
    ``kind="auto"``: an io handler that moves to the cpu worker processes the first time one of its jobs
    blocks the event loop (an io handler does after ``greenjobs.hub.reroute_after`` blocks).
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(f"handler name {name!r} must match {NAME_RE.pattern}")
    if kind not in (*KINDS, "auto"):
        raise ConfigurationError(f"handler {name!r}: kind must be 'io', 'cpu' or 'auto', not {kind!r}")

    every, template, max_running = handler_rules(name, rate_limit, rate_key, max_running)
    if template is not None and every is None:
        raise ConfigurationError(f"handler {name!r}: rate_key needs a rate_limit")

    def mark(fn: Callable) -> Callable:
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0]
        setattr(fn, MARK, Handler(name, fn, "io" if kind == "auto" else kind, timeout, max_retries, queue,
                                  tuple(retry_on), validate, doc, rate_limit, every, template, max_running,
                                  auto=kind == "auto"))
        return fn

    return mark
