"""The SQLite ledger: the JobStore interface over one WAL-mode database file.

Writes go through the group committer (``committer.py``: many submissions share one commit and
one fsync, every sqlite call off the hub); the schema and its migrations are ``schema.py``.  State
changes are compare-and-swap updates guarded by state and lease owner, with the states taken from
``greenjobs.pool.lifecycle``, so the store stays correct when several runners race.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterable

from greenjobs.pool import lifecycle
from greenjobs.pool.errors import IdempotencyConflict, ScheduleRaced, StoreUnavailable
from greenjobs.pool.job import CANCELLED, QUEUED, RUNNING, SCHEDULED, Job
from greenjobs.pool.store.base import JobStore, Lease, Pending
from greenjobs.pool.store.rows import (SERVER_COLUMNS, SERVER_READ, ServerRecord, ACTIVE_SQL, FROM, PUBLISHED_SQL, SELECT, TERMINAL_SQL,
                                       UNIQUE_FREE, dumps, insert_row, row_to_job)
from greenjobs.pool.schedules import Advance
from greenjobs.pool.store.schedules import ADVANCE, RACED, ScheduleTable, advance_params
from greenjobs.pool.store.workflows import WorkflowTable
from greenjobs.pool.store.flow import FlowTable
from greenjobs.pool.store.sqlite import schema
from greenjobs.pool.store.sqlite.committer import GroupCommitter

log = logging.getLogger(__name__)
_SERVER_SELECT = ", ".join(SERVER_READ)
_BEAT = (f"INSERT INTO servers ({', '.join(SERVER_COLUMNS)}) VALUES ({', '.join('?' * len(SERVER_COLUMNS))})"
         " ON CONFLICT (owner) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in SERVER_COLUMNS[1:]))


class SqliteStore(FlowTable, WorkflowTable, ScheduleTable, JobStore):
    """The durable job table.  Call :meth:`open` once from a greenlet before use.

    ``synchronous`` is SQLite's: ``full`` fsyncs the WAL on every (group) commit and survives
    power loss; ``normal`` survives a killed process but not a power cut.
    """

    def __init__(self, path: str, synchronous: str = "full", lease_seconds: float = 30.0,
                 readers: int = 4, max_batch_ops: int = 20000):
        self.path = path
        self.lease_seconds = lease_seconds
        self._progress: dict[str, str] = {}
        self._db = GroupCommitter(path, synchronous, readers, max_batch_ops, setup=schema.migrate,
                                  each_batch=self._progress_writes)

    @classmethod
    def from_url(cls, url: str, *, lease_seconds: float = 30.0, synchronous: str = "full") -> "SqliteStore":
        """``sqlite:///ABSOLUTE/PATH`` (greenjobs.pool.settings resolves relative paths against the ini)."""
        return cls(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url,
                   synchronous=synchronous, lease_seconds=lease_seconds)

    @property
    def where(self) -> str:
        """Where the ledger lives, for logs (no credentials)."""
        return self.path

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> "SqliteStore":
        """Create the folder, open the writer (migrating the schema) and start the committer."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._db.open()
        return self

    def close(self) -> None:
        """Flush queued writes, then close every connection."""
        self._db.close()

    def flush(self) -> None:
        """Wait until every write queued so far is committed (or has failed)."""
        self._db.write(lambda conn: None)

    def maintain(self) -> None:
        """Per maintenance tick: a passive WAL checkpoint, off the commit path."""
        self._db.checkpoint()

    @property
    def healthy(self) -> bool:
        """False while writes fail (disk full, locked, unwritable); /health reports it."""
        return self._db.health.healthy

    @property
    def last_error(self) -> str | None:
        """Why the last write failed, while writes fail; else None."""
        return self._db.health.last_error

    def _progress_writes(self):
        """(committer, on the hub) the coalesced progress values to write with the next batch."""
        if not self._progress:
            return None
        rows, self._progress = [(p, i) for i, p in self._progress.items()], {}
        return lambda conn: conn.executemany(f"UPDATE jobs SET progress = ? WHERE id = ? AND state = '{RUNNING}'", rows)

    def _write_returning(self, sql: str, params: tuple) -> list[Job]:
        """One write statement ``... RETURNING {SELECT}``: the jobs it changed."""
        return self._db.write(lambda conn: [row_to_job(r) for r in conn.execute(sql, params).fetchall()])

    # -- reads -----------------------------------------------------------------------
    @staticmethod
    def _get(conn, job_id: str) -> Job | None:
        row = conn.execute(f"SELECT {SELECT} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row_to_job(row) if row else None

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return self._db.read(self._get, job_id)

    def list(self, state: str | None = None, handler: str | None = None, limit: int = 50,
             after: int | None = None, schedule: str | None = None,
             text: str | None = None) -> tuple[list[Job], int | None]:
        """Newest first, and the cursor of the last one: ``after`` is that cursor (a sequence number,
        so a page boundary stays valid when its job is deleted meanwhile)."""
        def query(conn):
            where, params = [], []
            if state:
                where.append("state = ?")
                params.append(state)
            if handler:
                where.append("handler = ?")
                params.append(handler)
            if schedule:
                where.append("schedule_name = ?")
                params.append(schedule)
            if after is not None:
                where.append("seq < ?")
                params.append(after)
            if text:
                where.append("(instr(args, ?) > 0 OR instr(kwargs, ?) > 0)")
                params.extend([text, text])
            sql = f"SELECT {SELECT}, seq FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY seq DESC LIMIT ?"
            rows = conn.execute(sql, params + [limit]).fetchall()
            return [row_to_job(r[:-1]) for r in rows], (rows[-1][-1] if rows else None)
        return self._db.read(query)

    def cursor_of(self, job_id: str) -> int | None:
        """The list cursor of ``job_id`` (its sequence number), or None if there is no such job."""
        row = self._db.read(lambda conn: conn.execute("SELECT seq FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else row[0]

    def batch_counts(self, batch_id: str) -> dict[str, Any] | None:
        """``{total, created_at, counts: {state: n}}`` of a batch, or None."""
        def query(conn):
            row = conn.execute("SELECT total, created_at FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                return None
            counts = dict(conn.execute("SELECT state, count(*) FROM jobs WHERE batch_id = ? GROUP BY state",
                                       (batch_id,)).fetchall())
            return {"total": row[0], "created_at": row[1], "counts": counts}
        return self._db.read(query)

    def _by_ids(self, columns: str, job_ids: list[str]) -> list:
        def query(conn):
            rows = []
            for at in range(0, len(job_ids), 500):          # SQLite binds at most 32,766 parameters
                chunk = job_ids[at:at + 500]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(f"SELECT {columns} FROM jobs WHERE id IN ({marks})", chunk).fetchall()
            return rows
        return self._db.read(query) if job_ids else []

    def get_many(self, job_ids: list[str]) -> list[Job]:
        return [row_to_job(r) for r in self._by_ids(SELECT, job_ids)]

    def holders(self, job_ids: list[str]) -> list[tuple[str, str, str | None, int]]:
        return [tuple(r) for r in self._by_ids("id, state, lease_owner, attempts", job_ids)]

    def held(self, owner: str, kinds: tuple[str, ...]) -> list[tuple[str, float]]:
        kind_marks = ",".join("?" * len(kinds))
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            f"SELECT id, started_at FROM jobs WHERE lease_owner = ? AND state = '{RUNNING}' AND kind IN ({kind_marks})",
            (owner, *kinds)).fetchall())]

    def active_counts(self) -> list[tuple[str, str, int]]:
        """(handler, state, count) of scheduled, queued and running jobs: reads the active part of the
        state index (and those rows), so the cost does not grow with the finished jobs kept.  (A
        covering index of its own would cost every submission and state change one more b-tree.)"""
        return self._db.read(lambda conn: conn.execute(
            "SELECT handler, state, count(*) FROM jobs INDEXED BY jobs_state"
            f" WHERE state IN {ACTIVE_SQL} GROUP BY handler, state").fetchall())

    def batch_of(self, job_ids: list[str]) -> str | None:
        """The batch that holds exactly these jobs, or None (they are not one whole batch)."""
        unique = set(job_ids)

        def query(conn):
            row = conn.execute("SELECT batch_id FROM jobs WHERE id = ?", (job_ids[0],)).fetchone()
            if row is None or row[0] is None:
                return None
            members = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE batch_id = ?", (row[0],))}
            return row[0] if members == unique else None
        return self._db.read(query)

    def batch_active(self, batch_id: str) -> int:
        """How many of a batch's jobs are scheduled, queued or running."""
        def query(conn):
            return conn.execute(f"SELECT count(*) FROM jobs WHERE batch_id = ? AND state IN {ACTIVE_SQL}",
                                (batch_id,)).fetchone()[0]
        return self._db.read(query)

    def owners(self, me: str) -> list[tuple[str, float]]:
        """Other lease owners of active jobs, with their latest lease expiry."""
        return self._db.read(lambda conn: conn.execute(
            "SELECT lease_owner, max(lease_expires) FROM jobs WHERE lease_owner IS NOT NULL "
            f"AND lease_owner != ? AND state IN {ACTIVE_SQL} GROUP BY lease_owner", (me,)).fetchall())

    def ping(self) -> bool:
        """True if a read answers and writes succeed (an unhealthy store is probed with an empty write)."""
        try:
            self._db.read(lambda conn: conn.execute("SELECT 1").fetchone())
            if self._db.health.probe_due():
                self.flush()
        except StoreUnavailable:
            return False
        return self.healthy

    # -- the shared event log ------------------------------------------------------------
    def add_events(self, events: list[tuple[float, str]]) -> None:
        if events:
            self._db.write(lambda conn: conn.executemany("INSERT INTO events (at, body) VALUES (?, ?)", events))

    def events_after(self, seq: int, limit: int) -> list[tuple[int, float, str]]:
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            "SELECT seq, at, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall())]

    def last_event_seq(self) -> int:
        row = self._db.read(lambda conn: conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone())
        return int(row[0]) if row else 0

    def prune_events(self, keep: int, before: float) -> int:
        return self._db.write(lambda conn: conn.execute(
            "DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ? AND at < ?",
            (keep, before)).rowcount)

    # -- the servers table ----------------------------------------------------------------
    def beat(self, server: ServerRecord, forget_before: float) -> None:
        def write(conn):
            conn.execute(_BEAT, server.row())
            conn.execute("DELETE FROM servers WHERE heartbeat_at < ?", (forget_before,))
        self._db.write(write)

    def servers(self) -> list[ServerRecord]:
        return [ServerRecord(*r) for r in self._db.read(lambda conn: conn.execute(
            f"SELECT {_SERVER_SELECT} FROM servers ORDER BY started_at, owner").fetchall())]

    def request_control(self, owner: str, request: str) -> bool:
        return self._db.write(lambda conn: conn.execute("UPDATE servers SET control = ? WHERE owner = ?",
                                                        (request, owner)).rowcount) == 1

    def leave(self, owner: str) -> None:
        self._db.write(lambda conn: conn.execute("DELETE FROM servers WHERE owner = ?", (owner,)))

    # -- writes ----------------------------------------------------------------------
    def insert(self, jobs: list[Job], owner: str, batch_id: str | None = None,
               keys: dict[int, tuple[str, str]] | None = None, idempotency_ttl: float = 86400.0,
               advance: Advance | None = None, workflow=None) -> dict[int, str]:
        """Store new jobs in one transaction (all or nothing).  Running io jobs are leased to ``owner``.

        ``keys`` maps a job's index to its (Idempotency-Key, fingerprint of the request).  A key stored
        within ``idempotency_ttl`` seconds makes that job a repeat: it is not inserted and the result
        maps its index to the original job's id; a known key with another fingerprint raises
        IdempotencyConflict and stores nothing.  New keys are stored with their jobs, in the same
        transaction, so concurrent repeats and crashes cannot make two jobs.  The batch row (if any)
        counts only the jobs inserted, and is not written when every job was a repeat.
        """
        now = time.time()
        expires = now + self.lease_seconds
        keys = keys or {}

        rows = {i: insert_row(j, owner, expires) for i, j in enumerate(jobs)}

        def op(conn):
            repeats, conflict = {}, None
            if advance is not None:     # first, so a refused cursor move leaves nothing to undo
                if conn.execute(ADVANCE, advance_params(advance)).rowcount != 1:
                    return {}, RACED
                for i, job in enumerate(jobs):
                    if job.schedule and job.schedule["fire_at"] is not None:
                        found = conn.execute("SELECT id FROM jobs WHERE schedule_name = ? AND schedule_fire_at = ?",
                                             (job.schedule["name"], job.schedule["fire_at"])).fetchone()
                        if found is not None:
                            repeats[i] = found[0]
            for i, (key, fingerprint) in keys.items():
                found = conn.execute("SELECT fingerprint, job_id FROM idempotency WHERE key = ? AND created_at > ?",
                                     (key, now - idempotency_ttl)).fetchone()
                if found is None:
                    continue
                if found[0] != fingerprint:
                    conflict = conflict or (key, found[1])
                repeats[i] = found[1]
            if conflict is not None:     # (raising here would fail the whole group commit)
                return repeats, conflict
            keyed = {i: jobs[i].id for i in keys if i not in repeats}     # new keys -> the job each answers
            taken: dict[str, str] = {}
            for i, job in enumerate(jobs):  # one active job per unique_key (the unique index backs this up)
                if job.unique_key is None or i in repeats:
                    continue
                found = taken.get(job.unique_key) or conn.execute(
                    f"SELECT id FROM jobs WHERE unique_key = ? AND state IN {ACTIVE_SQL}", (job.unique_key,)).fetchone()
                if found is not None:
                    repeats[i] = found if isinstance(found, str) else found[0]
                    if i in keyed:          # its Idempotency-Key answers the active job, as this call does
                        keyed[i] = repeats[i]
                else:
                    taken[job.unique_key] = job.id
            if advance is not None and len(jobs) - 1 in repeats:     # the schedule's last job is that one
                conn.execute("UPDATE schedules SET last_job_id = ? WHERE name = ?", (repeats[len(jobs) - 1], advance.name))
            fresh = [r for i, r in rows.items() if i not in repeats]
            if keyed:
                conn.executemany("INSERT OR REPLACE INTO idempotency (key, fingerprint, job_id, created_at)"
                                 " VALUES (?, ?, ?, ?)",
                                 [(keys[i][0], keys[i][1], job_id, now) for i, job_id in keyed.items()])
            if batch_id is not None and fresh:
                conn.execute("INSERT INTO batches (id, total, created_at) VALUES (?, ?, ?)", (batch_id, len(fresh), now))
            conn.executemany(schema.INSERT, fresh)
            if workflow is not None:
                self._insert_plan(conn, workflow, now)
            return repeats, None
        repeats, conflict = self._db.write(op, durable=True)
        if conflict is RACED:
            raise ScheduleRaced(f"schedule {advance.name!r} changed or was fired by another server")
        if conflict is not None:
            raise IdempotencyConflict(f"this Idempotency-Key was used for a different request (job {conflict[1]});"
                                      " use a new key for a new job")
        return repeats

    # -- webhooks ----------------------------------------------------------------------
    def add_delivery(self, job_id: str, delivery: Job, url: str, owner: str) -> bool:
        """Attach the webhook delivery job ``delivery`` to finished job ``job_id`` and store it, in one
        transaction; False (nothing stored) if the job already has one."""
        callback = dumps({"url": url, "delivery": delivery.id, "state": "pending", "attempts": []})

        def op(conn):
            if conn.execute("UPDATE jobs SET callback = ? WHERE id = ? AND callback IS NULL",
                            (callback, job_id)).rowcount != 1:
                return False
            conn.execute(schema.INSERT, insert_row(delivery, owner, time.time() + self.lease_seconds))
            return True
        return self._db.write(op)

    def record_delivery(self, job_id: str, attempt: dict, state: str, keep: int = 20) -> None:
        """Append a webhook delivery attempt (the last ``keep``) and the delivery state to the job."""
        def op(conn):
            row = conn.execute("SELECT callback FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] is None:
                return
            callback = json.loads(row[0])
            callback["attempts"] = (callback.get("attempts", []) + [attempt])[-keep:]
            callback["state"] = state
            conn.execute("UPDATE jobs SET callback = ? WHERE id = ?", (dumps(callback), job_id))
        self._db.write(op)

    def callbacks_due(self, limit: int = 500) -> list[Job]:
        """Finished jobs with a callback_url but no delivery yet (a crash came between the two)."""
        return self._db.read(lambda conn: [row_to_job(r) for r in conn.execute(
            f"SELECT {SELECT} FROM jobs INDEXED BY jobs_callback_due WHERE callback_url IS NOT NULL"
            f" AND callback IS NULL AND state IN {TERMINAL_SQL} ORDER BY seq LIMIT ?",
            (limit,)).fetchall()])

    def claim(self, job: Job, owner: str) -> Pending:
        """queued -> running for ``owner``, bumping attempts; the job object is updated at once.

        Returns a Pending whose ``get()`` is False if someone else moved or holds the job.
        """
        now = time.time()
        job.transition(RUNNING)
        job.attempts, job.started_at = job.attempts + 1, now
        return self._db.swap(
            f"UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1, started_at = ?, lease_owner = ?,"
            f" lease_expires = ? WHERE id = ? AND state IN {FROM['claim']} AND (lease_owner IS NULL OR lease_owner = ?)",
            (now, owner, now + self.lease_seconds, job.id, owner))

    def finish(self, job: Job, owner: str, state: str, result_json: str | None, error: dict | None) -> bool:
        """running (this attempt, leased to ``owner``) -> ``state``.  False if the lease was lost, the job
        cancelled or run again since (a fenced-out runner records nothing)."""
        now = time.time()
        errors = job.errors + [error] if error is not None else job.errors
        args = (state, result_json, None if error is None else dumps(error), dumps(errors) if errors else None,
                now, None if job.progress is None else dumps(job.progress))
        self._progress.pop(job.id, None)
        if self.linked(job):
            if not self._finish_step(job, owner, args):
                return False
        elif not self._db.swap(
                "UPDATE jobs SET state = ?, result = ?, error = ?, errors = ?, finished_at = ?,"
                " progress = COALESCE(?, progress), ran_by = lease_owner, lease_owner = NULL, lease_expires = NULL"
                f" WHERE id = ? AND state IN {FROM['finish']} AND lease_owner = ? AND attempts = ?",
                args + (job.id, owner, job.attempts)).get():
            return False
        job.transition(state)
        job.finished_at, job.errors, job.ran_by = now, errors, owner
        job.result = None if result_json is None else json.loads(result_json)
        job.error = error
        return True

    def retry(self, job: Job, owner: str, run_at: float, error: dict) -> bool:
        """running (this attempt, leased to ``owner``) -> scheduled at ``run_at``, keeping the attempt's error."""
        errors = job.errors + [error]
        self._progress.pop(job.id, None)

        def op(conn):
            return conn.execute(
                f"UPDATE jobs SET state = '{SCHEDULED}', run_at = ?, error = ?, errors = ?, ran_by = lease_owner,"
                " lease_owner = NULL,"
                f" lease_expires = NULL WHERE id = ? AND state IN {FROM['retry']} AND lease_owner = ? AND attempts = ?",
                (run_at, dumps(error), dumps(errors), job.id, owner, job.attempts)).rowcount == 1
        if not self._db.write(op):
            return False
        job.transition(SCHEDULED)
        job.run_at, job.error, job.errors = run_at, error, errors
        return True

    def _write_step(self, op, notify: str):
        return self._db.write(op)           # (no other server hears a SQLite ledger: they poll)

    def cancel(self, job_id: str, error: dict) -> tuple[Job | None, bool]:
        """Cancel a job in any active state, recording ``error``; returns (the job as it now is, whether
        this call cancelled it)."""
        now = time.time()

        def op(conn):
            row = conn.execute(
                f"UPDATE jobs SET state = '{CANCELLED}', finished_at = ?, ran_by = COALESCE(lease_owner, ran_by),"
                " lease_owner = NULL, lease_expires = NULL,"
                f" error = ? WHERE id = ? AND state IN {FROM['cancel']} RETURNING {SELECT}",
                (now, dumps(error), job_id)).fetchone()
            if row is not None:
                job = row_to_job(row)
                return job, True, self._after_end(conn, job, CANCELLED) if self.linked(job) else None
            row = conn.execute(f"SELECT {SELECT} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return (row_to_job(row) if row else None), False, None
        job, changed, moved = self._db.write(op, durable=True)
        if moved:
            self._announce(moved)
        return job, changed

    def revive(self, job_id: str) -> tuple[Job | None, bool]:
        """failed -> queued (same id; its next start is a new attempt).  Returns (job as it is now, changed).

        Nobody holds it: an io job waits for a server with a free slot, a cpu job goes to the outbox.
        """
        def op(conn):
            row = conn.execute(
                f"UPDATE jobs SET state = '{QUEUED}', finished_at = NULL, result = NULL, run_at = NULL,"
                f" lease_owner = NULL, lease_expires = NULL, outbox = (kind IN {PUBLISHED_SQL}), waiting = NULL"
                f" WHERE id = ? AND state IN {FROM['revive']} AND workflow_id IS NULL AND {UNIQUE_FREE}"
                f" RETURNING {SELECT}", (job_id,)).fetchone()
            if row is not None:
                return row_to_job(row), True
            row = conn.execute(f"SELECT {SELECT} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return (row_to_job(row) if row else None), False
        return self._db.write(op, durable=True)

    def sweep(self, finished_before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` terminal jobs that finished before ``finished_before``, oldest finish first,
        by the finished-at index (so jobs that finished later never stall it)."""
        def op(conn):
            deleted = conn.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_finished"
                f" WHERE state IN {TERMINAL_SQL} AND finished_at < ? ORDER BY finished_at LIMIT ?)",
                (finished_before, limit)).rowcount
            self._sweep_edges(conn, finished_before)
            conn.execute("DELETE FROM batches WHERE created_at < ? AND NOT EXISTS"
                         " (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id)", (finished_before,))
            conn.execute("DELETE FROM idempotency WHERE created_at < ?", (finished_before,))
            return deleted
        return self._db.write(op)

    def requeue(self, jobs: Iterable[Job], owner: str, started: bool = False) -> int:
        """Give running jobs back (running -> queued, unleased); an attempt that never started is undone, one that
        did (``started``: a shutdown interrupted it) stays counted."""
        ids = [(j.id, owner) for j in jobs]
        undo = 0 if started else 1

        def op(conn):
            return conn.executemany(
                f"UPDATE jobs SET state = '{QUEUED}', attempts = max(attempts - {undo}, 0), lease_owner = NULL,"
                f" lease_expires = NULL, started_at = NULL WHERE id = ? AND state IN {FROM['give_back']}"
                " AND lease_owner = ?",
                ids).rowcount
        return self._db.write(op) if ids else 0

    def release(self, owner: str) -> int:
        """Unlease every queued job of ``owner`` (on shutdown) so any runner may adopt them."""
        return self._db.write(lambda conn: conn.execute(
            f"UPDATE jobs SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ? AND state = '{QUEUED}'",
            (owner,)).rowcount)

    def renew(self, owner: str) -> int:
        """Extend the lease of every active job ``owner`` holds (one statement, not one per job)."""
        expires = time.time() + self.lease_seconds
        return self._db.write(lambda conn: conn.execute(
            f"UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state IN ('{QUEUED}', '{RUNNING}')",
            (expires, owner)).rowcount)

    def adopt(self, owner: str, dead_owners: list[str], kinds: tuple[str, ...]) -> list[Job]:
        """Give back to the ledger the active jobs of ``kinds`` whose owner is dead or whose lease expired:
        queued and unleased, for any server to take (a running one's interrupted attempt stays counted)."""
        now = time.time()
        marks = ",".join("?" * len(dead_owners)) or "NULL"
        kind_marks = ",".join("?" * len(kinds))
        return self._write_returning(
            f"UPDATE jobs SET state = '{QUEUED}', lease_owner = NULL, lease_expires = NULL,"
            f" outbox = (kind IN {PUBLISHED_SQL})"
            f" WHERE state IN ('{QUEUED}', '{RUNNING}') AND kind IN ({kind_marks}) AND lease_owner IS NOT NULL"
            f" AND (lease_owner IN ({marks}) OR (lease_owner != ? AND lease_expires < ?)) RETURNING {SELECT}",
            (*kinds, *dead_owners, owner, now))

    def promote_due(self, kinds: tuple[str, ...], limit: int = 10000) -> list[Job]:
        """scheduled -> queued for jobs whose ``run_at`` has come: io jobs unleased, cpu jobs in the outbox."""
        now = time.time()
        kind_marks = ",".join("?" * len(kinds))
        return self._write_returning(
            f"UPDATE jobs SET state = '{QUEUED}', lease_owner = NULL, lease_expires = NULL,"
            f" outbox = (kind IN {PUBLISHED_SQL}) WHERE id IN"
            f" (SELECT id FROM jobs WHERE state IN {FROM['promote']} AND run_at <= ? AND kind IN ({kind_marks})"
            f" ORDER BY run_at LIMIT ?) RETURNING {SELECT}",
            (now, *kinds, limit))

    def take(self, owner: str, kinds: tuple[str, ...], limit: int) -> list[Job]:
        """Start up to ``limit`` queued jobs nobody holds, for ``owner`` (one writer: no other server can race
        this one)."""
        if limit <= 0:
            return []
        now = time.time()
        kind_marks = ",".join("?" * len(kinds))
        sql = (f"UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1, started_at = ?, lease_owner = ?,"
               f" lease_expires = ? WHERE seq IN (SELECT seq FROM jobs"
               f" WHERE state = '{QUEUED}' AND lease_owner IS NULL AND kind IN ({kind_marks}) AND gate IS NULL"
               f" AND (expires_at IS NULL OR expires_at > ?)"
               f" ORDER BY priority DESC, seq LIMIT ?) RETURNING priority, seq, {SELECT}")
        gated = (f"SELECT {SELECT} FROM jobs INDEXED BY jobs_gated_free WHERE state = '{QUEUED}' AND lease_owner IS NULL"
                 f" AND kind IN ({kind_marks}) AND gate IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)"
                 " ORDER BY priority DESC, seq LIMIT ?")
        start = (f"UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1, started_at = ?, lease_owner = ?,"
                 f" lease_expires = ?, waiting = NULL WHERE id = ? AND state = '{QUEUED}' RETURNING priority, seq, {SELECT}")

        def op(conn):
            rows = []
            self._release_room(conn)    # (io ones; a released cpu job waits for the outbox's next pass)
            candidates = [row_to_job(r) for r in conn.execute(gated, (*kinds, now, limit)).fetchall()]
            if candidates:          # gated jobs first: each starts or leaves the queue to wait
                for job in self._admit(conn, candidates, now):
                    rows += conn.execute(start, (now, owner, now + self.lease_seconds, job.id)).fetchall()
            if limit > len(rows):
                rows += conn.execute(sql, (now, owner, now + self.lease_seconds, *kinds, now,
                                           limit - len(rows))).fetchall()
            return rows
        rows = self._db.write(op)
        self._wake()
        return [row_to_job(r[2:]) for r in sorted(rows, key=lambda r: (-r[0], r[1]))]   # RETURNING keeps no order

    def backlog(self, kinds: tuple[str, ...]) -> int:
        """Queued jobs of ``kinds`` that nobody holds."""
        kind_marks = ",".join("?" * len(kinds))
        return self._db.read(lambda conn: conn.execute(
            f"SELECT count(*) FROM jobs WHERE state = '{QUEUED}' AND lease_owner IS NULL AND kind IN ({kind_marks})",
            kinds).fetchone()[0])

    # -- cpu jobs: the outbox and the claims of worker processes ------------------------
    def unpublished(self, after_seq: int = 0, limit: int = 5000) -> tuple[list[Job], int]:
        """Queued cpu jobs not yet confirmed by the broker, a page after ``after_seq``; returns (jobs, last seq)."""
        def query(conn):
            rows = conn.execute(f"SELECT seq, {SELECT} FROM jobs WHERE outbox = 1 AND state = '{QUEUED}' AND seq > ?"
                                " ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
            return [row_to_job(r[1:]) for r in rows], (rows[-1][0] if rows else 0)
        return self._db.read(query)

    def mark_published(self, ids: list[str]) -> None:
        """The broker confirmed these; fire and forget (a lost mark only means a harmless republish)."""
        if ids:
            self._db.submit(lambda conn: conn.executemany("UPDATE jobs SET outbox = 0 WHERE id = ?",
                                                       [(i,) for i in ids]))

    def claim_for_worker(self, job_id: str, worker: str,
                         judge: Callable[[Job, Lease], lifecycle.Verdict]) -> tuple[str, Job | None]:
        """Ask ``judge`` (greenjobs.pool.lifecycle) whether ``worker`` may run ``job_id`` now, inside the
        write transaction, and carry out its verdict: ("go", job) leased to the worker, ("skip", job or
        None), or ("lost", job) failed with the verdict's error."""
        now = time.time()

        def op(conn):
            row = conn.execute(f"SELECT {SELECT}, lease_owner, lease_expires FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return "skip", None, None
            job = row_to_job(row[:-2])
            verdict = judge(job, Lease(*row[-2:]))
            if verdict.answer == "lost":
                row = conn.execute(
                    "UPDATE jobs SET state = ?, error = ?, errors = ?, finished_at = ?, ran_by = lease_owner,"
                    " lease_owner = NULL,"
                    f" lease_expires = NULL, outbox = 0 WHERE id = ? RETURNING {SELECT}",
                    (lifecycle.WORKER_LOST[1], dumps(verdict.error), dumps(job.errors + [verdict.error]), now,
                     job_id)).fetchone()
                lost = row_to_job(row)
                return "lost", lost, self._after_end(conn, lost, lost.state) if self.linked(lost) else None
            held = self._flow_claim(conn, job, now) if verdict.answer == "go" else None
            if held is not None:                            # expired, or its gate holds it back
                return held
            if verdict.answer == "go":
                row = conn.execute(
                    f"UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1, started_at = ?, lease_owner = ?,"
                    f" lease_expires = ?, outbox = 0, waiting = NULL WHERE id = ? RETURNING {SELECT}",
                    (now, worker, verdict.lease_until, job_id)).fetchone()
                return "go", row_to_job(row), None
            return "skip", job, None
        answer, job, moved = self._db.write(op)
        self._wake()
        if moved:
            self._announce(moved)
        return answer, job

    def requeue_stale_cpu(self, dead_workers: Iterable[str] = ()) -> list[Job]:
        """Running published (cpu) jobs whose lease ran out or whose worker is dead: queued and to republish."""
        dead = list(dead_workers)
        marks = ",".join("?" * len(dead)) or "NULL"
        return self._write_returning(
            f"UPDATE jobs SET state = '{QUEUED}', lease_owner = NULL, lease_expires = NULL, outbox = 1"
            f" WHERE state = '{RUNNING}' AND kind IN {PUBLISHED_SQL}"
            f" AND (lease_expires < ? OR lease_owner IN ({marks})) RETURNING {SELECT}", (time.time(), *dead))

    def record_blocked(self, job_id: str, blocked: dict) -> None:
        self._db.submit(lambda conn: conn.execute("UPDATE jobs SET blocked = ? WHERE id = ?",
                                                  (dumps(blocked), job_id)))

    def set_progress(self, job_id: str, progress: dict) -> None:
        """Record progress without waiting: coalesced, only the latest value per job is written."""
        self._progress[job_id] = dumps(progress)
        self._db.poke()

