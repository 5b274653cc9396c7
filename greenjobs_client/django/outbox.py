"""The transactional outbox: a job is a row written in your transaction, and a relay sends it to the server.

    # settings.py
    INSTALLED_APPS = [..., "greenjobs_client.django"]        # then: python manage.py migrate
    GREENJOBS = {"URL": "http://127.0.0.1:6543"}

    with transaction.atomic():
        order = Order.objects.create(...)
        enqueue("orders.confirm", kwargs={"order_id": order.pk})

    python manage.py greenjobs_relay          # or start_relay() in the web process (see below)

``submit_on_commit`` sends after the commit, so a server that is down, or a process that dies in
between, loses the job while the order stays committed. ``enqueue`` writes the job to the
``greenjobs_outbox`` table in the same transaction as the order: both exist or neither does. The
relay reads the due rows in id order, submits them under each row's Idempotency-Key and marks
them sent with the job id; a failed send is tried again with exponential backoff, a job the server
refuses (4xx: unknown handler, bad arguments) is marked rejected and never sent again.

At least once, and exactly one job: a relay killed after the server stored a job but before it
marked the row sends it again, and the server answers the job it already has (same key, within
the server's greenjobs.api.idempotency_ttl, a day by default).

Relays: on PostgreSQL (and other backends with ``SELECT ... FOR UPDATE SKIP LOCKED``) any number
can run, each taking rows the others have not locked. SQLite has no row locks: run one relay per
database (a second one only sends some jobs twice, which the keys make harmless). A relay started
in the process that enqueues (``start_relay()``) is woken by the commit, so the job is sent at once;
a relay in another process finds it at its next poll (GREENJOBS["OUTBOX_INTERVAL"], 1 s).

Settings, in ``settings.GREENJOBS`` beside URL, TOKEN and TIMEOUT: OUTBOX_BATCH (100 rows per
request), OUTBOX_INTERVAL (1.0 s between polls), OUTBOX_BACKOFF (1.0 s after the first failure,
doubling) up to OUTBOX_BACKOFF_MAX (60.0 s), OUTBOX_KEEP (604800 s: sent rows are deleted after
a week; None keeps them). Rejected rows are kept until you delete them.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import connections, router, transaction
from django.utils import timezone

from greenjobs_client.bulk import MAX_CHUNK_BYTES
from greenjobs_client.client import Client, job_spec
from greenjobs_client.django import config, make_client
from greenjobs_client.errors import ConnectionFailed, InvalidRequest, RequestFailed
from greenjobs_client.transport import encode

if TYPE_CHECKING:
    from greenjobs_client.django.models import OutboxJob

__all__ = ["enqueue", "Relay", "start_relay", "nudge"]

log = logging.getLogger(__name__)

DEFAULTS = {"OUTBOX_BATCH": 100, "OUTBOX_INTERVAL": 1.0, "OUTBOX_BACKOFF": 1.0, "OUTBOX_BACKOFF_MAX": 60.0,
            "OUTBOX_KEEP": 7 * 86400}
#: seconds between two prunes of old sent rows by a running relay
PRUNE_EVERY = 300.0
#: errors the relay tries again (backoff): the server down, failing (5xx), overloaded (429/503), or an answer
#: a fix of the settings or the server cures (401, 403, 404); an InvalidRequest (4xx about the job) is final
TRANSIENT = (ConnectionFailed, RequestFailed)


def _model() -> type[OutboxJob]:
    # imported when used: this module may be imported before the app registry is ready (settings, urls)
    from greenjobs_client.django.models import OutboxJob
    return OutboxJob


def _setting(name: str) -> Any:
    return config().get(name, DEFAULTS[name])


def enqueue(handler: str, /, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
            using: str | None = None, idempotency_key: str | None = None, **options: Any) -> OutboxJob:
    """Write ``handler(*args, **kwargs)`` to the outbox in the current transaction on ``using``; returns the row.

    The row exists if and only if that transaction commits (in autocommit: at once). ``options`` are
    those of ``Client.submit_with`` (priority, timeout, max_retries, delay, run_at, expires, unique_key,
    rate_limit, rate_key); a ``delay`` or an ``expires`` in seconds counts from now, not from the send.
    ``idempotency_key`` defaults to ``outbox-<uuid>``. Non-JSON arguments raise TypeError and an
    unknown option TypeError here, inside the transaction. At the commit, relays of this process wake.
    """
    if not isinstance(handler, str) or not 1 <= len(handler) <= 255:
        raise TypeError(f"handler must be a handler's name, a string of 1-255 characters (got {handler!r})")
    # a deep copy, and a non-JSON value fails now, inside the transaction
    args, kwargs = json.loads(encode(list(args))), json.loads(encode(dict(kwargs or {})))
    spec = job_spec(handler, args, kwargs, **_absolute(options))
    spec_options = json.loads(encode({k: v for k, v in spec.items() if k not in ("handler", "args", "kwargs")}))
    if idempotency_key is None:
        idempotency_key = f"outbox-{uuid.uuid4().hex}"
    elif (not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255
          or not idempotency_key.isascii() or not idempotency_key.isprintable()):
        raise ValueError("an idempotency key must be 1-255 printable ASCII characters")
    model = _model()
    db = using or router.db_for_write(model)
    row = model(handler=handler, args=args, kwargs=kwargs, options=spec_options, idempotency_key=idempotency_key)
    row.save(using=db, force_insert=True)
    transaction.on_commit(partial(nudge, db), using=db)
    return row


def _absolute(options: dict[str, Any]) -> dict[str, Any]:
    """``delay`` as the ``run_at`` it means and ``expires`` seconds as a time: the job keeps its schedule
    however late the relay sends it, and every send has the same body."""
    options = dict(options)
    now = datetime.now(dt_timezone.utc)
    delay = options.pop("delay", None)
    if delay is not None:
        if options.get("run_at") is not None:
            raise ValueError("give either delay or run_at, not both")
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0 (got {delay!r})")
        if delay > 0:
            options["run_at"] = (now + timedelta(seconds=delay)).isoformat()
    expires = options.get("expires")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0:
        options["expires"] = (now + timedelta(seconds=expires)).isoformat()
    return options


_running: set[Relay] = set()
_running_lock = threading.Lock()


def nudge(using: str | None = None) -> None:
    """Wake the relays running in this process (on database ``using``, or all): ``enqueue`` calls it at the
    commit, so a committed job is sent at once instead of at the next poll."""
    with _running_lock:
        relays = list(_running)
    for relay in relays:
        if using is None or relay.using == using:
            relay.wake()


class Relay:
    """Sends the outbox rows of database ``using`` to the server: ``run_once()`` sends what is due,
    ``run_forever()`` polls (and wakes on ``nudge``) until ``stop()``.

    ``client`` defaults to one made from the settings with few retries of its own: the relay's backoff
    (per row, kept in the table) does the waiting, with no row held meanwhile. One relay per thread.
    """

    def __init__(self, using: str | None = None, batch: int | None = None, client: Client | None = None, *,
                 interval: float | None = None):
        self.using = using or router.db_for_write(_model())
        self.batch = max(1, int(batch or _setting("OUTBOX_BATCH")))
        self.interval = float(interval if interval is not None else _setting("OUTBOX_INTERVAL"))
        self.backoff = float(_setting("OUTBOX_BACKOFF"))
        self.backoff_max = float(_setting("OUTBOX_BACKOFF_MAX"))
        keep = _setting("OUTBOX_KEEP")
        self.keep = None if keep is None else float(keep)
        self._client = client
        self._keyed: bool | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pruned_at: float | None = None
        self.thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<greenjobs outbox Relay on {self.using!r}>"

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = make_client(retries=1, max_retry_wait=5.0)
        return self._client

    # -- one pass -----------------------------------------------------------------------
    def run_once(self) -> int:
        """Send every due row, a batch at a time, until none is left or the server fails; returns how many
        were sent. Prunes old sent rows now and then."""
        sent = 0
        while not self._stop.is_set():
            done, taken, failing = self._round()
            sent += done
            if failing or taken < self.batch:
                break
        if self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY:
            self.prune()
        return sent

    def _round(self) -> tuple[int, int, bool]:
        """One batch: (rows sent, rows taken, whether the server failed)."""
        model = _model()
        due = (model.objects.using(self.using)
               .filter(sent_at__isnull=True, rejected_at__isnull=True, next_try_at__lte=timezone.now())
               .order_by("id"))
        if connections[self.using].features.has_select_for_update_skip_locked:
            # the rows stay locked while they are sent, so another relay skips them instead of sending them too
            with transaction.atomic(using=self.using):
                rows = list(due.select_for_update(skip_locked=True)[:self.batch])
                outcomes, failing = self._send(rows)
                self._record(rows, outcomes)
        else:
            # no row locks (SQLite): no transaction held over the HTTP request either, which would keep
            # the application's writers waiting
            rows = list(due[:self.batch])
            outcomes, failing = self._send(rows)
            with transaction.atomic(using=self.using):
                self._record(rows, outcomes)
        return sum(1 for o in outcomes.values() if o[0] == "sent"), len(rows), failing

    def _send(self, rows: list[OutboxJob]) -> tuple[dict[int, tuple], bool]:
        """Submit ``rows``: {row id: ("sent", job id) | ("rejected", error) | ("retry", error, retry_after)},
        and whether the server failed (the rows after the failing request are left as they are)."""
        outcomes: dict[int, tuple] = {}
        group: list[tuple[OutboxJob, dict]] = []
        size = 0
        for row in rows:
            try:
                spec = row.spec()
                cost = len(encode(spec)) + 300      # + the item's key and the batch's framing
            except (TypeError, ValueError) as exc:      # a row written by hand, not by enqueue
                outcomes[row.pk] = ("rejected", f"not a job spec: {exc}")
                continue
            if _expired(spec.get("expires")):
                outcomes[row.pk] = ("rejected", f"expired at {spec['expires']} before it could be sent")
                continue
            if group and size + cost > MAX_CHUNK_BYTES:     # a batch stays under the server's max_body
                if self._send_group(group, outcomes):
                    return outcomes, True
                group, size = [], 0
            group.append((row, spec))
            size += cost
        return outcomes, bool(group) and self._send_group(group, outcomes)

    def _send_group(self, group: list[tuple[OutboxJob, dict]], outcomes: dict[int, tuple]) -> bool:
        """One batch request (or one request per row: a single row, an old server, a refused batch); True if
        the server failed."""
        if len(group) > 1:
            try:
                keyed = self._batch_keys()
            except TRANSIENT as exc:
                return self._failed(outcomes, [row for row, _ in group], exc)
            if keyed:
                try:
                    batch = self.client.submit_many([dict(spec, idempotency_key=row.idempotency_key)
                                                     for row, spec in group])
                except InvalidRequest as exc:   # all or nothing: find the bad row(s) one by one
                    log.info("greenjobs outbox: a batch of %d was refused (%s); sending its rows one by one",
                             len(group), exc)
                except TRANSIENT as exc:
                    return self._failed(outcomes, [row for row, _ in group], exc)
                else:
                    outcomes.update((row.pk, ("sent", job_id)) for (row, _), job_id in zip(group, batch.ids))
                    return False
        for row, _ in group:
            try:
                handle = self.client.submit_with(row.handler, row.args, row.kwargs,
                                                 idempotency_key=row.idempotency_key, **row.options)
            except InvalidRequest as exc:
                outcomes[row.pk] = ("rejected", str(exc))
            except TRANSIENT as exc:
                return self._failed(outcomes, [row], exc)
            else:
                outcomes[row.pk] = ("sent", handle.id)
        return False

    def _batch_keys(self) -> bool:
        """Whether the server takes per-item keys in a batch (else rows go one by one); asked until known."""
        if self._keyed is None:
            try:
                self._keyed = self.client.batch_keys()
            except ConnectionFailed:
                raise
            except RequestFailed:       # no OpenAPI document there: one by one, and ask again next time
                return False
        return self._keyed

    @staticmethod
    def _failed(outcomes: dict[int, tuple], rows: list[OutboxJob], exc: Exception) -> bool:
        for row in rows:
            outcomes[row.pk] = ("retry", str(exc), getattr(exc, "retry_after", None))
        return True

    def _record(self, rows: list[OutboxJob], outcomes: dict[int, tuple]) -> None:
        now = timezone.now()
        changed = []
        retried, pause = [], 0.0
        for row in rows:
            outcome = outcomes.get(row.pk)
            if outcome is None:
                continue
            kind, detail = outcome[0], outcome[1]
            row.attempts += 1
            if kind == "sent":
                row.sent_at, row.job_id = now, detail
            elif kind == "rejected":
                row.rejected_at, row.last_error = now, detail[:4000]
                log.error("greenjobs outbox: job %s (%s, key %s) was rejected and will not be sent: %s",
                          row.pk, row.handler, row.idempotency_key, detail)
            else:
                pause = min(self.backoff_max, max(self.backoff * 2 ** (row.attempts - 1), outcome[2] or 0.0))
                row.next_try_at, row.last_error = now + timedelta(seconds=pause), detail[:4000]
                retried.append(row)
            changed.append(row)
        if changed:
            _model().objects.using(self.using).bulk_update(
                changed, ["attempts", "next_try_at", "last_error", "sent_at", "job_id", "rejected_at"])
        if retried:
            log.warning("greenjobs outbox: %d job(s) not sent, next try in %.0f s: %s",
                        len(retried), pause, retried[-1].last_error)

    # -- housekeeping ---------------------------------------------------------------------
    def prune(self) -> int:
        """Delete the rows sent more than OUTBOX_KEEP seconds ago (a thousand at a time); returns how many."""
        self._pruned_at = time.monotonic()
        if self.keep is None:
            return 0
        model = _model()
        cutoff = timezone.now() - timedelta(seconds=self.keep)
        deleted = 0
        while True:
            ids = list(model.objects.using(self.using).filter(sent_at__lt=cutoff)
                       .values_list("pk", flat=True)[:1000])
            if not ids:
                return deleted
            deleted += model.objects.using(self.using).filter(pk__in=ids).delete()[0]

    def counts(self) -> dict[str, int]:
        """Rows per state: ``pending`` (due or backing off), ``sent`` (not pruned yet), ``rejected``."""
        rows = _model().objects.using(self.using)
        return {"pending": rows.filter(sent_at__isnull=True, rejected_at__isnull=True).count(),
                "sent": rows.filter(sent_at__isnull=False).count(),
                "rejected": rows.filter(rejected_at__isnull=False).count()}

    # -- running ----------------------------------------------------------------------------
    def wake(self) -> None:
        """Start the next pass now instead of after ``interval``."""
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the pass in progress (its rows are marked first); waits for the relay's thread if any."""
        self._stop.set()
        self._wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Pass after pass, every ``interval`` s or when woken, until ``stop()`` (or ``stop_event``, seen within
        ``interval``). A failing pass (the database away) is logged and tried again; closes its connection."""
        if stop_event is not None:
            self._stop = stop_event
        with _running_lock:
            _running.add(self)
        connection = connections[self.using]
        try:
            while not self._stop.is_set():
                self._wake.clear()      # a nudge during the pass makes the next one start at once
                connection.close_if_unusable_or_obsolete()
                try:
                    self.run_once()
                except Exception:
                    log.exception("greenjobs outbox relay: a pass failed; trying again in %s s", self.interval)
                self._wake.wait(self.interval)
        finally:
            with _running_lock:
                _running.discard(self)
            connection.close()


def start_relay(using: str | None = None, **kwargs: Any) -> Relay:
    """A relay in a daemon thread of this process (woken by its commits); ``relay.stop()`` ends it.

    Call it once per process that should relay, e.g. in wsgi.py, not in ``AppConfig.ready`` (which also
    runs for migrate and every other management command). ``kwargs`` go to ``Relay``."""
    relay = Relay(using, **kwargs)
    relay.thread = threading.Thread(target=relay.run_forever, name=f"greenjobs-outbox-relay-{relay.using}",
                                    daemon=True)
    relay.thread.start()
    return relay


def _expired(expires: Any) -> bool:
    """Whether an ``expires`` time has passed: the server would refuse the job, and it must not run anyway."""
    if not isinstance(expires, str):
        return False
    try:
        moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        return False        # the server says what is wrong with it
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt_timezone.utc)
    return moment <= datetime.now(dt_timezone.utc)
