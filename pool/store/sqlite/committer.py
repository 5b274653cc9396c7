"""Group commit for SQLite, with every sqlite call off the gevent hub.

Every write is an *op* (a function of a connection, or a one-row compare-and-swap statement)
queued to one committer greenlet.  The committer takes every op queued so far, runs them in one
transaction in a writer thread, then wakes each caller with its op's result: many concurrent
submissions share one commit (and one fsync).  Reads use a small pool of reader connections,
also in threads; WAL mode lets them run while a write is in progress.
"""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import struct
import time
from typing import Any, Callable

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from greenjobs.pool.errors import StoreUnavailable
from greenjobs.pool.store.health import WriteHealth

log = logging.getLogger(__name__)


def lost_commits(wal_path: str, frames_read: int) -> int:
    """Commit frames of the WAL's current generation (its header's salts) past the ``frames_read`` frames SQLite
    recovered: transactions that were committed but that SQLite stopped reading at a damaged frame.

    Only frame headers are read (24 bytes a frame), so the check costs little even for a large WAL."""
    try:
        fh = open(wal_path, "rb")
    except FileNotFoundError:
        return 0
    with fh:
        header = fh.read(32)
        if len(header) < 32 or header[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"):
            return 0
        page_size = struct.unpack(">I", header[8:12])[0]
        salts = header[16:24]
        lost, index = 0, frames_read
        while True:
            fh.seek(32 + index * (24 + page_size))
            frame = fh.read(24)
            if len(frame) < 24:
                return lost
            if frame[8:16] == salts and struct.unpack(">I", frame[4:8])[0] != 0:
                lost += 1
            index += 1


def check_wal(conn: sqlite3.Connection, path: str) -> None:
    """Refuse to open a ledger whose WAL holds committed transactions SQLite cannot read (damaged on disk).

    SQLite stops reading a WAL at the first frame whose checksum fails and says nothing, so the jobs
    committed after it would vanish silently.  One lost commit at the very end is what a power cut can
    leave of a commit never acknowledged; more than one means damage.  The damaged log is copied to
    ``PATH-wal.damaged`` (closing the connection lets SQLite delete the original), and the ledger is
    refused while that copy exists, so the loss is never accepted by a mere restart."""
    kept = path + "-wal.damaged"
    advice = (f"Recover what is readable from it (copy {path} and the log aside, restore the log as {path}-wal, "
              f"then: sqlite3 {path} '.recover' | sqlite3 recovered.sqlite), or, to accept the loss, delete {kept}")
    if os.path.exists(kept):
        raise StoreUnavailable(f"the ledger {path} had a damaged write-ahead log, kept at {kept}. {advice}")
    for attempt in range(3):
        # another process sharing the ledger may append commits between SQLite's count and our read of the
        # file: those are not lost, and the next count includes them; damage stays put however often we look
        busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        lost = lost_commits(path + "-wal", max(frames, 0))
        if lost <= 1:
            break
        time.sleep(0.05)
    if lost > 1:
        shutil.copy2(path + "-wal", kept)
        raise StoreUnavailable(f"the ledger's write-ahead log {path}-wal is damaged: {lost} committed transactions "
                               f"after the damage cannot be read, and starting would lose them. The log is kept at "
                               f"{kept}. {advice}")


class Op:
    """A queued write: either ``fn(conn)``, or a compare-and-swap row update ``sql`` with ``params``
    whose result is whether it changed its row.  Row updates of one ``sql`` in a batch run as one
    executemany, so thousands of claims or finishes cost the writer thread one C loop each."""

    __slots__ = ("fn", "sql", "params", "result", "durable")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any] | None, sql: str = "", params: tuple = (),
                 durable: bool = False):
        self.fn, self.sql, self.params, self.durable = fn, sql, params, durable
        self.result = AsyncResult()

    def run(self, conn: sqlite3.Connection) -> Any:
        """(writer thread) run the op alone; True/False for a row swap."""
        if self.fn is not None:
            return self.fn(conn)
        return conn.execute(self.sql, self.params).rowcount == 1


