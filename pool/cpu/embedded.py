"""The embedded broker: a kombu virtual transport over SQLite (``embedded:///path/queue.sqlite``).

Why our own: kombu's ``filesystem://`` lists the whole folder per get and has no priorities; its
``sqlalchemy`` transport drops a message when a put hits an OperationalError and hides a fetched
message with no way back if the consumer dies.  Here a fetched message is *reserved* in the
database (owner, token, lease), not removed: ack deletes the row, reject(requeue) un-reserves it,
and a reservation whose owner process died (same host) or whose lease ran out is restored, flagged
redelivered.  Ready rows are found through a partial index on (queue, priority DESC, id), so the
cost per message stays flat as the queue grows and priority 0-9 is honoured, then age.

Only the default exchange is used (routing key = queue name): kombu keeps exchanges and bindings of
virtual transports in process memory, and a message to an unbound named exchange would vanish.

SQLite cannot tell another process that it committed, so a consumer polls; on Linux a *doorbell* cuts the
wait: every consumer that is about to sleep binds an abstract-namespace datagram socket and lists it in the
``bells`` table, and a commit that makes a message ready (a publish, a requeue) sends one byte to each.  The
consumer's sleep is a ``select`` on its socket, so it wakes at once; the polls stay as the safety net (a bell
lost, a consumer in another network namespace), and without the bell everything works as before.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import sqlite3
import sys
import time
import uuid
from queue import Empty

from kombu.transport import TRANSPORT_ALIASES, virtual

from greenjobs.pool.owners import owner_id, owner_is_dead

log = logging.getLogger(__name__)

ALIAS = "embedded"

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL,
    owner TEXT,
    token TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    redelivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(queue, priority DESC, id) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS messages_reserved ON messages(lease_until) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, dead_letter TEXT);
CREATE TABLE IF NOT EXISTS bells (name TEXT PRIMARY KEY, owner TEXT NOT NULL);
"""


