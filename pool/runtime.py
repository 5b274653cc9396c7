"""The runtime: wires the store, the registry, the executors and the listeners; the API the views call.

It never knows about HTTP.  One POST /jobs goes: ``submit`` stores the jobs (the io pool's fast path
reserves slots first, so a job that can start is stored already running), tells the listeners
(``submitted``), and hands them to their executor: the greenlet pool (io) or the cpu dispatcher.
The executor reports to one :class:`~greenjobs.pool.listeners.Sink`, which records outcomes
(``greenjobs.pool.outcomes``) and announces them to the listeners: waiters (long-polls), events,
metrics, signals, webhooks and the maintenance wake-up.
"""
from __future__ import annotations

import gc
import logging
import time
from typing import Iterable

import gevent

from greenjobs.pool import workflows
from greenjobs.pool.cluster import ClusterWatch, Membership
from greenjobs.pool.cpu.control import WorkerControl
from greenjobs.pool.cpu.dispatcher import CpuDispatcher
from greenjobs.pool.cpu.supervisor import HostLock, Supervisor
from greenjobs.pool.errors import BadCursor, ConfigurationError, JobFinished, JobNotFound, ShuttingDown
from greenjobs.pool.io.executor import GreenletExecutor
from greenjobs.pool.io.hubguard import HubGuard
from greenjobs.pool.job import CANCELLED, FAILED, RUNNING, SCHEDULED, TERMINAL, Job
from greenjobs.pool.lifecycle import CANCELLED_BY_REQUEST, Backoff
from greenjobs.pool.listeners import Listener, Listeners, Sink
from greenjobs.pool.maintenance import Maintenance
from greenjobs.pool.observe.events import EventLog, SharedEvents
from greenjobs.pool.observe.metrics import JobMetrics
from greenjobs.pool.observe.signals import SignalSender
from greenjobs.pool.observe.throughput import Throughput
from greenjobs.pool.observe.webhooks import Webhooks
from greenjobs.pool.owners import owner_id
from greenjobs.pool.scheduler import Scheduler
from greenjobs.pool.schedules import Advance
from greenjobs.pool.store import store_for
from greenjobs.pool.waiters import Waiters
from greenjobs.pool.workflows import Plan

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000
#: Seconds a shutdown gives woken long-polls to read their job and answer before the store closes.
WAITERS_DRAIN = 5.0


class Progress(Listener):
    """Progress reports of running jobs: stored (coalesced) at once, announced at most every 0.1 s per job."""

    EVERY = 0.1     # seconds between progress events of one job

    def __init__(self, runtime):
        self.rt = runtime
        self._at: dict[str, float] = {}

    def report(self, job_id: str, progress: dict) -> None:
        """A running job (io or cpu) reported ``{"fraction", "message"}``."""
        self.rt.store.set_progress(job_id, progress)
        job = self.rt.io.running_job(job_id) or self.rt.cpu.running_job(job_id)
        if job is None:
            return
        job.progress = progress
        now = time.monotonic()
        if now - self._at.get(job_id, 0.0) >= self.EVERY or progress.get("fraction") == 1:
            self._at[job_id] = now
            self.rt.listeners.emit("progress", job)

    def job_event(self, name: str, job: Job) -> None:
        """Forget a job's throttle once it ended."""
        if name in TERMINAL:
            self._at.pop(job.id, None)


