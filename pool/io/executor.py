"""The greenlet executor: a bounded, managed set of job greenlets fed from the ledger.

It is separate from the HTTP server's connection pool, so a full job pool never stops the server
accepting requests, and admission never blocks: past ``max_pending`` it raises Overloaded (429).
The backlog is the ledger, not this process: a job that cannot start at once is stored queued and
held by nobody, and whichever server of the cluster has a free slot takes it (``JobStore.take``),
so a full server leaves work for an idle one.  A job that can start at once is stored running and
leased to us in its submission's own transaction (the fast path, :meth:`admit` + :meth:`launch`).

Each running job is a :class:`_Run`.  Its outcome is *settled* exactly once, by whichever comes
first: the handler returning or raising, its timeout, or a cancel.  Timeouts and cancels settle
from outside the job greenlet and then kill it, so a handler that swallows ``gevent.Timeout`` or
``GreenletExit`` with a bare ``except:`` still ends failed/cancelled and gives its slot back.
"""
from __future__ import annotations

import logging
import time

import gevent
from gevent import Greenlet
from gevent.event import Event

from greenjobs.pool import outcomes
from greenjobs.pool.context import JobContext, activate, deactivate
from greenjobs.pool.errors import Overloaded
from greenjobs.pool.job import Job
from greenjobs.pool.outcomes import Outcome

log = logging.getLogger(__name__)


#: Most jobs one take() starts (a pool of 10,000 slots fills in several statements, not one huge one).
TAKE_MAX = 1000


class JobInterrupt(BaseException):
    """Thrown into a job greenlet whose outcome was already settled (timeout, cancel, shutdown)."""


class _Run:
    """One attempt in this pool (stored running, leased to us): its greenlet, timeout timer and (once settled)
    outcome."""

    __slots__ = ("job", "handler", "greenlet", "timer", "outcome", "done", "started")

    def __init__(self, job: Job, handler):
        self.job = job
        self.handler = handler
        self.greenlet: Greenlet | None = None
        self.timer = None
        self.outcome: Outcome | None = None
        self.done = Event()
        self.started = 0.0              # monotonic time the handler was called (set by _body)

    def late(self) -> bool:
        """Whether the attempt is past its timeout: its timer could not fire because the handler held the hub."""
        return bool(self.job.timeout) and time.monotonic() - self.started > self.job.timeout


