"""Job handlers: the ``@handler`` decorator and the built-in handlers (``greenjobs.handlers.builtin``).

Handler modules import only this package and ``greenjobs.pool``'s job model, so CPU worker
processes load them without Pyramid.  Application code usually writes
``from greenjobs import handler, current_job``.
"""
from greenjobs.handlers.registry import Handler, Registry, Retry, handler
from greenjobs.pool.context import current_job

__all__ = ["Handler", "Registry", "Retry", "current_job", "handler"]
