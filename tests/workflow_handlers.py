"""Handlers for the workflow tests: ``greenjobs.handlers = greenjobs.handlers.builtin tests.workflow_handlers``.

Small arithmetic, so a test can tell from a workflow's result which step received what.  With
``$GREENJOBS_TEST_EXECUTIONS`` set, every completion of total and nap is appended to that file (one
O_APPEND line: job id, attempt, pid), so a fault test can count how often a step really ran."""
from __future__ import annotations

import os
import time

import gevent

from greenjobs import current_job, handler


def _record(what: str) -> None:
    path = os.environ.get("GREENJOBS_TEST_EXECUTIONS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{current_job.id} {current_job.attempt} {what} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@handler("wf.add")
def add(x, y=0):
    """x + y (a chain step receives the previous result as x)."""
    return x + y


@handler("wf.cpu_add", kind="cpu", timeout=60.0)
def cpu_add(x, y=0, seconds=0.0):
    """x + y in a cpu worker, after ``seconds`` (time to kill the worker mid-step)."""
    time.sleep(seconds)
    return x + y


@handler("wf.total")
def total(values, y=0):
    """The sum of a list (a chord body receives its header's results) plus y."""
    _record("total")
    return sum(values) + y


@handler("wf.nap")
def nap(x=0, seconds=0.0):
    """x after ``seconds`` of cooperative sleep."""
    gevent.sleep(seconds)
    _record("nap")
    return x


@handler("wf.boom")
def boom(*args, message="boom"):
    """Always fails."""
    raise RuntimeError(message)


@handler("wf.pid")
def pid(*args):
    """The server process that ran the step (to tell two servers apart)."""
    return os.getpid()
