"""greenjobs: a cooperative-concurrency job server (Pyramid under gevent; io jobs as greenlets,
cpu jobs in worker processes).

The distribution installs three packages under this name, kept in the repository's top-level
folders: ``greenjobs.server`` (``server/``: the Pyramid app and its runner), ``greenjobs.handlers``
(``handlers/``: ``@handler`` and the built-ins) and ``greenjobs.pool`` (``pool/``: the engine).
Imports flow ``server -> pool <- handlers``.  What a handler author needs is here::

    from greenjobs import handler, current_job, Retry

This module must stay light: ``pserve`` imports it before the server runner monkey-patches.
"""
from greenjobs.handlers.registry import handler
from greenjobs.pool.context import current_job
from greenjobs.pool.errors import Retry

__all__ = ["Retry", "current_job", "handler"]
