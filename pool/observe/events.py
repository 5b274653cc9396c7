"""Job lifecycle events, kept in one bounded ring that every event-stream subscriber reads.

Emitting is O(1) whatever the number of subscribers: an event is appended to the ring and one
gevent Event wakes the readers, each of which keeps only its own cursor.  The JSON of an event
is encoded once, by the first reader that needs it.  A reader that falls further behind than the
ring holds (a slow client) is told so and dropped, so memory never grows with slow subscribers.
"""
from __future__ import annotations

import collections
import json
import time

from gevent.event import Event

from greenjobs.pool.job import EVENTS, Job, iso
from greenjobs.pool.listeners import Listener

NAMES = EVENTS     # the event names a stream may filter on


class JobEvent:
    """One event: a small snapshot of the job at that moment (clients GET the job for the rest).

    Only the fields are captured when the event happens; the JSON is built and encoded once, by
    the first subscriber that reads it, so events nobody streams cost a tuple and little else.
    """

    __slots__ = ("id", "name", "job_id", "handler", "state", "at", "_job", "_sse")

    def __init__(self, event_id: int, name: str, job: Job):
        self.id = event_id
        self.name = name
        self.job_id = job.id
        self.handler = job.handler
        self.state = job.state
        self.at = time.time()
        extra = None
        if name == "progress":
            extra = ("progress", job.progress)
        elif name in ("retrying", "failed", "cancelled") and job.error:
            extra = ("error", {"kind": job.error.get("kind"), "message": job.error.get("message")})
        self._job = (job.kind, job.attempts, job.batch_id, extra, job.run_at if name == "retrying" else None)
        self._sse: bytes | None = None

    @property
    def data(self) -> dict:
        """The event as its stream's JSON shows it."""
        kind, attempts, batch, extra, run_at = self._job
        data = {"id": self.id, "event": self.name, "job": self.job_id, "handler": self.handler, "kind": kind,
                "state": self.state, "attempts": attempts, "batch": batch, "at": iso(self.at)}
        if extra is not None:
            data[extra[0]] = extra[1]
        if self.name == "retrying":
            data["run_at"] = iso(run_at)
        return data

    def sse(self) -> bytes:
        """The event as a Server-Sent Events frame (encoded once, shared by every subscriber)."""
        if self._sse is None:
            self._sse = (f"id: {self.id}\nevent: {self.name}\ndata: "
                         f"{json.dumps(self.data, separators=(',', ':'))}\n\n").encode()
        return self._sse


class EventLog(Listener):
    """The ring of recent events.  Ids increase monotonically, also across restarts (they start
    from the clock in microseconds), so a client's Last-Event-ID stays meaningful."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._ring: collections.deque[JobEvent] = collections.deque(maxlen=size)
        self._next = int(time.time() * 1_000_000)
        self._wake = Event()
        self.subscribers = 0
        self.dropped = 0
        self.closed = False

    def append(self, name: str, job: Job) -> JobEvent:
        """Add an event (O(1) whatever the number of subscribers) and wake the readers."""
        event = JobEvent(self._next, name, job)
        self._next += 1
        self._ring.append(event)
        if self.subscribers:
            wake, self._wake = self._wake, Event()
            wake.set()
        return event

    job_event = append      # as a listener: every lifecycle event goes into the ring

    @property
    def last_id(self) -> int:
        """The id of the newest event (what a new stream starts after)."""
        return self._next - 1

    def since(self, after: int) -> tuple[list[JobEvent], bool]:
        """Events with id > ``after``, and whether some were already gone from the ring (a gap)."""
        ring = self._ring
        first = ring[0].id if ring else self._next      # the oldest id this log can still give
        if after < first - 1:                            # some are gone (or were another process's)
            return list(ring), True
        if not ring or after >= ring[-1].id:
            return [], False
        start = after - first + 1          # ids are consecutive within the ring
        return [ring[i] for i in range(start, len(ring))], False

    def watch(self) -> Event:
        """An Event that is set by the next append.  Take it *before* reading :meth:`since`, then
        wait on it if nothing was new: an append in between sets it, so no wake-up is lost."""
        return self._wake

    def close(self) -> None:
        """Wake every reader for good (server shutdown): their streams end."""
        self.closed = True
        self._wake.set()
