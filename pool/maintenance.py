"""The runtime's background duties, one method each, run by one greenlet on a timer.

Like River's and Oban's maintenance services, each duty is small and named: renew this process's
leases, write its heartbeat to the servers table, record outcomes that failed to commit, give the
ledger back the jobs of dead or expired runners, count the ledger's backlog and take what fits the
free slots, repair the cpu outbox, repair missed webhook deliveries, take over this host's cpu
workers when their supervisor is gone, promote scheduled jobs when due, sweep old jobs, and the
store's own upkeep.  A duty that fails is logged and tried again next tick; it
never stops the others.  As a listener, it wakes early for a retry or a job scheduled sooner
than the next tick.
"""
from __future__ import annotations

import logging
import math
import time

import gevent
import gevent.event

from greenjobs.pool.job import SCHEDULED, Job
from greenjobs.pool.lifecycle import LEASED_KINDS
from greenjobs.pool.listeners import Listener
from greenjobs.pool.owners import owner_is_dead

log = logging.getLogger(__name__)

#: Seconds between sweeps of jobs past greenjobs.store.ttl (sooner for a short ttl, every tick while behind).
SWEEP_EVERY = 60.0
#: Jobs deleted per sweep transaction, and seconds of sweeping per tick.
SWEEP_BATCH = 5000
SWEEP_BUDGET = 0.5
#: Seconds a dead worker on this host may still hold a running cpu job before the job is requeued.
STRANDED_AFTER = 30.0
#: Seconds every event stays in the ledger's events table, however many came after it.
EVENTS_KEPT = 10.0
#: Seconds after its start an io job leased to us in the ledger but not running here is given back.
UNSTARTED_AFTER = 10.0


