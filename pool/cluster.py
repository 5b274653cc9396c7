"""What this server learns from the ledger about the others: jobs they ended, cancelled or took over.

Servers share one ledger, so a job this one waits for (a long-poll) may end on another, and a job
running here may be cancelled, or adopted after our lease ran out, by another.  The watch reads
the ledger for every such job in one query every ``greenjobs.cluster.poll`` seconds: it wakes the
long-polls of jobs that ended elsewhere and stops the greenlets of jobs that are no longer ours
(their record is not ours to write: a late outcome would be fenced out anyway).
"""
from __future__ import annotations

import logging

import gevent

from greenjobs.pool.job import CANCELLED, RUNNING, TERMINAL

log = logging.getLogger(__name__)


class ClusterWatch:
    """Polls the ledger for the jobs ``runtime`` waits for or runs (every ``every`` seconds; 0: never)."""

    def __init__(self, runtime, every: float):
        self.rt = runtime
        self.every = every
        self._greenlet = None

    def start(self) -> None:
        if self.every > 0:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.every)
            try:
                self.check()
            except Exception as exc:          # the store is failing: its health says so; try again later
                log.debug("cluster watch: could not read the ledger (%s)", exc)

    def check(self) -> None:
        """One look at the ledger for every job waited for or running here."""
        rt = self.rt
        running = rt.io.running_attempts()
        waited = rt.waiters.job_ids()
        if not running and not waited:
            return
        ended = []
        for job_id, state, holder, attempts in rt.store.holders(list(running.keys() | waited)):
            attempt = running.get(job_id)
            if attempt is not None and (state != RUNNING or holder != rt.owner or attempts != attempt):
                why = ("cancelled on another server" if state == CANCELLED
                       else f"it is {state} in the ledger (attempt {attempts}), held by {holder or 'nobody'}:"
                            " our lease was lost")
                rt.io.abandon(job_id, attempt, why)
            if job_id in waited and state in TERMINAL:
                ended.append(job_id)
        for job in rt.store.get_many(ended) if ended else ():
            rt.waiters.job_event(job.state, job)