class Doorbell:
    """Wake-ups between the processes of one broker file (Linux abstract sockets; see the module docstring).

    ``wait`` sleeps until rung or ``timeout``; ``ring`` tells every listed consumer that something became ready.
    Both are best effort and never raise: a ring lost costs a poll.  A name whose owner process is gone is
    dropped from the table by the first ring that finds its socket gone (a live one that refuses us is in
    another network namespace: it stays, for the ringers of its own).
    """

    REFRESH = 1.0       # seconds a ringer trusts its copy of the bells table

    def __init__(self, db: sqlite3.Connection, owner: str):
        self.db = db
        self.owner = owner
        self.listener: socket.socket | None = None
        self.sender: socket.socket | None = None
        self.name: str | None = None            # ours in the bells table (without the leading NUL)
        self.broken = False                     # could not listen: sleep as before
        self._names: list[tuple[str, str]] = []     # (name, owner) of the listed consumers
        self._read_at = -self.REFRESH

    @staticmethod
    def supported() -> bool:
        return sys.platform.startswith("linux")

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, or until rung (then take every ring that is waiting)."""
        if self.listener is None and not self.broken:
            self._listen()
        if self.listener is None:
            time.sleep(timeout)
            return
        try:
            poller = select.poll()          # not select(): it fails for a descriptor numbered 1024 or more
            poller.register(self.listener, select.POLLIN)
            if poller.poll(timeout * 1000):
                while self.listener.recv(64):
                    pass
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError) as exc:
            log.debug("doorbell: waiting failed (%s); polling only", exc)
            self.broken = True
            self.close()
            time.sleep(timeout)

    def _listen(self) -> None:
        sock = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            name = "\0greenjobs-bell-" + uuid.uuid4().hex
            sock.bind(name)
            self.db.execute("INSERT OR REPLACE INTO bells (name, owner) VALUES (?, ?)", (name[1:], self.owner))
        except (OSError, sqlite3.Error) as exc:
            log.debug("doorbell: cannot listen (%s); polling only", exc)
            if sock is not None:
                sock.close()
            self.broken = True
            return
        self.listener, self.name = sock, name[1:]

    def ring(self) -> None:
        """One byte to every listed consumer (ours included: harmless)."""
        try:
            self._ring()
        except (OSError, sqlite3.Error) as exc:      # after a commit: it must not look like a failed publish
            log.debug("doorbell: ringing failed (%s)", exc)

    def _ring(self) -> None:
        now = time.monotonic()
        if now - self._read_at >= self.REFRESH:
            self._names = self.db.execute("SELECT name, owner FROM bells").fetchall()
            self._read_at = now
        gone = []
        for name, owner in self._names:
            for attempt in (1, 2):
                if self.sender is None:
                    self.sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self.sender.setblocking(False)
                try:
                    self.sender.sendto(b"!", "\0" + name)
                except (BlockingIOError, InterruptedError):
                    # our send buffer is full of rings busy consumers have not read: a fresh socket has room
                    self.sender.close()
                    self.sender = None
                    continue
                except (ConnectionRefusedError, FileNotFoundError):
                    if owner_is_dead(owner, self.owner):
                        gone.append(name)
                except OSError:
                    pass                    # best effort: the polls remain
                break
        if gone:
            self._names = [(n, o) for n, o in self._names if n not in gone]
            self.db.executemany("DELETE FROM bells WHERE name = ?", [(n,) for n in gone])

    def close(self) -> None:
        """Close the sockets and take our name off the table (a crash leaves it to the next ring)."""
        for sock in (self.listener, self.sender):
            if sock is not None:
                sock.close()
        if self.name is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("DELETE FROM bells WHERE name = ?", (self.name,))
        self.listener = self.sender = self.name = None


class QoS(virtual.QoS):
    """Acks, rejects and restores act on the reserved row; the in-memory map is only a cache."""

    def ack(self, delivery_tag):
        """Delete the reserved row, then forget the delivery."""
        self.channel._db_ack(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        """requeue: un-reserve the row (redelivered); else move it to the queue's dead-letter queue."""
        if requeue:
            self.channel._db_unreserve(delivery_tag)
        else:
            self.channel._db_dead_letter(delivery_tag)
        super().ack(delivery_tag)       # not super().reject(): that would _put a second copy

    def restore_unacked(self):
        """Un-reserve every delivery not yet acked (channel closing); returns the errors kombu expects."""
        self._flush()
        errors = []
        while self._delivered:
            tag, message = self._delivered.popitem()
            try:
                self.channel._db_unreserve(tag)
            except Exception as exc:
                errors.append((exc, message))
        self._delivered.clear()
        return errors


