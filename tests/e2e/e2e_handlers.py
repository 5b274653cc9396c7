"""Handlers used only by the e2e tests: ``greenjobs.handlers = greenjobs.handlers.builtin tests.e2e.e2e_handlers``."""
from __future__ import annotations

from greenjobs import handler
from greenjobs.pool.context import current_job


@handler("e2e.whoami")
def whoami(pause=0.0, **kwargs):
    """Read current_job, yield to the hub for ``pause`` s (other jobs run), read it again."""
    import gevent
    before = {"id": current_job.id, "kwargs": dict(current_job.kwargs), "attempt": current_job.attempt}
    gevent.sleep(pause)
    after = {"id": current_job.id, "kwargs": dict(current_job.kwargs), "attempt": current_job.attempt}
    return {"before": before, "after": after}


@handler("e2e.environment")
def environment():
    """How the server process is patched, as seen from inside a job."""
    import threading

    from gevent import monkey
    import pyramid.threadlocal
    return {
        "patched": {name: monkey.is_module_patched(name) for name in ("socket", "threading", "time", "select", "ssl")},
        "threading_local": threading.local.__module__,
        "pyramid_manager_base": [c.__module__ for c in type(pyramid.threadlocal.manager).__mro__],
    }


@handler("e2e.pid")
def pid(pause=0.0):
    """The pid of the process that ran the job, after ``pause`` s: which server of several ran it."""
    import os

    import gevent
    gevent.sleep(pause)
    return os.getpid()
