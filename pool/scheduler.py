"""Every runtime's scheduler greenlet: turns schedules' due slots into jobs, exactly once cluster-wide.

There is no leader.  Each runtime reads the schedules due within the next second, sleeps until the
soonest, and fires it through ``Runtime.submit`` with an :class:`~greenjobs.pool.schedules.Advance`: the
store moves the schedule's cursor, compare-and-swap on its revision, in the transaction that inserts the
slot's job.  Whichever runtime commits first fires the slot; the others get ScheduleRaced and read again.
A slot whose job cannot be stored now (429, store or broker down) stays due and is tried again next tick;
once older than ``greenjobs.schedules.grace`` it counts as missed and the schedule's ``missed`` decides.
"""
from __future__ import annotations

import copy
import logging
import random
import time

import gevent
from gevent.event import Event

from greenjobs.pool.errors import ConfigurationError, GreenjobsError, Overloaded, QueueUnavailable, ScheduleExists, ScheduleNotFound, \
    ScheduleRaced, ShuttingDown, StoreUnavailable
from greenjobs.pool.job import Job
from greenjobs.pool.observe.metrics import Histogram
from greenjobs.pool.schedules import Advance, Schedule, check_ini, parse_schedule, patched
from greenjobs.pool.spec import parse_spec

log = logging.getLogger(__name__)

#: Seconds ahead the scheduler reads due schedules (and the longest it sleeps without reading again).
HORIZON = 1.0
#: Fields whose change moves a schedule's cursor to its next slot from now.
TIMING = ("cron", "timezone", "every", "start_at", "end_at")