class GroupCommitter:
    """One writer connection (in a thread of its own) fed by a queue of ops, and a reader pool.

    ``setup(conn)`` runs once on the writer connection (schema and migrations).  ``each_batch()`` is
    called on the hub before every batch and may return a function that the batch's transaction
    runs after its ops (coalesced writes such as progress), or None.
    ``synchronous`` is SQLite's: ``full`` fsyncs a commit that holds a promise to a client.
    """

    def __init__(self, path: str, synchronous: str = "full", readers: int = 4, max_batch_ops: int = 20000,
                 setup: Callable[[sqlite3.Connection], None] = lambda conn: None,
                 each_batch: Callable[[], Callable[[sqlite3.Connection], Any] | None] = lambda: None):
        self.path = path
        self.synchronous = synchronous
        self.max_batch_ops = max_batch_ops
        self.setup = setup
        self.each_batch = each_batch
        self._ops: list[Op] = []
        self._wake = Event()
        self._writer_pool = ThreadPool(1)
        self._reader_pool = ThreadPool(readers)
        self._readers: list[sqlite3.Connection] = []
        self._reader_slots = BoundedSemaphore(readers)
        self._writer: sqlite3.Connection | None = None
        self._committer = None
        self.health = WriteHealth()

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Open the writer connection (WAL, schema set-up) and start the committer greenlet."""
        self._sync_mode = self.synchronous.upper()
        writer, refusal = self._writer_pool.apply(self._connect_writer)
        if refusal is not None:         # raised here, not in the thread (gevent would print its traceback)
            raise refusal
        self._writer = writer
        self._committer = gevent.spawn(self._commit_loop)

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), usable from any thread."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        return conn

    def _connect_writer(self) -> tuple[sqlite3.Connection | None, StoreUnavailable | None]:
        conn = self.connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreUnavailable(f"could not put {self.path} in WAL mode (got {mode})")
        # Checkpoints (copying the WAL into the database, with an fsync) would otherwise run inside
        # whichever commit crosses the threshold and stall every waiting submission behind it; they
        # run from a reader connection instead (see checkpoint()).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            check_wal(conn, self.path)
            self.setup(conn)
        except StoreUnavailable as refusal:
            conn.close()
            return None, refusal
        return conn, None

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database without blocking writers (PASSIVE)."""
        self.read(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())

    def close(self) -> None:
        """Flush queued writes, then close every connection."""
        if self._committer is not None:
            self.write(lambda conn: None)
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

    # -- writing -----------------------------------------------------------------------
    def write(self, fn: Callable[[sqlite3.Connection], Any], durable: bool = False) -> Any:
        """Queue ``fn`` for the next group commit and wait for its result.

        ``durable`` ops are promises made to a client (a job accepted, cancelled, revived): with
        ``synchronous = full`` their commit is fsynced before they return.  The others (claims,
        outcomes, leases) may be lost to a power cut, which only means the job runs again: they are
        made durable by the next fsynced commit or checkpoint, and do not wait for a disk flush.
        """
        return self.submit(fn, durable=durable).result.get()

    def submit(self, fn: Callable[[sqlite3.Connection], Any] | None, sql: str = "", params: tuple = (),
               durable: bool = False) -> Op:
        """Queue an op without waiting; its ``result`` is set after its commit."""
        if self._writer is None:
            raise StoreUnavailable("the store is closed")
        op = Op(fn, sql, params, durable)
        self._ops.append(op)
        self._wake.set()
        return op

    def swap(self, sql: str, params: tuple) -> AsyncResult:
        """Queue a one-row compare-and-swap update; its result becomes True if the row changed."""
        return self.submit(None, sql, params).result

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
                    try:
                        results = self._writer_pool.apply(self._run_batch, (ops, extra))
                    except Exception as exc:  # the whole batch failed: retry op by op
                        if isinstance(exc, sqlite3.Error):      # not an op's own error (a judge that raised)
                            self.health.failed(exc)
                        results = self._writer_pool.apply(self._run_singly, (ops,))
                    else:
                        self.health.succeeded()
                except Exception as exc:        # even that failed (a ROLLBACK that raised): never let the
                    log.exception("store committer failed")       # loop die, or every later write hangs
                    self.health.failed(exc)
                    results = [(False, StoreUnavailable(f"the job store cannot write: {exc}"))] * len(ops)
                for op, (ok, value) in zip(ops, results):
                    if ok:
                        op.result.set(value)
                    else:
                        op.result.set_exception(value)

    def _run_batch(self, ops: list[Op], extra: Callable[[sqlite3.Connection], Any] | None) -> list:
        """One transaction: function ops in order, then row swaps grouped by statement, then ``each_batch``.

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
            if extra is not None:
                extra(conn)
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

    def _run_singly(self, ops: list[Op]) -> list:
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

    # -- reading -----------------------------------------------------------------------
    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in a reader thread; at most ``readers`` connections ever exist."""
        with self._reader_slots:
            conn = self._readers.pop() if self._readers else None
            try:
                if conn is None:
                    conn = self._reader_pool.apply(self.connect)
                return self._reader_pool.apply(fn, (conn,) + args)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the job store cannot be read: {exc}") from exc
            finally:
                if conn is not None:
                    self._readers.append(conn)
