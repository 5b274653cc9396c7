"""Flow control in the ledger, one implementation for every SQL store (greenjobs.pool.flow says what a gate is).

A gated job (``gate`` not NULL) is admitted in the transaction that would start it - a server's take of
queued io jobs, a worker's claim of a cpu job - under a row lock of each ``flow`` row it needs (its rate
bucket; ``~handler`` for a concurrency limit), so servers sharing the ledger decide one after another:

- over its rate: it reserves the bucket's next start time and waits ``scheduled`` until then (``waiting =
  'rate_limit'``, ``run_at`` the reserved time); once promoted, that reservation lets it start;
- over its handler's ``max_running`` (counted from the running rows, so a crashed runner's job stops
  counting when its lease expires and it is given back): it waits ``scheduled`` with no time (``waiting =
  'max_running'``) until the end of a running one releases it, in that end's transaction, or a maintenance
  tick finds room (:meth:`release_waiting`, for ends that happened elsewhere: a lost worker, an expired lease).

``expire_due`` ends the jobs whose ``expires_at`` passed before they started; the takes and claims skip them
meanwhile, so an expired job never runs.
"""
from __future__ import annotations

import random
import time
from typing import Callable

from greenjobs.pool.flow import EXPIRED, MAX_RUNNING, RATE_LIMIT
from greenjobs.pool.job import CANCELLED, QUEUED, RUNNING, SCHEDULED, Job
from greenjobs.pool.store.rows import PUBLISHED_SQL, SELECT, dumps, loads, row_to_job
from greenjobs.pool.store.workflows import StepsMoved

_WAIT_RATE = (f"UPDATE jobs SET state = '{SCHEDULED}', run_at = ?, waiting = '{RATE_LIMIT}', lease_owner = NULL,"
              f" lease_expires = NULL, outbox = 0 WHERE id = ? AND state = '{QUEUED}'")
_PARK = (f"UPDATE jobs SET state = '{SCHEDULED}', run_at = NULL, waiting = '{MAX_RUNNING}', lease_owner = NULL,"
         f" lease_expires = NULL, outbox = 0 WHERE id = ? AND state = '{QUEUED}'")
_DEFER = (f"UPDATE jobs SET state = '{SCHEDULED}', run_at = ?, lease_owner = NULL, lease_expires = NULL, outbox = 0"
          f" WHERE id = ? AND state = '{QUEUED}'")
#: Seconds two starts of one rate bucket may come closer than its interval (clocks and timers are not exact).
SPACING_SLACK = 0.002
#: Seconds (times 1-2, at random) a job waits when another server's transaction holds its flow rows.
CONTENDED = 0.05
_RELEASE = (f"UPDATE jobs SET state = '{QUEUED}', waiting = NULL,"
            f" outbox = CASE WHEN kind IN {PUBLISHED_SQL} THEN 1 ELSE 0 END WHERE id IN (SELECT id FROM jobs"
            f" WHERE waiting = '{MAX_RUNNING}' AND state = '{SCHEDULED}' AND handler = ?"
            " ORDER BY priority DESC, seq LIMIT ?{skip}) RETURNING " + SELECT)
_EXPIRE = (f"UPDATE jobs SET state = '{CANCELLED}', finished_at = ?, error = ?, waiting = NULL, lease_owner = NULL,"
           f" lease_expires = NULL, outbox = 0 WHERE seq IN (SELECT seq FROM jobs WHERE expires_at <= ?"
           f" AND state IN ('{SCHEDULED}', '{QUEUED}') ORDER BY expires_at LIMIT ?{{skip}}) RETURNING {SELECT}")


