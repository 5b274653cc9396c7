"""The SQLite ledger of truth, with group commit and all sqlite calls off the gevent hub.

Every write is an *op* (a function of a connection) queued to one committer greenlet.  The
committer takes every op queued so far, runs them in one transaction in a writer thread, then
wakes each caller with its op's result: many concurrent submissions share one commit (and one
fsync).  Reads use a small pool of reader connections, also in threads; WAL mode lets them run
while a write is in progress.

State changes are compare-and-swap updates (``WHERE state IN (...) AND lease_owner = ?``) so the
store stays correct when several runners (processes, servers, CPU result consumers) race.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from typing import Any, Callable, Iterable

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from greenjobs.pool.errors import IdempotencyConflict, StoreUnavailable
from greenjobs.pool.job import QUEUED, RUNNING, Job

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    handler TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    timeout REAL,
    max_retries INTEGER NOT NULL DEFAULT 0,
    run_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    errors TEXT,
    progress TEXT,
    batch_id TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    outbox INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    callback_url TEXT,
    callback TEXT
);
"""

#: Columns added after the first release: an older store gets them at open (ALTER TABLE ... ADD COLUMN).
ADDED_COLUMNS = (("callback_url", "TEXT"), ("callback", "TEXT"))

INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_handler ON jobs(handler, seq);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs(batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(run_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_outbox ON jobs(seq) WHERE outbox = 1;
DROP INDEX IF EXISTS jobs_active;
CREATE INDEX IF NOT EXISTS jobs_callback_due ON jobs(seq) WHERE callback_url IS NOT NULL AND callback IS NULL;
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, total INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, job_id TEXT NOT NULL,
                                        created_at REAL NOT NULL);
"""

COLUMNS = ("id, handler, kind, state, priority, args, kwargs, timeout, max_retries, run_at, attempts, "
           "result, error, errors, progress, batch_id, created_at, started_at, finished_at, callback_url, callback")
_ACTIVE_SQL = "('scheduled', 'queued', 'running')"


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def row_to_job(row: tuple) -> Job:
    (id_, handler, kind, state, priority, args, kwargs, timeout, max_retries, run_at, attempts,
     result, error, errors, progress, batch_id, created_at, started_at, finished_at, callback_url, callback) = row
    return Job(id=id_, handler=handler, kind=kind, state=state, priority=priority, args=json.loads(args),
               kwargs=json.loads(kwargs), timeout=timeout, max_retries=max_retries, run_at=run_at,
               attempts=attempts, result=_loads(result), error=_loads(error), errors=_loads(errors) or [],
               progress=_loads(progress),
               batch_id=batch_id, created_at=created_at, started_at=started_at, finished_at=finished_at,
               callback_url=callback_url, callback=_loads(callback))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class _Op:
    """A queued write: either ``fn(conn)``, or a compare-and-swap row update ``sql`` with ``params``
    whose result is whether it changed its row.  Row updates of one ``sql`` in a batch run as one
    executemany, so thousands of claims or finishes cost the writer thread one C loop each."""

    __slots__ = ("fn", "sql", "params", "result", "durable")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any] | None, sql: str = "", params: tuple = (),
                 durable: bool = False):
        self.fn, self.sql, self.params, self.durable = fn, sql, params, durable
        self.result = AsyncResult()

    def run(self, conn: sqlite3.Connection) -> Any:
        if self.fn is not None:
            return self.fn(conn)
        return conn.execute(self.sql, self.params).rowcount == 1


class SqliteStore:
    """The durable job table.  Call :meth:`open` once from a greenlet before use.

    ``synchronous`` is SQLite's: ``full`` fsyncs the WAL on every (group) commit and survives
    power loss; ``normal`` survives a killed process but not a power cut.
    """

    def __init__(self, path: str, synchronous: str = "full", lease_seconds: float = 30.0,
                 readers: int = 4, max_batch_ops: int = 20000):
        self.path = path
        self.synchronous = synchronous
        self.lease_seconds = lease_seconds
        self.max_batch_ops = max_batch_ops
        self._ops: list[_Op] = []
        self._progress: dict[str, str] = {}
        self._wake = Event()
        self._writer_pool = ThreadPool(1)
        self._reader_pool = ThreadPool(readers)
        self._readers: list[sqlite3.Connection] = []
        self._reader_slots = BoundedSemaphore(readers)
        self._writer: sqlite3.Connection | None = None
        self._committer = None
        self.healthy = True
        self.last_error: str | None = None

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
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._sync_mode = self.synchronous.upper()
        self._writer = self._writer_pool.apply(self._connect_writer)
        self._committer = gevent.spawn(self._commit_loop)
        return self

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreUnavailable(f"could not put {self.path} in WAL mode (got {mode})")
        # Checkpoints (copying the WAL into the database, with an fsync) would otherwise run inside
        # whichever commit crosses the threshold and stall every waiting submission behind it; they
        # run from a reader connection instead (see checkpoint()).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.executescript(SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        for name, sqltype in ADDED_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sqltype}")
        conn.executescript(INDEXES)
        return conn

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database without blocking writers (PASSIVE)."""
        self._read(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())

    def close(self) -> None:
        """Flush queued writes, then close every connection."""
        if self._committer is not None:
            self.flush()
            self._committer.kill()
            self._committer = None
        if self._writer is not None:
            self._writer_pool.apply(self._writer.close)
            self._writer = None
        for conn in self._readers:
            self._reader_pool.apply(conn.close)
        self._readers.clear()
        self._writer_pool.kill()
        self._reader_pool.kill()

    def flush(self) -> None:
        """Wait until every write queued so far is committed (or has failed)."""
        self._write(lambda conn: None)

    # -- the committer ---------------------------------------------------------------
    def _write(self, fn: Callable[[sqlite3.Connection], Any], durable: bool = False) -> Any:
        """Queue ``fn`` for the next group commit and wait for its result.

        ``durable`` ops are promises made to a client (a job accepted, cancelled, revived): with
        ``synchronous = full`` their commit is fsynced before they return.  The others (claims,
        outcomes, leases) may be lost to a power cut, which only means the job runs again: they are
        made durable by the next fsynced commit or checkpoint, and do not wait for a disk flush.
        """
        return self._submit(fn, durable=durable).result.get()

    def _submit(self, fn: Callable[[sqlite3.Connection], Any] | None, sql: str = "", params: tuple = (),
                durable: bool = False) -> _Op:
        if self._writer is None:
            raise StoreUnavailable("the store is closed")
        op = _Op(fn, sql, params, durable)
        self._ops.append(op)
        self._wake.set()
        return op

    def _swap(self, sql: str, params: tuple) -> AsyncResult:
        """Queue a one-row compare-and-swap update; its result becomes True if the row changed."""
        return self._submit(None, sql, params).result

    def _commit_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._ops or self._progress:
                ops, self._ops = self._ops[:self.max_batch_ops], self._ops[self.max_batch_ops:]
                progress, self._progress = self._progress, {}
                try:
                    results = self._writer_pool.apply(self._run_batch, (ops, progress))
                except Exception as exc:  # the whole batch failed: retry op by op
                    self._mark_unhealthy(exc)
                    results = self._writer_pool.apply(self._run_singly, (ops,))
                else:
                    self.healthy, self.last_error = True, None
                for op, (ok, value) in zip(ops, results):
                    if ok:
                        op.result.set(value)
                    else:
                        op.result.set_exception(value)

    def _mark_unhealthy(self, exc: BaseException) -> None:
        if self.healthy:
            log.error("store write failed: %s", exc)
        self.healthy, self.last_error = False, str(exc)

    def _run_batch(self, ops: list[_Op], progress: dict[str, str]) -> list:
        """One transaction: function ops in order, then row swaps grouped by statement.

        Row swaps run after the function ops of their batch; each names one job and its expected
        state, so the order between a swap and a function op of the same batch does not matter
        for correctness (the later one simply finds the row changed).
        """
        conn = self._writer
        results: list = [None] * len(ops)
        groups: dict[str, list[int]] = {}
        self._sync(conn, any(op.durable for op in ops))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for i, op in enumerate(ops):
                if op.fn is None:
                    groups.setdefault(op.sql, []).append(i)
                else:
                    results[i] = (True, op.fn(conn))
            for sql, members in groups.items():
                conn.execute("SAVEPOINT swaps")
                if conn.executemany(sql, [ops[i].params for i in members]).rowcount == len(members):
                    for i in members:
                        results[i] = (True, True)
                else:               # some rows had moved: find out which, one by one
                    conn.execute("ROLLBACK TO swaps")
                    for i in members:
                        results[i] = (True, conn.execute(sql, ops[i].params).rowcount == 1)
                conn.execute("RELEASE swaps")
            if progress:
                conn.executemany("UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
                                 [(p, i) for i, p in progress.items()])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _sync(self, conn: sqlite3.Connection, durable: bool) -> None:
        """FULL (fsync at commit) only for a commit that holds a promise to a client, if so configured."""
        mode = "FULL" if durable and self.synchronous == "full" else "NORMAL"
        if mode != self._sync_mode:
            conn.execute(f"PRAGMA synchronous = {mode}")
            self._sync_mode = mode

    def _run_singly(self, ops: list[_Op]) -> list:
        conn = self._writer
        results = []
        for op in ops:
            try:
                self._sync(conn, op.durable)
                conn.execute("BEGIN IMMEDIATE")
                value = op.run(conn)
                conn.execute("COMMIT")
                results.append((True, value))
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                results.append((False, exc if not isinstance(exc, sqlite3.Error)
                                else StoreUnavailable(f"the job store cannot write: {exc}")))
        return results

    # -- reads -----------------------------------------------------------------------
    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in a reader thread; at most ``readers`` connections ever exist."""
        with self._reader_slots:
            conn = self._readers.pop() if self._readers else None
            try:
                if conn is None:
                    conn = self._reader_pool.apply(self._connect)
                return self._reader_pool.apply(fn, (conn,) + args)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the job store cannot be read: {exc}") from exc
            finally:
                if conn is not None:
                    self._readers.append(conn)

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row_to_job(row) if row else None

    def get(self, job_id: str) -> Job | None:
        return self._read(self._get, job_id)

    def list(self, state: str | None = None, handler: str | None = None, limit: int = 50,
             after: int | None = None) -> tuple[list[Job], int | None]:
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
            if after is not None:
                where.append("seq < ?")
                params.append(after)
            sql = f"SELECT {COLUMNS}, seq FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY seq DESC LIMIT ?"
            rows = conn.execute(sql, params + [limit]).fetchall()
            return [row_to_job(r[:-1]) for r in rows], (rows[-1][-1] if rows else None)
        return self._read(query)

    def seq_of(self, job_id: str) -> int | None:
        row = self._read(lambda conn: conn.execute("SELECT seq FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else row[0]

    def batch_counts(self, batch_id: str) -> dict[str, Any] | None:
        def query(conn):
            row = conn.execute("SELECT total, created_at FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                return None
            counts = dict(conn.execute("SELECT state, count(*) FROM jobs WHERE batch_id = ? GROUP BY state",
                                       (batch_id,)).fetchall())
            return {"total": row[0], "created_at": row[1], "counts": counts}
        return self._read(query)

    def active_counts(self) -> list[tuple[str, str, int]]:
        """(handler, state, count) of scheduled, queued and running jobs: reads the active part of the
        state index (and those rows), so the cost does not grow with the finished jobs kept.  (A
        covering index of its own would cost every submission and state change one more b-tree.)"""
        return self._read(lambda conn: conn.execute(
            "SELECT handler, state, count(*) FROM jobs INDEXED BY jobs_state"
            " WHERE state IN ('scheduled', 'queued', 'running') GROUP BY handler, state").fetchall())

    def batch_of(self, job_ids: list[str]) -> str | None:
        """The batch that holds exactly these jobs, or None (they are not one whole batch)."""
        unique = set(job_ids)

        def query(conn):
            row = conn.execute("SELECT batch_id FROM jobs WHERE id = ?", (job_ids[0],)).fetchone()
            if row is None or row[0] is None:
                return None
            members = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE batch_id = ?", (row[0],))}
            return row[0] if members == unique else None
        return self._read(query)

    def batch_active(self, batch_id: str) -> int:
        def query(conn):
            return conn.execute(f"SELECT count(*) FROM jobs WHERE batch_id = ? AND state IN {_ACTIVE_SQL}",
                                (batch_id,)).fetchone()[0]
        return self._read(query)

    def batch_job_ids(self, batch_id: str) -> list[str]:
        return self._read(lambda conn: [r[0] for r in conn.execute(
            "SELECT id FROM jobs WHERE batch_id = ? ORDER BY seq", (batch_id,))])

    def owners(self, me: str) -> list[tuple[str, float]]:
        """Other lease owners of active jobs, with their latest lease expiry."""
        return self._read(lambda conn: conn.execute(
            "SELECT lease_owner, max(lease_expires) FROM jobs WHERE lease_owner IS NOT NULL "
            f"AND lease_owner != ? AND state IN {_ACTIVE_SQL} GROUP BY lease_owner", (me,)).fetchall())

    def ping(self) -> bool:
        try:
            self._read(lambda conn: conn.execute("SELECT 1").fetchone())
            return self.healthy
        except StoreUnavailable:
            return False

    # -- writes ----------------------------------------------------------------------
    def insert(self, jobs: list[Job], owner: str, batch_id: str | None = None,
               keys: dict[int, tuple[str, str]] | None = None, idempotency_ttl: float = 86400.0) -> dict[int, str]:
        """Store new jobs in one transaction (all or nothing).  Active io jobs are leased to ``owner``.

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

        def row(j: Job) -> tuple:
            leased = j.state in (QUEUED, RUNNING) and j.kind == "io"     # cpu jobs live in the broker
            outbox = int(j.kind == "cpu" and j.state == QUEUED)            # to publish, until confirmed
            return (j.id, j.handler, j.kind, j.state, j.priority, _dumps(j.args) if j.args else "[]",
                    _dumps(j.kwargs) if j.kwargs else "{}",
                    j.timeout, j.max_retries, j.run_at, j.attempts, j.batch_id, owner if leased else None,
                    expires if leased else None, outbox, j.created_at, j.started_at, j.callback_url)
        rows = {i: row(j) for i, j in enumerate(jobs)}

        def op(conn):
            repeats, conflict = {}, None
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
            fresh = [r for i, r in rows.items() if i not in repeats]
            if keys:
                conn.executemany("INSERT OR REPLACE INTO idempotency (key, fingerprint, job_id, created_at)"
                                 " VALUES (?, ?, ?, ?)",
                                 [(key, fp, jobs[i].id, now) for i, (key, fp) in keys.items() if i not in repeats])
            if batch_id is not None and fresh:
                conn.execute("INSERT INTO batches (id, total, created_at) VALUES (?, ?, ?)", (batch_id, len(fresh), now))
            conn.executemany(
                "INSERT INTO jobs (id, handler, kind, state, priority, args, kwargs, timeout, max_retries, run_at,"
                " attempts, batch_id, lease_owner, lease_expires, outbox, created_at, started_at, callback_url)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fresh)
            return repeats, None
        repeats, conflict = self._write(op, durable=True)
        if conflict is not None:
            raise IdempotencyConflict(f"the Idempotency-Key {conflict[0]!r} was used for a different request"
                                      f" (job {conflict[1]}); use a new key for a new job")
        return repeats

    # -- webhooks ----------------------------------------------------------------------
    def add_delivery(self, job_id: str, delivery: Job, url: str, owner: str) -> bool:
        """Attach the webhook delivery job ``delivery`` to finished job ``job_id`` and store it, in one
        transaction; False (nothing stored) if the job already has one."""
        callback = _dumps({"url": url, "delivery": delivery.id, "state": "pending", "attempts": []})

        def op(conn):
            if conn.execute("UPDATE jobs SET callback = ? WHERE id = ? AND callback IS NULL",
                            (callback, job_id)).rowcount != 1:
                return False
            conn.execute("INSERT INTO jobs (id, handler, kind, state, priority, args, kwargs, timeout, max_retries,"
                         " attempts, lease_owner, lease_expires, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                         (delivery.id, delivery.handler, delivery.kind, delivery.state, delivery.priority,
                          _dumps(delivery.args), _dumps(delivery.kwargs), delivery.timeout, delivery.max_retries,
                          owner, time.time() + self.lease_seconds, delivery.created_at))
            return True
        return self._write(op)

    def record_delivery(self, job_id: str, attempt: dict, state: str, keep: int = 20) -> None:
        """Append a webhook delivery attempt (the last ``keep``) and the delivery state to the job."""
        def op(conn):
            row = conn.execute("SELECT callback FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] is None:
                return
            callback = json.loads(row[0])
            callback["attempts"] = (callback.get("attempts", []) + [attempt])[-keep:]
            callback["state"] = state
            conn.execute("UPDATE jobs SET callback = ? WHERE id = ?", (_dumps(callback), job_id))
        self._write(op)

    def callbacks_due(self, limit: int = 500) -> list[Job]:
        """Finished jobs with a callback_url but no delivery yet (a crash came between the two)."""
        return self._read(lambda conn: [row_to_job(r) for r in conn.execute(
            f"SELECT {COLUMNS} FROM jobs INDEXED BY jobs_callback_due WHERE callback_url IS NOT NULL"
            " AND callback IS NULL AND state IN ('succeeded', 'failed', 'cancelled') ORDER BY seq LIMIT ?",
            (limit,)).fetchall()])

    def claim(self, job: Job, owner: str, bump: bool = True) -> AsyncResult:
        """queued -> running for ``owner``, bumping attempts; the job object is updated at once.

        Returns an AsyncResult that becomes False if someone else moved the job first: the
        executor starts the handler without waiting for this commit, and checks it before
        recording the outcome.
        """
        now = time.time() if bump else (job.started_at or time.time())
        if bump:
            job.state, job.attempts, job.started_at = RUNNING, job.attempts + 1, now
        return self._swap(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, lease_owner = ?,"
            " lease_expires = ? WHERE id = ? AND state = 'queued' AND lease_owner = ?",
            (now, owner, now + self.lease_seconds, job.id, owner))

    def finish(self, job: Job, owner: str, state: str, result_json: str | None, error: dict | None) -> bool:
        """running (leased to ``owner``) -> ``state``.  False if the lease was lost or the job cancelled."""
        now = time.time()
        errors = job.errors + [error] if error is not None else job.errors
        args = (state, result_json, None if error is None else _dumps(error), _dumps(errors) if errors else None,
                now, None if job.progress is None else _dumps(job.progress))
        self._progress.pop(job.id, None)
        if not self._swap(
                "UPDATE jobs SET state = ?, result = ?, error = ?, errors = ?, finished_at = ?,"
                " progress = COALESCE(?, progress), lease_owner = NULL, lease_expires = NULL"
                " WHERE id = ? AND state = 'running' AND lease_owner = ?", args + (job.id, owner)).get():
            return False
        job.state, job.finished_at, job.errors = state, now, errors
        job.result = None if result_json is None else json.loads(result_json)
        job.error = error
        return True

    def conclude(self, job: Job, owner: str, state: str, result_json: str | None, error: dict | None,
                 retry_at: float | None = None) -> str | None:
        """Record an attempt's outcome: "retried" (scheduled for ``retry_at``), "finished" (terminal),
        or None when the lease was lost.  The one place where the io pool and the cpu dispatcher
        turn an outcome into a state."""
        if retry_at is not None:
            return "retried" if self.retry(job, owner, retry_at, error) else None
        return "finished" if self.finish(job, owner, state, result_json, error) else None

    def retry(self, job: Job, owner: str, run_at: float, error: dict) -> bool:
        """running (leased to ``owner``) -> scheduled at ``run_at``, keeping the attempt's error."""
        errors = job.errors + [error]
        self._progress.pop(job.id, None)

        def op(conn):
            return conn.execute(
                "UPDATE jobs SET state = 'scheduled', run_at = ?, error = ?, errors = ?, lease_owner = NULL,"
                " lease_expires = NULL WHERE id = ? AND state = 'running' AND lease_owner = ?",
                (run_at, _dumps(error), _dumps(errors), job.id, owner)).rowcount == 1
        if not self._write(op):
            return False
        job.state, job.run_at, job.error, job.errors = "scheduled", run_at, error, errors
        return True

    def cancel(self, job_id: str) -> tuple[Job | None, bool]:
        """Cancel a job in any active state; returns (the job as it now is, whether this call cancelled it)."""
        now = time.time()

        def op(conn):
            row = conn.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_owner = NULL, lease_expires = NULL,"
                f" error = ? WHERE id = ? AND state IN {_ACTIVE_SQL} RETURNING {COLUMNS}",
                (now, _dumps({"kind": "cancelled", "message": "cancelled by request", "traceback": None}),
                 job_id)).fetchone()
            if row is not None:
                return row_to_job(row), True
            row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return (row_to_job(row) if row else None), False
        return self._write(op, durable=True)

    def revive(self, job_id: str, owner: str) -> tuple[Job | None, bool]:
        """failed -> queued (same id; its next start is a new attempt).  Returns (job as it is now, changed).

        An io job is leased to ``owner``, who runs it; a cpu job is flagged for the outbox.
        """
        now = time.time()

        def op(conn):
            row = conn.execute(
                "UPDATE jobs SET state = 'queued', finished_at = NULL, result = NULL, run_at = NULL,"
                " lease_owner = CASE kind WHEN 'io' THEN ? END, lease_expires = CASE kind WHEN 'io' THEN ? END,"
                f" outbox = (kind = 'cpu') WHERE id = ? AND state = 'failed' RETURNING {COLUMNS}",
                (owner, now + self.lease_seconds, job_id)).fetchone()
            if row is not None:
                return row_to_job(row), True
            row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return (row_to_job(row) if row else None), False
        return self._write(op, durable=True)

    def sweep(self, finished_before: float, limit: int = 2000) -> int:
        """Delete up to ``limit`` terminal jobs (oldest first) that finished before ``finished_before``."""
        def op(conn):
            deleted = 0
            for state in ("succeeded", "failed", "cancelled"):
                deleted += conn.execute(
                    "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state = ? ORDER BY seq LIMIT ?)"
                    " AND finished_at < ?", (state, limit, finished_before)).rowcount
            conn.execute("DELETE FROM batches WHERE created_at < ? AND NOT EXISTS"
                         " (SELECT 1 FROM jobs WHERE jobs.batch_id = batches.id)", (finished_before,))
            conn.execute("DELETE FROM idempotency WHERE created_at < ?", (finished_before,))
            return deleted
        return self._write(op)

    def requeue(self, jobs: Iterable[Job], owner: str) -> int:
        """Give running jobs back (running -> queued, unleased), undoing the interrupted attempt."""
        ids = [(j.id, owner) for j in jobs]

        def op(conn):
            return conn.executemany(
                "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), lease_owner = NULL,"
                " lease_expires = NULL, started_at = NULL WHERE id = ? AND state = 'running' AND lease_owner = ?",
                ids).rowcount
        return self._write(op) if ids else 0

    def release(self, owner: str) -> int:
        """Unlease every queued job of ``owner`` (on shutdown) so any runner may adopt them."""
        return self._write(lambda conn: conn.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ? AND state = 'queued'",
            (owner,)).rowcount)

    def renew(self, owner: str) -> int:
        """Extend the lease of every active job ``owner`` holds (one statement, not one per job)."""
        expires = time.time() + self.lease_seconds
        return self._write(lambda conn: conn.execute(
            "UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state IN ('queued', 'running')",
            (expires, owner)).rowcount)

    def adopt(self, owner: str, dead_owners: list[str], kinds: tuple[str, ...]) -> list[Job]:
        """Take over active jobs whose owner is dead, whose lease expired, or that have no owner.

        Running ones go back to queued (their attempt was interrupted); all are leased to ``owner``.
        """
        now = time.time()
        marks = ",".join("?" * len(dead_owners)) or "NULL"
        kind_marks = ",".join("?" * len(kinds))

        def op(conn):
            rows = conn.execute(
                f"UPDATE jobs SET state = 'queued', lease_owner = ?, lease_expires = ? WHERE state IN ('queued', 'running')"
                f" AND kind IN ({kind_marks}) AND (lease_owner IS NULL OR lease_owner IN ({marks}) OR"
                f" (lease_owner != ? AND lease_expires < ?)) RETURNING {COLUMNS}",
                (owner, now + self.lease_seconds, *kinds, *dead_owners, owner, now)).fetchall()
            return [row_to_job(r) for r in rows]
        return self._write(op)

    def promote_due(self, owner: str, kinds: tuple[str, ...], limit: int = 10000) -> list[Job]:
        """scheduled -> queued for jobs whose ``run_at`` has come, leased to ``owner``."""
        now = time.time()
        kind_marks = ",".join("?" * len(kinds))

        def op(conn):
            rows = conn.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = CASE kind WHEN 'io' THEN ? END,"
                " lease_expires = CASE kind WHEN 'io' THEN ? END, outbox = (kind = 'cpu') WHERE id IN"
                f" (SELECT id FROM jobs WHERE state = 'scheduled' AND run_at <= ? AND kind IN ({kind_marks})"
                f" ORDER BY run_at LIMIT ?) RETURNING {COLUMNS}",
                (owner, now + self.lease_seconds, now, *kinds, limit)).fetchall()
            return [row_to_job(r) for r in rows]
        return self._write(op)

    # -- cpu jobs: the outbox and the claims of worker processes ------------------------
    def unpublished(self, after_seq: int = 0, limit: int = 5000) -> tuple[list[Job], int]:
        """Queued cpu jobs not yet confirmed by the broker, a page after ``after_seq``; returns (jobs, last seq)."""
        def query(conn):
            rows = conn.execute(f"SELECT seq, {COLUMNS} FROM jobs WHERE outbox = 1 AND state = 'queued' AND seq > ?"
                                " ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
            return [row_to_job(r[1:]) for r in rows], (rows[-1][0] if rows else 0)
        return self._read(query)

    def mark_published(self, ids: list[str]) -> None:
        """The broker confirmed these; fire and forget (a lost mark only means a harmless republish)."""
        if ids:
            self._submit(lambda conn: conn.executemany("UPDATE jobs SET outbox = 0 WHERE id = ?",
                                                       [(i,) for i in ids]))

    def claim_for_worker(self, job_id: str, worker: str, redelivered: bool, max_redeliveries: int,
                         worker_dead: Callable[[str], bool]) -> tuple[str, Job | None]:
        """Decide whether ``worker`` may run ``job_id`` now: ("go", job), ("skip", job|None) or ("lost", job).

        A queued job is claimed.  A running one is claimed again only when its message was
        redelivered, its worker is dead or its lease expired (the worker died mid-job); after
        ``max_redeliveries`` such restarts beyond its retries it fails with ``worker_lost``.
        """
        now = time.time()

        def op(conn):
            row = conn.execute("SELECT state, lease_owner, lease_expires, attempts, max_retries, timeout, errors"
                               " FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return "skip", None
            state, holder, expires, attempts, max_retries, timeout, errors = row
            orphaned = state == RUNNING and (redelivered or (expires or 0) < now or
                                             (holder is not None and worker_dead(holder)))
            if state != QUEUED and not orphaned:
                return "skip", row_to_job(conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
            if orphaned and attempts >= max_retries + 1 + max_redeliveries:
                error = {"kind": "worker_lost", "message": f"the worker running this job died {attempts} times",
                         "traceback": None}
                row = conn.execute(
                    "UPDATE jobs SET state = 'failed', error = ?, errors = ?, finished_at = ?, lease_owner = NULL,"
                    f" lease_expires = NULL, outbox = 0 WHERE id = ? RETURNING {COLUMNS}",
                    (_dumps(error), _dumps((_loads(errors) or []) + [error]), now, job_id)).fetchone()
                return "lost", row_to_job(row)
            row = conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, lease_owner = ?,"
                f" lease_expires = ?, outbox = 0 WHERE id = ? RETURNING {COLUMNS}",
                (now, worker, now + (timeout or 3600.0) + self.lease_seconds, job_id)).fetchone()
            return "go", row_to_job(row)
        return self._write(op)

    def requeue_stale_cpu(self) -> list[Job]:
        """Running cpu jobs whose lease ran out (worker gone, message lost): queued and to republish."""
        now = time.time()
        return self._write(lambda conn: [row_to_job(r) for r in conn.execute(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL, outbox = 1"
            f" WHERE state = 'running' AND kind = 'cpu' AND lease_expires < ? RETURNING {COLUMNS}", (now,))])

    def set_progress(self, job_id: str, progress: dict) -> None:
        """Record progress without waiting: coalesced, only the latest value per job is written."""
        self._progress[job_id] = _dumps(progress)
        self._wake.set()

