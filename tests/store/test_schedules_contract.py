"""The schedules part of the JobStore contract, on every backend: compare-and-swap on the revision, the
cursor moved in the transaction that inserts a slot's job, and one job per (schedule, slot)."""
import gevent
import pytest

from greenjobs.pool.errors import ScheduleRaced
from greenjobs.pool.job import QUEUED, Job, new_id
from greenjobs.pool.schedules import Advance, Schedule


def schedule(name="nightly", **kw):
    return Schedule(name=name, job={"handler": "echo", "kwargs": {"n": 1}}, every=10.0, next_fire_at=100.0, **kw)


def slot_job(name, fire_at):
    return Job(id=new_id(), handler="echo", kind="io", state=QUEUED, schedule={"name": name, "fire_at": fire_at})


def test_a_schedule_round_trips_and_its_name_is_unique(store):
    assert store.add_schedule(schedule(cron=None, timezone="Europe/Berlin", missed="once", jitter=2.5))
    assert not store.add_schedule(schedule())
    got = store.get_schedule("nightly")
    assert (got.job, got.every, got.timezone, got.missed, got.jitter, got.next_fire_at, got.revision, got.source) == \
        ({"handler": "echo", "kwargs": {"n": 1}}, 10.0, "Europe/Berlin", "once", 2.5, 100.0, 0, "api")
    assert [s.name for s in store.list_schedules()] == ["nightly"]
    assert store.delete_schedule("nightly") and not store.delete_schedule("nightly")
    assert store.get_schedule("nightly") is None


def test_an_update_is_a_compare_and_swap_on_the_revision(store):
    store.add_schedule(schedule())
    first, second = store.get_schedule("nightly"), store.get_schedule("nightly")
    first.paused = True
    assert store.update_schedule(first) and first.revision == 1
    second.every = 5.0
    assert not store.update_schedule(second)          # read before the first change: refused
    stored = store.get_schedule("nightly")
    assert stored.paused and stored.every == 10.0 and stored.revision == 1


def test_due_schedules_are_the_unpaused_ones_whose_slot_came(store):
    store.add_schedule(schedule("a"))
    store.add_schedule(schedule("b", paused=True))
    later = schedule("c")
    later.next_fire_at = 500.0
    store.add_schedule(later)
    assert [s.name for s in store.schedules_due(200.0)] == ["a"]
    assert [s.name for s in store.schedules_due(600.0)] == ["a", "c"]


def test_firing_moves_the_cursor_with_the_job_and_only_once(store):
    store.add_schedule(schedule())
    read = store.get_schedule("nightly")
    job = slot_job("nightly", 100.0)
    store.insert([job], "me", advance=Advance("nightly", read.revision, 110.0, 100.0, job.id))
    after = store.get_schedule("nightly")
    assert (after.next_fire_at, after.last_fire_at, after.last_job_id, after.revision) == (110.0, 100.0, job.id, 1)
    assert store.get(job.id).schedule == {"name": "nightly", "fire_at": 100.0}
    again = slot_job("nightly", 100.0)              # a second server that read the same revision
    with pytest.raises(ScheduleRaced):
        store.insert([again], "other", advance=Advance("nightly", read.revision, 110.0, 100.0, again.id))
    assert store.get(again.id) is None
    assert [j.id for j in store.list(schedule="nightly")[0]] == [job.id]


def test_servers_racing_for_one_slot_make_one_job(store):
    store.add_schedule(schedule())
    read = store.get_schedule("nightly")

    def fire():
        job = slot_job("nightly", 100.0)
        try:
            store.insert([job], "me", advance=Advance("nightly", read.revision, 110.0, 100.0, job.id))
            return job.id
        except ScheduleRaced:
            return None
    results = [g.value for g in gevent.joinall([gevent.spawn(fire) for _ in range(8)], raise_error=True)]
    assert len([r for r in results if r]) == 1
    assert len(store.list(schedule="nightly")[0]) == 1


def test_a_slot_that_already_has_a_job_is_not_fired_again_even_if_the_cursor_moved_back(store):
    store.add_schedule(schedule())
    read = store.get_schedule("nightly")
    first = slot_job("nightly", 100.0)
    store.insert([first], "me", advance=Advance("nightly", read.revision, 110.0, 100.0, first.id))
    moved_back = store.get_schedule("nightly")
    moved_back.next_fire_at = 100.0                  # e.g. deleted and made again with the same name
    assert store.update_schedule(moved_back)
    second = slot_job("nightly", 100.0)
    repeats = store.insert([second], "me", advance=Advance("nightly", moved_back.revision, 110.0, 100.0, second.id))
    assert repeats == {0: first.id} and store.get(second.id) is None
    assert store.get_schedule("nightly").next_fire_at == 110.0


def test_skipped_slots_move_the_cursor_alone(store):
    store.add_schedule(schedule())
    assert store.advance_schedule(Advance("nightly", 0, 130.0, None, None))
    assert not store.advance_schedule(Advance("nightly", 0, 140.0, None, None))
    assert store.get_schedule("nightly").next_fire_at == 130.0
    assert store.list(schedule="nightly")[0] == []


def test_run_now_jobs_carry_the_schedule_without_a_slot(store):
    jobs = [slot_job("nightly", None), slot_job("nightly", None)]
    store.insert(jobs, "me")
    assert {j.id for j in store.list(schedule="nightly")[0]} == {j.id for j in jobs}
    assert store.get(jobs[0].id).schedule == {"name": "nightly", "fire_at": None}
