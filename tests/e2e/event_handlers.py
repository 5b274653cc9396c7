"""Handlers and signal receivers used only by tests/e2e/test_events.py, test_metrics.py and test_signals.py.

Load the handlers with ``greenjobs.handlers = greenjobs.handlers.builtin tests.e2e.event_handlers``; list the
receivers with ``greenjobs.signals = succeeded:tests.e2e.event_handlers.record ...``.  Receivers run
in the server process (cwd = the folder of its ini), so they write ``signals.log`` there, one JSON
line per call.  current_job is not available in a receiver: it gets (handler name, job=dict, signal=name).
"""
from __future__ import annotations

import json
import os
import time

from greenjobs import handler
from greenjobs.pool.context import current_job

LOG = "signals.log"
RELEASE = "release-slow-receivers"


def _write(line: dict) -> None:
    with open(os.path.join(os.getcwd(), LOG), "a") as fh:
        fh.write(json.dumps(line) + "\n")


# -- handlers --------------------------------------------------------------------------------

@handler("evt.progress")
def progress(steps=3, pause=0.15):
    """Report progress ``steps`` times (1/steps, 2/steps, ... 1.0), ``pause`` s apart (events are
    coalesced to one per 0.1 s per job, so the pause keeps them apart)."""
    import gevent
    for i in range(1, int(steps) + 1):
        current_job.progress(i / int(steps), f"step {i}")
        gevent.sleep(float(pause))
    return {"steps": int(steps)}


@handler("evt.cpu_progress", kind="cpu", timeout=60.0)
def cpu_progress(steps=3, pause=0.3):
    """The same from a worker process (plain threads: time.sleep)."""
    for i in range(1, int(steps) + 1):
        current_job.progress(i / int(steps), f"step {i}")
        time.sleep(float(pause))
    return {"steps": int(steps)}


# -- signal receivers ------------------------------------------------------------------------

def record(sender, job=None, signal=None, **extra):
    """Write one line per call: the signal, the sender (handler name) and the job's id and state."""
    _write({"signal": signal, "sender": sender, "job": job["id"], "state": job["state"],
            "kwargs": job.get("kwargs"), "extra": sorted(extra)})


def explode(sender, job=None, signal=None, **extra):
    _write({"signal": signal, "sender": sender, "job": job["id"], "receiver": "explode"})
    raise RuntimeError(f"receiver exploded on purpose for job {job['id']}")


def slow(sender, job=None, signal=None, **extra):
    """Block (cooperatively) until the test creates the RELEASE file next to the ini, at most 60 s."""
    import gevent
    _write({"signal": signal, "job": job["id"], "receiver": "slow", "phase": "entered"})
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(os.getcwd(), RELEASE)) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    _write({"signal": signal, "job": job["id"], "receiver": "slow", "phase": "left"})


def sleep10(sender, job=None, signal=None, **extra):
    """A receiver that sleeps 10 s (the spec's 'sleeping receiver')."""
    import gevent
    _write({"signal": signal, "job": job["id"], "receiver": "sleep10", "phase": "entered"})
    gevent.sleep(10)
    _write({"signal": signal, "job": job["id"], "receiver": "sleep10", "phase": "left"})


not_callable = 42
