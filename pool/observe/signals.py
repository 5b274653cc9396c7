"""Lifecycle signals for application code, in the spirit of Django's and Celery's (blinker signals).

    from greenjobs.pool.observe import signals

    @signals.job_failed.connect
    def alert(handler_name, job, **extra):      # job: the job as GET /jobs/{id} shows it
        ...

    @signals.job_succeeded.connect_via("reports.build")   # only for one handler
    def publish(handler_name, job, **extra): ...

Receivers can also be listed in config.ini (``greenjobs.signals = failed:myapp.hooks.alert``).
Each receiver call runs in a greenlet of its own, so a slow receiver never delays a job, and a
raising one is logged with its traceback and changes nothing.  At most ``limit`` calls wait at
once; past that, calls are dropped and counted (a stuck receiver must not eat the server's memory).
"""
from __future__ import annotations

import importlib
import logging

import gevent
from blinker import Namespace

from greenjobs.pool.errors import ConfigurationError
from greenjobs.pool.job import EVENTS
from greenjobs.pool.listeners import Listener

log = logging.getLogger(__name__)

_ns = Namespace()
job_submitted = _ns.signal("submitted", doc="a job was stored (sender: its handler name)")
job_started = _ns.signal("started", doc="an attempt started")
job_progress = _ns.signal("progress", doc="a running job reported progress")
job_blocked = _ns.signal("blocked", doc="a job blocked the event loop (job.blocked: count, longest_ms, total_ms)")
job_retrying = _ns.signal("retrying", doc="an attempt failed and the job is scheduled again")
job_succeeded = _ns.signal("succeeded", doc="the job succeeded")
job_failed = _ns.signal("failed", doc="the job failed for good")
job_cancelled = _ns.signal("cancelled", doc="the job was cancelled")

BY_NAME = {s.name: s for s in (job_submitted, job_started, job_progress, job_blocked, job_retrying, job_succeeded,
                                job_failed, job_cancelled)}
assert tuple(BY_NAME) == EVENTS, "one signal per lifecycle event (greenjobs.pool.job.EVENTS)"


class SignalSender(Listener):
    """Calls the receivers of a lifecycle signal, each in its own greenlet, with a bound on the backlog."""

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self.pending = 0
        self.dropped = 0
        self.failed = 0

    def send(self, name: str, job) -> None:
        """Call the receivers of signal ``name`` (if any), each in its own greenlet, within the backlog bound."""
        signal = BY_NAME[name]
        if not signal.receivers:        # the common case costs one attribute check
            return
        receivers = list(signal.receivers_for(job.handler))
        if not receivers:
            return
        snapshot = job.public()         # the job as it is now, not as it will be when a receiver runs
        for receiver in receivers:
            if self.pending >= self.limit:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("signal receivers are %d calls behind; %d calls dropped so far", self.pending,
                                self.dropped)
                continue
            self.pending += 1
            gevent.spawn(self._call, receiver, name, job.handler, snapshot)

    job_event = send      # as a listener: every lifecycle event is a signal

    def _call(self, receiver, name: str, sender: str, snapshot: dict) -> None:
        try:
            receiver(sender, job=snapshot, signal=name)
        except Exception:
            self.failed += 1
            log.exception("signal receiver %s for %r (job %s) raised; the job is unaffected",
                          getattr(receiver, "__qualname__", receiver), name, snapshot["id"])
        finally:
            self.pending -= 1


def connect_listed(entries) -> None:
    """Connect the receivers named in config.ini (``greenjobs.signals``): (signal name, dotted path)."""
    problems, found = [], []
    for name, path in entries:
        module, _, attr = path.rpartition(".")
        try:
            receiver = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            problems.append(f"greenjobs.signals: {name}:{path} cannot be imported ({exc})")
            continue
        if not callable(receiver):
            problems.append(f"greenjobs.signals: {name}:{path} is not callable")
            continue
        found.append((name, receiver))
    if problems:
        raise ConfigurationError("\n  ".join(problems))
    for name, receiver in found:
        BY_NAME[name].connect(receiver, weak=False)
