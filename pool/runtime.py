"""The runtime: one object that wires the store, the handler registry, the executors and the waiters.

The HTTP views call it; it never knows about HTTP.  It also runs the maintenance greenlet that
renews this process's leases, adopts jobs whose runner died, and starts scheduled jobs when due.
"""
from __future__ import annotations

import gc
import logging
import math
import time
from typing import Iterable

import gevent
import gevent.event

from greenjobs.pool.cpu.dispatcher import CpuDispatcher
from greenjobs.pool.errors import JobFinished, JobNotFound, ShuttingDown
from greenjobs.pool.observe.events import EventLog
from greenjobs.pool.io.executor import GreenletExecutor
from greenjobs.pool.job import QUEUED, RUNNING, SCHEDULED, Job
from greenjobs.pool.lifecycle import CANCELLED_BY_REQUEST, Backoff
from greenjobs.pool.observe.metrics import JobMetrics
from greenjobs.pool.owners import owner_id, owner_is_dead
from greenjobs.pool.observe.signals import SignalSender
from greenjobs.pool.store import store_for
from greenjobs.pool.cpu.supervisor import Supervisor
from greenjobs.pool.waiters import Waiters
from greenjobs.pool.observe.webhooks import Webhooks

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000


class Runtime:
    """Everything that runs jobs in this process."""

    def __init__(self, settings, registry, ini: str | None = None):
        self.settings = settings
        self.registry = registry
        self.backoff = Backoff(settings.retry_base, settings.retry_max)
        self.owner = owner_id()
        self.store = store_for(settings.store_url, lease_seconds=settings.store_lease_seconds,
                               synchronous=settings.store_synchronous)     # opened by start()
        self.waiters = Waiters()
        self.events = EventLog(settings.events_replay)
        self.metrics = JobMetrics()
        self.signals = SignalSender(settings.signals_backlog)
        self._progress_at: dict[str, float] = {}
        self.webhooks = Webhooks(settings, self.store)
        registry.add(self.webhooks.handler())
        common = dict(store=self.store, registry=registry, settings=settings, owner=self.owner,
                      on_terminal=self._finished, max_result_bytes=settings.job_max_result_bytes,
                      backoff=self.backoff, on_scheduled=self.wake_at, emit=self.emit, on_progress=self.progress)
        self.executors = {
            "io": GreenletExecutor("io", size=settings.pool_size, max_pending=settings.pool_max_pending, **common),
        }
        # cpu jobs never run here: they go to worker processes over the broker
        self.supervisor = Supervisor(ini, settings.workers_cpu, grace=settings.shutdown_grace) \
            if ini and settings.workers_cpu > 0 else None
        self.cpu = CpuDispatcher(settings, self.store, registry, on_terminal=self._finished,
                                 backoff=self.backoff, wake_at=self.wake_at, supervisor=self.supervisor,
                                 emit=self.emit, on_progress=self.progress)
        self.accepting = False
        self._maintenance = None
        self._recorder = None
        self._wake = gevent.event.Event()
        self._next_wake = math.inf
        self.started_at = time.time()

    def wake_at(self, run_at: float) -> None:
        """Make the maintenance loop promote scheduled jobs no later than ``run_at``."""
        if run_at < self._next_wake:
            self._next_wake = run_at
            self._wake.set()

    # -- events ------------------------------------------------------------------------
    def emit(self, name: str, job: Job) -> None:
        """A lifecycle event: into the event stream's ring, the metrics, and the signals' receivers."""
        self.events.append(name, job)
        self.metrics.observe(name, job)
        self.signals.send(name, job)

    def _finished(self, job: Job) -> None:
        """A job's final state is committed: answer its long-polls, tell everyone else."""
        self.waiters.finished(job)
        self._progress_at.pop(job.id, None)
        self.emit(job.state, job)
        if job.callback_url is not None:
            gevent.spawn(self._send_callback, job)

    def _send_callback(self, job: Job) -> None:
        """Store and start the webhook delivery of a finished job (the maintenance loop repairs a miss)."""
        try:
            delivery = self.webhooks.delivery_for(job, self.owner)
        except Exception as exc:
            log.warning("job %s: could not store its webhook delivery yet (%s); will retry", job.id, exc)
            return
        if delivery is not None:
            self.executors["io"].enqueue([delivery])

    def progress(self, job_id: str, progress: dict) -> None:
        """A running job reported progress: stored (coalesced), and an event at most every 0.1 s per job."""
        self.store.set_progress(job_id, progress)
        job = self.executors["io"].running_job(job_id) or self.cpu.running_job(job_id)
        if job is None:
            return
        job.progress = progress
        now = time.monotonic()
        if now - self._progress_at.get(job_id, 0.0) >= 0.1 or progress.get("fraction") == 1:
            self._progress_at[job_id] = now
            self.emit("progress", job)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "Runtime":
        self.store.open()
        self._adopt()
        self.cpu.start()
        if self.supervisor is not None:
            self.supervisor.start()
        self.accepting = True
        self._maintenance = gevent.spawn(self._maintain)
        # Thousands of jobs in flight are tens of thousands of young objects (jobs, greenlets, events);
        # with the default threshold (700) the cyclic collector runs every few jobs and rescans them.
        # Objects made at start-up (modules, app) are frozen out of its scans.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        log.info("greenjobs runtime started as %s (store %s)", self.owner, self.store.where)
        return self

    def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let running jobs finish for ``grace`` seconds, requeue the rest, close."""
        if not self.accepting and self._maintenance is None:
            return
        self.accepting = False
        grace = self.settings.shutdown_grace if grace is None else grace
        if self._maintenance is not None:
            self._maintenance.kill()
            self._maintenance = None
        interrupted: list[Job] = []
        stopping_workers = gevent.spawn(self.supervisor.stop) if self.supervisor is not None else None
        for executor in self.executors.values():
            interrupted += executor.shutdown(grace)
        if stopping_workers is not None:
            stopping_workers.join()
        self.cpu.stop()
        try:
            requeued = self.store.requeue(interrupted, self.owner)
            released = self.store.release(self.owner)
            log.info("shutdown: %d running jobs requeued, %d queued jobs released", requeued, released)
            self.waiters.wake_all()
            self.events.close()
            gevent.sleep(0.05)      # let woken long-polls read the store before it closes
        finally:
            self.store.close()

    def _maintain(self) -> None:
        """Renew leases, adopt orphaned jobs each ``interval``; promote scheduled jobs when due."""
        interval = min(1.0, self.settings.store_lease_seconds / 3)
        last_renew = last_tick = last_sweep = time.monotonic()
        while True:
            self._wake.wait(max(0.0, min(interval, self._next_wake - time.time())))
            self._wake.clear()
            tick = False
            try:
                now = time.monotonic()
                if now - last_renew >= self.settings.store_lease_seconds / 3:
                    self.store.renew(self.owner)
                    last_renew = now
                tick = now - last_tick >= interval
                if tick:
                    if self._recorder is None or self._recorder.dead:
                        self._recorder = gevent.spawn(self._record_again)
                    self._adopt()
                    self.cpu.publish(self.store.requeue_stale_cpu())
                    self.cpu.republish_outbox()
                    for job in self.store.callbacks_due():
                        self._send_callback(job)
                    last_tick = now
                if self.settings.store_ttl and now - last_sweep >= 60:
                    last_sweep = now
                    deleted = self.store.sweep(time.time() - self.settings.store_ttl)
                    if deleted:
                        log.info("deleted %d jobs finished more than %s s ago", deleted, self.settings.store_ttl)
                if tick or self._next_wake <= time.time():
                    self._next_wake = math.inf
                    self._dispatch(self.store.promote_due(self.owner, ("io", "cpu")))
            except Exception:
                log.exception("maintenance pass failed; retrying")
                gevent.sleep(interval)
            if tick:
                try:
                    self.store.maintain()
                except Exception as exc:
                    log.warning("store upkeep failed: %s", exc)

    def _record_again(self) -> None:
        for executor in self.executors.values():
            executor.record_again()

    def _adopt(self) -> None:
        dead = [owner for owner, _ in self.store.owners(self.owner) if owner_is_dead(owner, self.owner)]
        jobs = self.store.adopt(self.owner, dead, tuple(self.executors))
        if jobs:
            log.info("adopted %d jobs from dead or expired runners", len(jobs))
            self._dispatch(jobs)

    def _dispatch(self, queued: Iterable[Job]) -> None:
        by_kind: dict[str, list[Job]] = {}
        for job in queued:
            by_kind.setdefault(job.kind, []).append(job)
        for kind, jobs in by_kind.items():
            if kind == "cpu":
                self.cpu.publish(jobs)
            else:
                self.executors[kind].enqueue(jobs)

    # -- the API -----------------------------------------------------------------------
    def submit(self, jobs: list[Job], batch_id: str | None = None,
               keys: dict[int, tuple[str, str]] | None = None) -> dict[int, str]:
        """Store ``jobs`` durably (all or nothing), then start or queue them.

        ``keys`` maps a job's index to its (Idempotency-Key, request fingerprint); the result maps the
        index of every job that repeats an earlier request to the original job's id (those jobs are
        neither stored nor started).  Raises IdempotencyConflict if a key came with another request.
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new jobs; retry shortly")
        now = time.time()
        by_kind: dict[str, list[Job]] = {}
        for job in jobs:
            job.batch_id = batch_id
            if job.run_at is not None and job.run_at > now:
                job.state = SCHEDULED
            else:
                job.run_at = None
                by_kind.setdefault(job.kind, []).append(job)
        if "cpu" in by_kind:
            self.cpu.check_available()       # 503 now rather than a job that waits for a broker
        io_jobs = by_kind.get("io", [])
        started = self.executors["io"].admit(len(io_jobs)) if io_jobs else 0
        try:
            io_jobs.sort(key=lambda j: -j.priority)
            for i, job in enumerate(io_jobs):
                if i < started:
                    job.state, job.attempts, job.started_at = RUNNING, 1, now
                else:
                    job.state = QUEUED
            for job in by_kind.get("cpu", ()):
                job.state = QUEUED
            repeats = self.store.insert(jobs, self.owner, batch_id, keys, self.settings.api_idempotency_ttl)
        except BaseException:
            if started:
                self.executors["io"].unreserve(started)
            raise
        if repeats:                # repeats of earlier requests were not stored: they must not run
            skip = {id(jobs[i]) for i in repeats}
            fresh_started = [j for j in io_jobs[:started] if id(j) not in skip]
            if len(fresh_started) < started:
                self.executors["io"].unreserve(started - len(fresh_started))
            io_later = [j for j in io_jobs[started:] if id(j) not in skip]
            io_jobs, started = fresh_started + io_later, len(fresh_started)
            by_kind["cpu"] = [j for j in by_kind.get("cpu", ()) if id(j) not in skip]
            stored = [j for j in jobs if id(j) not in skip]
        else:
            stored = jobs
        for n, job in enumerate(stored, 1):
            self.emit("submitted", job)
            if job.state == SCHEDULED:
                self.wake_at(job.run_at)
            if n % 256 == 0 and self.events.subscribers:
                gevent.sleep(0)     # let event streams take this part of a big batch before the ring wraps
        if io_jobs:
            self.executors["io"].launch(io_jobs[:started])
            self.executors["io"].enqueue(io_jobs[started:])
        if by_kind.get("cpu"):
            self.cpu.publish(by_kind["cpu"])
        return repeats

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def submit_and_wait(self, job: Job, keys: dict | None, timeout: float) -> tuple[Job, bool]:
        """Submit one job and wait up to ``timeout`` s for its end, in one call (``POST /jobs?wait=``).
        Returns (the job as it then is, whether it was created: False for a repeated Idempotency-Key).
        The waiter is registered before the job is stored, so even an instant job is not missed."""
        with self.waiters.job(job.id) as result:
            repeats = self.submit([job], keys=keys)
            if repeats:
                return self.wait(repeats[0], timeout), False
            try:
                return result.get(timeout=timeout) or self.get(job.id), True
            except gevent.Timeout:
                return job, True

    def wait(self, job_id: str, timeout: float) -> Job:
        """The job once it is terminal, or as it is after ``timeout`` seconds."""
        with self.waiters.job(job_id) as result:
            job = self.get(job_id)
            if job.terminal or timeout <= 0:
                return job
            try:
                return result.get(timeout=timeout) or self.get(job_id)
            except gevent.Timeout:
                return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a scheduled, queued or running job.  Raises JobFinished if it already ended."""
        for executor in self.executors.values():
            if executor.running(job_id):
                job = executor.cancel(job_id)
                if job is not None and job.state == "cancelled":
                    return job
        if self.cpu.running(job_id):
            job = self.cpu.cancel(job_id)
            if job is not None:
                return job
        # Take it out of the local backlog first, so a slot freeing meanwhile cannot start it.
        dropped = [(ex, ex.drop_pending(job_id)) for ex in self.executors.values()]
        try:
            job, changed = self.store.cancel(job_id, CANCELLED_BY_REQUEST)
        except BaseException:
            for executor, pending in dropped:
                if pending is not None:
                    executor.enqueue([pending])
            raise
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not changed:
            raise JobFinished(f"job {job_id} already ended ({job.state}); nothing to cancel")
        self._finished(job)
        return job

    def retry(self, job_id: str) -> Job:
        """Run a failed job again (same id, next attempt).  Raises JobFinished unless it failed."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new jobs; retry shortly")
        job, changed = self.store.revive(job_id, self.owner)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not changed:
            raise JobFinished(f"job {job_id} is {job.state}; only a failed job can be retried")
        self.emit("retrying", job)
        self._dispatch([job])
        return job

    def batch(self, batch_id: str, timeout: float = 0.0) -> dict:
        """Counts per state for a batch; with ``timeout``, first wait until every job is terminal.

        Every job active at a count ends (and is announced) after it, so the waiter re-counts only
        once as many jobs ended as were active; once a second anyway, for jobs that end elsewhere."""
        deadline = time.monotonic() + timeout
        with self.waiters.batch(batch_id) as waiter:
            counts = self.store.batch_counts(batch_id)
            if counts is None:
                raise JobNotFound(f"no batch with id {batch_id!r}")
            while self.accepting and deadline > time.monotonic():
                waiter.reading()
                active = self.store.batch_active(batch_id)
                if active == 0:
                    break
                waiter.expect(active)
                waiter.event.wait(min(1.0, deadline - time.monotonic()))
        return self.store.batch_counts(batch_id) if timeout > 0 else counts

    def batch_of(self, job_ids: list[str]) -> str | None:
        return self.store.batch_of(job_ids) if job_ids else None

    def stats(self) -> dict:
        return {"io": self.executors["io"].stats(), "cpu": self.cpu.stats()}
