"""Job handlers: the registry, the ``@handler`` decorator and the built-in handlers.

Handler modules import only this package and ``pool``'s job model, so CPU worker processes can
load them without Pyramid.
"""
from handlers.registry import Handler, Registry, Retry, handler
from pool.context import current_job

__all__ = ["Handler", "Registry", "Retry", "current_job", "handler"]