class GreenletExecutor:
    """Runs the jobs of one kind as greenlets; reports starts, progress and outcomes to ``sink``
    (greenjobs.pool.listeners.Sink)."""

    def __init__(self, kind: str, store, registry, settings, owner: str, size: int, max_pending: int, sink,
                 middleware=None):
        self.kind = kind
        self.store = store
        self.registry = registry
        self.settings = settings
        self.owner = owner
        self.size = size
        self.max_pending = max_pending
        self.sink = sink
        self.middleware = middleware      # greenjobs.pool.hooks.Middleware, or None/empty: nothing around jobs
        self._busy = 0                      # running + reserved slots
        #: queued jobs of our kind nobody holds, as last counted in the ledger plus what we stored since
        #: (all servers' backlog: the 429 limit and whether a new job may jump ahead go by it)
        self.backlog = 0
        self._taker: Greenlet | None = None
        self._running: dict[str, _Run] = {}
        self._unrecorded: list[_Run] = []  # settled runs whose outcome could not be stored yet
        self._offered = 0                   # jobs offered so far (so a take or count can tell what came meanwhile)
        self._accepting = True
        self.completed = 0

    # -- admission -----------------------------------------------------------------
    def admit(self, count: int) -> int:
        """Reserve slots for ``count`` new jobs; return how many start now (the rest wait in the ledger).

        None starts while the ledger holds a backlog (it goes first).  Raises Overloaded when the
        backlog would pass ``max_pending``.
        """
        start = max(0, min(self.size - self._busy, count)) if not self.backlog else 0
        later = count - start
        if later and self.backlog + later > self.max_pending:
            raise Overloaded(f"the {self.kind} job backlog is full ({self.backlog} pending, "
                             f"limit greenjobs.pool.max_pending={self.max_pending}); retry later", retry_after=1)
        self._busy += start
        return start

    def unreserve(self, count: int) -> None:
        """Give back ``count`` slots reserved by admit() for jobs that were not stored."""
        self._busy -= count
        self._fill()

    def launch(self, jobs: list[Job]) -> None:
        """Start jobs already stored as running for us (their slots were reserved by :meth:`admit`)."""
        for job in jobs:
            self._spawn(job)

    def offer(self, count: int) -> None:
        """``count`` jobs of our kind were stored (or put back) queued and held by nobody: take them if we can."""
        self.backlog += count
        self._offered += count
        self._fill()

    def withdrawn(self) -> None:
        """A job of ours that may have waited in the backlog was cancelled (the next count corrects a guess)."""
        self.backlog = max(0, self.backlog - 1)

    def recount(self) -> None:
        """Count the ledger's backlog again (other servers add to it and take from it)."""
        offered = self._offered
        counted = self.store.backlog((self.kind,))
        self.backlog = counted + self._offered - offered      # offers made while counting may not be in it

    def poll(self, wait: bool = False) -> None:
        """:meth:`recount`, then take what fits (``wait``: before returning, as start() does before serving)."""
        self.recount()
        self._fill()
        if wait and self._taker is not None:
            self._taker.join()

    def _fill(self) -> None:
        """Take queued jobs from the ledger while slots are free (one taker at a time: takes coalesce)."""
        if (self._accepting and self.backlog and self._busy < self.size
                and (self._taker is None or self._taker.dead)):
            self._taker = gevent.spawn(self._take)

    def _take(self) -> None:
        while self._accepting and self.backlog and self._busy < self.size:
            want = min(self.size - self._busy, TAKE_MAX)
            offered = self._offered
            self._busy += want
            try:
                jobs = self.store.take(self.owner, (self.kind,), want)
            except Exception as exc:
                self._busy -= want
                log.warning("could not take queued %s jobs from the store (%s); the next tick tries again",
                            self.kind, exc)
                self.backlog = 0        # until the tick's recount: not a retry on every finishing job
                return
            self._busy -= want - len(jobs)
            if len(jobs) < want:        # the ledger had no more, except what was offered meanwhile
                self.backlog = self._offered - offered
            else:
                self.backlog = max(1, self.backlog - len(jobs))
            if not self._accepting:             # shutting down meanwhile: give them back untouched
                self.store.requeue(jobs, self.owner)
                self._busy -= len(jobs)
                return
            for job in jobs:
                self._spawn(job)

    def _spawn(self, job: Job) -> None:
        stale = self._running.get(job.id)
        if stale is not None:       # an earlier attempt still runs here (we lost its lease, the job came back)
            self.abandon(job.id, stale.job.attempts, "a later attempt of it starts here")
        run = _Run(job, self.registry.find(job.handler))
        self._running[job.id] = run
        run.greenlet = gevent.spawn(self._body, run)

    # -- running ---------------------------------------------------------------------
    def _body(self, run: _Run) -> None:
        job = run.job
        self.sink.started(job)
        if run.handler is None:   # stored by a server whose config had a handler this one lacks
            self._end(run, outcomes.unknown_handler(f"handler {job.handler!r} is not registered here; "
                                                    f"known: {', '.join(self.registry.names())}"))
            return
        if job.timeout is None:      # enqueued in an application's transaction (greenjobs_client.transactional)
            job.timeout = run.handler.timeout or self.settings.job_max_timeout
        if job.timeout:
            run.timer = gevent.get_hub().loop.timer(job.timeout)
            run.timer.start(self._expire, run)
        token = activate(JobContext(job, self.settings, self.sink.progress))
        run.started = time.monotonic()
        try:
            if self.middleware:
                result = self.middleware.call(job, run.handler.fn, job.args, job.kwargs)
            else:
                result = run.handler.fn(*job.args, **job.kwargs)
        except JobInterrupt:
            return                           # settled by whoever interrupted us
        except (Exception, gevent.Timeout) as exc:   # a handler's own gevent.Timeout is an ordinary failure
            self._end(run, self._late(run) if run.late() else outcomes.from_exception(exc, run.handler))
        except BaseException as exc:         # GreenletExit from a stray kill, KeyboardInterrupt, SystemExit
            if run.outcome is None:
                self._end(run, outcomes.failed("interrupted", f"{type(exc).__name__}: {exc}"))
            if not isinstance(exc, gevent.GreenletExit):
                raise
        else:
            # past its deadline (its timer never fired: the handler held the hub), the result does not count
            self._end(run, self._late(run) if run.late() else outcomes.succeeded(result, self.settings.job_max_result_bytes))
        finally:
            deactivate(token)

    @staticmethod
    def _late(run: _Run) -> Outcome:
        return outcomes.timed_out(run.job.timeout, f"; it blocked the event loop for {time.monotonic() - run.started:.1f} s,"
                                                   " so its timeout could not stop it (see 'Blocking the event loop')")

    def _expire(self, run: _Run) -> None:
        # Runs in the hub (a timer callback): hand the work to a greenlet.
        gevent.spawn(self._end, run, outcomes.timed_out(run.job.timeout), True)

    def _end(self, run: _Run, outcome: Outcome, from_outside: bool = False) -> bool:
        """Settle ``run`` with ``outcome`` unless it is settled already (then False), and record it.

        From outside the job's greenlet (timeout, cancel) the greenlet is killed first, so a handler
        that swallows the kill with a bare ``except:`` cannot keep the job alive or change its outcome.
        """
        if run.outcome is not None:
            return False
        self._settle(run, outcome, kill=from_outside)
        self._record(run)
        return True

    @staticmethod
    def _settle(run: _Run, outcome: Outcome, kill: bool) -> None:
        """Fix ``run``'s outcome, stop its timer and (``kill``: from outside its greenlet) interrupt it."""
        run.outcome = outcome
        if run.timer is not None:
            run.timer.close()
        if kill and run.greenlet is not None and not run.greenlet.dead:
            run.greenlet.kill(JobInterrupt, block=False)

    def _record(self, run: _Run) -> None:
        """Give the slot back (committing is store work, not handler work), then store the outcome."""
        self._busy -= 1
        self._fill()
        outcome = run.outcome
        job = run.job
        try:
            recorded = self.sink.record(job, self.owner, outcome)
            if recorded == "retried":
                log.info("job %s (%s): attempt %d failed (%s); retry at %.3f", job.id, job.handler,
                         job.attempts, outcome.error["kind"], job.run_at)
            elif recorded == "finished":
                self.completed += 1
            else:
                log.warning("job %s (%s): lease lost before it finished; outcome %s dropped",
                            job.id, job.handler, outcome.state)
        except Exception as exc:
            # The job stays running in the store, leased to us and renewed: keep the outcome and
            # try again from the maintenance loop, or it would be stuck for as long as we live.
            log.error("job %s (%s): could not record its outcome %s (%s); will retry", job.id, job.handler,
                      outcome.state, exc)
            self._unrecorded.append(run)
            return
        if self._running.get(job.id) is run:
            del self._running[job.id]
        run.done.set()

    def record_again(self) -> None:
        """Retry storing outcomes that failed to commit (called by the maintenance loop)."""
        runs, self._unrecorded = self._unrecorded, []
        for run in runs:
            self._busy += 1          # _record gives the slot back again
            self._record(run)

    # -- control -----------------------------------------------------------------------
    def running(self, job_id: str) -> bool:
        """Whether ``job_id`` runs in this pool now."""
        return job_id in self._running

    def running_job(self, job_id: str) -> Job | None:
        """The job running here under ``job_id``, or None."""
        run = self._running.get(job_id)
        return run.job if run is not None else None

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job running here; returns the job once its cancelled state is recorded."""
        run = self._running.get(job_id)
        if run is None:
            return None
        if not self._end(run, outcomes.cancelled(), from_outside=True):
            run.done.wait(10.0)     # it is finishing; if the store is stuck, the caller falls back to it
        return run.job

    def abandon(self, job_id: str, attempt: int, why: str) -> Job | None:
        """Stop attempt ``attempt`` of a job running here whose record another server changed (cancelled it, or
        adopted it after our lease ran out): kill its greenlet and free its slot, recording nothing (the record
        is not ours).  Nothing happens if that attempt is not the one running here (or is settling already)."""
        run = self._running.get(job_id)
        if run is None or run.outcome is not None or run.job.attempts != attempt:
            return None
        self._settle(run, outcomes.INTERRUPTED, kill=True)
        log.info("job %s (%s): stopped here, %s", job_id, run.job.handler, why)
        self._running.pop(job_id, None)
        run.done.set()
        self._busy -= 1
        self._fill()
        return run.job

    def running_attempts(self) -> dict[str, int]:
        """Job id -> the attempt running here (settled ones still recording included)."""
        return {job_id: run.job.attempts for job_id, run in self._running.items()}

    def stats(self) -> dict:
        """Slots (size, busy), backlog and jobs completed, for /health and /metrics."""
        return {"size": self.size, "busy": self._busy, "pending": self.backlog,
                "completed": self.completed}

    def shutdown(self, grace: float) -> list[Job]:
        """Stop starting jobs, give running ones ``grace`` seconds, then interrupt the rest.

        Returns the interrupted jobs (still running in the store) for the caller to requeue.
        """
        self._accepting = False
        if self._taker is not None:
            self._taker.join(5.0)           # a take in flight gives its jobs back (or they are ours to interrupt)
        runs = list(self._running.values())
        gevent.joinall([r.greenlet for r in runs if r.greenlet is not None], timeout=grace)
        left = [r for r in self._running.values() if r.outcome is None]
        for run in left:
            self._settle(run, outcomes.INTERRUPTED, kill=True)
        gevent.sleep(0)
        return [r.job for r in left]
