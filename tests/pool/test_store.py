import time

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
    cancelled, changed = store.cancel(j.id)
    assert changed and cancelled.state == "cancelled"
    assert store.finish(j, "me", "succeeded", "1", None) is False
    assert store.get(j.id).state == "cancelled"
    assert store.cancel(j.id)[1] is False


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


def test_expired_leases_are_adopted_live_ones_are_not(tmp_path):
    from greenjobs.pool.store.sqlite import SqliteStore as Store
    s = Store(str(tmp_path / "l.sqlite"), synchronous="normal", lease_seconds=0.2).open()
    try:
        j = job()
        s.insert([j], "other-host:1:x")
        assert s.adopt("me", [], ("io",)) == []
        time.sleep(0.3)
        assert [a.id for a in s.adopt("me", [], ("io",))] == [j.id]
    finally:
        s.close()


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


def test_unwritable_store_raises_store_unavailable(tmp_path):
    import os

    import pytest

    from greenjobs.pool.errors import StoreUnavailable
    from greenjobs.pool.store.sqlite import SqliteStore as Store
    s = Store(str(tmp_path / "full.sqlite"), synchronous="normal").open()
    try:
        s._write(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
        page = s._write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        s._write(lambda conn: conn.execute(f"PRAGMA max_page_count = {page}"))
        with pytest.raises(StoreUnavailable):
            s.insert([job(kwargs={"pad": "x" * 100000})], "me")
        assert s.healthy is False
        s._write(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
        s.insert([job()], "me")
        assert s.healthy is True
    finally:
        s.close()
    assert os.path.exists(tmp_path / "full.sqlite")


def test_promote_due_scheduled_jobs(store):
    due, later = job(state="scheduled", run_at=time.time() - 1), job(state="scheduled", run_at=time.time() + 60)
    store.insert([due, later], "me")
    assert [j.id for j in store.promote_due("me", ("io",))] == [due.id]
    assert store.get(later.id).state == "scheduled"


def test_grouped_swaps_report_each_rows_own_result(store):
    import gevent
    jobs = [job() for _ in range(50)]
    store.insert(jobs, "me")
    store.cancel(jobs[17].id)                 # this one can no longer be claimed
    results = [store.claim(j, "me") for j in jobs]   # all land in one group commit
    gevent.sleep(0)
    outcomes = [r.get() for r in results]
    assert outcomes == [i != 17 for i in range(50)]
    assert store.get(jobs[16].id).state == "running" and store.get(jobs[17].id).state == "cancelled"


def test_sweep_deletes_only_old_terminal_jobs(store):
    old, recent, active = job(), job(), job()
    store.insert([old, recent, active], "me")
    for j in (old, recent):
        store.claim(j, "me").get()
        store.finish(j, "me", "succeeded", "1", None)
    store._write(lambda conn: conn.execute("UPDATE jobs SET finished_at = 1 WHERE id = ?", (old.id,)))
    assert store.sweep(time.time() - 3600) == 1
    assert store.get(old.id) is None and store.get(recent.id) is not None and store.get(active.id) is not None


def test_only_promises_to_clients_wait_for_an_fsync(tmp_path):
    """With synchronous=full, a commit holding a submission, cancel or revive is fsynced (FULL);
    a commit of only claims and outcomes is not (NORMAL): losing it to a power cut reruns a job."""
    from greenjobs.pool.store.sqlite import SqliteStore as Store
    s = Store(str(tmp_path / "full.sqlite"), synchronous="full").open()
    try:
        def mode():
            return s._writer_pool.apply(lambda: s._writer.execute("PRAGMA synchronous").fetchone()[0])
        j = job()
        s.insert([j], "me")
        assert mode() == 2                                   # FULL
        assert s.claim(j, "me").get() is True
        assert s.finish(j, "me", "succeeded", "1", None) is True
        assert mode() == 1                                   # NORMAL
        other = job()
        s.insert([other], "me")
        assert mode() == 2
        s.cancel(other.id)
        assert mode() == 2 and s.get(other.id).state == "cancelled"
    finally:
        s.close()
