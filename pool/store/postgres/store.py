"""The PostgreSQL ledger: the JobStore interface over one table in a database several servers share.

The same rows as SQLite (``greenjobs.pool.store.rows``), the same compare-and-swap moves guarded
by state and lease owner, written through the group committer (``committer.py``); the schema and
its migrations are ``schema.py``.  Selections that several servers could race for (due jobs,
worker claims) lock the rows they take (``FOR UPDATE``, ``SKIP LOCKED`` where another server may
simply take the next ones).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import gevent
import psycopg

from greenjobs.pool import lifecycle
from greenjobs.pool.errors import IdempotencyConflict, ScheduleRaced, StoreUnavailable
from greenjobs.pool.job import CANCELLED, QUEUED, RUNNING, SCHEDULED, Job
from greenjobs.pool.store.base import JobStore, Lease, Pending
from greenjobs.pool.schedules import Advance
from greenjobs.pool.store.postgres import schema
from greenjobs.pool.store.schedules import ADVANCE, RACED, ScheduleTable, advance_params
from greenjobs.pool.store.workflows import WorkflowTable
from greenjobs.pool.store.flow import FlowTable
from greenjobs.pool.store.postgres.committer import Committer, Swap, json_rows
from greenjobs.pool.store.rows import (SERVER_COLUMNS, SERVER_READ, ServerRecord, ACTIVE_SQL, FROM, INSERTED, PUBLISHED_SQL, SELECT, TERMINAL_SQL,
                                       UNIQUE_FREE, dumps, insert_row, row_to_job)

log = logging.getLogger(__name__)
_SERVER_SELECT = ", ".join(SERVER_READ)
_BEAT = (f"INSERT INTO servers ({', '.join(SERVER_COLUMNS)}) VALUES ({', '.join(['%s'] * len(SERVER_COLUMNS))})"
         " ON CONFLICT (owner) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in SERVER_COLUMNS[1:]))

#: A maintenance tick analyzes the job table when this share of its rows changed since the last analyze
#: (and at least ANALYZE_MIN_ROWS), at most once per ANALYZE_EVERY seconds.
ANALYZE_SHARE, ANALYZE_MIN_ROWS, ANALYZE_EVERY = 0.2, 5000, 10.0

INSERT = f"INSERT INTO jobs ({', '.join(INSERTED)}) VALUES ({', '.join(['%s'] * len(INSERTED))})"
#: The type of each of ``INSERTED``, for inserting many rows as one statement (``json_rows``).
_TYPES = {"priority": "int", "timeout": "float8", "max_retries": "int", "run_at": "float8", "attempts": "int",
          "lease_expires": "float8", "outbox": "int", "created_at": "float8", "started_at": "float8",
          "schedule_fire_at": "float8", "deps_left": "int", "expires_at": "float8", "rerouted": "int"}
INSERT_MANY = (f"INSERT INTO jobs ({', '.join(INSERTED)}) SELECT {', '.join(INSERTED)} FROM "
               + json_rows(", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in INSERTED), ordered=True))

# The fenced moves of a run, each one statement for every row of a group commit (committer.Swap).
#: queued (held by nobody or by the runner) -> running: (started_at, owner, lease_expires, id)
CLAIM = Swap(
    f"UPDATE jobs SET state = '{RUNNING}', attempts = jobs.attempts + 1, started_at = v.started_at,"
    " lease_owner = v.owner, lease_expires = v.expires"
    f" FROM {json_rows('started_at float8, owner text, expires float8, id text')}"
    f" WHERE jobs.id = v.id AND jobs.state IN {FROM['claim']}"
    " AND (jobs.lease_owner IS NULL OR jobs.lease_owner = v.owner) RETURNING jobs.id",
    key=3)
#: running (this attempt, leased to the runner) -> an end state:
#: (state, result, error, errors, finished_at, progress, id, owner, attempt)
FINISH = Swap(
    "UPDATE jobs SET state = v.state, result = v.result, error = v.error, errors = v.errors,"
    " finished_at = v.finished_at, progress = COALESCE(v.progress, jobs.progress), ran_by = jobs.lease_owner,"
    " lease_owner = NULL,"
    " lease_expires = NULL FROM " + json_rows("state text, result text, error text, errors text, finished_at float8,"
                                              " progress text, id text, owner text, attempt int")
    + f" WHERE jobs.id = v.id AND jobs.state IN {FROM['finish']} AND jobs.lease_owner = v.owner"
    " AND jobs.attempts = v.attempt RETURNING jobs.id", key=6, notify="ended")
#: running (this attempt, leased to the runner) -> scheduled for a retry: (run_at, error, errors, id, owner, attempt)
RETRY = Swap(
    f"UPDATE jobs SET state = '{SCHEDULED}', run_at = v.run_at, error = v.error, errors = v.errors,"
    " ran_by = jobs.lease_owner, lease_owner = NULL, lease_expires = NULL"
    f" FROM {json_rows('run_at float8, error text, errors text, id text, owner text, attempt int')}"
    f" WHERE jobs.id = v.id AND jobs.state IN {FROM['retry']} AND jobs.lease_owner = v.owner"
    " AND jobs.attempts = v.attempt RETURNING jobs.id", key=3)


#: The LISTEN/NOTIFY channel servers of one database hear each other's changes on (words, never job data).
CHANNEL = "greenjobs"


def _kinds(kinds: tuple[str, ...]) -> str:
    """``kind = %s`` for one kind (so an index on (kind, priority, seq) gives the order), else ``= ANY``."""
    return "kind = %s" if len(kinds) == 1 else "kind = ANY(%s)"


def _kind_param(kinds: tuple[str, ...]):
    return kinds[0] if len(kinds) == 1 else list(kinds)


ADVANCE_PG = ADVANCE.replace("?", "%s")


class _Raced(Exception):
    """Inside an insert's savepoint: the schedule's cursor move was refused."""


class _Conflict(Exception):
    """An Idempotency-Key known with another fingerprint: rolls the insert's savepoint back."""


