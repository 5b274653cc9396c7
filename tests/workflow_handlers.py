"""Handlers for the workflow tests: ``greenjobs.handlers = greenjobs.handlers.builtin tests.workflow_handlers``.

Small arithmetic, so a test can tell from a workflow's result which step received what."""
from __future__ import annotations

import os
import time

import gevent

from greenjobs import handler


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
    return sum(values) + y


@handler("wf.nap")
def nap(x=0, seconds=0.0):
    """x after ``seconds`` of cooperative sleep."""
    gevent.sleep(seconds)
    return x


@handler("wf.boom")
def boom(*args, message="boom"):
    """Always fails."""
    raise RuntimeError(message)


@handler("wf.pid")
def pid(*args):
    """The server process that ran the step (to tell two servers apart)."""
    return os.getpid()
