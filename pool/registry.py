"""The handler registry: name -> Handler, filled from the modules named in ``greenjobs.handlers``.

``@handler(...)`` (greenjobs.handlers.registry) only marks a function; :meth:`Registry.load` imports
the listed modules and registers what they mark.  Names are never derived from module paths, because
a CPU job is looked up by name in another process.  The registry lives in ``pool`` because the
server and the CPU workers both load it, and ``pool`` imports no other greenjobs package.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from greenjobs.pool.errors import ConfigurationError, HandlerNotFound

__all__ = ["Handler", "Registry", "MARK", "NAME_RE"]

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
MARK = "__greenjobs_handler__"      #: the attribute @handler sets on a function
INTERNAL = "greenjobs."             #: names of the server's own handlers (webhook deliveries): never listed
#: Module names of earlier releases (before the ``greenjobs.*`` import names), still accepted in ini files.
RENAMED = {"handlers.builtin": "greenjobs.handlers.builtin"}


@dataclass(frozen=True)
class Handler:
    """A registered handler: ``kind`` picks the executor (io: greenlet pool; cpu: worker processes)."""

    name: str
    fn: Callable
    kind: str = "io"
    timeout: float | None = 60.0
    max_retries: int = 0
    queue: str = "cpu"
    retry_on: tuple[type[BaseException], ...] = ()
    validate: Callable[..., None] | None = None      # (args, kwargs) or (args, kwargs, settings)
    doc: str = ""
    rate_limit: str | None = None       # "N/s|m|h" as declared (greenjobs.pool.flow)
    rate_every: float | None = None     # the same as seconds between starts
    rate_key: str | None = None         # a template over the kwargs: one rate bucket per rendered key
    max_running: int | None = None      # at most this many running at once in the cluster
    auto: bool = False                  # kind="auto": an io handler rerouted to the cpu workers at its first block
    rerouted: str | None = None         # why this io handler now runs in the cpu workers (greenjobs.pool.io.hubguard)

    @functools.cached_property
    def signature(self) -> inspect.Signature | None:
        """The handler function's signature (checked against a job's args and kwargs at submit), or None."""
        try:
            return inspect.signature(self.fn)
        except (TypeError, ValueError):
            return None

    @functools.cached_property
    def validate_takes_settings(self) -> bool:
        """Whether ``validate`` takes a third argument, the typed settings (e.g. to check an allow-list)."""
        try:
            return self.validate is not None and len(inspect.signature(self.validate).parameters) >= 3
        except (TypeError, ValueError):
            return False

    @property
    def where(self) -> str:
        """``file:line`` of the function, so a duplicate name can point at both definitions."""
        try:
            return f"{inspect.getsourcefile(self.fn)}:{inspect.getsourcelines(self.fn)[1]}"
        except (OSError, TypeError):
            return repr(self.fn)

    def describe(self) -> dict:
        """The handler's public fields, as GET /handlers lists them."""
        return {"name": self.name, "kind": self.kind, "declared_kind": "auto" if self.auto else
                ("io" if self.rerouted is not None else self.kind), "rerouted": self.rerouted, "timeout": self.timeout,
                "max_retries": self.max_retries, "queue": self.queue if self.kind == "cpu" else None,
                "rate_limit": self.rate_limit, "rate_key": self.rate_key, "max_running": self.max_running,
                "doc": self.doc}


class Registry:
    """Name -> Handler.  Two handlers with one name are a start-up error naming both places."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self.import_errors: dict[str, str] = {}    # module -> why it failed (non-strict loads only)

    def add(self, h: Handler) -> None:
        """Register ``h``; the same function again is a no-op, another under the same name a ConfigurationError."""
        old = self._handlers.get(h.name)
        if old is not None and old.fn is not h.fn:
            raise ConfigurationError(f"two handlers are named {h.name!r}: {old.where} and {h.where}")
        self._handlers[h.name] = h

    def load(self, modules: Iterable[str], strict: bool = True) -> "Registry":
        """Import each module and register every function marked with ``@handler``.

        ``strict=False`` (CPU workers) records a module that fails to import in ``import_errors``
        instead of raising, so the worker lives on and fails only that module's jobs, saying why.
        """
        for modname in modules:
            if modname in RENAMED:
                log.warning("greenjobs.handlers: %r is now %r; please update the ini file", modname, RENAMED[modname])
                modname = RENAMED[modname]
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                message = f"greenjobs.handlers: cannot import {modname!r}: {type(exc).__name__}: {exc}"
                if strict:
                    raise ConfigurationError(message) from exc
                self.import_errors[modname] = message
                continue
            for value in list(vars(module).values()):
                try:
                    mark = getattr(value, "__dict__", {}).get(MARK) if callable(value) else None
                except Exception:       # a proxy that resolves on access (flask's current_app, g) outside its context
                    continue
                if isinstance(mark, Handler):
                    self.add(mark)
        return self

    def get(self, name: str) -> Handler:
        """The handler called ``name``; HandlerNotFound (listing the known names) if there is none."""
        try:
            return self._handlers[name]
        except KeyError:
            raise HandlerNotFound(name, self.names()) from None

    def find(self, name: str) -> Handler | None:
        """The handler named ``name``, or None (a job stored by a server that had a handler this one lacks)."""
        return self._handlers.get(name)

    def reroute(self, name: str, reason: str, queue: str) -> Handler:
        """From now on run io handler ``name``'s new jobs in the cpu worker processes (consuming ``queue``)."""
        handler = dataclasses.replace(self._handlers[name], kind="cpu", queue=queue, rerouted=reason)
        self._handlers[name] = handler
        return handler

    def names(self) -> list[str]:
        """The names a client may submit, sorted (the server's own ``greenjobs.*`` handlers are not listed)."""
        return sorted(n for n in self._handlers if not n.startswith(INTERNAL))

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def __iter__(self):
        """The handlers a client may submit, by name (not the server's own ``greenjobs.*`` ones)."""
        return iter(sorted((h for h in self._handlers.values() if not h.name.startswith(INTERNAL)),
                           key=lambda h: h.name))
