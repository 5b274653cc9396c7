"""One lifecycle interface: listeners hear every job event; executors report to one sink.

Events (in the order one job meets them): ``submitted``, ``started``, ``progress``, ``retrying``,
then one of ``succeeded``, ``failed``, ``cancelled``.  The runtime registers the waiters (long-polls),
the event stream, the metrics, the signals, the webhooks and the maintenance wake-up as listeners,
in that order; each is called on the hub and must not block (slow work goes to a greenlet).
"""
from __future__ import annotations

import logging
from typing import Callable

from greenjobs.pool import lifecycle, outcomes
from greenjobs.pool.job import EVENTS, FAILED, Job

log = logging.getLogger(__name__)

__all__ = ["EVENTS", "Listener", "Listeners", "Sink"]


class Listener:
    """Base of a lifecycle listener: override :meth:`job_event`."""

    def job_event(self, name: str, job: Job) -> None:
        """``job`` met event ``name`` (its state is already committed, except for ``progress``)."""


class Listeners:
    """The registered listeners, called in order; one raising is logged and the others still run."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> Listener:
        """Register ``listener`` after those already registered; returns it."""
        self._listeners.append(listener)
        return listener

    def emit(self, name: str, job: Job) -> None:
        """Tell every listener that ``job`` met event ``name``."""
        for listener in self._listeners:
            try:
                listener.job_event(name, job)
            except Exception:
                log.exception("listener %s failed on %s of job %s; the job is unaffected",
                              type(listener).__name__, name, job.id)


class Sink:
    """What an executor (greenlet pool, cpu dispatcher) reports to: attempts started, progress, outcomes."""

    def __init__(self, store, listeners: Listeners, backoff: Callable[[int], float],
                 progress: Callable[[str, dict], None]):
        self.store = store
        self.listeners = listeners
        self.backoff = backoff
        self.progress = progress        # (job id, {"fraction", "message"}): stored coalesced, announced throttled
        #: outcomes the store refused because their runner no longer held the job (fenced out)
        self.rejected = 0

    def started(self, job: Job) -> None:
        """An attempt of ``job`` started."""
        self.listeners.emit("started", job)

    def ended(self, job: Job) -> None:
        """``job`` reached a final state that someone else recorded (e.g. worker_lost)."""
        self.listeners.emit(job.state, job)

    def record(self, job: Job, owner: str, outcome: outcomes.Outcome) -> str | None:
        """The one place an outcome becomes a state: the lifecycle decides whether a failure is tried
        again, the store carries it out under ``owner``'s lease, the listeners hear of it.  Returns
        "retried", "finished", or None when ``owner`` no longer holds the job (nothing recorded)."""
        when = lifecycle.retry_at(job, outcome.retryable, outcome.delay, self.backoff) \
            if outcome.state == FAILED else None
        if when is not None:
            if not self.store.retry(job, owner, when, outcome.error):
                return self._rejected(job, owner, "retry")
            self.listeners.emit("retrying", job)
            return "retried"
        if not self.store.finish(job, owner, outcome.state, outcome.result_json, outcome.error):
            return self._rejected(job, owner, outcome.state)
        self.listeners.emit(job.state, job)
        return "finished"

    def _rejected(self, job: Job, owner: str, what: str) -> None:
        """A late outcome: the job was cancelled, or its lease expired and another runner took it."""
        self.rejected += 1
        log.warning("job %s (%s): the %s of attempt %d by %s was not recorded: that runner no longer holds "
                    "the job (cancelled, or adopted after its lease expired)", job.id, job.handler, what,
                    job.attempts, owner)
        return None