class Channel(virtual.Channel):
    """A kombu virtual channel whose queues are rows of one SQLite database, reserved (not removed) on get."""

    QoS = QoS
    visibility_timeout = 3600.0     # a reservation without a live owner check lasts this long
    reclaim_interval = 1.0
    from_transport_options = virtual.Channel.from_transport_options + ("visibility_timeout", "reclaim_interval")

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        self._last_reclaim = 0.0

    @property
    def db(self) -> sqlite3.Connection:
        """The transport's connection (one per process-side connection, in WAL mode)."""
        return self.connection.db

    @staticmethod
    def _split(tag: str) -> tuple[int, str]:
        row_id, token = tag.split(":", 1)
        return int(row_id), token

    def _db_ack(self, tag):
        row_id, token = self._split(tag)
        if self.db.execute("DELETE FROM messages WHERE id = ? AND token = ?", (row_id, token)).rowcount != 1:
            log.warning("stale ack of message %s (its reservation was restored meanwhile)", row_id)
        self.connection.touched()

    def _db_unreserve(self, tag):
        row_id, token = self._split(tag)
        self.db.execute("UPDATE messages SET owner = NULL, token = NULL, lease_until = 0, redelivered = 1"
                        " WHERE id = ? AND token = ?", (row_id, token))
        self.connection.touched()
        self.connection.ready()

    def _db_dead_letter(self, tag):
        row_id, token = self._split(tag)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT queue FROM messages WHERE id = ? AND token = ?", (row_id, token)).fetchone()
            if row:
                target = db.execute("SELECT dead_letter FROM queues WHERE name = ?", (row[0],)).fetchone()
                if target and target[0]:
                    db.execute("INSERT INTO messages (queue, priority, payload) SELECT ?, priority, payload"
                               " FROM messages WHERE id = ?", (target[0], row_id))
                db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.connection.touched()
        self.connection.ready()

    def _reclaim(self, now: float) -> int:
        """Restore reservations whose lease ran out or whose owner process is gone."""
        self._last_reclaim = now
        db = self.db
        restored = db.execute("UPDATE messages SET owner = NULL, token = NULL, lease_until = 0, redelivered = 1"
                              " WHERE owner IS NOT NULL AND lease_until < ?", (now,)).rowcount
        for (owner,) in db.execute("SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL").fetchall():
            if owner_is_dead(owner, self.connection.owner):
                restored += db.execute("UPDATE messages SET owner = NULL, token = NULL, lease_until = 0,"
                                       " redelivered = 1 WHERE owner = ?", (owner,)).rowcount
        if restored:
            log.info("restored %d messages of dead or expired consumers", restored)
            self.connection.touched()
            self.connection.ready()
        return restored

    # -- the virtual.Channel storage API ----------------------------------------------
    def _put(self, queue, message, **kwargs):
        priority = self._get_message_priority(message, reverse=False)
        self.db.execute("INSERT INTO messages (queue, priority, payload) VALUES (?, ?, ?)",
                        (queue, priority, json.dumps(message)))
        self.connection.touched()
        self.connection.ready()

    def _get(self, queue, timeout=None):
        now = time.time()
        if now - self._last_reclaim >= self.reclaim_interval:
            self._reclaim(now)
        elif self.connection.nothing_new(queue):
            raise Empty()           # idle: one PRAGMA, no write lock
        token = uuid.uuid4().hex
        row = self.db.execute(
            "UPDATE messages SET owner = ?, token = ?, lease_until = ? WHERE id ="
            " (SELECT id FROM messages WHERE queue = ? AND owner IS NULL ORDER BY priority DESC, id LIMIT 1)"
            " RETURNING id, payload, redelivered",
            (self.connection.owner, token, now + self.visibility_timeout, queue)).fetchone()
        if row is None:
            self.connection.mark_empty(queue)
            raise Empty()
        self.connection.last_delivery = time.monotonic()
        row_id, payload, redelivered = row
        message = json.loads(payload)
        props = message["properties"]
        props["delivery_tag"] = f"{row_id}:{token}"
        props["delivery_info"]["redelivered"] = bool(redelivered)
        return message

    def _purge(self, queue):
        return self.db.execute("DELETE FROM messages WHERE queue = ? AND owner IS NULL", (queue,)).rowcount

    def _size(self, queue):
        return self.db.execute("SELECT count(*) FROM messages WHERE queue = ? AND owner IS NULL",
                               (queue,)).fetchone()[0]

    def _delete(self, queue, *args, **kwargs):
        self.db.execute("DELETE FROM messages WHERE queue = ?", (queue,))
        self.db.execute("DELETE FROM queues WHERE name = ?", (queue,))

    def _new_queue(self, queue, arguments=None, **kwargs):
        dead_letter = (arguments or {}).get("x-dead-letter-routing-key")
        self.db.execute("INSERT INTO queues (name, dead_letter) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
                        " SET dead_letter = COALESCE(excluded.dead_letter, dead_letter)", (queue, dead_letter))

    def _has_queue(self, queue, **kwargs):
        return self.db.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone() is not None

    def basic_get(self, queue, no_ack=False, **kwargs):
        """kombu's basic_get; with no_ack the row is deleted at once, since no ack will come."""
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._db_ack(message.delivery_tag)      # no ack will come: delivered is done
        return message

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        """kombu's basic_consume; with no_ack each delivery's row is deleted before the callback."""
        if no_ack:
            inner = callback

            def callback(message):
                self._db_ack(message.delivery_tag)
                return inner(message)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def _restore(self, message):
        self._db_unreserve(message.delivery_tag)      # every restore path un-reserves; none re-inserts