class FlowTable:
    """Mixed into an SQL store with ``self._db``, ``_q`` (paramstyle), ``_ended`` (WorkflowTable) and ``_LOCK`` /
    ``_SKIP`` (PostgreSQL's ``FOR UPDATE`` and ``FOR UPDATE SKIP LOCKED``; empty for SQLite's one writer)."""

    _LOCK = ""
    _SKIP = ""
    #: Called (in the caller's greenlet, after the commit) with the earliest start time a take or claim
    #: reserved for a job over its rate: the runtime promotes it then.  Set by the runtime.
    on_rate_wait: Callable[[float], None] | None = None

    def _lock_flow(self, conn, keys: list[str]) -> dict[str, float] | None:
        """Inside a transaction: the ``flow`` rows of ``keys`` (made if missing), locked until it ends; None if
        another transaction holds one (PostgreSQL: see its store; SQLite's one writer never contends)."""
        conn.cursor().executemany(self._q("INSERT INTO flow (key, next_at) VALUES (?, 0) ON CONFLICT (key) DO NOTHING"),
                                  [(k,) for k in keys])
        return {key: [next_at, last] for key, next_at, last in conn.execute(self._q(
            f"SELECT key, next_at, last_start FROM flow WHERE key IN ({','.join('?' * len(keys))}) ORDER BY key"),
            keys).fetchall()}

    def _admit(self, conn, jobs: list[Job], now: float) -> list[Job]:
        """Inside the transaction that would start ``jobs`` (queued, gated): the ones that may start now.  The
        rest are moved to wait (over their rate: until the start time reserved for them, noted for :meth:`_wake`;
        over their handler's concurrency: until a running one ends; their flow rows held by another server's
        transaction: a moment, CONTENDED seconds, to be admitted again)."""
        rated = sorted({j.gate["bucket"] for j in jobs if j.gate.get("every")})
        capped = sorted({j.handler for j in jobs if j.gate.get("max_running")})
        rows = self._lock_flow(conn, rated + [f"~{h}" for h in capped])     # key -> [next_at, last start]
        now = time.time()           # (after the lock: the decision's own time, not the caller's)
        if rows is None:
            later = now + CONTENDED * (1 + random.random())
            for job in jobs:        # (a reservation it holds stays: waiting is left as it is)
                conn.execute(self._q(_DEFER), (later, job.id))
                job.state, job.run_at = SCHEDULED, later
            self._note_slot(later)
            return []
        running = {}
        if capped:
            running = dict(conn.execute(self._q(
                f"SELECT handler, count(*) FROM jobs WHERE state = '{RUNNING}' AND gate IS NOT NULL"
                f" AND handler IN ({','.join('?' * len(capped))}) GROUP BY handler"), capped).fetchall())
        start, changed = [], set()
        for job in jobs:
            every, bucket, cap = job.gate.get("every"), job.gate.get("bucket"), job.gate.get("max_running")
            # promoted at the start time it reserved: that start is its own, if it comes within its interval (a
            # reservation taken later than that, e.g. while every slot was busy, asks the bucket again)
            reserved = job.waiting == RATE_LIMIT and job.run_at is not None and now < job.run_at + (every or 0)
            if every:
                # and never two starts of a bucket closer than its interval: a start that came late (a loaded
                # server, a full pool) pushes the next one back, rather than the two bunching in one window
                upcoming, last = rows[bucket]
                turn = last + every - SPACING_SLACK
                slot = None
                if reserved and now < turn:
                    slot = last + every
                elif not reserved and (upcoming > now or now < turn):
                    slot = max(upcoming, last + every)
                    rows[bucket][0] = slot + every
                    changed.add(bucket)
                if slot is not None:
                    conn.execute(self._q(_WAIT_RATE), (slot, job.id))
                    job.state, job.run_at, job.waiting = SCHEDULED, slot, RATE_LIMIT
                    self._note_slot(slot)
                    continue
            if cap and running.get(job.handler, 0) >= cap:
                conn.execute(self._q(_PARK), (job.id,))
                job.state, job.run_at, job.waiting = SCHEDULED, None, MAX_RUNNING
                continue
            if every:
                if not reserved:
                    rows[bucket][0] = max(now, rows[bucket][0]) + every
                rows[bucket][1] = now
                changed.add(bucket)
            if cap:
                running[job.handler] = running.get(job.handler, 0) + 1
            start.append(job)
        if changed:
            conn.cursor().executemany(self._q("UPDATE flow SET next_at = ?, last_start = ? WHERE key = ?"),
                                      [(rows[b][0], rows[b][1], b) for b in sorted(changed)])
        return start

    def _note_slot(self, slot: float) -> None:
        self.__dict__.setdefault("_slots", []).append(slot)     # (in the writer; read back by _wake)

    def _wake(self) -> None:
        """After a write that may have reserved start times: tell the runtime the earliest."""
        slots = self.__dict__.pop("_slots", None)
        if slots and self.on_rate_wait is not None:
            self.on_rate_wait(min(slots))

    def next_due(self) -> float | None:
        """The earliest ``run_at`` of a scheduled job (by the due index), or None."""
        row = self._db.read(lambda conn: conn.execute(
            f"SELECT min(run_at) FROM jobs WHERE state = '{SCHEDULED}' AND run_at IS NOT NULL").fetchone())
        return None if row is None else row[0]

    def _free(self, conn, job: Job, moved) -> None:
        """Inside the transaction that ended ``job``: release a job waiting for a slot of its handler."""
        if job.gate and job.gate.get("max_running"):
            moved.released += [row_to_job(r) for r in conn.execute(
                self._q(_RELEASE.replace("{skip}", self._SKIP)), (job.handler, 1)).fetchall()]

    def _release_room(self, conn) -> list[Job]:
        """Inside a transaction: release jobs waiting for their handler's concurrency where there is room now
        (one index probe when none wait).  A take does this first, so a waiting job competes by its priority
        and age with the queued ones - e.g. a dead runner's job given back when its lease expired."""
        released, caps = [], {}
        for handler, gate in conn.execute(self._q(f"SELECT DISTINCT handler, gate FROM jobs WHERE waiting = '{MAX_RUNNING}'"
                                                  f" AND state = '{SCHEDULED}'")).fetchall():
            cap = (loads(gate) or {}).get("max_running") or 1
            caps[handler] = min(cap, caps.get(handler, cap))     # (gates differ only during a rolling deploy)
        for handler, cap in caps.items():
            running = conn.execute(self._q(f"SELECT count(*) FROM jobs WHERE state = '{RUNNING}'"
                                           " AND gate IS NOT NULL AND handler = ?"), (handler,)).fetchone()[0]
            if running < cap:
                released += [row_to_job(r) for r in conn.execute(
                    self._q(_RELEASE.replace("{skip}", self._SKIP)), (handler, cap - running)).fetchall()]
        return released

    def release_waiting(self) -> list[Job]:
        """Release jobs waiting for their handler's concurrency where there is room now (ends this ledger did not
        see happen in a transaction of its own: a lost worker, an expired lease); returns them.  A read first:
        no write (and no notification to the other servers) on a tick when nothing waits."""
        if not self._any(f"SELECT 1 FROM jobs WHERE waiting = '{MAX_RUNNING}' AND state = '{SCHEDULED}' LIMIT 1"):
            return []
        return self._write_step(self._release_room, notify="queued")

    def _any(self, sql: str, params: tuple = ()) -> bool:
        return self._db.read(lambda conn: conn.execute(self._q(sql), params).fetchone()) is not None

    def expire_due(self, limit: int = 1000) -> list[Job]:
        """End (cancelled, error kind ``expired``) the scheduled and queued jobs whose ``expires_at`` passed, with
        what that moves downstream in their workflows; returns them (the moved steps go to ``on_steps_moved``).
        A read first: no write (and no notification) on a tick when nothing expired."""
        now = time.time()
        if not self._any(f"SELECT 1 FROM jobs WHERE expires_at <= ? AND state IN ('{SCHEDULED}', '{QUEUED}') LIMIT 1",
                         (now,)):
            return []

        def op(conn):
            expired = [row_to_job(r) for r in conn.execute(self._q(_EXPIRE.replace("{skip}", self._SKIP)),
                                                           (now, dumps(EXPIRED), now, limit)).fetchall()]
            moved = StepsMoved()
            ended = [(j.id, j.state) for j in expired if j.workflow_id is not None]
            if ended:
                moved = self._ended(conn, ended)
            return expired, moved
        expired, moved = self._write_step(op, notify="ended,cancelled")
        self._announce(moved)
        return expired

    def _flow_claim(self, conn, job: Job, now: float) -> tuple | None:
        """Inside a worker's claim that its judge let go: None if the job may start, else the claim's answer -
        ("lost", job, moved) when it expired (an orphaned attempt too: its next start would be too late), or
        ("skip", job, None) when its gate makes it wait (its rate, a slot of its handler)."""
        if job.expires_at is not None and job.expires_at <= now:
            ended = self._expire_one(conn, job.id)
            if ended is None:
                return "skip", job, None
            return "lost", ended, self._after_end(conn, ended, ended.state) if self.linked(ended) else None
        if job.state == QUEUED and job.gate and not self._admit(conn, [job], now):
            return "skip", job, None
        return None

    def _expire_one(self, conn, job_id: str) -> Job | None:
        """Inside a transaction: end an active job that may not start any more (cancelled, error kind expired)."""
        row = conn.execute(self._q(f"UPDATE jobs SET state = '{CANCELLED}', finished_at = ?, error = ?, waiting = NULL,"
                                   " ran_by = COALESCE(lease_owner, ran_by), lease_owner = NULL, lease_expires = NULL,"
                                   " outbox = 0 WHERE id = ?"
                                   f" AND state IN ('{SCHEDULED}', '{QUEUED}', '{RUNNING}') RETURNING {SELECT}"),
                           (time.time(), dumps(EXPIRED), job_id)).fetchone()
        return None if row is None else row_to_job(row)

    def waiting_counts(self) -> list[tuple[str, str, int]]:
        """(handler, reason, count) of the jobs their gate holds back (rate_limit, max_running)."""
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            "SELECT handler, waiting, count(*) FROM jobs WHERE waiting IS NOT NULL"
            f" AND state IN ('{SCHEDULED}', '{QUEUED}') GROUP BY handler, waiting").fetchall())]

