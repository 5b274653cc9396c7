"""What this server learns from the ledger about the others: who they are, and the jobs they ended,
cancelled or took over.

:class:`Membership` keeps this runtime's row of the servers table (a heartbeat with its load, every
maintenance tick) and the table as it read it then: what ``/health``, ``/servers``, the dashboard and
the cluster gauges of ``/metrics`` show, without a ledger read per request.

Servers share one ledger, so a job this one waits for (a long-poll) may end on another, and a job
running here may be cancelled, or adopted after our lease ran out, by another.  The watch reads
the ledger for every such job in one query: it wakes the long-polls of jobs that ended elsewhere
and stops the greenlets of jobs that are no longer ours (their record is not ours to write: a late
outcome would be fenced out anyway).  It reads when the store says another server changed jobs
(PostgreSQL LISTEN/NOTIFY, ``greenjobs.cluster.notify``; "queued" also makes the pool take from the
ledger at once) and, whatever it heard, every ``greenjobs.cluster.poll`` seconds: a notification
can be missed (a lost connection, PgBouncer in transaction mode), a poll cannot.
"""
from __future__ import annotations

import json
import logging
import os
import time
from importlib import metadata

import gevent
from gevent.event import Event

from greenjobs.pool.job import CANCELLED, RUNNING, TERMINAL
from greenjobs.pool.observe import throughput
from greenjobs.pool.owners import HOST
from greenjobs.pool.store.rows import SERVER_COLUMNS, ServerRecord

log = logging.getLogger(__name__)

#: Seconds after its last heartbeat a server's row is deleted (it is shown as lost until then).
FORGET_AFTER = 3600.0
#: Seconds a server's rates in /servers are averaged over.
RATE_WINDOW = 10


