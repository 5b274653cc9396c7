"""Who is waiting for which job or batch: long-polls park here and are woken when a job ends.

A waiter is an AsyncResult or Event, not a thread or a poll loop, so ten thousand waiting
requests cost ten thousand parked greenlets and nothing else.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from gevent.event import AsyncResult, Event

from greenjobs.pool.job import TERMINAL, Job
from greenjobs.pool.listeners import Listener


class Waiters(Listener):
    """Parked long-polls by job and by batch; a listener that wakes them when a job ends."""

    def __init__(self) -> None:
        self._jobs: dict[str, list[AsyncResult]] = {}
        self._batches: dict[str, list[Event]] = {}
        #: long-polls inside their ``with`` block, parked or woken and still answering (for shutdown)
        self.active = 0

    @contextmanager
    def job(self, job_id: str) -> Iterator[AsyncResult]:
        """Register before reading the store, so a job that ends in between is not missed."""
        result = AsyncResult()
        self._jobs.setdefault(job_id, []).append(result)
        self.active += 1
        try:
            yield result
        finally:
            self.active -= 1
            _remove(self._jobs, job_id, result)

    @contextmanager
    def batch(self, batch_id: str) -> Iterator["BatchWaiter"]:
        """Register a batch long-poll (a BatchWaiter) before reading the batch's counts."""
        waiter = BatchWaiter()
        self._batches.setdefault(batch_id, []).append(waiter)
        self.active += 1
        try:
            yield waiter
        finally:
            self.active -= 1
            _remove(self._batches, batch_id, waiter)

    def job_event(self, name: str, job: Job) -> None:
        """A job ended: wake everyone waiting for it (and count it for its batch's waiters)."""
        if name not in TERMINAL:
            return
        for result in self._jobs.pop(job.id, ()):
            result.set(job)
        if job.batch_id is not None:
            for waiter in self._batches.get(job.batch_id, ()):
                waiter.finished_one()

    def wake_all(self) -> None:
        """Shutdown: answer every long-poll now (with None: "read the job again")."""
        for results in list(self._jobs.values()):
            for result in results:
                result.set(None)
        self._jobs.clear()
        for waiters in list(self._batches.values()):
            for waiter in waiters:
                waiter.event.set()

    def job_ids(self) -> set[str]:
        """The jobs someone waits for now."""
        return set(self._jobs)

    def count(self) -> int:
        """Long-polls parked now (for /health and /metrics)."""
        return sum(len(v) for v in self._jobs.values()) + sum(len(v) for v in self._batches.values())


class BatchWaiter:
    """A batch long-poll.  It counts the batch's jobs that ended since it last read how many were
    still active; only once that many have ended can the batch be done, so the store is read
    again then (and not after every job of a 10,000-job batch)."""

    __slots__ = ("event", "ended", "active")

    def __init__(self) -> None:
        self.event = Event()
        self.ended = 0
        self.active = 0

    def reading(self) -> None:
        """Call just before reading the active count from the store."""
        self.ended = 0
        self.event.clear()

    def expect(self, active: int) -> None:
        """The store said ``active`` jobs were still running or waiting."""
        self.active = active
        if self.ended >= active:
            self.event.set()

    def finished_one(self) -> None:
        """One of the batch's jobs ended: wake the waiter once as many ended as were active."""
        self.ended += 1
        if self.ended >= self.active:
            self.event.set()


def _remove(table: dict, key: str, item) -> None:
    items = table.get(key)
    if items is None:
        return
    try:
        items.remove(item)
    except ValueError:
        pass
    if not items:
        table.pop(key, None)
