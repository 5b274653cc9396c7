"""The JobStore contract: every backend passes these (tests/store/conftest.py lists the backends)."""
import time

from greenjobs.pool.lifecycle import CANCELLED_BY_REQUEST
from greenjobs.pool.job import QUEUED, RUNNING, Job, new_id
from greenjobs.pool.owners import owner_id, owner_is_dead


def job(state=QUEUED, **kw):
    return Job(id=new_id(), handler="echo", kind="io", state=state, **kw)


def test_insert_then_get_round_trips(store):
    j = job(args=[1], kwargs={"a": "b"}, priority=3)
    store.insert([j], "me")
    got = store.get(j.id)
    assert (got.state, got.args, got.kwargs, got.priority) == (QUEUED, [1], {"a": "b"}, 3)


def test_concurrent_writes_share_group_commits(store):
    import gevent
    jobs = [job() for _ in range(200)]
    gevent.joinall([gevent.spawn(store.insert, [j], "me") for j in jobs], raise_error=True)
    assert len(store.list(limit=500)[0]) == 200


def test_claim_is_a_compare_and_swap(store):
    j = job()
    store.insert([j], "me")
    assert store.claim(j, "me").get() is True
    assert j.state == RUNNING and j.attempts == 1
    assert store.claim(Job(id=j.id, handler="echo", kind="io", state=QUEUED), "me").get() is False


def test_finish_needs_the_lease(store):
    j = job()
    store.insert([j], "me")
    store.claim(j, "me").get()
    assert store.finish(j, "someone-else", "succeeded", "1", None) is False
    assert store.finish(j, "me", "succeeded", "1", None) is True
    assert store.get(j.id).result == 1
    assert store.finish(j, "me", "failed", None, {"kind": "x"}) is False   # terminal stays terminal


def test_cancel_wins_over_a_later_finish(store):
    j = job()
    store.insert([j], "me")
    store.claim(j, "me").get()
    cancelled, changed = store.cancel(j.id, CANCELLED_BY_REQUEST)
    assert changed and cancelled.state == "cancelled"
    assert store.finish(j, "me", "succeeded", "1", None) is False
    assert store.get(j.id).state == "cancelled"
    assert store.cancel(j.id, CANCELLED_BY_REQUEST)[1] is False


def test_dead_owner_jobs_are_adopted_and_requeued(store):
    import socket
    dead = f"{socket.gethostname()}:999999999:abc"    # a pid that cannot exist
    running, queued = job(), job()
    store.insert([running, queued], dead)
    store.claim(running, dead).get()
    import os
    import socket
    from greenjobs.pool.owners import _start_time
    alive = f"{socket.gethostname()}:{os.getppid()}:{_start_time(os.getppid())}:x"
    reused = f"{socket.gethostname()}:{os.getppid()}:1:x"          # same pid, another process
    assert owner_is_dead(dead) and not owner_is_dead(alive) and owner_is_dead(reused)
    me = owner_id()
    assert not owner_is_dead(me, me) and owner_is_dead(owner_id(), me), "an earlier holder in this process"
    adopted = store.adopt("me", [dead], ("io",))
    assert {j.id for j in adopted} == {running.id, queued.id}
    assert all(j.state == QUEUED for j in adopted)
    assert store.get(running.id).attempts == 1        # the interrupted attempt is counted


def test_expired_leases_are_adopted_live_ones_are_not(make_store):
    s = make_store("l", lease_seconds=0.2)
    j = job()
    s.insert([j], "other-host:1:x")
    assert s.adopt("me", [], ("io",)) == []
    time.sleep(0.3)
    assert [a.id for a in s.adopt("me", [], ("io",))] == [j.id]


def test_batch_insert_is_all_or_nothing(store):
    j = job()
    store.insert([j], "me")
    dup = Job(id=j.id, handler="echo", kind="io", state=QUEUED)
    fresh = job()
    try:
        store.insert([fresh, dup], "me", batch_id="b1")
    except Exception:
        pass
    else:
        raise AssertionError("a duplicate id must fail the batch")
    assert store.get(fresh.id) is None
    assert store.batch_counts("b1") is None


def test_a_failing_op_does_not_fail_its_neighbours_in_the_same_commit(store):
    import gevent
    j = job()
    store.insert([j], "me")
    good = [job() for _ in range(20)]
    dup = Job(id=j.id, handler="echo", kind="io", state=QUEUED)
    greenlets = [gevent.spawn(store.insert, [g], "me") for g in good] + [gevent.spawn(store.insert, [dup], "me")]
    gevent.joinall(greenlets)
    assert all(g.successful() for g in greenlets[:-1])
    assert not greenlets[-1].successful()
    assert all(store.get(g.id) is not None for g in good)


def test_promote_due_scheduled_jobs(store):
    due, later = job(state="scheduled", run_at=time.time() - 1), job(state="scheduled", run_at=time.time() + 60)
    store.insert([due, later], "me")
    assert [j.id for j in store.promote_due("me", ("io",))] == [due.id]
    assert store.get(later.id).state == "scheduled"