def _loads(text: str | None) -> dict:
    """A JSON column of the servers table (an older server writes none)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _version() -> str:
    try:
        return metadata.version("greenjobs")
    except metadata.PackageNotFoundError:       # run from a checkout that was never installed
        return "unknown"


class Membership:
    """This runtime's row in the servers table, and the cluster as the table showed it at the last heartbeat.

    A server whose heartbeat is older than the lease (``greenjobs.store.lease_seconds``) is *lost*: by
    then the others adopt its jobs.  A clean shutdown deletes the row; a lost one stays FORGET_AFTER."""

    def __init__(self, runtime, role: str = "server"):
        self.rt = runtime
        self.role = role
        self.version = _version()
        self.servers: list[ServerRecord] = []

    def record(self, now: float) -> ServerRecord:
        """This runtime as a servers row, now."""
        rt = self.rt
        pool = rt.io.stats()
        workers = rt.supervisor.alive() if rt.supervisor is not None else 0
        return ServerRecord(owner=rt.owner, host=HOST, pid=os.getpid(), role=self.role, version=self.version,
                            started_at=rt.started_at, heartbeat_at=now, pool_size=pool["size"],
                            pool_busy=pool["busy"], cpu_workers=workers, streams=rt.events.subscribers,
                            stats=json.dumps(self.stats(now), separators=(",", ":")))

    def stats(self, now: float) -> dict:
        """What this server adds to its row: its throughput of the last minutes, its cpu workers, and what it
        did with the last request an admin left it."""
        control = self.rt.worker_control
        return {"throughput": self.rt.throughput.snapshot(now), "cpu": control.state(), "control": control.applied}

    def beat(self) -> None:
        """Write our heartbeat (forgetting servers long gone), read the table, act on a request left for us."""
        now = time.time()
        forget = now - max(FORGET_AFTER, 10 * self.rt.settings.store_lease_seconds)
        self.rt.store.beat(self.record(now), forget_before=forget)
        self.servers = self.rt.store.servers()
        mine = next((s for s in self.servers if s.owner == self.rt.owner), None)
        if mine is not None:
            self.rt.worker_control.heard(mine.control)
        if self.rt.shared_events is not None:
            self.rt.shared_events.observe(self.view())

    def await_others(self, timeout: float) -> bool:
        """Beat now, then wait until every other alive server has beaten twice more: each beat is followed by
        a read of the table, so by then each has read ours (and acted on it: started writing events for our
        new stream).  Compared per server with its own earlier values, so clocks need not agree.  False if
        some server did not beat within ``timeout`` seconds."""
        self.beat()
        first = {s["owner"]: s["heartbeat_at"] for s in self.view() if s["alive"] and not s["me"]}
        seen: dict[str, set] = {owner: {beat} for owner, beat in first.items()}
        deadline = time.monotonic() + timeout
        while True:
            waiting = [owner for owner, beats in seen.items() if len(beats) < 3]
            if not waiting:
                return True
            if time.monotonic() > deadline:
                log.warning("event stream: %d servers did not answer in %.1f s; their first events may be missing"
                            " from it", len(waiting), timeout)
                return False
            gevent.sleep(0.05)
            rows = {s.owner: s.heartbeat_at for s in self.rt.store.servers()}
            for owner in waiting:
                if owner not in rows:           # it left: nothing to wait for
                    seen[owner] |= {-1.0, -2.0}
                else:
                    seen[owner].add(rows[owner])

    def leave(self) -> None:
        """Delete our row (a clean shutdown: we are gone, not lost)."""
        self.rt.store.leave(self.rt.owner)

    def view(self) -> list[dict]:
        """Every server of the last read, with whether it is alive (a heartbeat within the lease) and which is us."""
        now, lease = time.time(), self.rt.settings.store_lease_seconds
        fields = SERVER_COLUMNS[:-1]                    # not the stats JSON: describe() reads it
        return [{**{name: getattr(s, name) for name in fields}, "alive": s.heartbeat_at >= now - lease,
                 "me": s.owner == self.rt.owner, "heartbeat_age": round(max(0.0, now - s.heartbeat_at), 3)}
                for s in self.servers]

    def describe(self) -> list[dict]:
        """GET /servers: :meth:`view`, and each server's jobs per second over the last RATE_WINDOW seconds, its cpu
        workers and the last request an admin left it (with what it did about it)."""
        now = time.time()
        records = {s.owner: s for s in self.servers}
        out = []
        for row in self.view():
            record = records[row["owner"]]
            stats = self.stats(now) if row["me"] else _loads(record.stats)
            rates = throughput.series([stats.get("throughput") or {}], now)["seconds"]
            out.append({**row, "rate": {name: round(sum(rates[name][-RATE_WINDOW:]) / RATE_WINDOW, 3)
                                        for name in throughput.NAMES},
                        "cpu": stats.get("cpu") or {"supervised": False},
                        "control": {"requested": _loads(record.control) or None, "applied": stats.get("control")}})
        return out

    def throughput(self) -> dict:
        """The cluster's jobs per second (every alive server's, summed; ours as of now, the others' as of their
        last heartbeat): the last minute second by second and the last minutes in buckets."""
        now, lease = time.time(), self.rt.settings.store_lease_seconds
        snaps = [self.rt.throughput.snapshot(now)]
        snaps += [_loads(s.stats).get("throughput") or {} for s in self.servers
                  if s.owner != self.rt.owner and s.heartbeat_at >= now - lease]
        return {"servers": len(snaps), **throughput.series(snaps, now)}

    def counts(self) -> dict:
        """How many servers are alive and lost (for /health)."""
        servers = self.view()
        alive = sum(1 for s in servers if s["alive"])
        return {"servers": alive, "lost": len(servers) - alive}


class ClusterWatch:
    """Reads the ledger for the jobs ``runtime`` waits for or runs: every ``every`` seconds (0: never) and,
    with ``notify``, as soon as the store hears that another server changed jobs."""

    #: Seconds between two reads at least, however many notifications come (one per group commit of every server).
    MIN_GAP = 0.05

    def __init__(self, runtime, every: float, notify: bool = True):
        self.rt = runtime
        self.every = every
        self.notify = notify
        self._heard: set[str] = set()
        self._wake = Event()
        self._greenlet = None

    def start(self) -> None:
        listening = self.notify and self.rt.store.listen(self.heard)
        if self.every > 0 or listening:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def heard(self, words: set[str]) -> None:
        """The store heard a commit that queued ("queued"), ended ("ended") or cancelled ("cancelled") jobs, or
        added to the shared event log ("events")."""
        if "events" in words:
            if self.rt.shared_events is not None:
                self.rt.shared_events.heard()
            words = words - {"events"}
            if not words:
                return
        self._heard |= words
        self._wake.set()

    def _run(self) -> None:
        every = self.every if self.every > 0 else None
        last_poll = time.monotonic()
        while True:
            self._wake.wait(every)
            self._wake.clear()
            words, self._heard = self._heard, set()
            polling = every is not None and time.monotonic() - last_poll >= every * 0.9
            try:
                if "queued" in words:
                    self.rt.io.poll()
                if polling or "cancelled" in words:
                    last_poll = time.monotonic()
                    self.check()
                elif "ended" in words:
                    self.check(with_running=False)     # jobs end here all the time: only long-polls care
            except Exception as exc:          # the store is failing: its health says so; try again later
                log.debug("cluster watch: could not read the ledger (%s)", exc)
            gevent.sleep(self.MIN_GAP)

    def check(self, with_running: bool = True) -> None:
        """One look at the ledger for every job waited for (and, ``with_running``, running) here."""
        rt = self.rt
        waited = rt.waiters.job_ids()
        running: dict[str, int] = {}
        claims: dict[str, tuple[str, int]] = {}
        if with_running:
            running = rt.io.running_attempts()      # read anyway: a job stopped below may be waited for
            claims = rt.cpu.running_attempts()      # cpu jobs run by workers under claims we granted
        else:                                       # io jobs running here wake their own long-polls when they end
            waited = {job_id for job_id in waited if not rt.io.running(job_id)}
        if not running and not claims and not waited:
            return
        ended = []
        for job_id, state, holder, attempts in rt.store.holders(list(running.keys() | claims.keys() | waited)):
            attempt = running.get(job_id)
            if attempt is not None and (state != RUNNING or holder != rt.owner or attempts != attempt):
                rt.io.abandon(job_id, attempt, _why(state, holder, attempts))
            claim = claims.get(job_id)
            if claim is not None and (state != RUNNING or holder != claim[0] or attempts != claim[1]):
                rt.cpu.abandon(job_id, claim[1], _why(state, holder, attempts), stop=state == CANCELLED)
            if job_id in waited and state in TERMINAL:
                ended.append(job_id)
        for job in rt.store.get_many(ended) if ended else ():
            rt.waiters.job_event(job.state, job)


def _why(state: str, holder: str | None, attempts: int) -> str:
    """Why a job running here is no longer ours to run, for the log."""
    if state == CANCELLED:
        return "cancelled on another server"
    return f"it is {state} in the ledger (attempt {attempts}), held by {holder or 'nobody'}: our lease was lost"
