"""A handler module that imports in the (patched) server but not in a CPU worker process,
as when a worker machine lacks one of the handler module's dependencies."""
from gevent import monkey

from greenjobs import handler

if not monkey.is_module_patched("socket"):
    raise ImportError("this module only imports in the server (a missing dependency, say)")


@handler("e2e.server_only", kind="cpu")
def server_only():
    return "never runs in a worker"
