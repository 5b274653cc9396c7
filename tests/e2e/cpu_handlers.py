"""CPU handlers used only by tests/e2e/test_cpu.py.

Load them with ``greenjobs.handlers = greenjobs.handlers.builtin tests.e2e.cpu_handlers``.  They run in the
worker processes (plain interpreters, no gevent), so they use time.sleep and os directly.
"""
from __future__ import annotations

import os
import time

from greenjobs import handler
from greenjobs.pool.context import current_job


@handler("e2ecpu.pid", kind="cpu", timeout=60.0)
def pid():
    """Return the pid of the worker process that ran the job."""
    return {"pid": os.getpid(), "attempt": current_job.attempt}


@handler("e2ecpu.gate", kind="cpu", timeout=120.0)
def gate(path, limit=60.0):
    """Report this worker's pid as progress, then wait (time.sleep) until ``path`` exists or ``limit`` s pass."""
    current_job.progress(0.0, f"pid {os.getpid()} attempt {current_job.attempt}")
    deadline = time.monotonic() + float(limit)
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"pid": os.getpid(), "attempt": current_job.attempt, "opened": os.path.exists(path)}


@handler("e2ecpu.poison", kind="cpu", timeout=60.0)
def poison():
    """Kill the worker process that runs it (SIGKILL to itself): the job can never finish."""
    os.kill(os.getpid(), 9)
    time.sleep(30)      # never reached
    return {"survived": True}
