"""The job ledger: one interface (``base.JobStore``), a backend per URL scheme.

``open_store(url)`` picks the backend from ``BACKENDS`` by the URL's scheme and opens it; the
rest of greenjobs sees only the JobStore interface.  A backend executes decisions made above it
(``greenjobs.pool.lifecycle``): which state follows, who holds a lease, when a worker is lost.
"""
from __future__ import annotations

import importlib

from greenjobs.pool.errors import ConfigurationError
from greenjobs.pool.store.base import JobStore, Pending

__all__ = ["BACKENDS", "JobStore", "Pending", "open_store", "store_for"]

#: URL scheme -> "module:class" of the backend (a plain registry: a new backend adds a line).
BACKENDS = {
    "sqlite": "greenjobs.pool.store.sqlite:SqliteStore",
    "postgresql": "greenjobs.pool.store.postgres:PostgresStore",
    "postgres": "greenjobs.pool.store.postgres:PostgresStore",
}


def backend_for(url: str) -> type:
    """The backend class for ``url``; ConfigurationError naming the known schemes otherwise."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in BACKENDS:
        raise ConfigurationError(f"greenjobs.store.url: no store backend for {scheme!r} URLs; "
                                 f"known: {', '.join(f'{s}://' for s in BACKENDS)}")
    module, _, name = BACKENDS[scheme].partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:           # a backend whose driver is an extra (postgres)
        raise ConfigurationError(f"greenjobs.store.url: the {scheme}:// store needs {exc.name or 'its driver'}, "
                                 f"which is not installed: pip install 'greenjobs[postgres]'") from None


def store_for(url: str, *, lease_seconds: float = 30.0, **options) -> JobStore:
    """The store at ``url``, not yet opened; ``options`` are the backend's own (e.g. ``synchronous``)."""
    return backend_for(url).from_url(url, lease_seconds=lease_seconds, **options)


def open_store(url: str, *, lease_seconds: float = 30.0, **options) -> JobStore:
    """The store at ``url``, opened (call from a greenlet)."""
    return store_for(url, lease_seconds=lease_seconds, **options).open()
