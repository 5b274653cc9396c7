"""The JobStore interface: what every ledger backend provides, in terms of Jobs only.

No driver or gevent type appears in a signature: a backend takes and returns :class:`Job`
objects, JSON-ready values and plain tuples.  The rules (which state follows an outcome, which
kinds are leased or published, when a worker is lost) come from ``greenjobs.pool.lifecycle``; a
backend carries them out atomically.  Every backend passes one contract suite
(``tests/store/test_contract.py``).

Calls block the calling greenlet, never the hub.  Writes that promise something to a client
(insert, cancel, revive) are durable when they return; claims, outcomes and leases may ride a
later commit (losing one to a power cut only means a job runs again).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, NamedTuple, Protocol

from greenjobs.pool.job import Job
from greenjobs.pool.schedules import Advance, Schedule
from greenjobs.pool.workflows import Plan
from greenjobs.pool.store.rows import ServerRecord


class Pending(Protocol):
    """A write queued for a later commit: ``get()`` waits for it and says whether it took effect."""

    def get(self) -> bool:
        """Block the calling greenlet until the write is committed; True if it took effect."""


class Lease(NamedTuple):
    """Who holds a job and until when (epoch seconds); both None when nobody does."""

    owner: str | None
    expires: float | None


class JobStore(ABC):
    """The durable job ledger.  ``open()`` once from a greenlet before any other call."""

    lease_seconds: float
    #: False while writes fail (disk full, locked, database down); /health reports it with ``last_error``.
    healthy: bool
    last_error: str | None

    # -- lifecycle -------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_url(cls, url: str, *, lease_seconds: float = 30.0, **options) -> "JobStore":
        """A store for ``url``, not yet opened."""

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the ledger lives, for logs (never a password)."""

    @abstractmethod
    def open(self) -> "JobStore":
        """Connect and bring the schema up to date; returns self."""

    @abstractmethod
    def close(self) -> None:
        """Flush queued writes and disconnect."""

    @abstractmethod
    def flush(self) -> None:
        """Wait until every write queued so far is committed (or has failed)."""

    @abstractmethod
    def ping(self) -> bool:
        """True if the ledger answers and accepts writes."""

    def maintain(self) -> None:
        """Backend upkeep, called once per maintenance tick (SQLite: a passive WAL checkpoint)."""

    def listen(self, heard: Callable[[set[str]], None]) -> bool:
        """Call ``heard(words)`` whenever a commit, by any server of this ledger, queued jobs nobody holds
        ("queued"), ended jobs ("ended") or cancelled them ("cancelled"), and once after a lost connection
        (``{"queued", "ended", "cancelled"}``: anything may have been missed).  False if the backend cannot
        (then servers poll alone)."""
        return False

    # -- reads -----------------------------------------------------------------------
    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None."""

    @abstractmethod
    def list(self, state: str | None = None, handler: str | None = None, limit: int = 50,
             after: int | None = None, schedule: str | None = None,
             text: str | None = None) -> tuple[list[Job], int | None]:
        """Newest first, filtered (``schedule``: the jobs of that schedule; ``text``: jobs whose args or kwargs
        JSON holds it, case-sensitive: a scan, newest first, until ``limit`` match); returns (jobs, the cursor of
        the last one).  ``after`` is such a cursor, which stays valid when its job is deleted meanwhile."""

    @abstractmethod
    def cursor_of(self, job_id: str) -> int | None:
        """The list cursor of a job (so a job id can start a page), or None."""

    @abstractmethod
    def batch_counts(self, batch_id: str) -> dict[str, Any] | None:
        """``{"total", "created_at", "counts": {state: n}}`` of a batch, or None."""

    @abstractmethod
    def batch_active(self, batch_id: str) -> int:
        """How many of a batch's jobs are scheduled, queued or running."""

    @abstractmethod
    def batch_of(self, job_ids: list[str]) -> str | None:
        """The batch that holds exactly these jobs, or None."""

    @abstractmethod
    def active_counts(self) -> list[tuple[str, str, int]]:
        """(handler, state, count) of active jobs; its cost must not grow with finished jobs kept."""

    @abstractmethod
    def get_many(self, job_ids: list[str]) -> list[Job]:
        """Those of ``job_ids`` that exist, in one read."""

    @abstractmethod
    def holders(self, job_ids: list[str]) -> list[tuple[str, str, str | None, int]]:
        """(id, state, lease owner, attempts) of those of ``job_ids`` that exist: one read for many, however many
        ids (how a server learns that jobs it waits for or runs were ended or taken over elsewhere)."""

    @abstractmethod
    def held(self, owner: str, kinds: tuple[str, ...]) -> list[tuple[str, float]]:
        """(id, started_at) of the running jobs of ``kinds`` leased to ``owner``: what the ledger says runs there."""

    @abstractmethod
    def owners(self, me: str) -> list[tuple[str, float]]:
        """Lease owners of active jobs other than ``me``, each with its latest lease expiry."""

    # -- the servers table ----------------------------------------------------------------
    @abstractmethod
    def beat(self, server: ServerRecord, forget_before: float) -> None:
        """Record ``server``'s heartbeat (insert its row or update it, keeping its ``control``) and delete the rows
        of servers whose last heartbeat is older than ``forget_before`` (epoch seconds), in one transaction."""

    @abstractmethod
    def request_control(self, owner: str, request: str) -> bool:
        """Leave ``request`` (JSON) in ``owner``'s row for it to act on at its next heartbeat, replacing an
        earlier one; False if there is no such server."""

    @abstractmethod
    def servers(self) -> list[ServerRecord]:
        """Every server in the table, oldest start first."""

    @abstractmethod
    def leave(self, owner: str) -> None:
        """Delete ``owner``'s row (a clean shutdown)."""

    # -- the shared event log ------------------------------------------------------------
    @abstractmethod
    def add_events(self, events: list[tuple[float, str]]) -> None:
        """Append lifecycle events, each (epoch seconds, its JSON), in order; each gets the next sequence
        number.  Not durable: an event lost to a crash only leaves a gap a stream's reader skips."""

    @abstractmethod
    def events_after(self, seq: int, limit: int) -> list[tuple[int, float, str]]:
        """(seq, at, JSON) of up to ``limit`` events with a sequence number above ``seq``, in order.

        On a database with concurrent writers a number may show up after a higher one (its
        transaction committed later): readers wait a moment at a hole before skipping it."""

    @abstractmethod
    def last_event_seq(self) -> int:
        """The highest sequence number given so far (0 for none)."""

    @abstractmethod
    def prune_events(self, keep: int, before: float) -> int:
        """Delete the events that are older than ``before`` (epoch seconds) and not among the newest ``keep``;
        returns how many went."""

    # -- submission and outcomes ------------------------------------------------------
    @abstractmethod
    def insert(self, jobs: list[Job], owner: str, batch_id: str | None = None,
               keys: dict[int, tuple[str, str]] | None = None, idempotency_ttl: float = 86400.0,
               advance: Advance | None = None, workflow: Plan | None = None) -> dict[int, str]:
        """Store new jobs in one durable transaction (all or nothing); running jobs of leased kinds (the
        fast path) are leased to ``owner``, queued ones are held by nobody, published kinds flagged for the outbox.
        ``workflow``: the jobs are its steps (``batch_id`` its id); its shape and edges are stored with them.

        ``keys`` maps a job's index to its (Idempotency-Key, request fingerprint): a key stored
        within ``idempotency_ttl`` s makes that job a repeat, not stored; the result maps its index
        to the original job's id.  A known key with another fingerprint raises IdempotencyConflict
        and stores nothing.  The batch row counts only the jobs inserted."""

    @abstractmethod
    def claim(self, job: Job, owner: str) -> Pending:
        """queued (held by nobody or ``owner``) -> running for ``owner``, attempts + 1; the job object changes
        at once, the returned Pending says whether the store agreed."""

    @abstractmethod
    def finish(self, job: Job, owner: str, state: str, result_json: str | None, error: dict | None) -> bool:
        """running (attempt ``job.attempts``, leased to ``owner``) -> terminal ``state``.  False if the lease was
        lost, the job cancelled, or it was claimed again since: the fence that keeps a late runner's outcome out."""

    @abstractmethod
    def retry(self, job: Job, owner: str, run_at: float, error: dict) -> bool:
        """running (attempt ``job.attempts``, leased to ``owner``) -> scheduled at ``run_at``, keeping the attempt's
        error; fenced like ``finish``."""

    @abstractmethod
    def record_blocked(self, job_id: str, blocked: dict) -> None:
        """Record how a job blocked the event loop (``{count, longest_ms, total_ms}``), whatever its state; not
        durable (fire and forget)."""

    @abstractmethod
    def set_progress(self, job_id: str, progress: dict) -> None:
        """Record progress without waiting (coalesced: only the latest value per job is written)."""

    @abstractmethod
    def cancel(self, job_id: str, error: dict) -> tuple[Job | None, bool]:
        """Any active state -> cancelled, durably; returns (the job as it now is, whether this call did it)."""

    @abstractmethod
    def revive(self, job_id: str) -> tuple[Job | None, bool]:
        """failed -> queued (same id, next attempt; held by nobody), durably; returns (the job as it now is, changed).
        A workflow's step is never revived (its downstream steps ended with it)."""

    # -- leases, adoption and due jobs -------------------------------------------------
    @abstractmethod
    def renew(self, owner: str) -> int:
        """Extend every lease ``owner`` holds on queued or running jobs (one statement)."""

    @abstractmethod
    def release(self, owner: str) -> int:
        """Unlease ``owner``'s queued jobs (shutdown) so any runner may adopt them."""

    @abstractmethod
    def requeue(self, jobs: Iterable[Job], owner: str, started: bool = False) -> int:
        """Give ``owner``'s running jobs back (running -> queued, unleased).  An attempt that never started (a take
        whose answer came too late) is undone; ``started`` (a shutdown interrupted them): it stays counted."""

    @abstractmethod
    def adopt(self, owner: str, dead_owners: list[str], kinds: tuple[str, ...]) -> list[Job]:
        """Give back to the ledger the active jobs of ``kinds`` whose owner is dead or whose lease (held by
        anyone but ``owner``) expired: queued and held by nobody, for any server to take (published kinds back
        in the outbox); returns them.
        A running one's interrupted attempt stays counted."""

    @abstractmethod
    def promote_due(self, kinds: tuple[str, ...], limit: int = 10000) -> list[Job]:
        """scheduled -> queued for jobs whose ``run_at`` has come (held by nobody; published kinds to the outbox)."""

    @abstractmethod
    def take(self, owner: str, kinds: tuple[str, ...], limit: int) -> list[Job]:
        """Start up to ``limit`` queued jobs of ``kinds`` that nobody holds: running, leased to ``owner``, attempts
        + 1; highest priority then oldest first.  How a server with free slots takes work from the ledger; safe
        when several servers take at once: each job goes to one of them, and none waits for another's choice."""

    @abstractmethod
    def backlog(self, kinds: tuple[str, ...]) -> int:
        """How many queued jobs of ``kinds`` nobody holds (what :meth:`take` would find)."""

    @abstractmethod
    def sweep(self, finished_before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` terminal jobs that finished before ``finished_before``, oldest finish first
        (one bounded transaction: call again while it returns ``limit``), with old batches and keys."""

    # -- cpu jobs: the outbox and worker claims ----------------------------------------
    @abstractmethod
    def unpublished(self, after_seq: int = 0, limit: int = 5000) -> tuple[list[Job], int]:
        """Queued jobs in the outbox, a page after ``after_seq``; returns (jobs, the page's last cursor)."""

    @abstractmethod
    def mark_published(self, ids: list[str]) -> None:
        """The broker confirmed these: out of the outbox (fire and forget; a lost mark only republishes)."""

    @abstractmethod
    def claim_for_worker(self, job_id: str, worker: str,
                         judge: Callable[[Job, Lease], Any]) -> tuple[str, Job | None]:
        """Carry out ``judge(job, lease)`` (greenjobs.pool.lifecycle.judge_worker_claim) atomically:
        ("go", job) leased to ``worker``, ("skip", job or None), or ("lost", job) ended at the claim: failed
        ``worker_lost``, or cancelled ``expired`` (its expiry passed).  A gated job the claim does not admit
        is a skip: it waits (greenjobs.pool.store.flow)."""

    @abstractmethod
    def requeue_stale_cpu(self, dead_workers: Iterable[str] = ()) -> list[Job]:
        """Running published jobs whose lease ran out, or whose worker is one of ``dead_workers``: queued
        again and back in the outbox."""

    # -- workflows -------------------------------------------------------------------------
    #: Called after a commit that moved workflow steps (released, or cancelled upstream_failed) because of an
    #: end this store recorded (finish, cancel, a lost worker); set by the runtime (greenjobs.pool.store.workflows).
    on_steps_moved: Callable[[Any], None] | None = None

    @abstractmethod
    def workflow_shape(self, workflow_id: str) -> dict | None:
        """The workflow's kind and result expression, or None if there is none."""

    @abstractmethod
    def workflow_jobs(self, workflow_id: str) -> list[Job]:
        """The workflow's steps in the order it lists them."""

    # -- flow control (greenjobs.pool.flow) -------------------------------------------------
    #: Called with the earliest start time a take or worker claim reserved for a job over its rate limit (the
    #: runtime promotes it then); set by the runtime.  Takes and claims admit gated jobs atomically: one over
    #: its rate waits scheduled until the time it reserved, one over its handler's max_running waits until a
    #: running one ends; neither starts, and an expired job is never started.
    on_rate_wait: Callable[[float], None] | None = None

    @abstractmethod
    def expire_due(self, limit: int = 1000) -> list[Job]:
        """Scheduled and queued jobs whose ``expires_at`` passed -> cancelled, error kind ``expired`` (with their
        workflows' downstream steps); returns them."""

    @abstractmethod
    def release_waiting(self) -> list[Job]:
        """Jobs waiting for their handler's max_running where there is room now -> queued; returns them."""

    @abstractmethod
    def waiting_counts(self) -> list[tuple[str, str, int]]:
        """(handler, reason, count) of the jobs their gate holds back (``rate_limit``, ``max_running``)."""

    @abstractmethod
    def next_due(self) -> float | None:
        """The earliest ``run_at`` of a scheduled job, or None."""

    # -- webhooks ------------------------------------------------------------------------
    @abstractmethod
    def add_delivery(self, job_id: str, delivery: Job, url: str, owner: str) -> bool:
        """Link the webhook ``delivery`` job to finished ``job_id`` and store it, in one transaction;
        False if the job already has one."""

    @abstractmethod
    def record_delivery(self, job_id: str, attempt: dict, state: str, keep: int = 20) -> None:
        """Append a delivery attempt (the last ``keep``) and the delivery state to the job's ``callback``."""

    @abstractmethod
    def callbacks_due(self, limit: int = 500) -> list[Job]:
        """Finished jobs with a callback_url and no delivery yet (a crash came between the two)."""
