"""Job lifecycle events, kept in one bounded ring that every event-stream subscriber reads.

Emitting is O(1) whatever the number of subscribers: an event is appended to the ring and one
gevent Event wakes the readers, each of which keeps only its own cursor.  The JSON of an event
is encoded once, by the first reader that needs it.  A reader that falls further behind than the
ring holds (a slow client) is told so and dropped, so memory never grows with slow subscribers.

With :class:`SharedEvents` (``greenjobs.events.shared``) the ring holds the events of every server
on the ledger: each server appends its own events to the ledger's events table (batched, one
write per flush) and fills its ring from that table, so every stream on every server sees one
order, and an event id (the table's sequence number) resumes on any server.
"""
from __future__ import annotations

import bisect
import collections
import json
import logging
import time

import gevent
from gevent.event import Event
from gevent.lock import RLock

from greenjobs.pool.job import EVENTS, Job, iso
from greenjobs.pool.listeners import Listener

NAMES = EVENTS     # the event names a stream may filter on

log = logging.getLogger(__name__)


class JobEvent:
    """One event: a small snapshot of the job at that moment (clients GET the job for the rest).

    Only the fields are captured when the event happens; the JSON is built and encoded once, by
    the first subscriber that reads it, so events nobody streams cost a tuple and little else.
    """

    __slots__ = ("id", "name", "job_id", "handler", "state", "at", "_job", "_sse", "_data")

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
        elif name == "blocked":
            extra = ("blocked", job.blocked)
        elif name in ("retrying", "failed", "cancelled") and job.error:
            extra = ("error", {"kind": job.error.get("kind"), "message": job.error.get("message")})
        self._job = (job.kind, job.attempts, job.batch_id, extra, job.run_at if name == "retrying" else None)
        self._sse: bytes | None = None
        self._data: dict | None = None

    @classmethod
    def stored(cls, seq: int, at: float, body: str) -> "JobEvent":
        """An event as the ledger's events table holds it (``body``: its JSON without the id)."""
        event = cls.__new__(cls)
        data = json.loads(body)
        event.id, event.name, event.job_id = seq, data.get("event"), data.get("job")
        event.handler, event.state, event.at = data.get("handler"), data.get("state"), at
        event._job, event._sse, event._data = None, None, {"id": seq, **data}
        return event

    def record(self) -> tuple[float, str]:
        """(at, JSON without the id): the row of the ledger's events table (which numbers it)."""
        data = dict(self.data)
        del data["id"]
        return self.at, json.dumps(data, separators=(",", ":"))

    @property
    def data(self) -> dict:
        """The event as its stream's JSON shows it."""
        if self._data is not None:
            return self._data
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

        self.shared: SharedEvents | None = None

    def append(self, name: str, job: Job) -> JobEvent:
        """Add an event (O(1) whatever the number of subscribers) and wake the readers; with a shared log,
        hand it to the ledger instead (it comes back into the ring, numbered, with every server's)."""
        if self.shared is not None:
            event = JobEvent(0, name, job)
            self.shared.add(event)
            return event
        event = JobEvent(self._next, name, job)
        self._next += 1
        self._push(event)
        return event

    job_event = append      # as a listener: every lifecycle event goes into the ring

    def _push(self, event: JobEvent) -> None:
        self._ring.append(event)
        if self.subscribers:
            wake, self._wake = self._wake, Event()
            wake.set()

    def subscribe(self) -> None:
        """A stream opens (before it reads ``last_id``): a shared log catches up with the ledger first."""
        self.subscribers += 1
        if self.shared is not None:
            try:
                self.shared.catch_up()
            except BaseException:               # the ledger failed: this stream never opened
                self.subscribers -= 1
                raise

    def unsubscribe(self) -> None:
        self.subscribers -= 1

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
        if ring[-1].id - first == len(ring) - 1:
            start = after - first + 1      # ids are consecutive within the ring
        else:                              # a shared log's sequence has holes (skipped numbers)
            start = bisect.bisect_right(ring, after, key=lambda e: e.id)
        return [ring[i] for i in range(start, len(ring))], False

    def watch(self) -> Event:
        """An Event that is set by the next append.  Take it *before* reading :meth:`since`, then
        wait on it if nothing was new: an append in between sets it, so no wake-up is lost."""
        return self._wake

    def close(self) -> None:
        """Wake every reader for good (server shutdown): their streams end."""
        self.closed = True
        self._wake.set()


