"""The handler registry: declared without side effects, registered by explicit stable names.

``@handler(...)`` only marks a function; :meth:`Registry.load` imports the modules named in
``greenjobs.handlers`` and registers what they mark.  Names are never derived from module paths,
because a CPU job is looked up by name in another process.
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from pool.errors import ConfigurationError, HandlerNotFound, Retry

__all__ = ["Handler", "Registry", "Retry", "handler"]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
_MARK = "__greenjobs_handler__"


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
    validate: Callable[[list, dict], None] | None = None
    doc: str = ""

    @property
    def where(self) -> str:
        try:
            return f"{inspect.getsourcefile(self.fn)}:{inspect.getsourcelines(self.fn)[1]}"
        except (OSError, TypeError):
            return repr(self.fn)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "timeout": self.timeout,
                "max_retries": self.max_retries, "queue": self.queue if self.kind == "cpu" else None,
                "doc": self.doc}


def handler(name: str, *, kind: str = "io", timeout: float | None = 60.0, max_retries: int = 0,
            queue: str = "cpu", retry_on: Iterable[type[BaseException]] = (),
            validate: Callable[[list, dict], None] | None = None) -> Callable[[Callable], Callable]:
    """Declare a job handler.  Nothing is registered until the module is loaded by a Registry.

    ``timeout`` (seconds) and ``max_retries`` are defaults a job may override; ``queue`` routes
    cpu jobs to the workers consuming that queue; ``validate(args, kwargs)`` runs at submit time
    and raises ValueError("kwargs.x: what to fix") so bad params get a 422 instead of a failed job.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(f"handler name {name!r} must match {NAME_RE.pattern}")
    if kind not in ("io", "cpu"):
        raise ConfigurationError(f"handler {name!r}: kind must be 'io' or 'cpu', not {kind!r}")

    def mark(fn: Callable) -> Callable:
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0]
        setattr(fn, _MARK, Handler(name, fn, kind, timeout, max_retries, queue, tuple(retry_on), validate, doc))
        return fn

    return mark


class Registry:
    """Name -> Handler.  Two handlers with one name are a start-up error naming both places."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self.import_errors: dict[str, str] = {}    # module -> why it failed (non-strict loads only)

    def add(self, h: Handler) -> None:
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
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                message = f"greenjobs.handlers: cannot import {modname!r}: {type(exc).__name__}: {exc}"
                if strict:
                    raise ConfigurationError(message) from exc
                self.import_errors[modname] = message
                continue
            for value in vars(module).values():
                mark = getattr(value, "__dict__", {}).get(_MARK) if callable(value) else None
                if isinstance(mark, Handler):
                    self.add(mark)
        return self

    def get(self, name: str) -> Handler:
        try:
            return self._handlers[name]
        except KeyError:
            raise HandlerNotFound(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def __iter__(self):
        return iter(sorted(self._handlers.values(), key=lambda h: h.name))