class Runtime:
    """Everything that runs jobs in this process."""

    def __init__(self, settings, registry, ini: str | None = None, role: str = "server", middleware=None):
        self.settings = settings
        self.registry = registry
        for handler in registry:        # every submission of it would be refused for a field the client never sent
            if handler.timeout is not None and handler.timeout > settings.job_max_timeout:
                raise ConfigurationError(f"handler {handler.name!r} has a default timeout of {handler.timeout} s, above"
                                         f" greenjobs.job.max_timeout = {settings.job_max_timeout} s: lower it in"
                                         " @handler(timeout=...) or raise the setting")
        self.owner = owner_id()
        self.store = store_for(settings.store_url, lease_seconds=settings.store_lease_seconds,
                               synchronous=settings.store_synchronous)     # opened by start()
        self.listeners = Listeners()
        self.waiters = self.listeners.add(Waiters())
        self.events = self.listeners.add(EventLog(settings.events_replay))
        self.metrics = self.listeners.add(JobMetrics())
        self.throughput = self.listeners.add(Throughput())
        self.signals = self.listeners.add(SignalSender(settings.signals_backlog))
        self.webhooks = self.listeners.add(Webhooks(settings, self.store, self.owner, self._enqueue))
        self.progress = self.listeners.add(Progress(self))
        self.maintenance = self.listeners.add(Maintenance(self))
        registry.add(self.webhooks.handler())
        self.sink = sink = Sink(self.store, self.listeners, Backoff(settings.retry_base, settings.retry_max),
                                self.progress.report)
        self.io = GreenletExecutor("io", self.store, registry, settings, self.owner, size=settings.pool_size,
                                   max_pending=settings.pool_max_pending, sink=sink, middleware=middleware)
        # cpu jobs never run here: they go to worker processes over the broker
        self.supervisor = Supervisor(ini, settings.workers_cpu, grace=settings.shutdown_grace) \
            if ini and settings.workers_cpu > 0 else None
        self.host_lock = HostLock(ini) if self.supervisor is not None else None    # started by supervise()
        self.worker_control = WorkerControl(self)
        self._told_holder = False
        self.cpu = CpuDispatcher(settings, self.store, registry, sink, supervisor=self.supervisor)
        self.cluster = ClusterWatch(self, settings.cluster_poll, settings.cluster_notify)
        self.started_at = time.time()
        self.members = Membership(self, role)
        self.scheduler = Scheduler(self)
        self.hub = HubGuard(self)
        self.shared_events = SharedEvents(self.events, self.store, settings.cluster_poll, self.members.await_others) \
            if settings.events_shared else None
        self.accepting = False
        self.store.on_steps_moved = self._steps_moved
        self.store.on_rate_wait = self.maintenance.wake_at

    def _enqueue(self, jobs: list[Job]) -> None:
        self.io.offer(len(jobs))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "Runtime":
        """Open the store, adopt what dead runners left, connect the broker, start workers and duties."""
        self.store.open()
        if self.shared_events is not None:
            self.shared_events.start()          # before the first job event (adoption below)
        self.maintenance.start()
        try:
            self.maintenance.heartbeat()        # in the servers table before the first request
        except Exception as exc:                # the store is failing: the next tick tries again
            log.warning("could not write the first heartbeat (%s)", exc)
        self.cluster.start()
        self.cpu.start()
        self.supervise()
        try:
            self.scheduler.declare()
        except Exception as exc:                # the store is failing: the ini's schedules wait for a restart
            log.error("could not store the ini's schedules (%s)", exc)
        self.accepting = True
        self.scheduler.start()
        self.hub.start()
        # Thousands of jobs in flight are tens of thousands of young objects (jobs, greenlets, events);
        # with the default threshold (700) the cyclic collector runs every few jobs and rescans them.
        # Objects made at start-up (modules, app) are frozen out of its scans.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        log.info("greenjobs runtime started as %s (store %s)", self.owner, self.store.where)
        return self

    def supervise(self) -> bool:
        """Start the cpu workers unless another process of this ini on this host supervises them (gunicorn
        -w N); called again every maintenance tick, so one of them takes over when the holder stops or dies."""
        lock = self.host_lock
        if lock is None or lock.held:
            return lock is not None
        if not lock.acquire():
            if not self._told_holder:
                self._told_holder = True
                log.info("the cpu workers of %s on this host are supervised by pid %s: this process starts none,"
                         " and takes over if that one stops", lock.ini, lock.holder() or "?")
            return False
        self.supervisor.start()
        log.info("supervising %d cpu workers for %s (every other process of this ini on this host starts none)",
                 self.supervisor.count, lock.ini)
        return True

    def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let running jobs finish for ``grace`` seconds, requeue the rest, close."""
        if not self.accepting and not self.maintenance.running:
            return
        self.accepting = False
        grace = self.settings.shutdown_grace if grace is None else grace
        self.hub.stop()
        self.scheduler.stop()
        self.maintenance.stop()
        self.cluster.stop()
        supervising = self.host_lock is not None and self.host_lock.held
        stopping_workers = gevent.spawn(self.supervisor.stop, grace) if supervising else None
        interrupted = self.io.shutdown(grace)
        if stopping_workers is not None:
            stopping_workers.join()
            self.host_lock.release()
        self.cpu.stop()
        try:
            requeued = self.store.requeue(interrupted, self.owner, started=True)   # interrupted starts count
            released = self.store.release(self.owner)
            log.info("shutdown: %d running jobs requeued, %d queued jobs released", requeued, released)
            self.members.leave()
            self.waiters.wake_all()
            if self.shared_events is not None:
                self.shared_events.stop()
            self.events.close()
            # Woken long-polls read the job before they answer: let them, before the store closes (a fixed
            # 50 ms was not enough on a loaded machine, and a read cut off by close() never answered).
            deadline = time.monotonic() + WAITERS_DRAIN
            gevent.sleep(0)
            while self.waiters.active and time.monotonic() < deadline:
                gevent.sleep(0.01)
        finally:
            self.store.close()

    def dispatch(self, queued: Iterable[Job]) -> None:
        """Hand stored queued jobs to their executor: io ones wait in the ledger for a free slot here or on
        another server; cpu ones go to the broker."""
        io, cpu = [], []
        for job in queued:
            (cpu if job.kind == "cpu" else io).append(job)
        if io:
            self.io.offer(len(io))
        if cpu:
            self.cpu.publish(cpu)

    # -- the API -----------------------------------------------------------------------
    def submit(self, jobs: list[Job], batch_id: str | None = None,
               keys: dict[int, tuple[str, str]] | None = None, advance: Advance | None = None,
               workflow: Plan | None = None) -> dict[int, str]:
        """Store ``jobs`` durably (all or nothing), then start or queue them.

        ``keys`` maps a job's index to its (Idempotency-Key, request fingerprint); the result maps the
        index of every job that repeats an earlier request to the original job's id (those jobs are
        neither stored nor started).  Raises IdempotencyConflict if a key came with another request.
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new jobs; retry shortly")
        now = time.time()
        io_jobs, cpu_jobs = [], []
        for job in jobs:
            job.batch_id = batch_id
            if job.deps_left:                # a workflow step: released when its dependencies end
                continue
            if job.run_at is not None and job.run_at > now:
                job.transition(SCHEDULED)
            else:
                job.run_at = None
                (cpu_jobs if job.kind == "cpu" else io_jobs).append(job)
        # a gated io job (a rate or concurrency limit) never takes the fast path: the ledger admits it at its take
        io_jobs.sort(key=lambda j: (j.gate is not None, -j.priority))
        fast = sum(1 for j in io_jobs if j.gate is None)
        if cpu_jobs:
            self.cpu.check_available()       # 503 now rather than a job that waits for a broker
            self.cpu.admit(len(cpu_jobs))    # 429 past greenjobs.workers.max_pending waiting
        started = self.io.admit(fast) if fast else 0
        try:
            for job in io_jobs[:started]:    # the fast path: stored as running, leased to us
                job.transition(RUNNING)
                job.attempts, job.started_at = 1, now
            repeats = self.store.insert(jobs, self.owner, batch_id, keys, self.settings.api_idempotency_ttl,
                                        advance=advance, workflow=workflow)
        except BaseException:
            if started:
                self.io.unreserve(started)
            raise
        if repeats:                # repeats of earlier requests were not stored: they must not run
            skip = {id(jobs[i]) for i in repeats}
            fresh_started = [j for j in io_jobs[:started] if id(j) not in skip]
            if len(fresh_started) < started:
                self.io.unreserve(started - len(fresh_started))
            io_later = [j for j in io_jobs[started:] if id(j) not in skip]
            io_jobs, started = fresh_started + io_later, len(fresh_started)
            cpu_jobs = [j for j in cpu_jobs if id(j) not in skip]
            stored = [j for j in jobs if id(j) not in skip]
        else:
            stored = jobs
        for n, job in enumerate(stored, 1):
            self.listeners.emit("submitted", job)
            if n % 256 == 0 and self.events.subscribers:
                gevent.sleep(0)     # let event streams take this part of a big batch before the ring wraps
        if io_jobs:
            self.io.launch(io_jobs[:started])
            self.io.offer(len(io_jobs) - started)
        if cpu_jobs:
            self.cpu.publish(cpu_jobs)
        return repeats

    def get(self, job_id: str) -> Job:
        """The job as stored; JobNotFound if there is none."""
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def list(self, state: str | None, handler: str | None, limit: int, after: str | None,
             schedule: str | None = None, text: str | None = None) -> tuple[list[Job], int | None]:
        """A page of jobs, newest first, and the cursor of its last job.  ``after`` is a cursor from an
        earlier page (or, as earlier versions sent, a job id); BadCursor if it is neither."""
        cursor = None
        if after is not None:
            numeric = after.isascii() and after.isdigit() and len(after) <= 18
            cursor = int(after) if numeric else self.store.cursor_of(after)
            if cursor is None:
                raise BadCursor("?after= must be the `next` value of the previous page")
        return self.store.list(state=state, handler=handler, limit=limit, after=cursor, schedule=schedule, text=text)

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
                return self.get(job.id), True       # as stored (a cpu job's state lives there, not in ``job``)

    def wait(self, job_id: str, timeout: float) -> Job:
        """The job once it is terminal, or as it is after ``timeout`` seconds."""
        with self.waiters.job(job_id) as result:
            job = self.get(job_id)
            if job.terminal or timeout <= 0 or not self.accepting:     # shutting down: answer now
                return job
            try:
                return result.get(timeout=timeout) or self.get(job_id)
            except gevent.Timeout:
                return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a scheduled, queued or running job.  Raises JobFinished if it already ended."""
        if self.io.running(job_id):
            job = self.io.cancel(job_id)
            if job is not None and job.state == CANCELLED:
                return job
        if self.cpu.running(job_id):
            job = self.cpu.cancel(job_id)
            if job is not None:
                return job
        job, changed = self.store.cancel(job_id, CANCELLED_BY_REQUEST)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not changed:
            raise JobFinished(f"job {job_id} already ended ({job.state}); nothing to cancel")
        if job.kind == self.io.kind:
            self.io.withdrawn()
        self.listeners.emit(job.state, job)
        return job

    def retry(self, job_id: str) -> Job:
        """Run a failed job again (same id, next attempt).  Raises JobFinished unless it failed."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down and accepts no new jobs; retry shortly")
        job, changed = self.store.revive(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not changed and job.workflow_id is not None:     # the store revives no workflow step
            raise JobFinished(f"job {job_id} is a step of workflow {job.workflow_id}, whose later steps ended with "
                              "it; submit the workflow again")
        if not changed and job.state == FAILED and job.unique_key is not None:
            raise JobFinished(f"job {job_id} cannot run again while another job with its unique_key is active")
        if not changed:
            raise JobFinished(f"job {job_id} is {job.state}; only a failed job can be retried")
        self.listeners.emit("retrying", job)
        self.dispatch([job])
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

    # -- workflows ------------------------------------------------------------------------
    def submit_workflow(self, plan: Plan) -> dict:
        """Store a workflow's jobs and edges in one transaction and start its first steps."""
        self.submit(plan.jobs, batch_id=plan.id, workflow=plan)
        return workflows.describe(plan.id, plan.shape(), plan.jobs)     # as stored and started: no read back

    def workflow(self, workflow_id: str, timeout: float = 0.0) -> dict:
        """A workflow's state, result and steps; with ``timeout``, first wait until every step ended (woken as
        a batch's wait is: its steps are its batch)."""
        shape = self.store.workflow_shape(workflow_id)
        if shape is None:
            raise JobNotFound(f"no workflow with id {workflow_id!r}")
        if timeout > 0:
            self.batch(workflow_id, timeout)
        return workflows.describe(workflow_id, shape, self.store.workflow_jobs(workflow_id))

    def cancel_workflow(self, workflow_id: str) -> dict:
        """Cancel every step that has not ended (running ones where they run; waiting ones downstream of a
        cancelled step end upstream_failed with it)."""
        shape = self.store.workflow_shape(workflow_id)
        if shape is None:
            raise JobNotFound(f"no workflow with id {workflow_id!r}")
        for job in self.store.workflow_jobs(workflow_id):
            if not job.terminal:
                try:
                    self.cancel(job.id)
                except JobFinished:         # ended meanwhile, or cancelled with an upstream step
                    pass
        return workflows.describe(workflow_id, shape, self.store.workflow_jobs(workflow_id))

    def _steps_moved(self, moved) -> None:
        """The store moved jobs with an end it recorded (workflow steps; a job waiting for a slot of its handler):
        announce the cancelled, start the released."""
        for job in moved.cancelled:
            self.listeners.emit(job.state, job)
        if moved.released:
            self.dispatch(moved.released)

    def batch_of(self, job_ids: list[str]) -> str | None:
        """The batch that holds exactly these jobs (a repeated batch request), or None."""
        return self.store.batch_of(job_ids) if job_ids else None

    def health(self) -> dict:
        """What GET /health shows: whether this server takes jobs, its pools, its store."""
        store_ok = self.store.ping()
        return {"status": "ok" if store_ok and self.accepting else "unavailable", "accepting": self.accepting,
                "pool": self.io.stats(), "cpu": self.cpu.stats(), "waiters": self.waiters.count(),
                "store": {"ok": store_ok, "error": self.store.last_error}, "cluster": self.members.counts()}