class Scheduler:
    """Fires due slots (``start``/``stop``), and makes a schedule's jobs for "run now"."""

    def __init__(self, runtime):
        self.rt = runtime
        self.settings = runtime.settings
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None
        schedules, problems = check_ini(self.settings.schedule_declarations, runtime.registry, self.settings)
        if problems:
            raise ConfigurationError("invalid schedules in the ini file:\n  " + "\n  ".join(problems))
        self.declared = schedules
        self.lag = Histogram()              # seconds from a slot to its job stored (greenjobs_schedule_lag_seconds)
        self.fired = 0
        self.skipped = 0

    # -- lifecycle ---------------------------------------------------------------------
    def declare(self) -> None:
        """Upsert the ini's schedules (``greenjobs.schedules``), marked source "ini".  A changed definition
        replaces the stored one (its cursor recomputed if the timing changed); a pause set over HTTP stays."""
        now = time.time()
        schedules = [copy.copy(s) for s in self.declared]
        for schedule in schedules:
            stored = self.rt.store.get_schedule(schedule.name)
            if stored is None:
                schedule.next_fire_at = schedule.next_after(now)
                if self.rt.store.add_schedule(schedule):
                    log.info("schedule %s declared in the ini; next slot %s", schedule.name, schedule.next_fire_at)
                continue
            if stored.definition() == schedule.definition() and stored.source == "ini":
                continue
            timing_changed = any(getattr(stored, f) != getattr(schedule, f) for f in TIMING)
            schedule.paused, schedule.revision = stored.paused, stored.revision
            schedule.next_fire_at = schedule.next_after(now) if timing_changed else stored.next_fire_at
            if self.rt.store.update_schedule(schedule):
                log.info("schedule %s updated from the ini", schedule.name)
        declared = {s.name for s in schedules}
        for stored in self.rt.store.list_schedules():
            if stored.source == "ini" and stored.name not in declared:
                log.warning("schedule %s was declared in an ini but is not in this one: it still fires "
                            "(DELETE /schedules/%s removes it)", stored.name, stored.name)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None

    def poke(self) -> None:
        """A schedule changed here: read the schedules again now."""
        self._wake.set()

    def _loop(self) -> None:
        while True:
            try:
                wait = self.tick()
            except Exception as exc:        # the store is failing: try again in a second
                log.warning("scheduler tick failed (%s)", exc)
                wait = HORIZON
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
            else:
                gevent.sleep(0)

    def tick(self) -> float:
        """Fire what is due; return how long to sleep before the next slot (at most HORIZON)."""
        if not self.rt.accepting:
            return HORIZON
        now = time.time()
        soon = self.rt.store.schedules_due(now + HORIZON)
        fired = False
        for schedule in soon:
            if schedule.next_fire_at <= now:
                self.fire(schedule, now)
                fired = True
        if fired:
            return 0.0                      # read again: the cursors moved
        upcoming = [s.next_fire_at - time.time() for s in soon]
        return max(0.001, min([HORIZON, *upcoming]))

    # -- firing ------------------------------------------------------------------------
    def fire(self, schedule: Schedule, now: float) -> list[Job]:
        """Fire ``schedule``'s due slots (as its plan says); the jobs stored, [] if none or another won."""
        plan = schedule.plan(now, self.settings.schedules_grace, self.settings.schedules_max_backfill)
        if plan is None:
            return []
        slots = plan.fire
        if slots and schedule.overlap == "skip" and schedule.last_job_id:
            last = self.rt.store.get(schedule.last_job_id)
            if last is not None and not last.terminal:
                log.info("schedule %s: %d slot(s) skipped, its last job %s is still %s (overlap = skip)",
                         schedule.name, len(slots), last.id, last.state)
                self.skipped += len(slots)
                slots = []
        if plan.missed:
            log.info("schedule %s missed slots while no server ran (missed = %s): %d fired now",
                     schedule.name, schedule.missed, len([s for s in slots if now - s > self.settings.schedules_grace]))
        try:
            jobs = [self.job(schedule, slot) for slot in slots]
        except GreenjobsError as exc:       # the template no longer fits (a handler gone from this server)
            log.error("schedule %s cannot make its job (%s): slot skipped", schedule.name, exc)
            jobs, slots = [], []
        if not jobs:
            self.rt.store.advance_schedule(Advance(schedule.name, schedule.revision, plan.next_fire_at,
                                                   schedule.last_fire_at, schedule.last_job_id))
            return []
        advance = Advance(schedule.name, schedule.revision, plan.next_fire_at, slots[-1], jobs[-1].id)
        try:
            repeats = self.rt.submit(jobs, advance=advance)
        except ScheduleRaced:
            return []
        except (Overloaded, StoreUnavailable, QueueUnavailable, ShuttingDown) as exc:
            log.warning("schedule %s: slot not fired yet (%s); trying again", schedule.name, exc)
            return []
        stored = [j for i, j in enumerate(jobs) if i not in repeats]
        done = time.time()
        for slot in slots:
            self.lag.observe(max(0.0, done - slot))
        self.fired += len(stored)
        return stored

    def job(self, schedule: Schedule, slot: float | None) -> Job:
        """A new job from ``schedule``'s template for ``slot`` (None: an extra "run now" job)."""
        job = parse_spec(schedule.job, self.rt.registry, self.settings)
        job.schedule = {"name": schedule.name, "fire_at": slot}
        if slot is not None and schedule.jitter:
            job.run_at = slot + random.uniform(0, schedule.jitter)
        return job

    # -- managing (the HTTP API's schedule routes) ------------------------------------
    def get(self, name: str) -> Schedule:
        schedule = self.rt.store.get_schedule(name)
        if schedule is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return schedule

    def describe(self, schedules: list[Schedule]) -> list[dict]:
        """The schedules as the API shows them, each with its last job's id and state (one read for all)."""
        last = {j.id: j for j in self.rt.store.get_many([s.last_job_id for s in schedules if s.last_job_id])}
        return [s.public({"id": s.last_job_id, "state": last[s.last_job_id].state} if s.last_job_id in last else
                         None) for s in schedules]

    def create(self, data) -> Schedule:
        """POST /schedules: a new schedule (ScheduleExists if the name is taken); its first slot is the
        first after now."""
        schedule = parse_schedule(data, self.rt.registry, self.settings)
        schedule.next_fire_at = schedule.next_after(time.time())
        if not self.rt.store.add_schedule(schedule):
            raise ScheduleExists(f"a schedule named {schedule.name!r} exists: PATCH /schedules/{schedule.name} "
                                 "changes it")
        self.poke()
        return schedule

    def change(self, name: str, edit) -> Schedule:
        """Apply ``edit(schedule) -> schedule`` to the stored schedule, compare-and-swap, again on a race."""
        for _ in range(20):
            stored = self.get(name)
            changed = edit(stored)
            if self.rt.store.update_schedule(changed):
                self.poke()
                return changed
            gevent.sleep(0.01)      # a firing or another change came first: read it again
        raise StoreUnavailable(f"schedule {name!r} kept changing under this request; try again")

    def patch(self, name: str, changes) -> Schedule:
        """PATCH /schedules/{name}: change fields; a timing change moves the cursor to the next slot from now."""
        def edit(stored: Schedule) -> Schedule:
            fresh = patched(stored, changes, self.rt.registry, self.settings)
            if any(getattr(stored, f) != getattr(fresh, f) for f in TIMING) or \
                    (stored.paused and not fresh.paused):
                fresh.next_fire_at = fresh.next_after(time.time())
            return fresh
        return self.change(name, edit)

    def pause(self, name: str) -> Schedule:
        def edit(stored: Schedule) -> Schedule:
            stored.paused = True
            return stored
        return self.change(name, edit)

    def resume(self, name: str) -> Schedule:
        """Unpause; slots that passed while paused are skipped (the next is the first after now)."""
        def edit(stored: Schedule) -> Schedule:
            if stored.paused:
                stored.paused = False
                stored.next_fire_at = stored.next_after(time.time())
            return stored
        return self.change(name, edit)

    def delete(self, name: str) -> None:
        """DELETE /schedules/{name}: no more slots; the jobs it made stay."""
        if not self.rt.store.delete_schedule(name):
            raise ScheduleNotFound(f"no schedule named {name!r}")

    def run_now(self, name: str) -> Job:
        """POST /schedules/{name}/run: one extra job from the template, now (not a slot: the cursor stays)."""
        job = self.job(self.get(name), None)
        self.rt.submit([job])
        return job
