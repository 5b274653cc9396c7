"""Job handlers: the registry, the ``@handler`` decorator and the built-in handlers.

Handler modules import only this package and ``pool``'s job model, so CPU worker processes can
load them without Pyramid.
"""
from handlers.registry import Handler, Registry, Retry, handler  # noqa: F401
from pool.context import current_job  # noqa: F401