class SharedEvents:
    """Makes ``log`` the event log of every server on ``store``: this server's events are appended to the
    ledger's events table, and the ring is filled from the table in its order.

    A flusher writes what accumulated in one write (one group commit); a tailer reads the table into
    the ring when woken: by our own flush, by another server's (``heard``, a PostgreSQL notification)
    and, while streams are open, every ``poll`` seconds.  On PostgreSQL a sequence number can commit
    after a higher one, so the tailer stops at a hole and reads again shortly; a hole still empty after
    HOLE_WAIT seconds is a number that was never committed (a rolled-back write) and is skipped."""

    FLUSH_MAX = 5000            # events per write
    READ_MAX = 5000             # events per read
    PENDING_MAX = 200_000       # unwritten events kept while the store fails (the oldest go first)
    HOLE_WAIT = 2.0             # seconds a hole in the sequence is waited for
    RETRY = 0.05                # seconds before reading again at a hole
    LINGER = 300.0              # seconds events are still written after the last stream anywhere closed
    MARGIN = 10.0               # seconds before the end of LINGER a new stream already waits for the others
    BARRIER = 5.0               # seconds a new stream waits at most for the other servers to start writing

    def __init__(self, log: EventLog, store, poll: float, others=None):
        self.log = log
        self.store = store
        self.poll = poll if poll > 0 else 1.0
        #: ``others(timeout)``: make every other server write its events (greenjobs.pool.cluster.Membership)
        self.others = others
        self._wanted_until = 0.0                # monotonic: write events until then (streams open somewhere)
        self._opening: Event | None = None      # set when the stream that made the others write may go on
        self._reading = RLock()                 # one read of the table into the ring at a time
        self.cursor = 0                         # the last sequence number read into the ring
        self.lost = 0                           # events dropped unwritten (the store failed too long)
        self._pending: collections.deque[JobEvent] = collections.deque()
        self._flush = Event()
        self._read = Event()
        self._hole: tuple[int, float] | None = None     # (the missing number, when it was first seen)
        self._idle = True                       # no stream was open: the ring may be behind the table
        self._greenlets: list = []

    def start(self) -> None:
        """Start after the newest ``log.size`` events of the table (a stream can resume within them)."""
        self.cursor = max(0, self.store.last_event_seq() - self.log.size)
        self.log._next = self.cursor + 1        # ids are the table's from now on
        self.log.shared = self
        self._greenlets = [gevent.spawn(self._flush_loop), gevent.spawn(self._tail_loop)]

    def stop(self) -> None:
        """Write what is pending (a clean shutdown loses no event), then stop; later events stay local."""
        self.log.shared = None
        gevent.killall(self._greenlets)
        try:
            self._write()
        except Exception as exc:
            log.warning("shutdown: %d events not written to the ledger (%s)", len(self._pending), exc)

    @property
    def writing(self) -> bool:
        """Whether this server's events go to the ledger: while a stream is open on any server, and for LINGER
        seconds after the last closed (a client that reconnects within it resumes exactly).  With no stream
        anywhere, events cost nothing."""
        return self.log.subscribers > 0 or time.monotonic() < self._wanted_until

    def observe(self, servers: list[dict]) -> None:
        """The servers table as a heartbeat read it: keep writing while any alive server has streams open."""
        if self.log.subscribers or any(s["alive"] and s["streams"] for s in servers):
            self._wanted_until = time.monotonic() + self.LINGER

    def add(self, event: JobEvent) -> None:
        if not self.writing:
            return
        if len(self._pending) >= self.PENDING_MAX:
            self._pending.popleft()
            self.lost += 1
        self._pending.append(event)
        self._flush.set()

    def heard(self) -> None:
        """Another server wrote events (a notification): read them if a stream is open."""
        if self.log.subscribers:
            self._read.set()

    def catch_up(self) -> None:
        """A stream opens: if no server was writing its events, make every one start (a moment's wait, before
        the stream's first byte), then bring the ring up to the table."""
        if self._opening is not None:           # another stream is making them start: wait with it
            self._opening.wait()
        elif time.monotonic() >= self._wanted_until - self.MARGIN:
            self._opening = Event()
            self._wanted_until = time.monotonic() + self.LINGER
            try:
                if self.others is not None:
                    self.others(self.BARRIER)
            finally:
                self._opening.set()
                self._opening = None
        if self._idle:
            self._idle = False
            with self._reading:
                start = self.store.last_event_seq() - self.log.size
                if start > self.cursor:         # the ring is too far behind: start afresh, newer than it
                    self.log._ring.clear()
                    self.cursor = start
                self.log._next = max(self.log._next, self.cursor + 1)
                self._hole = None
                while self._read_locked() and self._hole is None:
                    pass
        self._read.set()                        # the tailer polls again while streams are open

    # -- the two greenlets --------------------------------------------------------------
    def _write(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.FLUSH_MAX))]
            try:
                self.store.add_events([event.record() for event in batch])
            except Exception:
                self._pending.extendleft(reversed(batch))
                raise

    def _flush_loop(self) -> None:
        while True:
            self._flush.wait()
            self._flush.clear()
            try:
                self._write()
            except Exception as exc:           # the store's health says so; try again shortly
                log.debug("events: could not write to the ledger (%s)", exc)
                gevent.sleep(0.5)
                self._flush.set()
                continue
            if self.log.subscribers:
                self._read.set()
            gevent.sleep(0.005)                 # let a burst gather into the next write

    def _tail_loop(self) -> None:
        while True:
            self._read.wait(self.poll if self.log.subscribers else None)
            self._read.clear()
            if not self.log.subscribers:
                self._idle = True
                continue
            try:
                more = self._read_once()
            except Exception as exc:
                log.debug("events: could not read the ledger (%s)", exc)
                gevent.sleep(0.5)
                continue
            if more:                            # more to read: let the streams write what came first
                self._read.set()
                gevent.sleep(self.RETRY if self._hole else 0.002)

    def _read_once(self) -> bool:
        """Read what follows the cursor into the ring (one reader at a time: the tailer, or a stream catching
        up); True if there is more to read (a full read, a hole)."""
        with self._reading:
            return self._read_locked()

    def _read_locked(self) -> bool:
        limit = max(1, min(self.READ_MAX, self.log.size // 4))   # a read never overruns a stream keeping up
        rows = self.store.events_after(self.cursor, limit)
        expected = self.cursor + 1
        now = time.monotonic()
        for seq, at, body in rows:
            if seq != expected:
                if self._hole is None or self._hole[0] != expected:
                    self._hole = (expected, now)
                if now - self._hole[1] < self.HOLE_WAIT:
                    return True                 # wait for it: it may commit in a moment
                # never committed (a PostgreSQL number burned by a failed write), or pruned before we read it
            self._hole = None
            self.log._push(JobEvent.stored(seq, at, body))
            self.log._next = seq + 1
            self.cursor = expected = seq
            expected += 1
        return len(rows) == limit