def test_grouped_swaps_report_each_rows_own_result(store):
    import gevent
    jobs = [job() for _ in range(50)]
    store.insert(jobs, "me")
    store.cancel(jobs[17].id, CANCELLED_BY_REQUEST)                 # this one can no longer be claimed
    results = [store.claim(j, "me") for j in jobs]   # all land in one group commit
    gevent.sleep(0)
    outcomes = [r.get() for r in results]
    assert outcomes == [i != 17 for i in range(50)]
    assert store.get(jobs[16].id).state == "running" and store.get(jobs[17].id).state == "cancelled"


def test_sweep_deletes_only_old_terminal_jobs(store):
    old, recent, active = job(), job(), job()
    store.insert([old, recent, active], "me")
    store.claim(old, "me").get()
    store.finish(old, "me", "succeeded", "1", None)
    time.sleep(0.01)
    cut = time.time()
    time.sleep(0.01)
    store.claim(recent, "me").get()
    store.finish(recent, "me", "succeeded", "1", None)
    assert store.sweep(cut) == 1
    assert store.get(old.id) is None and store.get(recent.id) is not None and store.get(active.id) is not None




# -- the seam: a backend carries out what the lifecycle decided ------------------------------
from greenjobs.pool import lifecycle  # noqa: E402


def cpu_job(state=QUEUED, **kw):
    return Job(id=new_id(), handler="cpu.pbkdf2", kind="cpu", state=state, **kw)


def test_new_jobs_are_leased_or_published_by_kind(store):
    io, cpu = job(), cpu_job()
    store.insert([io, cpu], "me")
    assert [j.id for j in store.unpublished()[0]] == [cpu.id]
    assert [j.id for j in store.adopt("other", [], ("io", "cpu"))] == [cpu.id]   # only the unleased one


def test_cancel_records_the_error_it_is_given(store):
    j = job()
    store.insert([j], "me")
    cancelled, changed = store.cancel(j.id, lifecycle.CANCELLED_BY_REQUEST)
    assert changed and cancelled.error == lifecycle.CANCELLED_BY_REQUEST
    assert store.get(j.id).error == lifecycle.CANCELLED_BY_REQUEST


def test_revive_and_promote_lease_io_jobs_and_publish_cpu_jobs(store):
    due_io, due_cpu = job(state="scheduled", run_at=time.time() - 1), cpu_job(state="scheduled", run_at=time.time() - 1)
    store.insert([due_io, due_cpu], "me")
    promoted = {j.id: j for j in store.promote_due("me", ("io", "cpu"))}
    assert set(promoted) == {due_io.id, due_cpu.id}
    assert [j.id for j in store.unpublished()[0]] == [due_cpu.id]
    assert store.adopt("other", [], ("io",)) == []          # the io job is leased to "me"
    failed = cpu_job()
    store.insert([failed], "me")
    store.mark_published([failed.id, due_cpu.id])
    answer, failed = store.claim_for_worker(failed.id, "w1", _judge())
    assert answer == "go"
    assert store.finish(failed, "w1", "failed", None, {"kind": "exception", "message": "x", "traceback": None})
    revived, changed = store.revive(failed.id, "me")
    assert changed and revived.state == QUEUED
    assert [j.id for j in store.unpublished()[0]] == [failed.id]


def _judge(**kw):
    options = dict(redelivered=False, worker_dead=lambda holder: False, max_redeliveries=1, lease_seconds=5.0,
                   now=time.time())
    options.update(kw)
    return lambda job, lease: lifecycle.judge_worker_claim(job, lease.owner, lease.expires, **options)


def test_worker_claims_follow_the_lifecycle_verdict(store):
    j = cpu_job(timeout=10.0)
    store.insert([j], "me")
    answer, got = store.claim_for_worker(j.id, "w1", _judge())
    assert answer == "go" and got.state == RUNNING and got.attempts == 1
    assert store.claim_for_worker(j.id, "w2", _judge())[0] == "skip"             # w1 holds it
    answer, got = store.claim_for_worker(j.id, "w2", _judge(redelivered=True))    # w1 died: orphaned
    assert answer == "go" and got.attempts == 2
    answer, got = store.claim_for_worker(j.id, "w3", _judge(redelivered=True))    # past max_redeliveries
    assert answer == "lost" and got.state == "failed" and got.error["kind"] == "worker_lost"
    assert got.errors[-1]["kind"] == "worker_lost"
    assert store.claim_for_worker("no-such-job", "w1", _judge()) == ("skip", None)


def test_cursor_of_pages_from_a_job(store):
    jobs = [job() for _ in range(5)]
    store.insert(jobs, "me")
    page, _ = store.list(limit=10, after=store.cursor_of(jobs[2].id))
    assert [j.id for j in page] == [jobs[1].id, jobs[0].id]
    assert store.cursor_of("nope") is None
