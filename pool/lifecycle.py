"""The rules of a job's life, kept above every store backend and every executor.

A backend executes what is decided here (``greenjobs.pool.store``); the executors ask here too:
which kinds are leased and which published, when a failed attempt is tried again, what a cancel
records, and when a cpu job whose worker keeps dying is given up (``worker_lost``).  Each state
change a store makes is named below as (from states, to state) and checked against the one
transition table (``greenjobs.pool.job.TRANSITIONS``) when this module loads.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from greenjobs.pool.job import (ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, SCHEDULED, SUCCEEDED, TERMINAL, Job,
                                check_transition, error_info)

# -- the state changes a store makes -------------------------------------------------------
#: (from states, to state) of each store operation; a store's compare-and-swap guards on the "from".
CLAIM = ((QUEUED,), RUNNING)                        # a runner starts an attempt
FINISH = ((RUNNING,), (SUCCEEDED, FAILED))          # an attempt's outcome is final
RETRY = ((RUNNING,), SCHEDULED)                     # an attempt failed and another is due later
CANCEL = (ACTIVE, CANCELLED)                        # a client cancels
REVIVE = ((FAILED,), QUEUED)                        # POST /jobs/{id}/retry
GIVE_BACK = ((RUNNING,), QUEUED)                    # shutdown, a dead or expired runner: the attempt is undone
PROMOTE = ((SCHEDULED,), QUEUED)                    # run_at has come
WORKER_LOST = ((RUNNING,), FAILED)                  # a cpu job's workers died too often

for _sources, _targets in (CLAIM, FINISH, RETRY, CANCEL, REVIVE, GIVE_BACK, PROMOTE, WORKER_LOST):
    for _source in _sources:
        for _target in (_targets if isinstance(_targets, tuple) else (_targets,)):
            check_transition(_source, _target)

# -- who holds a queued job ------------------------------------------------------------------
#: Running jobs of these kinds are leased to the server that runs them (io jobs run in its pool); queued
#: ones are held by nobody and wait in the ledger for whichever server has a free slot (JobStore.take).
LEASED_KINDS = ("io",)
#: Queued jobs of these kinds wait in the outbox until the broker confirms them (cpu jobs run on workers).
PUBLISHED_KINDS = ("cpu",)


def leased(job: Job) -> bool:
    """Whether a new ``job`` is leased to the runner that stores it: one that starts at once (the fast path)."""
    return job.kind in LEASED_KINDS and job.state == RUNNING


def to_publish(job: Job) -> bool:
    """Whether a new ``job`` goes to the outbox (published to the broker, flag cleared on confirm)."""
    return job.kind in PUBLISHED_KINDS and job.state == QUEUED


#: The error a cancel records.
CANCELLED_BY_REQUEST = error_info("cancelled", "cancelled by request")

# -- retries -----------------------------------------------------------------------------------
RETRYABLE_KINDS = ("exception", "timeout", "retry")


def is_retryable(handler, kind: str, exc: BaseException | None) -> bool:
    """A timeout or an explicit Retry always is; an exception is unless the handler's ``retry_on`` excludes it."""
    if kind not in RETRYABLE_KINDS:
        return False
    if kind == "exception" and handler is not None and handler.retry_on:
        return isinstance(exc, handler.retry_on)
    return True


class Backoff:
    """Full jitter: a random wait up to ``base * 2^(attempt-1)`` seconds, capped at ``cap``."""

    def __init__(self, base: float, cap: float):
        self.base, self.cap = base, cap

    def __call__(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt - 1, 60)))


def retry_at(job: Job, retryable: bool, delay: float | None, backoff: Callable[[int], float]) -> float | None:
    """The time of the next attempt, or None when the job has used its ``max_retries``."""
    if not retryable or job.attempts > job.max_retries:
        return None
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 366 * 86400:
        delay = None                # not a usable number of seconds: the backoff decides
    return time.time() + (backoff(job.attempts) if delay is None else float(delay))


# -- a cpu worker asks to run a job ------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a worker's claim gets: ``go`` (run it, leased until ``lease_until``), ``skip`` or ``lost``."""

    answer: str
    lease_until: float | None = None
    error: dict | None = None


def judge_worker_claim(job: Job, holder: str | None, lease_expires: float | None, redelivered: bool,
                       worker_dead: Callable[[str], bool], max_redeliveries: int, lease_seconds: float,
                       now: float) -> Verdict:
    """May a worker run ``job`` now?  A queued job: yes.  A running one only when its attempt was
    orphaned (message redelivered, holder dead, lease expired); once it was orphaned more than
    ``max_redeliveries`` times beyond its retries, it fails with ``worker_lost`` instead."""
    orphaned = job.state == RUNNING and (redelivered or (lease_expires or 0) < now or
                                         (holder is not None and worker_dead(holder)))
    if job.state != QUEUED and not orphaned:
        return Verdict("skip")
    if orphaned and job.attempts >= job.max_retries + 1 + max_redeliveries:
        return Verdict("lost", error=error_info("worker_lost", f"the worker running this job died {job.attempts} times"))
    # the lease covers the whole run: the server, not a renewal, ends it at the job's timeout
    return Verdict("go", lease_until=now + (job.timeout or 3600.0) + lease_seconds)


__all__ = ["ACTIVE", "TERMINAL", "Backoff", "Verdict", "is_retryable", "judge_worker_claim", "leased", "retry_at",
           "to_publish"]