def redacted(url: str) -> str:
    """``url`` without its password (and query), for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class PostgresStore(FlowTable, WorkflowTable, ScheduleTable, JobStore):
    """The durable job table in PostgreSQL.  Call :meth:`open` once from a greenlet before use."""

    _MARK = "%s"
    _SKIP = " FOR UPDATE SKIP LOCKED"
    #: Milliseconds a take or claim waits for another server's transaction to let go of a flow row before it
    #: defers its gated jobs a moment: far below deadlock_timeout, so a group commit holding flow rows of one
    #: op and job rows of another never deadlocks with another server's.
    FLOW_LOCK_WAIT_MS = 100

    def _lock_flow(self, conn, keys: list[str]) -> dict[str, float] | None:
        """The flow rows of ``keys``, made if missing and locked FOR UPDATE, in a savepoint with a short
        lock_timeout; None (nothing changed) if another transaction held one that long."""
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{self.FLOW_LOCK_WAIT_MS}ms'")
                conn.cursor().executemany("INSERT INTO flow (key, next_at) VALUES (%s, 0) ON CONFLICT (key) DO NOTHING",
                                          [(k,) for k in keys])
                rows = conn.execute("SELECT key, next_at, last_start FROM flow WHERE key = ANY(%s) ORDER BY key"
                                    " FOR UPDATE", (keys,)).fetchall()
                conn.execute("SET LOCAL lock_timeout TO DEFAULT")
            return {key: [next_at, last] for key, next_at, last in rows}
        except psycopg.errors.LockNotAvailable:
            return None

    def __init__(self, url: str, lease_seconds: float = 30.0, readers: int = 4, max_batch_ops: int = 5000):
        self.url = url
        self.lease_seconds = lease_seconds
        self._progress: dict[str, str] = {}
        self._next_analyze = 0.0
        self._analyzer = None
        self._db = Committer(url, readers, max_batch_ops, setup=schema.migrate, each_batch=self._progress_writes,
                             channel=CHANNEL)
        self._listener = None

    @classmethod
    def from_url(cls, url: str, *, lease_seconds: float = 30.0, synchronous: str = "full") -> "PostgresStore":
        """Any libpq URL (``postgresql://user@host:5432/db``); a password may come from the URL, PGPASSWORD
        or ~/.pgpass.  Commits that promise something to a client are always synchronous."""
        return cls(url, lease_seconds=lease_seconds)

    @property
    def where(self) -> str:
        """Where the ledger lives, for logs (never the password)."""
        return redacted(self.url)

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> "PostgresStore":
        """Connect, bring the schema up to date (under an advisory lock) and start the committer."""
        self._db.open()
        return self

    def close(self) -> None:
        if self._listener is not None:
            self._listener.kill()
            self._listener = None
        self._db.close()

    def listen(self, heard: Callable[[set[str]], None]) -> bool:
        """LISTEN on one dedicated connection (not the pool's: it must stay in session mode, so not through
        PgBouncer's transaction mode; there, turn greenjobs.cluster.notify off and poll)."""
        def run():
            missed = False
            while True:
                try:
                    with psycopg.connect(self._db.url, autocommit=True, connect_timeout=5) as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        if missed:
                            heard({"queued", "ended", "cancelled"})
                        while True:
                            for note in conn.notifies(timeout=5.0):
                                heard(set(note.payload.split(",")))
                except Exception as exc:            # the database went away: poll until it is back
                    log.debug("LISTEN %s: %s; listening again in 1 s", CHANNEL, exc)
                    missed = True
                    gevent.sleep(1.0)
        self._listener = gevent.spawn(run)
        return True

    def flush(self) -> None:
        self._db.write(lambda conn: None)

    def maintain(self) -> None:
        """Keep the planner's picture of the job table current after a burst.

        Autovacuum analyzes at most once a minute (its naptime); until then a table that filled with
        thousands of jobs in seconds is planned as nearly empty, and a group commit's claims join by
        scanning every queued job instead of looking each one up by id (measured: a third more
        database time per claim+complete).  A sampled ANALYZE costs tens of milliseconds."""
        now = time.monotonic()
        if now < self._next_analyze:
            return
        self._next_analyze = now + ANALYZE_EVERY

        def analyze(conn):
            row = conn.execute("SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables"
                               " WHERE relid = 'jobs'::regclass").fetchone()
            if row and row[1] >= max(ANALYZE_MIN_ROWS, ANALYZE_SHARE * row[0]):
                conn.execute("ANALYZE (SKIP_LOCKED) jobs")      # never queue behind a VACUUM or an index build

        def run():
            try:
                self._db.read(analyze)
            except StoreUnavailable as exc:
                log.info("ANALYZE jobs skipped: %s", exc)
        # in a greenlet of its own: the maintenance tick's other duties (lease renewal) never wait for it
        if self._analyzer is None or self._analyzer.dead:
            self._analyzer = gevent.spawn(run)

    @property
    def healthy(self) -> bool:
        return self._db.health.healthy

    @property
    def last_error(self) -> str | None:
        return self._db.health.last_error

    def ping(self) -> bool:
        """True if a read answers and writes succeed (an unhealthy store is probed with an empty write)."""
        try:
            self._db.read(lambda conn: conn.execute("SELECT 1").fetchone())
            if self._db.health.probe_due():
                self.flush()
        except StoreUnavailable:
            return False
        return self.healthy

    def _progress_writes(self):
        if not self._progress:
            return None
        rows, self._progress = [(p, i) for i, p in self._progress.items()], {}
        return lambda conn: conn.cursor().executemany(
            f"UPDATE jobs SET progress = %s WHERE id = %s AND state = '{RUNNING}'", rows)

    def _write_returning(self, sql: str, params: tuple, notify: str | None = None) -> list[Job]:
        return self._db.write(lambda conn: [row_to_job(r) for r in conn.execute(sql, params).fetchall()],
                              notify=notify)

    def _read_jobs(self, sql: str, params: tuple) -> list[Job]:
        return self._db.read(lambda conn: [row_to_job(r) for r in conn.execute(sql, params).fetchall()])

    # -- reads -----------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        jobs = self._read_jobs(f"SELECT {SELECT} FROM jobs WHERE id = %s", (job_id,))
        return jobs[0] if jobs else None

    def list(self, state: str | None = None, handler: str | None = None, limit: int = 50,
             after: int | None = None, schedule: str | None = None,
             text: str | None = None) -> tuple[list[Job], int | None]:
        """Newest first, and the cursor (the sequence number) of the last one."""
        where, params = [], []
        for column, value in (("state = %s", state), ("handler = %s", handler), ("schedule_name = %s", schedule),
                              ("seq < %s", after)):
            if value is not None and value != "":
                where.append(column)
                params.append(value)
        if text:
            where.append("(strpos(args, %s) > 0 OR strpos(kwargs, %s) > 0)")
            params += [text, text]
        sql = f"SELECT {SELECT}, seq FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._db.read(lambda conn: conn.execute(sql + " ORDER BY seq DESC LIMIT %s", (*params, limit)).fetchall())
        return [row_to_job(r[:-1]) for r in rows], (rows[-1][-1] if rows else None)

    def cursor_of(self, job_id: str) -> int | None:
        row = self._db.read(lambda conn: conn.execute("SELECT seq FROM jobs WHERE id = %s", (job_id,)).fetchone())
        return None if row is None else row[0]

    def batch_counts(self, batch_id: str) -> dict[str, Any] | None:
        def query(conn):
            row = conn.execute("SELECT total, created_at FROM batches WHERE id = %s", (batch_id,)).fetchone()
            if row is None:
                return None
            counts = dict(conn.execute("SELECT state, count(*) FROM jobs WHERE batch_id = %s GROUP BY state",
                                       (batch_id,)).fetchall())
            return {"total": row[0], "created_at": row[1], "counts": counts}
        return self._db.read(query)

    def batch_active(self, batch_id: str) -> int:
        return self._db.read(lambda conn: conn.execute(
            f"SELECT count(*) FROM jobs WHERE batch_id = %s AND state IN {ACTIVE_SQL}", (batch_id,)).fetchone()[0])

    def batch_of(self, job_ids: list[str]) -> str | None:
        unique = set(job_ids)

        def query(conn):
            row = conn.execute("SELECT batch_id FROM jobs WHERE id = %s", (job_ids[0],)).fetchone()
            if row is None or row[0] is None:
                return None
            members = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE batch_id = %s", (row[0],))}
            return row[0] if members == unique else None
        return self._db.read(query)

    def get_many(self, job_ids: list[str]) -> list[Job]:
        return self._read_jobs(f"SELECT {SELECT} FROM jobs WHERE id = ANY(%s)", (job_ids,)) if job_ids else []

    def holders(self, job_ids: list[str]) -> list[tuple[str, str, str | None, int]]:
        if not job_ids:
            return []
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            "SELECT id, state, lease_owner, attempts FROM jobs WHERE id = ANY(%s)", (job_ids,)).fetchall())]

    def held(self, owner: str, kinds: tuple[str, ...]) -> list[tuple[str, float]]:
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            f"SELECT id, started_at FROM jobs WHERE lease_owner = %s AND state = '{RUNNING}' AND kind = ANY(%s)",
            (owner, list(kinds))).fetchall())]

    def active_counts(self) -> list[tuple[str, str, int]]:
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            f"SELECT handler, state, count(*) FROM jobs WHERE state IN {ACTIVE_SQL} GROUP BY handler, state").fetchall())]

    def owners(self, me: str) -> list[tuple[str, float]]:
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            "SELECT lease_owner, max(lease_expires) FROM jobs WHERE lease_owner IS NOT NULL AND lease_owner <> %s"
            f" AND state IN {ACTIVE_SQL} GROUP BY lease_owner", (me,)).fetchall())]

    # -- the shared event log ------------------------------------------------------------
    def add_events(self, events: list[tuple[float, str]]) -> None:
        if events:
            self._db.write(lambda conn: conn.cursor().executemany("INSERT INTO events (at, body) VALUES (%s, %s)", events), notify="events")

    def events_after(self, seq: int, limit: int) -> list[tuple[int, float, str]]:
        return [tuple(r) for r in self._db.read(lambda conn: conn.execute(
            "SELECT seq, at, body FROM events WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit)).fetchall())]

    def last_event_seq(self) -> int:
        row = self._db.read(lambda conn: conn.execute("SELECT last_value FROM events_seq_seq WHERE is_called").fetchone())
        return int(row[0]) if row else 0

    def prune_events(self, keep: int, before: float) -> int:
        return self._db.write(lambda conn: conn.execute(
            "DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - %s AND at < %s",
            (keep, before)).rowcount)

    # -- the servers table ----------------------------------------------------------------
    def beat(self, server: ServerRecord, forget_before: float) -> None:
        def write(conn):
            conn.execute(_BEAT, server.row())
            conn.execute("DELETE FROM servers WHERE heartbeat_at < %s", (forget_before,))
        self._db.write(write)

    def servers(self) -> list[ServerRecord]:
        return [ServerRecord(*r) for r in self._db.read(lambda conn: conn.execute(
            f"SELECT {_SERVER_SELECT} FROM servers ORDER BY started_at, owner").fetchall())]

    def request_control(self, owner: str, request: str) -> bool:
        return self._db.write(lambda conn: conn.execute("UPDATE servers SET control = %s WHERE owner = %s",
                                                        (request, owner)).rowcount) == 1

    def leave(self, owner: str) -> None:
        self._db.write(lambda conn: conn.execute("DELETE FROM servers WHERE owner = %s", (owner,)))

    # -- submission --------------------------------------------------------------------
    def insert(self, jobs: list[Job], owner: str, batch_id: str | None = None,
               keys: dict[int, tuple[str, str]] | None = None, idempotency_ttl: float = 86400.0,
               advance: Advance | None = None, workflow=None) -> dict[int, str]:
        """Store new jobs in one transaction (all or nothing); see JobStore.insert.

        A key is claimed first, with ``INSERT … ON CONFLICT``: a live key another transaction holds
        makes this one wait for it and then see it, so two servers given one key make one job."""
        now = time.time()
        rows = {i: insert_row(j, owner, now + self.lease_seconds) for i, j in enumerate(jobs)}
        keys = keys or {}

        def op(conn):
            repeats: dict[int, str] = {}
            try:
                with conn.transaction():            # a savepoint inside the group commit
                    if advance is not None:         # the row lock serialises servers firing one schedule
                        if conn.execute(ADVANCE_PG, advance_params(advance)).rowcount != 1:
                            raise _Raced
                        for i, job in enumerate(jobs):
                            if job.schedule and job.schedule["fire_at"] is not None:
                                found = conn.execute(
                                    "SELECT id FROM jobs WHERE schedule_name = %s AND schedule_fire_at = %s",
                                    (job.schedule["name"], job.schedule["fire_at"])).fetchone()
                                if found is not None:
                                    repeats[i] = found[0]
                    for i, (key, fingerprint) in keys.items():
                        taken = conn.execute(
                            "INSERT INTO idempotency (key, fingerprint, job_id, created_at) VALUES (%s, %s, %s, %s)"
                            " ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
                            " job_id = EXCLUDED.job_id, created_at = EXCLUDED.created_at"
                            " WHERE idempotency.created_at <= %s RETURNING job_id",
                            (key, fingerprint, jobs[i].id, now, now - idempotency_ttl)).fetchone()
                        if taken is not None:
                            continue
                        known = conn.execute("SELECT fingerprint, job_id FROM idempotency WHERE key = %s",
                                             (key,)).fetchone()
                        if known[0] != fingerprint:
                            raise _Conflict(known[1])
                        repeats[i] = known[1]
                    for i, job in enumerate(jobs):  # claim each unique_key by its unique index (not a lock)
                        if job.unique_key is not None and i not in repeats:
                            found = self._insert_unique(conn, rows[i], job.unique_key)
                            if found is not None:
                                repeats[i] = found
                                if i in keys:       # its Idempotency-Key answers the active job, as this call does
                                    conn.execute("UPDATE idempotency SET job_id = %s WHERE key = %s",
                                                 (found, keys[i][0]))
                    if advance is not None and len(jobs) - 1 in repeats:    # the schedule's last job is that one
                        conn.execute("UPDATE schedules SET last_job_id = %s WHERE name = %s",
                                     (repeats[len(jobs) - 1], advance.name))
                    fresh = [r for i, r in rows.items() if i not in repeats
                             and jobs[i].unique_key is None]       # (the unique ones are in already)
                    counted = sum(1 for i in rows if i not in repeats)
                    if batch_id is not None and counted:
                        conn.execute("INSERT INTO batches (id, total, created_at) VALUES (%s, %s, %s)",
                                     (batch_id, counted, now))
                    if len(fresh) == 1:
                        conn.execute(INSERT, fresh[0])
                    elif fresh:                 # one statement for the lot
                        conn.execute(INSERT_MANY, (dumps(fresh),))
                    if workflow is not None:
                        self._insert_plan(conn, workflow, now)
            except _Conflict as conflict:
                return repeats, str(conflict)
            except _Raced:
                return {}, RACED
            except psycopg.errors.UniqueViolation:
                if advance is None:
                    raise
                return {}, RACED                    # the unique slot index: a slot fired before (a cursor moved back)
            return repeats, None
        shared = any(j.kind in lifecycle.LEASED_KINDS and j.state == QUEUED for j in jobs)
        repeats, conflict = self._db.write(op, durable=True, notify="queued" if shared else None)
        if conflict is RACED:
            raise ScheduleRaced(f"schedule {advance.name!r} changed or was fired by another server")
        if conflict is not None:
            raise IdempotencyConflict(f"this Idempotency-Key was used for a different request (job {conflict});"
                                      " use a new key for a new job")
        return repeats

    @staticmethod
    def _insert_unique(conn, row: tuple, key: str) -> str | None:
        """Insert a job with a unique_key unless an active one holds the key; returns that one's id, or None.
        A transaction inserting the key meanwhile makes this one wait for it and then see its job (or, if it
        rolled back, insert) - the oban #1093 hole of a lock-based version cannot happen."""
        while True:
            if conn.execute(INSERT + f" ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN {ACTIVE_SQL}"
                            " DO NOTHING RETURNING id", row).fetchone() is not None:
                return None
            found = conn.execute(f"SELECT id FROM jobs WHERE unique_key = %s AND state IN {ACTIVE_SQL}", (key,)).fetchone()
            if found is not None:
                return found[0]             # (else it ended in between: insert again)

    # -- outcomes ----------------------------------------------------------------------
    def claim(self, job: Job, owner: str) -> Pending:
        """queued -> running for ``owner``; the job object changes at once, the Pending says if the store agreed."""
        now = time.time()
        job.transition(RUNNING)
        job.attempts, job.started_at = job.attempts + 1, now
        return self._db.swap(CLAIM, (now, owner, now + self.lease_seconds, job.id))

    def finish(self, job: Job, owner: str, state: str, result_json: str | None, error: dict | None) -> bool:
        """running (this attempt, leased to ``owner``) -> ``state``: fenced, so a runner that lost its lease
        records nothing."""
        now = time.time()
        errors = job.errors + [error] if error is not None else job.errors
        args = (state, result_json, None if error is None else dumps(error), dumps(errors) if errors else None,
                now, None if job.progress is None else dumps(job.progress))
        self._progress.pop(job.id, None)
        if self.linked(job):
            if not self._finish_step(job, owner, args):
                return False
        elif not self._db.swap(FINISH, args + (job.id, owner, job.attempts)).get():
            return False
        job.transition(state)
        job.finished_at, job.errors, job.ran_by = now, errors, owner
        job.result = None if result_json is None else json.loads(result_json)
        job.error = error
        return True

    def retry(self, job: Job, owner: str, run_at: float, error: dict) -> bool:
        errors = job.errors + [error]
        self._progress.pop(job.id, None)
        if not self._db.swap(RETRY, (run_at, dumps(error), dumps(errors), job.id, owner, job.attempts)).get():
            return False
        job.transition(SCHEDULED)
        job.run_at, job.error, job.errors = run_at, error, errors
        return True

    def record_blocked(self, job_id: str, blocked: dict) -> None:
        self._db.submit(lambda conn: conn.execute("UPDATE jobs SET blocked = %s WHERE id = %s",
                                                  (dumps(blocked), job_id)))

    def set_progress(self, job_id: str, progress: dict) -> None:
        self._progress[job_id] = dumps(progress)
        self._db.poke()

    def _change_or_read(self, sql: str, params: tuple, job_id: str, notify: str) -> tuple[Job | None, bool]:
        def op(conn):
            try:
                with conn.transaction():    # a revive racing another server's insert of its unique_key: no change
                    row = conn.execute(sql, params).fetchone()
            except psycopg.errors.UniqueViolation:
                row = None
            if row is not None:
                job = row_to_job(row)
                ended = self.linked(job) and job.terminal
                return job, True, self._after_end(conn, job, job.state) if ended else None
            row = conn.execute(f"SELECT {SELECT} FROM jobs WHERE id = %s", (job_id,)).fetchone()
            return (row_to_job(row) if row else None), False, None
        job, changed, moved = self._db.write(op, durable=True, notify=notify)
        if moved:
            self._announce(moved)
        return job, changed

    def _write_step(self, op, notify: str):
        return self._db.write(op, notify=notify)

    def cancel(self, job_id: str, error: dict) -> tuple[Job | None, bool]:
        return self._change_or_read(
            f"UPDATE jobs SET state = '{CANCELLED}', finished_at = %s, ran_by = COALESCE(lease_owner, ran_by),"
            " lease_owner = NULL, lease_expires = NULL,"
            f" error = %s WHERE id = %s AND state IN {FROM['cancel']} RETURNING {SELECT}",
            (time.time(), dumps(error), job_id), job_id, "cancelled")

    def revive(self, job_id: str) -> tuple[Job | None, bool]:
        return self._change_or_read(
            f"UPDATE jobs SET state = '{QUEUED}', finished_at = NULL, result = NULL, run_at = NULL,"
            " lease_owner = NULL, lease_expires = NULL,"
            f" outbox = (kind IN {PUBLISHED_SQL})::int, waiting = NULL WHERE id = %s AND state IN {FROM['revive']}"
            f" AND workflow_id IS NULL AND {UNIQUE_FREE} RETURNING {SELECT}",
            (job_id,), job_id, "queued")

    # -- leases, adoption, due jobs, sweeping --------------------------------------------
    def renew(self, owner: str) -> int:
        expires = time.time() + self.lease_seconds
        return self._db.write(lambda conn: conn.execute(
            f"UPDATE jobs SET lease_expires = %s WHERE lease_owner = %s AND state IN ('{QUEUED}', '{RUNNING}')",
            (expires, owner)).rowcount)

    def release(self, owner: str) -> int:
        return self._db.write(lambda conn: conn.execute(
            f"UPDATE jobs SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = %s AND state = '{QUEUED}'",
            (owner,)).rowcount, notify="queued")

    def requeue(self, jobs: Iterable[Job], owner: str, started: bool = False) -> int:
        ids = [j.id for j in jobs]
        if not ids:
            return 0
        return self._db.write(lambda conn: conn.execute(
            f"UPDATE jobs SET state = '{QUEUED}', attempts = GREATEST(attempts - {0 if started else 1}, 0),"
            " lease_owner = NULL,"
            f" lease_expires = NULL, started_at = NULL WHERE id = ANY(%s) AND state IN {FROM['give_back']}"
            " AND lease_owner = %s", (ids, owner)).rowcount, notify="queued")

    def adopt(self, owner: str, dead_owners: list[str], kinds: tuple[str, ...]) -> list[Job]:
        now = time.time()
        return self._write_returning(
            f"UPDATE jobs SET state = '{QUEUED}', lease_owner = NULL, lease_expires = NULL,"
            f" outbox = (kind IN {PUBLISHED_SQL})::int"
            f" WHERE state IN ('{QUEUED}', '{RUNNING}') AND kind = ANY(%s) AND lease_owner IS NOT NULL"
            " AND (lease_owner = ANY(%s) OR (lease_owner <> %s AND lease_expires < %s))"
            f" RETURNING {SELECT}",
            (list(kinds), list(dead_owners), owner, now), notify="queued")

    def promote_due(self, kinds: tuple[str, ...], limit: int = 10000) -> list[Job]:
        now = time.time()
        return self._write_returning(
            f"WITH due AS MATERIALIZED (SELECT seq FROM jobs WHERE state IN {FROM['promote']} AND run_at <= %s"
            " AND kind = ANY(%s) ORDER BY run_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" UPDATE jobs SET state = '{QUEUED}', lease_owner = NULL, lease_expires = NULL,"
            f" outbox = (kind IN {PUBLISHED_SQL})::int FROM due WHERE jobs.seq = due.seq RETURNING "
            + ", ".join(f"jobs.{c}" for c in SELECT.split(", ")),
            (now, list(kinds), limit), notify="queued")

    def take(self, owner: str, kinds: tuple[str, ...], limit: int) -> list[Job]:
        """The claim every serious PostgreSQL queue makes: a MATERIALIZED selection locked with SKIP LOCKED
        (without the fence the planner may update more rows than the limit), then one UPDATE … RETURNING
        that starts them."""
        if limit <= 0:
            return []
        now = time.time()
        sql = (f"WITH free AS MATERIALIZED (SELECT seq FROM jobs WHERE state = '{QUEUED}' AND lease_owner IS NULL"
               f" AND {_kinds(kinds)} AND gate IS NULL AND (expires_at IS NULL OR expires_at > %s)"
               " ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED)"
               f" UPDATE jobs SET state = '{RUNNING}', attempts = jobs.attempts + 1, started_at = %s,"
               " lease_owner = %s, lease_expires = %s FROM free WHERE jobs.seq = free.seq"
               " RETURNING jobs.priority, jobs.seq, " + ", ".join(f"jobs.{c}" for c in SELECT.split(", ")))
        gated = (f"SELECT {SELECT} FROM jobs WHERE state = '{QUEUED}' AND lease_owner IS NULL AND {_kinds(kinds)}"
                 " AND gate IS NOT NULL AND (expires_at IS NULL OR expires_at > %s)"
                 " ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED")
        start = (f"UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1, started_at = %s, lease_owner = %s,"
                 f" lease_expires = %s, waiting = NULL WHERE id = %s AND state = '{QUEUED}'"
                 f" RETURNING priority, seq, {SELECT}")

        def op(conn):
            rows = []
            self._release_room(conn)    # (io ones; a released cpu job waits for the outbox's next pass)
            candidates = [row_to_job(r) for r in conn.execute(gated, (_kind_param(kinds), now, limit)).fetchall()]
            if candidates:          # gated jobs first: each starts or leaves the queue to wait
                for job in self._admit(conn, candidates, now):
                    rows += conn.execute(start, (now, owner, now + self.lease_seconds, job.id)).fetchall()
            if limit > len(rows):
                rows += conn.execute(sql, (_kind_param(kinds), now, limit - len(rows), now, owner,
                                           now + self.lease_seconds)).fetchall()
            return rows
        rows = self._db.write(op)
        self._wake()
        return [row_to_job(r[2:]) for r in sorted(rows, key=lambda r: (-r[0], r[1]))]   # RETURNING keeps no order

    def backlog(self, kinds: tuple[str, ...]) -> int:
        return self._db.read(lambda conn: conn.execute(
            f"SELECT count(*) FROM jobs WHERE state = '{QUEUED}' AND lease_owner IS NULL AND {_kinds(kinds)}",
            (_kind_param(kinds),)).fetchone()[0])

    def sweep(self, finished_before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` terminal jobs that finished before ``finished_before``, oldest first, by the
        finished-at index (so recent jobs never stall it)."""
        def op(conn):
            deleted = conn.execute(
                f"DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state IN {TERMINAL_SQL}"
                " AND finished_at < %s ORDER BY finished_at LIMIT %s)", (finished_before, limit)).rowcount
            self._sweep_edges(conn, finished_before)
            conn.execute("DELETE FROM batches WHERE created_at < %s AND NOT EXISTS"
                         " (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id)", (finished_before,))
            conn.execute("DELETE FROM idempotency WHERE created_at < %s", (finished_before,))
            return deleted
        return self._db.write(op)

    # -- cpu jobs: the outbox and worker claims -------------------------------------------
    def unpublished(self, after_seq: int = 0, limit: int = 5000) -> tuple[list[Job], int]:
        rows = self._db.read(lambda conn: conn.execute(
            f"SELECT seq, {SELECT} FROM jobs WHERE outbox = 1 AND state = '{QUEUED}' AND seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit)).fetchall())
        return [row_to_job(r[1:]) for r in rows], (rows[-1][0] if rows else 0)

    def mark_published(self, ids: list[str]) -> None:
        if ids:
            self._db.submit(lambda conn: conn.execute("UPDATE jobs SET outbox = 0 WHERE id = ANY(%s)", (list(ids),)))

    def claim_for_worker(self, job_id: str, worker: str,
                         judge: Callable[[Job, Lease], lifecycle.Verdict]) -> tuple[str, Job | None]:
        """Carry out ``judge``'s verdict on the row, locked for the decision (FOR UPDATE)."""
        now = time.time()

        def op(conn):
            row = conn.execute(f"SELECT {SELECT}, lease_owner, lease_expires FROM jobs WHERE id = %s FOR UPDATE",
                               (job_id,)).fetchone()
            if row is None:
                return "skip", None, None
            job = row_to_job(row[:-2])
            verdict = judge(job, Lease(*row[-2:]))
            if verdict.answer == "lost":
                row = conn.execute(
                    "UPDATE jobs SET state = %s, error = %s, errors = %s, finished_at = %s, ran_by = lease_owner,"
                    " lease_owner = NULL,"
                    f" lease_expires = NULL, outbox = 0 WHERE id = %s RETURNING {SELECT}",
                    (lifecycle.WORKER_LOST[1], dumps(verdict.error), dumps(job.errors + [verdict.error]), now,
                     job_id)).fetchone()
                lost = row_to_job(row)
                return "lost", lost, self._after_end(conn, lost, lost.state) if self.linked(lost) else None      # (other servers' long-polls learn it by polling)
            held = self._flow_claim(conn, job, now) if verdict.answer == "go" else None
            if held is not None:                            # expired, or its gate holds it back
                return held
            if verdict.answer == "go":
                row = conn.execute(
                    f"UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1, started_at = %s, lease_owner = %s,"
                    f" lease_expires = %s, outbox = 0, waiting = NULL WHERE id = %s RETURNING {SELECT}",
                    (now, worker, verdict.lease_until, job_id)).fetchone()
                return "go", row_to_job(row), None
            return "skip", job, None
        answer, job, moved = self._db.write(op)
        self._wake()
        if moved:
            self._announce(moved)
        return answer, job

    def requeue_stale_cpu(self, dead_workers: Iterable[str] = ()) -> list[Job]:
        return self._write_returning(
            f"UPDATE jobs SET state = '{QUEUED}', lease_owner = NULL, lease_expires = NULL, outbox = 1"
            f" WHERE state = '{RUNNING}' AND kind IN {PUBLISHED_SQL}"
            f" AND (lease_expires < %s OR lease_owner = ANY(%s)) RETURNING {SELECT}", (time.time(), list(dead_workers)))

    # -- webhooks ------------------------------------------------------------------------
    def add_delivery(self, job_id: str, delivery: Job, url: str, owner: str) -> bool:
        callback = dumps({"url": url, "delivery": delivery.id, "state": "pending", "attempts": []})

        def op(conn):
            if conn.execute("UPDATE jobs SET callback = %s WHERE id = %s AND callback IS NULL",
                            (callback, job_id)).rowcount != 1:
                return False
            conn.execute(INSERT, insert_row(delivery, owner, time.time() + self.lease_seconds))
            return True
        return self._db.write(op, notify="queued")

    def record_delivery(self, job_id: str, attempt: dict, state: str, keep: int = 20) -> None:
        def op(conn):
            row = conn.execute("SELECT callback FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None or row[0] is None:
                return
            callback = json.loads(row[0])
            callback["attempts"] = (callback.get("attempts", []) + [attempt])[-keep:]
            callback["state"] = state
            conn.execute("UPDATE jobs SET callback = %s WHERE id = %s", (dumps(callback), job_id))
        self._db.write(op)

    def callbacks_due(self, limit: int = 500) -> list[Job]:
        return self._read_jobs(
            f"SELECT {SELECT} FROM jobs WHERE callback_url IS NOT NULL AND callback IS NULL AND state IN {TERMINAL_SQL}"
            " ORDER BY seq LIMIT %s", (limit,))