class Maintenance(Listener):
    """Keeps the ledger healthy for one runtime (``runtime``: its store, executors and owner id)."""

    def __init__(self, runtime):
        self.rt = runtime
        self.settings = runtime.settings
        self.tick = min(1.0, self.settings.store_lease_seconds / 3)      # seconds
        self._greenlet = None
        self._recorder = None
        self.sweep_every = max(self.tick, min(SWEEP_EVERY, self.settings.store_ttl / 2))
        self._sweep_behind = False
        self._wake = gevent.event.Event()
        self._next_due = math.inf          # epoch seconds of the earliest scheduled job we know of
        self._dead_since: dict[str, float] = {}     # lease owner found dead -> since when (monotonic)

    # -- as a listener: wake for scheduled jobs -----------------------------------------
    def job_event(self, name: str, job: Job) -> None:
        """A retry, or a job submitted for later: promote it no later than its ``run_at``."""
        if (name == "retrying" or (name == "submitted" and job.state == SCHEDULED)) and job.run_at is not None:
            self.wake_at(job.run_at)

    def wake_at(self, run_at: float) -> None:
        """Run :meth:`promote_due` no later than ``run_at`` (epoch seconds)."""
        if run_at < self._next_due:
            self._next_due = run_at
            self._wake.set()

    # -- the loop -------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt what dead runners left (before serving), then run the duties in a greenlet."""
        self.adopt_orphans()
        self.rt.io.poll(wait=True)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the duties (shutdown)."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    @property
    def running(self) -> bool:
        """True while the duties run."""
        return self._greenlet is not None

    def _run(self) -> None:
        renew_every = self.settings.store_lease_seconds / 3
        last_renew = last_tick = last_sweep = time.monotonic()
        while True:
            self._wake.wait(max(0.0, min(self.tick, self._next_due - time.time())))
            self._wake.clear()
            now = time.monotonic()
            tick = now - last_tick >= self.tick
            duties = []
            if now - last_renew >= renew_every:
                duties.append(self.renew_leases)
                last_renew = now
            if tick:
                duties += [self.heartbeat, self.record_again, self.adopt_orphans, self.expire_due,
                           self.release_waiting, self.take_backlog,
                           self.requeue_unstarted, self.repair_outbox, self.repair_callbacks, self.supervise_workers]
                if self.rt.shared_events is not None:
                    duties.append(self.prune_events)
                last_tick = now
            if self.settings.store_ttl and (self._sweep_behind or now - last_sweep >= self.sweep_every):
                duties.append(self.sweep)
                last_sweep = now
            if tick or self._next_due <= time.time():
                duties.append(self.promote_due)
            if tick:
                duties.append(self.rt.store.maintain)
            for duty in duties:
                try:
                    duty()
                except Exception:
                    log.exception("maintenance: %s failed; it runs again next tick", duty.__name__)

    # -- the duties -------------------------------------------------------------------------
    def renew_leases(self) -> None:
        """Extend every lease this runtime holds (one statement)."""
        self.rt.store.renew(self.rt.owner)

    def heartbeat(self) -> None:
        """Write this runtime's row of the servers table (its load, now) and read the others'."""
        self.rt.members.beat()

    def prune_events(self) -> None:
        """Keep the newest greenjobs.events.replay events of the ledger's events table (what a stream can resume
        in), and every event of the last EVENTS_KEPT seconds (what a server's reader may not have read yet)."""
        self.rt.store.prune_events(self.settings.events_replay, before=time.time() - EVENTS_KEPT)

    def supervise_workers(self) -> None:
        """Take over this host's cpu workers of our ini if the process that supervised them stopped or died."""
        self.rt.supervise()

    def record_again(self) -> None:
        """Store outcomes whose commit failed earlier (in a greenlet: the store may still be failing)."""
        if self._recorder is None or self._recorder.dead:
            self._recorder = gevent.spawn(self.rt.io.record_again)

    def adopt_orphans(self) -> None:
        """Give back to the ledger the active leased (io) jobs of runners that died (same host) or whose lease
        expired, for whichever server has free slots.

        cpu jobs are not adopted here: a dead worker's job is redelivered by the broker and claimed
        again (or given up as worker_lost), and one whose message was lost is repaired by the outbox."""
        store, me = self.rt.store, self.rt.owner
        dead = [owner for owner, _ in store.owners(me) if owner_is_dead(owner, me)]
        now = time.monotonic()
        self._dead_since = {owner: self._dead_since.get(owner, now) for owner in dead}
        jobs = store.adopt(me, dead, LEASED_KINDS)
        if jobs:
            log.info("adopted %d jobs of dead or expired runners: queued again for any server", len(jobs))
            self.rt.dispatch(jobs)

    def requeue_unstarted(self) -> None:
        """Give back io jobs the ledger says run here but that do not: a take whose commit succeeded while its
        answer was lost (the connection broke in between).  Only jobs started UNSTARTED_AFTER seconds ago, so a
        take or submission on its way to starting its jobs is never mistaken for one."""
        rt = self.rt
        cutoff = time.time() - UNSTARTED_AFTER
        lost = [job_id for job_id, started in rt.store.held(rt.owner, LEASED_KINDS)
                if (started or 0) < cutoff and not rt.io.running(job_id)]
        if lost:
            given = rt.store.requeue(rt.store.get_many(lost), rt.owner)
            log.warning("%d io jobs were leased to this server in the ledger but never started here (a lost answer);"
                        " %d given back to the ledger", len(lost), given)
            rt.io.offer(given)

    def expire_due(self) -> None:
        """End the jobs that did not start before their ``expires`` (cancelled, error kind expired)."""
        for job in self.rt.store.expire_due():
            self.rt.listeners.emit(job.state, job)

    def release_waiting(self) -> None:
        """Release jobs waiting for their handler's max_running where an end elsewhere (a lost worker, an
        expired lease) left room, and hand them to their executor."""
        released = self.rt.store.release_waiting()
        if released:
            self.rt.dispatch(released)

    def take_backlog(self) -> None:
        """Count the queued io jobs nobody holds (any server may have added some) and take what fits."""
        self.rt.io.poll()

    def repair_outbox(self) -> None:
        """Requeue cpu jobs whose worker vanished past their lease, or died on this host STRANDED_AFTER seconds
        ago and still holds them; publish what the broker never confirmed.

        A dead worker's message is delivered again and claimed by another worker within moments (which
        counts the redelivery: a job that kills its workers ends worker_lost).  A job still held by a worker
        dead that long has no message left: a copy republished from the outbox was skipped and acked while
        that worker still ran.  Without this it would wait for its lease (its timeout) to run out."""
        now = time.monotonic()
        stranded = [owner for owner, since in self._dead_since.items() if now - since > STRANDED_AFTER]
        self.rt.cpu.publish(self.rt.store.requeue_stale_cpu(stranded))
        self.rt.cpu.republish_outbox()

    def repair_callbacks(self) -> None:
        """Store the webhook delivery of finished jobs that missed it (a crash between the two)."""
        for job in self.rt.store.callbacks_due():
            self.rt.webhooks.send(job)

    def promote_due(self) -> None:
        """Move scheduled jobs whose time has come to queued, and hand them to their executor.  One read when none
        is due (an idle tick writes nothing, and on PostgreSQL tells the other servers nothing); after a promotion,
        a wake-up for the next one if it is due sooner than a tick (rate-limited starts are spaced)."""
        self._next_due = math.inf
        due = self.rt.store.next_due()
        if due is not None and due <= time.time():
            self.rt.dispatch(self.rt.store.promote_due(("io", "cpu")))
            due = self.rt.store.next_due()
        if due is not None and due - time.time() < self.tick:
            self.wake_at(due)

    def sweep(self) -> None:
        """Delete jobs finished more than greenjobs.store.ttl seconds ago, in bounded transactions, for at
        most SWEEP_BUDGET seconds a tick; a sweep that did not catch up goes on at the next tick, so it
        keeps pace with however many jobs the store finishes."""
        cutoff, deleted = time.time() - self.settings.store_ttl, 0
        started = time.monotonic()
        while True:
            n = self.rt.store.sweep(cutoff, SWEEP_BATCH)
            deleted += n
            self._sweep_behind = n == SWEEP_BATCH
            if not self._sweep_behind or time.monotonic() - started > SWEEP_BUDGET:
                break
            gevent.sleep(0)                     # let submissions and outcomes share the store
        if deleted:
            log.info("deleted %d jobs finished more than %s s ago", deleted, self.settings.store_ttl)
