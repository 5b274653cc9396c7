"""Group commit for PostgreSQL over one writer connection, and a pool of reader connections.

As for SQLite (``greenjobs.pool.store.sqlite.committer``), every write is an *op* queued to one
committer greenlet, which runs every op queued so far in one transaction: many submissions share
one round trip to COMMIT.  Every commit is synchronous: the database can crash while the server
lives on, and an outcome it forgot would leave a job running under a lease the server keeps renewing.

psycopg 3 waits on its sockets through gevent when gevent has patched them, so a slow query holds
only its own greenlet, never the hub (``tests/e2e/test_postgres.py`` checks it).  The committer
survives its own failures: a lost connection fails the ops in hand with StoreUnavailable (a 503),
marks the store unhealthy, and is replaced on the next batch once the database answers again.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import gevent
import psycopg
from gevent.event import AsyncResult, Event
from psycopg_pool import ConnectionPool, PoolTimeout

from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.store.health import WriteHealth
from greenjobs.pool.store.rows import dumps

log = logging.getLogger(__name__)

RECONNECT_EVERY = 0.5       # s: at most one connection attempt per this long while the database is away
CONNECT_TIMEOUT = 5         # s: libpq's connect_timeout


def json_rows(columns: str, ordered: bool = False) -> str:
    """A relation ``v`` of many rows sent as one JSON array of arrays: ``columns`` is ``"name type, …"``.

    psycopg dumps a Python list as an array literal in Python, escaping every element (about 20 µs a
    row for a job's outcome); ``json.dumps`` of the same rows runs in C, and PostgreSQL takes them
    apart with ``jsonb_array_elements`` (jsonb: parsed once, not once per column): a thousand outcomes cost a few milliseconds, not tens.
    ``ordered`` keeps the array's order (an INSERT then numbers the rows in it)."""
    fields = [c.split() for c in columns.split(",")]
    picks = ", ".join(f"(e->>{i})::{kind} AS {name}" for i, (name, kind) in enumerate(fields))
    order = " ORDER BY n" if ordered else ""
    return f"(SELECT {picks} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(e, n){order}) AS v"


#: Bytes of JSON per statement at most (jsonb refuses an array past 256 MB: 256 outcomes of 1 MB results).
MAX_JSON_BYTES = 32 * 1024 * 1024


def _chunks(encoded: list[str]) -> list[list[str]]:
    """Encoded rows in runs of at most MAX_JSON_BYTES (a single larger row goes alone)."""
    chunks, chunk, size = [], [], 0
    for text in encoded:
        if chunk and size + len(text) > MAX_JSON_BYTES:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(text)
        size += len(text) + 1
    return chunks + [chunk] if chunk else chunks


class Swap:
    """A compare-and-swap row update written once for a whole group of rows.

    ``sql`` joins ``jobs`` to the rows (``json_rows``, one ``%s``) and returns ``jobs.id`` for each row
    it changed; ``key`` is the position of the job id in a row.  A thousand claims or outcomes in one
    group commit are one statement, not a thousand."""

    __slots__ = ("sql", "key", "notify")

    def __init__(self, sql: str, key: int, notify: str | None = None):
        self.sql, self.key, self.notify = sql, key, notify

    def run(self, conn: psycopg.Connection, rows: list[tuple]) -> list[bool]:
        """For each of ``rows``, whether it changed its row.  An UPDATE … FROM changes a row once however
        many rows of ``v`` name it, so a job named twice goes in a second round, after the first."""
        changed = [False] * len(rows)
        pending = list(range(len(rows)))
        while pending:
            seen: set[str] = set()
            now, later = [], []
            for i in pending:
                (later if rows[i][self.key] in seen else now).append(i)
                seen.add(rows[i][self.key])
            text = dumps([rows[i] for i in now])        # one C call for the usual group
            texts = [text] if len(text) <= MAX_JSON_BYTES else \
                ["[" + ",".join(chunk) + "]" for chunk in _chunks([dumps(rows[i]) for i in now])]
            ids: set[str] = set()
            for text in texts:
                ids.update(r[0] for r in conn.execute(self.sql, (text,)).fetchall())
            for i in now:
                changed[i] = rows[i][self.key] in ids
            pending = later
        return changed


class Op:
    """A queued write: ``fn(conn)``, or one row of a compare-and-swap ``swap`` (True if the row changed);
    ``notify`` is the word other servers hear when its batch commits (see Committer.channel)."""

    __slots__ = ("fn", "swap", "params", "durable", "notify", "result")

    def __init__(self, fn: Callable[[psycopg.Connection], Any] | None, swap: Swap | None = None,
                 params: tuple = (), durable: bool = False, notify: str | None = None):
        self.fn, self.swap, self.params, self.durable, self.notify = fn, swap, params, durable, notify
        self.result = AsyncResult()

    def run(self, conn: psycopg.Connection) -> Any:
        if self.fn is not None:
            return self.fn(conn)
        return self.swap.run(conn, [self.params])[0]


def _unavailable(exc: BaseException, doing: str) -> StoreUnavailable:
    """The one error a caller sees for a database fault: what failed, never the URL or a password."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(f"the job store cannot {doing}: {first}")


class Committer:
    """One writer connection fed by a committer greenlet; ``readers`` pooled connections for reads."""

    def __init__(self, url: str, readers: int = 4, max_batch_ops: int = 5000, setup=None, each_batch=None,
                 channel: str | None = None):
        self.url = url
        #: the LISTEN/NOTIFY channel: a batch that changed jobs other servers care about ends with one NOTIFY
        #: of the words its ops carry ("queued", "ended", "cancelled"), delivered when it commits
        self.channel = channel
        self.max_batch_ops = max_batch_ops
        self.setup = setup
        self.each_batch = each_batch or (lambda: None)
        self.health = WriteHealth()
        self._writer: psycopg.Connection | None = None
        self._next_connect = 0.0
        self._ops: list[Op] = []
        self._wake = Event()
        self._loop = None
        self._open = False
        self._readers = ConnectionPool(url, min_size=1, max_size=readers, open=False, name="greenjobs-readers",
                                       kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                                       reconnect_timeout=0)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Connect the writer (migrating the schema), open the readers, start the committer."""
        try:
            self._writer = self._connect()
            if self.setup is not None:
                self.setup(self._writer)
        except (psycopg.Error, StoreUnavailable) as exc:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if isinstance(exc, StoreUnavailable):
                raise
            raise _unavailable(exc, "open the ledger") from None
        self._readers.open(wait=False)
        self._open = True
        self._loop = gevent.spawn(self._commit_loop)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)

    def close(self) -> None:
        """Commit what is queued, then close every connection."""
        if not self._open:
            return
        try:
            self.write(lambda conn: None)
        except StoreUnavailable:
            pass
        self._open = False
        if self._loop is not None:
            self._loop.kill()
        if self._writer is not None:
            self._writer.close()
        self._readers.close(timeout=5)

    # -- writing ---------------------------------------------------------------------
    def write(self, fn: Callable[[psycopg.Connection], Any], durable: bool = False, notify: str | None = None) -> Any:
        """Queue ``fn`` for the next group commit and wait for its result (``durable``: a promise to a
        client, committed with synchronous_commit on; ``notify``: what other servers hear of it)."""
        return self.submit(fn, durable=durable, notify=notify).result.get()

    def submit(self, fn, swap: Swap | None = None, params: tuple = (), durable: bool = False,
               notify: str | None = None) -> Op:
        """Queue an op without waiting; its ``result`` is set after its commit."""
        if not self._open:
            raise StoreUnavailable("the store is closed")
        op = Op(fn, swap, params, durable, notify)
        self._ops.append(op)
        self._wake.set()
        return op

    def swap(self, swap: Swap, params: tuple) -> AsyncResult:
        """Queue one row of a compare-and-swap update; its result becomes True if the row changed."""
        return self.submit(None, swap, params).result

    def poke(self) -> None:
        """Have the committer run a batch soon even with no op queued (for ``each_batch`` work)."""
        self._wake.set()

    def _commit_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                ops, self._ops = self._ops[:self.max_batch_ops], self._ops[self.max_batch_ops:]
                extra = self.each_batch()
                if not ops and extra is None:
                    break
                try:
                    results = self._commit(ops, extra)
                except Exception as exc:        # never let the loop die: every later write would hang
                    log.exception("store committer failed")
                    results = [(False, _unavailable(exc, "write"))] * len(ops)
                for op, (ok, value) in zip(ops, results):
                    if ok:
                        op.result.set(value)
                    else:
                        op.result.set_exception(value)

    def _connection(self) -> psycopg.Connection:
        """The writer, reconnected if it was lost (at most one attempt per RECONNECT_EVERY)."""
        conn = self._writer
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._writer = None
        now = time.monotonic()
        if now < self._next_connect:
            raise StoreUnavailable(f"the job store is unavailable: {self.health.last_error}")
        self._next_connect = now + RECONNECT_EVERY
        try:
            self._writer = self._connect()
        except psycopg.Error as exc:
            self.health.failed(exc)
            raise _unavailable(exc, "connect") from None
        log.warning("store connection re-established")
        return self._writer

    def _commit(self, ops: list[Op], extra) -> list:
        try:
            conn = self._connection()
        except StoreUnavailable as exc:
            return [(False, exc)] * len(ops)
        try:
            results = self._run_batch(conn, ops, extra)
        except Exception as exc:                # the batch was rolled back: find the op that failed
            if isinstance(exc, psycopg.Error):
                self.health.failed(exc)
                if conn.closed or conn.broken:  # the database went away: the ops in hand fail (503)
                    return [(False, _unavailable(exc, "write"))] * len(ops)
            return self._run_singly(conn, ops)  # an op's own error (a judge that raised) is its alone
        self.health.succeeded()
        return results

    def _run_batch(self, conn: psycopg.Connection, ops: list[Op], extra) -> list:
        """One transaction: function ops in order, then row swaps grouped by statement, then ``each_batch``.

        Each swap names one job and its expected state, so running them after the function ops of
        their batch changes nothing for correctness (the later one simply finds the row moved)."""
        results: list = [None] * len(ops)
        groups: dict[Swap, list[int]] = {}
        words = set()
        with conn.transaction():
            for i, op in enumerate(ops):
                if op.fn is None:
                    groups.setdefault(op.swap, []).append(i)
                else:
                    results[i] = (True, op.fn(conn))
                    if op.notify:
                        words.add(op.notify)
            for swap, members in groups.items():        # one statement per kind of swap
                for i, changed in zip(members, swap.run(conn, [ops[i].params for i in members])):
                    results[i] = (True, changed)
                    if changed and swap.notify:
                        words.add(swap.notify)
            if extra is not None:
                extra(conn)
            if words and self.channel:      # one NOTIFY per group commit: each takes a lock that serialises commits
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, ",".join(sorted(words))))
        return results

    def _run_singly(self, conn: psycopg.Connection, ops: list[Op]) -> list:
        results = []
        for op in ops:
            try:
                with conn.transaction():
                    results.append((True, op.run(conn)))
            except psycopg.Error as exc:
                results.append((False, _unavailable(exc, "write")))
                if conn.closed or conn.broken:
                    results += [(False, _unavailable(exc, "write"))] * (len(ops) - len(results))
                    break
            except Exception as exc:
                results.append((False, exc))
        return results

    # -- reading -----------------------------------------------------------------------
    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` on a pooled reader connection."""
        try:
            with self._readers.connection(timeout=CONNECT_TIMEOUT) as conn:
                return fn(conn, *args)
        except (psycopg.Error, PoolTimeout) as exc:
            raise _unavailable(exc, "be read") from None