class Transport(virtual.Transport):
    """The ``embedded://`` kombu transport: durable SQLite queues with priorities, leases and dead-lettering."""

    Channel = Channel
    can_parse_url = True
    default_port = 0
    driver_type = "sql"
    driver_name = "sqlite3"
    polling_interval = 0.005
    connection_errors = virtual.Transport.connection_errors + (sqlite3.OperationalError,)
    channel_errors = virtual.Transport.channel_errors + (sqlite3.IntegrityError,)
    implements = virtual.Transport.implements.extend(exchange_type=frozenset(["direct"]))

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        url = client.hostname or ""
        path = url.split("://", 1)[1] if "://" in url else url
        self.path = path[1:] if path.startswith("/") else path
        self._db: sqlite3.Connection | None = None
        self._empty: dict[str, int] = {}
        self.owner = owner_id()
        self.last_delivery = 0.0
        self.busy_interval = float(self.client.transport_options.get("busy_interval", 0.001))
        self.bell_poll = float(self.client.transport_options.get("bell_poll", 0.05))
        self.doorbell = bool(self.client.transport_options.get("doorbell", True)) and Doorbell.supported()
        self._bell: Doorbell | None = None
        self._ring_due = False          # a message became ready inside the open transaction: ring at its commit

    @property
    def bell(self) -> Doorbell | None:
        if self._bell is None and self.doorbell:
            self._bell = Doorbell(self.db, self.owner)
        return self._bell

    def ready(self) -> None:
        """A message became ready: ring the consumers now, or at the commit of the transaction under way."""
        if not self.doorbell:
            return
        if self.db.in_transaction:
            self._ring_due = True
        else:
            self.bell.ring()

    @contextlib.contextmanager
    def one_commit(self):
        """Publish many messages in one (durable) transaction instead of one commit each."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            self._ring_due = False
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if self._ring_due:
            self._ring_due = False
            self.bell.ring()

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection, opened (and the schema created) on first use."""
        if self._db is None:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=float(self.client.transport_options.get("busy_timeout", 10.0)))
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = " + str(self.client.transport_options.get("synchronous", "FULL")))
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def touched(self) -> None:
        """Our own write happened: forget the cached emptiness (our commits do not move data_version)."""
        self._empty.clear()         # our own commits do not change our PRAGMA data_version

    def mark_empty(self, queue: str) -> None:
        """Remember that ``queue`` was empty at the database's current data_version."""
        self._empty[queue] = self.db.execute("PRAGMA data_version").fetchone()[0]

    def nothing_new(self, queue: str) -> bool:
        """True while nobody committed since ``queue`` was seen empty (an idle poll costs one PRAGMA)."""
        seen = self._empty.get(queue)
        return seen is not None and seen == self.db.execute("PRAGMA data_version").fetchone()[0]

    def drain_events(self, connection, timeout=None):
        """Like kombu's, but polls every ``busy_interval`` for a second after a delivery, and every
        ``polling_interval`` when idle: low latency under load, little CPU when nothing happens.  While the
        doorbell listens, a ring wakes us when a message becomes ready, and polls every ``bell_poll`` are
        only the safety net (a ringer that does not know us yet, another network namespace, a reservation
        whose lease ran out)."""
        started = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                now = time.monotonic()
                if timeout is not None and now - started >= timeout:
                    raise socket.timeout() from None
                interval = self.busy_interval if now - self.last_delivery < 1.0 else self.polling_interval
                bell = self.bell if self.doorbell else None
                if bell is not None and bell.listener is not None:
                    interval = max(interval, self.bell_poll)
                if timeout is not None:
                    interval = min(interval, timeout - (now - started))
                if bell is not None:
                    bell.wait(interval)  # rung by a commit that made a message ready; gevent's select when patched
                else:
                    time.sleep(interval)      # looked up at call time: gevent's when patched

    def establish_connection(self):
        """Open the database before kombu's own connection bookkeeping."""
        self.db
        return super().establish_connection()

    def close_connection(self, connection):
        """Close kombu's side, then the SQLite connection."""
        super().close_connection(connection)
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def driver_version(self):
        """The SQLite library version."""
        return sqlite3.sqlite_version

    def as_uri(self, uri, include_password=False, mask="**"):
        """The URL as given (it holds no password)."""
        return uri


def register() -> None:
    """Make ``embedded://`` URLs resolve to this transport (call in every process before Connection())."""
    TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
