"""The JobStore contract: every backend passes these (tests/store/conftest.py lists the backends)."""
import time
import copy

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
    running, started, queued = job(), job(state=RUNNING, attempts=1, started_at=time.time()), job()
    store.insert([running, started, queued], dead)    # the queued one is held by nobody: nothing to adopt
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
    assert {j.id for j in adopted} == {running.id, started.id}
    assert all(j.state == QUEUED for j in adopted)
    assert all(lease_of(store, j.id) == Lease(None, None) for j in adopted)   # back in the ledger, for anyone
    assert store.get(running.id).attempts == 1 and store.get(started.id).attempts == 1   # interrupted: counted
    assert store.get(queued.id).state == QUEUED and store.adopt("me", [dead], ("io",)) == []


def test_expired_leases_are_adopted_live_ones_are_not(make_store):
    s = make_store("l", lease_seconds=0.2)
    j = job(state=RUNNING, attempts=1, started_at=time.time())
    s.insert([j], "other-host:1:x")
    assert s.adopt("me", [], ("io",)) == []
    time.sleep(0.3)
    adopted = s.adopt("me", [], ("io",))
    assert [a.id for a in adopted] == [j.id] and adopted[0].state == QUEUED and adopted[0].attempts == 1
    assert lease_of(s, j.id) == Lease(None, None)


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
    assert [j.id for j in store.promote_due(("io",))] == [due.id]
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


def test_new_jobs_are_held_by_nobody_leased_when_started_or_published_by_kind(store):
    io, started, cpu = job(), job(state=RUNNING, attempts=1, started_at=time.time()), cpu_job()
    store.insert([io, started, cpu], "me")
    assert [j.id for j in store.unpublished()[0]] == [cpu.id]
    assert lease_of(store, io.id) == Lease(None, None) and lease_of(store, cpu.id) == Lease(None, None)
    assert lease_of(store, started.id).owner == "me"                      # the fast path runs it at once
    assert store.backlog(("io",)) == 1                                    # the queued io job waits in the ledger
    assert store.adopt("other", [], ("io", "cpu")) == []                  # nothing held by a lost runner
    assert [j.id for j in store.adopt("other", ["me"], ("io", "cpu"))] == [started.id]


def test_cancel_records_the_error_it_is_given(store):
    j = job()
    store.insert([j], "me")
    cancelled, changed = store.cancel(j.id, lifecycle.CANCELLED_BY_REQUEST)
    assert changed and cancelled.error == lifecycle.CANCELLED_BY_REQUEST
    assert store.get(j.id).error == lifecycle.CANCELLED_BY_REQUEST


def test_revive_and_promote_leave_io_jobs_to_the_ledger_and_publish_cpu_jobs(store):
    due_io, due_cpu = job(state="scheduled", run_at=time.time() - 1), cpu_job(state="scheduled", run_at=time.time() - 1)
    store.insert([due_io, due_cpu], "me")
    promoted = {j.id: j for j in store.promote_due(("io", "cpu"))}
    assert set(promoted) == {due_io.id, due_cpu.id}
    assert [j.id for j in store.unpublished()[0]] == [due_cpu.id]
    assert lease_of(store, due_io.id) == Lease(None, None) and store.backlog(("io",)) == 1
    assert ids(store.take("other", ("io",), 10)) == [due_io.id]        # held by nobody: any server takes it
    failed = cpu_job()
    store.insert([failed], "me")
    store.mark_published([failed.id, due_cpu.id])
    answer, failed = store.claim_for_worker(failed.id, "w1", _judge())
    assert answer == "go"
    assert store.finish(failed, "w1", "failed", None, {"kind": "exception", "message": "x", "traceback": None})
    revived, changed = store.revive(failed.id)
    assert changed and revived.state == QUEUED
    assert [j.id for j in store.unpublished()[0]] == [failed.id]
    assert lease_of(store, failed.id) == Lease(None, None)
    io_failed = job()
    store.insert([io_failed], "me")
    run_to(store, io_failed, "failed")
    assert store.revive(io_failed.id)[1] is True
    assert lease_of(store, io_failed.id) == Lease(None, None)
    assert ids(store.take("other", ("io",), 10)) == [io_failed.id]
    assert [j.id for j in store.unpublished()[0]] == [failed.id]         # an io job never goes to the outbox


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


# -- every method of the interface, as base.JobStore documents it (SQLite is the reference) ---------
import gevent  # noqa: E402
import pytest  # noqa: E402

from greenjobs.pool.errors import IdempotencyConflict, StoreUnavailable  # noqa: E402
from greenjobs.pool.job import CANCELLED, FAILED, SCHEDULED, SUCCEEDED, error_info  # noqa: E402
from greenjobs.pool.lifecycle import Verdict  # noqa: E402
from greenjobs.pool.store import open_store, store_for  # noqa: E402
from greenjobs.pool.store.base import Lease  # noqa: E402

BOOM = error_info("exception", "boom")


def ids(jobs):
    return [j.id for j in jobs]


def run_to(store, j, state=SUCCEEDED, owner="me"):
    """Claim ``j`` for ``owner`` and finish it in ``state``."""
    assert store.claim(j, owner).get() is True
    error = BOOM if state == FAILED else None
    assert store.finish(j, owner, state, None if error else "1", error) is True


def lease_of(store, job_id):
    """The stored Lease of a job, read through claim_for_worker with a judge that only looks."""
    seen = []

    def look(job, lease):
        seen.append(lease)
        return Verdict("skip")
    store.claim_for_worker(job_id, "looker", look)
    return seen[0] if seen else None


def hold(store, job_id, owner, seconds=None):
    """Lease a queued job to ``owner`` behind the interface's back (no call of it leaves a queued job held any
    more): what a ledger written by an earlier greenjobs, which leased new queued io jobs to the server that stored
    them, still holds.  claim, renew, release, adopt, take and backlog must treat such a job by its lease."""
    expires = time.time() + (store.lease_seconds if seconds is None else seconds)
    mark = "%s" if ".postgres." in type(store).__module__ else "?"
    sql = f"UPDATE jobs SET lease_owner = {mark}, lease_expires = {mark} WHERE id = {mark} AND state = '{QUEUED}'"
    assert store._db.write(lambda conn: conn.execute(sql, (owner, expires, job_id)).rowcount) == 1
    assert lease_of(store, job_id) == Lease(owner, expires)


# -- lifecycle: from_url, where, open, close, flush, ping, maintain ----------------------------
def test_from_url_open_ping_maintain_and_close_keep_what_was_written(make_store, request, tmp_path):
    from tests.store.conftest import BACKENDS
    url = BACKENDS[make_store.backend](request, tmp_path, "reopen")
    s = store_for(url, lease_seconds=7.0)
    assert s.lease_seconds == 7.0
    assert isinstance(s.where, str) and s.where
    assert s.open() is s
    try:
        assert s.ping() is True and s.healthy is True and s.last_error is None
        j, c = job(), cpu_job()
        s.insert([j, c], "me")
        s.mark_published([c.id])            # fire and forget: close() must still commit it
        s.maintain()
        assert s.ping() is True and s.get(j.id).state == QUEUED
    finally:
        s.close()
    again = open_store(url, lease_seconds=7.0)
    try:
        assert again.get(j.id).state == QUEUED and again.get(c.id).state == QUEUED
        assert again.unpublished() == ([], 0)
    finally:
        again.close()


def test_where_never_shows_a_password(make_store):
    if make_store.backend == "postgres":
        url = "postgresql://greenjobs:s3cr3t-pw@db.example:5433/jobs?sslmode=require"
    else:
        url = "sqlite:////tmp/greenjobs-where-test/jobs.sqlite"
    s = store_for(url)               # not opened: where needs no connection
    assert "s3cr3t-pw" not in s.where
    assert ("db.example" in s.where) if make_store.backend == "postgres" else s.where.endswith("jobs.sqlite")


def test_flush_waits_for_fire_and_forget_writes(store):
    cs = [cpu_job() for _ in range(3)]
    store.insert(cs, "me")
    store.mark_published([cs[0].id, cs[2].id])
    store.flush()
    assert ids(store.unpublished()[0]) == [cs[1].id]


# -- reads: get, list, cursor_of -------------------------------------------------------------------
def test_get_round_trips_every_field(store):
    now = time.time()
    j = Job(id=new_id(), handler="echo", kind="io", state=SCHEDULED, args=[1, "two", {"3": [4]}],
            kwargs={"k": None, "n": 1.5}, priority=-2, timeout=12.5, max_retries=3, run_at=now + 60,
            batch_id=None, created_at=now - 1, callback_url="http://127.0.0.1:9/hook")
    store.insert([j], "me")
    got = store.get(j.id)
    assert (got.id, got.handler, got.kind, got.state, got.args, got.kwargs, got.priority, got.timeout,
            got.max_retries, got.run_at, got.attempts, got.created_at, got.callback_url) == (
        j.id, "echo", "io", SCHEDULED, [1, "two", {"3": [4]}], {"k": None, "n": 1.5}, -2, 12.5, 3, now + 60, 0,
        now - 1, "http://127.0.0.1:9/hook")
    assert (got.result, got.error, got.errors, got.progress, got.started_at, got.finished_at, got.callback) == (
        None, None, [], None, None, None, None)
    assert store.get("no-such-job") is None


def test_list_filters_by_state_and_handler_newest_first(store):
    a = job()
    b = Job(id=new_id(), handler="sleep", kind="io", state=QUEUED)
    c = job(state=SCHEDULED, run_at=time.time() + 60)
    d = job(state=RUNNING, attempts=1, started_at=time.time())
    e = Job(id=new_id(), handler="sleep", kind="io", state=QUEUED)
    store.insert([a, b, c], "me")
    store.insert([d, e], "me")
    store.cancel(e.id, CANCELLED_BY_REQUEST)
    assert ids(store.list()[0]) == [e.id, d.id, c.id, b.id, a.id]
    assert ids(store.list(state=QUEUED)[0]) == [b.id, a.id]
    assert ids(store.list(handler="echo")[0]) == [d.id, c.id, a.id]
    assert ids(store.list(state=QUEUED, handler="echo")[0]) == [a.id]
    assert ids(store.list(state=CANCELLED, handler="sleep")[0]) == [e.id]
    assert ids(store.list(state=QUEUED, after=store.cursor_of(b.id))[0]) == [a.id]
    assert store.list(state=SUCCEEDED) == ([], None)
    assert store.list(handler="nope") == ([], None)


def test_list_pages_with_its_cursor(store):
    jobs = [job() for _ in range(25)]
    store.insert(jobs, "me")
    seen, cursor, sizes = [], None, []
    while True:
        page, cursor = store.list(limit=10, after=cursor)
        if not page:
            assert cursor is None
            break
        sizes.append(len(page))
        seen += ids(page)
        assert cursor == store.cursor_of(page[-1].id)
    assert sizes == [10, 10, 5]
    assert seen == ids(reversed(jobs))


def test_list_cursor_stays_valid_when_its_job_is_deleted(store):
    jobs = [job() for _ in range(5)]
    store.insert(jobs, "me")
    page, cursor = store.list(limit=2)
    assert ids(page) == [jobs[4].id, jobs[3].id]
    run_to(store, jobs[3])
    time.sleep(0.01)
    assert store.sweep(time.time()) == 1          # the page's last job is gone
    assert store.get(jobs[3].id) is None and store.cursor_of(jobs[3].id) is None
    page, cursor = store.list(limit=2, after=cursor)
    assert ids(page) == [jobs[2].id, jobs[1].id]
    assert ids(store.list(after=cursor)[0]) == [jobs[0].id]


def test_cursor_of_orders_like_the_list(store):
    jobs = [job() for _ in range(3)]
    store.insert(jobs[:2], "me")
    store.insert(jobs[2:], "me")
    cursors = [store.cursor_of(j.id) for j in jobs]
    assert all(isinstance(c, int) for c in cursors)
    assert cursors == sorted(cursors) and len(set(cursors)) == 3
    assert ids(store.list(after=cursors[2])[0]) == [jobs[1].id, jobs[0].id]
    assert store.list(after=cursors[0]) == ([], None)


# -- batches ------------------------------------------------------------------------------------------
def test_batch_counts_active_and_batch_of(store):
    bid = "batch-" + new_id()
    members = [job(batch_id=bid) for _ in range(3)] + [job(state=SCHEDULED, run_at=time.time() + 60, batch_id=bid)]
    loner = job()
    before = time.time()
    store.insert(members, "me", batch_id=bid)
    after = time.time()
    store.insert([loner], "me")
    counts = store.batch_counts(bid)
    assert counts["total"] == 4 and counts["counts"] == {QUEUED: 3, SCHEDULED: 1}
    assert before - 0.001 <= counts["created_at"] <= after + 0.001
    assert store.batch_active(bid) == 4
    store.claim(members[0], "me").get()
    run_to(store, members[1])
    assert store.batch_counts(bid)["counts"] == {RUNNING: 1, SUCCEEDED: 1, QUEUED: 1, SCHEDULED: 1}
    assert store.batch_active(bid) == 3
    store.cancel(members[3].id, CANCELLED_BY_REQUEST)
    assert store.batch_counts(bid) == {"total": 4, "created_at": counts["created_at"],
                                       "counts": {RUNNING: 1, SUCCEEDED: 1, QUEUED: 1, CANCELLED: 1}}
    assert store.batch_active(bid) == 2
    every = ids(members)
    assert store.batch_of(every) == bid
    assert store.batch_of(list(reversed(every))) == bid
    assert store.batch_of(every + [every[0]]) == bid            # the same jobs, one named twice
    assert store.batch_of(every[:3]) is None                    # not the whole batch
    assert store.batch_of(every + [loner.id]) is None           # more than the batch
    assert store.batch_of([loner.id]) is None                   # in no batch
    assert store.batch_of(["no-such-job"]) is None
    assert store.batch_counts("no-such-batch") is None
    assert store.batch_active("no-such-batch") == 0


# -- idempotency keys ---------------------------------------------------------------------------------
def test_a_repeated_key_returns_the_original_job(store):
    a, b = job(), job()
    assert store.insert([a], "me", keys={0: ("key-1", "fp")}) == {}
    assert store.insert([b], "me", keys={0: ("key-1", "fp")}) == {0: a.id}
    assert store.get(b.id) is None
    assert ids(store.list()[0]) == [a.id]


def test_a_known_key_with_another_fingerprint_conflicts_and_stores_nothing(store):
    a = job()
    store.insert([a], "me", keys={0: ("key-1", "fp")})
    bid = "batch-" + new_id()
    fresh, clash = job(batch_id=bid), job(batch_id=bid)
    with pytest.raises(IdempotencyConflict):
        store.insert([fresh, clash], "me", batch_id=bid, keys={0: ("key-2", "fp2"), 1: ("key-1", "other")})
    assert store.get(fresh.id) is None and store.get(clash.id) is None
    assert store.batch_counts(bid) is None
    assert ids(store.list()[0]) == [a.id]
    other = job()                                # key-2 was not stored either: any fingerprint is new
    assert store.insert([other], "me", keys={0: ("key-2", "something else")}) == {}
    assert store.insert([job()], "me", keys={0: ("key-1", "fp")}) == {0: a.id}   # key-1 still names a


def test_an_expired_key_makes_a_new_job(store):
    a, b, c, d = job(), job(), job(), job()
    store.insert([a], "me", keys={0: ("key-1", "fp")})
    time.sleep(0.05)
    assert store.insert([b], "me", keys={0: ("key-1", "fp")}, idempotency_ttl=0.01) == {}
    assert store.get(a.id) is not None and store.get(b.id) is not None
    assert store.insert([c], "me", keys={0: ("key-1", "fp")}) == {0: b.id}       # the key now names b
    time.sleep(0.05)
    assert store.insert([d], "me", keys={0: ("key-1", "changed")}, idempotency_ttl=0.01) == {}  # no conflict
    assert store.get(d.id) is not None and store.get(c.id) is None


def test_several_keys_in_one_insert_and_the_batch_counts_only_new_jobs(store):
    b1, b2, b3 = ("batch-" + new_id() for _ in range(3))
    a, b, c = job(batch_id=b1), job(batch_id=b1), job(batch_id=b1)
    assert store.insert([a, b, c], "me", batch_id=b1, keys={0: ("k1", "f1"), 1: ("k2", "f2")}) == {}
    d, e, f, g = (job(batch_id=b2) for _ in range(4))
    assert store.insert([d, e, f, g], "me", batch_id=b2,
                        keys={0: ("k1", "f1"), 1: ("k3", "f3"), 2: ("k2", "f2")}) == {0: a.id, 2: b.id}
    assert [store.get(x.id) is not None for x in (d, e, f, g)] == [False, True, False, True]
    assert store.batch_counts(b2)["total"] == 2 and store.batch_counts(b2)["counts"] == {QUEUED: 2}
    assert store.batch_of([a.id, b.id, c.id]) == b1 and store.batch_of([e.id, g.id]) == b2
    h, i = job(batch_id=b3), job(batch_id=b3)
    assert store.insert([h, i], "me", batch_id=b3, keys={0: ("k1", "f1"), 1: ("k3", "f3")}) == {0: a.id, 1: e.id}
    assert store.batch_counts(b3) is None           # every job a repeat: no batch row
    assert len(store.list()[0]) == 5


# -- active counts and lease owners ---------------------------------------------------------------
def test_active_counts_count_only_active_jobs(store):
    queued = [job(), job()]
    running = job()
    sleeper = Job(id=new_id(), handler="sleep", kind="io", state=SCHEDULED, run_at=time.time() + 60)
    done, failed, cancelled = job(), job(), Job(id=new_id(), handler="sleep", kind="io", state=QUEUED)
    store.insert(queued + [running, sleeper, done, failed, cancelled], "me")
    store.claim(running, "me").get()
    run_to(store, done)
    run_to(store, failed, FAILED)
    store.cancel(cancelled.id, CANCELLED_BY_REQUEST)
    assert sorted(tuple(r) for r in store.active_counts()) == [("echo", QUEUED, 2), ("echo", RUNNING, 1),
                                                               ("sleep", SCHEDULED, 1)]


def test_owners_lists_other_holders_of_active_jobs_with_their_latest_expiry(make_store):
    s = make_store("owners", lease_seconds=5.0)
    s.insert([job(state=RUNNING, attempts=1, started_at=time.time())], "A")
    time.sleep(0.02)
    before = time.time()
    s.insert([job(state=RUNNING, attempts=1, started_at=time.time())], "A")
    after = time.time()
    running, finished, mine = job(), job(), job(state=RUNNING, attempts=1, started_at=time.time())
    s.insert([running], "B")
    s.claim(running, "B").get()
    s.insert([finished], "C")
    run_to(s, finished, owner="C")                        # a finished job holds no lease
    s.insert([mine], "me")
    s.insert([job(state=SCHEDULED, run_at=time.time() + 60)], "D")     # a scheduled job is not leased
    s.insert([job()], "E")                                               # nor is a queued one: nobody holds it
    found = dict(s.owners("me"))
    assert set(found) == {"A", "B"}
    assert before + 5.0 - 0.001 <= found["A"] <= after + 5.0 + 0.001
    assert isinstance(found["B"], float)
    assert set(dict(s.owners("A"))) == {"B", "me"}


# -- claim, finish, retry: compare-and-swap and lease fencing -------------------------------------------
def test_claim_needs_a_queued_job_nobody_else_holds_and_changes_the_job_object_at_once(store):
    j, free = job(), job()
    store.insert([j, free], "me")
    hold(store, j.id, "me")
    copy = Job(id=j.id, handler="echo", kind="io", state=QUEUED)
    pending = store.claim(copy, "other")                     # "me" holds it
    assert copy.state == RUNNING and copy.attempts == 1 and copy.started_at is not None
    assert pending.get() is False
    got = store.get(j.id)
    assert (got.state, got.attempts, got.started_at) == (QUEUED, 0, None) and lease_of(store, j.id).owner == "me"
    assert store.claim(j, "me").get() is True                # held by the claimer
    got = store.get(j.id)
    assert (got.state, got.attempts) == (RUNNING, 1) and got.started_at == pytest.approx(j.started_at)
    again = Job(id=j.id, handler="echo", kind="io", state=QUEUED)
    assert store.claim(again, "me").get() is False          # already running
    before = time.time()
    assert store.claim(free, "other").get() is True          # held by nobody: anyone may claim it
    got = store.get(free.id)
    assert (got.state, got.attempts) == (RUNNING, 1) and got.started_at == pytest.approx(free.started_at)
    lease = lease_of(store, free.id)
    assert lease.owner == "other" and lease.expires >= before + store.lease_seconds - 0.001
    assert store.claim(Job(id=free.id, handler="echo", kind="io", state=QUEUED), "me").get() is False
    assert store.get(free.id).attempts == 1


def test_a_job_stored_running_is_leased_to_its_owner(store):
    j = job(state=RUNNING, attempts=1, started_at=time.time())
    store.insert([j], "me")
    assert store.finish(j, "other", SUCCEEDED, "2", None) is False
    assert store.finish(j, "me", SUCCEEDED, '{"x": [1]}', None) is True
    got = store.get(j.id)
    assert (got.state, got.result, got.attempts) == (SUCCEEDED, {"x": [1]}, 1)
    assert got.finished_at is not None and got.finished_at >= got.started_at


def test_finish_records_the_outcome_and_ends_the_lease(store):
    ok, bad = job(), job()
    store.insert([ok, bad], "me")
    store.claim(ok, "me").get()
    store.claim(bad, "me").get()
    before = time.time()
    assert store.finish(ok, "me", SUCCEEDED, '"done"', None) is True
    assert store.finish(bad, "me", FAILED, None, BOOM) is True
    assert (ok.state, ok.result, bad.state, bad.error, bad.errors) == (SUCCEEDED, "done", FAILED, BOOM, [BOOM])
    got_ok, got_bad = store.get(ok.id), store.get(bad.id)
    assert (got_ok.state, got_ok.result, got_ok.error, got_ok.errors) == (SUCCEEDED, "done", None, [])
    assert (got_bad.state, got_bad.result, got_bad.error, got_bad.errors) == (FAILED, None, BOOM, [BOOM])
    assert got_ok.finished_at >= before - 0.001 and got_bad.finished_at >= before - 0.001
    assert store.owners("x") == []
    assert lease_of(store, ok.id) == Lease(None, None)


def test_retry_schedules_the_next_attempt_and_keeps_the_error(store):
    j = job(max_retries=2)
    store.insert([j], "me")
    assert store.retry(j, "me", time.time() - 1, BOOM) is False           # queued, not running
    store.claim(j, "me").get()
    assert store.retry(j, "someone-else", time.time() - 1, BOOM) is False
    assert store.get(j.id).state == RUNNING
    run_at = time.time() - 0.5
    assert store.retry(j, "me", run_at, BOOM) is True
    assert (j.state, j.run_at, j.error, j.errors) == (SCHEDULED, run_at, BOOM, [BOOM])
    got = store.get(j.id)
    assert (got.state, got.run_at, got.error, got.errors, got.attempts) == (SCHEDULED, run_at, BOOM, [BOOM], 1)
    assert store.owners("x") == []                                       # unleased while it waits
    assert store.retry(j, "me", run_at, BOOM) is False                   # no longer running
    assert ids(store.promote_due(("io",))) == [j.id]
    assert lease_of(store, j.id) == Lease(None, None)                  # due again: back in the ledger
    again = store.get(j.id)
    assert store.claim(again, "me").get() is True and store.get(j.id).attempts == 2
    second = error_info("timeout", "too slow")
    assert store.finish(again, "me", FAILED, None, second) is True
    got = store.get(j.id)
    assert (got.state, got.error, got.errors) == (FAILED, second, [BOOM, second])


def test_a_runner_that_lost_its_lease_cannot_finish_or_retry(make_store):
    s = make_store("fence", lease_seconds=0.3)
    j, k = job(), job()
    s.insert([j, k], "A")
    assert s.claim(j, "A").get() is True and s.claim(k, "A").get() is True
    time.sleep(0.4)                                                      # A stopped renewing
    assert set(ids(s.adopt("B", [], ("io",)))) == {j.id, k.id}
    assert s.finish(j, "A", SUCCEEDED, "1", None) is False
    assert s.retry(k, "A", time.time(), BOOM) is False
    for x in (j, k):
        got = s.get(x.id)
        assert (got.state, got.result, got.error, got.errors, got.attempts) == (QUEUED, None, None, [], 1)
        assert lease_of(s, x.id) == Lease(None, None)
    taken = s.take("C", ("io",), 1)
    assert ids(taken) == [j.id] and taken[0].attempts == 2
    assert s.finish(j, "A", SUCCEEDED, "1", None) is False                 # still fenced out: attempt 1, not A's
    assert s.finish(taken[0], "C", SUCCEEDED, "2", None) is True and s.get(j.id).result == 2
    assert s.claim(s.get(k.id), "B").get() is True and s.get(k.id).attempts == 2


def test_an_outcome_of_an_earlier_attempt_is_refused_even_from_the_same_owner(store):
    """The fence names the attempt: a late outcome of attempt 1 (a timed-out run, a worker taken for lost and
    restarted under the same name) cannot end or reschedule attempt 2 of the same owner."""

    j = job()
    store.insert([j], "me")
    assert store.claim(j, "me").get() is True
    first = copy.deepcopy(j)                                        # attempt 1's runner keeps this copy
    assert store.retry(j, "me", time.time() - 1, BOOM) is True
    assert ids(store.promote_due(("io",))) == [j.id]
    again = store.get(j.id)
    assert store.claim(again, "me").get() is True and again.attempts == 2
    assert store.finish(first, "me", SUCCEEDED, "1", None) is False
    assert store.retry(first, "me", time.time(), BOOM) is False
    assert store.get(j.id).state == RUNNING
    assert store.finish(again, "me", SUCCEEDED, "2", None) is True
    got = store.get(j.id)
    assert (got.state, got.result, got.attempts) == (SUCCEEDED, 2, 2)


def test_a_job_named_twice_in_one_group_commit_gets_each_swap_judged_in_order(store):
    """Two outcomes for one job in the same commit (a bulk statement changes a row once): the first wins,
    the second sees the row moved."""
    j = job()
    store.insert([j], "me")
    assert store.claim(j, "me").get() is True
    twin = copy.deepcopy(j)
    first = gevent.spawn(store.finish, j, "me", SUCCEEDED, "1", None)
    second = gevent.spawn(store.finish, twin, "me", FAILED, None, BOOM)
    gevent.joinall([first, second])
    assert (first.value, second.value) == (True, False)
    got = store.get(j.id)
    assert (got.state, got.result) == (SUCCEEDED, 1)


def test_a_cancelled_job_cannot_be_claimed_finished_or_retried(store):
    queued, running = job(), job()
    store.insert([queued, running], "me")
    store.claim(running, "me").get()
    store.cancel(queued.id, CANCELLED_BY_REQUEST)
    store.cancel(running.id, CANCELLED_BY_REQUEST)
    assert store.claim(queued, "me").get() is False
    assert store.finish(running, "me", SUCCEEDED, "1", None) is False
    assert store.retry(running, "me", time.time(), BOOM) is False
    for x in (queued, running):
        got = store.get(x.id)
        assert (got.state, got.error, got.result) == (CANCELLED, CANCELLED_BY_REQUEST, None)


# -- cancel and revive ---------------------------------------------------------------------------
def test_cancel_any_active_state_but_never_a_finished_job(store):
    scheduled, queued, running, done = job(state=SCHEDULED, run_at=time.time() + 60), job(), job(), job()
    store.insert([scheduled, queued, running, done], "me")
    store.claim(running, "me").get()
    run_to(store, done)
    before = time.time()
    for x in (scheduled, queued, running):
        got, changed = store.cancel(x.id, CANCELLED_BY_REQUEST)
        assert changed is True and got.id == x.id and got.state == CANCELLED
        assert got.error == CANCELLED_BY_REQUEST and got.finished_at >= before - 0.001
        assert store.get(x.id).state == CANCELLED
        again, changed = store.cancel(x.id, error_info("cancelled", "second"))
        assert changed is False and again.state == CANCELLED and again.error == CANCELLED_BY_REQUEST
    got, changed = store.cancel(done.id, CANCELLED_BY_REQUEST)
    assert changed is False and (got.id, got.state, got.result, got.error) == (done.id, SUCCEEDED, 1, None)
    assert store.cancel("no-such-job", CANCELLED_BY_REQUEST) == (None, False)
    assert store.owners("x") == [] and store.active_counts() == []


def test_revive_requeues_only_failed_jobs(store):
    failed, done, queued = job(), job(), job()
    store.insert([failed, done, queued], "me")
    run_to(store, failed, FAILED)
    run_to(store, done)
    assert store.backlog(("io",)) == 1
    revived, changed = store.revive(failed.id)
    assert changed is True and revived.id == failed.id and revived.state == QUEUED
    assert (revived.finished_at, revived.result, revived.attempts) == (None, None, 1)
    got = store.get(failed.id)
    assert (got.state, got.finished_at, got.attempts) == (QUEUED, None, 1)
    assert lease_of(store, failed.id) == Lease(None, None) and store.backlog(("io",)) == 2   # waits for a server
    assert store.adopt("other", [], ("io",)) == []               # held by nobody: nothing to adopt
    assert store.claim(got, "me").get() is True and store.get(failed.id).attempts == 2
    for x, state in ((done, SUCCEEDED), (queued, QUEUED), (failed, RUNNING)):
        got, changed = store.revive(x.id)
        assert changed is False and got.state == state
    assert store.revive("no-such-job") == (None, False)
    cancelled = job()
    store.insert([cancelled], "me")
    store.cancel(cancelled.id, CANCELLED_BY_REQUEST)
    assert store.revive(cancelled.id)[1] is False and store.get(cancelled.id).state == CANCELLED


# -- leases: renew, release, requeue, adopt --------------------------------------------------------------
def test_renew_extends_the_leases_an_owner_holds(make_store):
    s = make_store("renew", lease_seconds=0.8)
    held, running, scheduled, done, unheld = (job(), job(), job(state=SCHEDULED, run_at=time.time() + 60), job(),
                                              job())
    started = job(state=RUNNING, attempts=1, started_at=time.time())
    s.insert([held, running, scheduled, done, unheld, started], "A")
    hold(s, held.id, "A")                                  # a queued job A holds (an earlier greenjobs' ledger)
    s.claim(running, "A").get()
    run_to(s, done, owner="A")
    other = job(state=RUNNING, attempts=1, started_at=time.time())
    s.insert([other], "Z")
    assert s.renew("nobody") == 0
    time.sleep(0.4)
    before = time.time()
    assert s.renew("A") == 3                               # the held queued job and the two running ones
    after = time.time()
    assert before + 0.8 - 0.001 <= dict(s.owners("me"))["A"] <= after + 0.8 + 0.001
    for x in (held, running, started):
        assert before + 0.8 - 0.001 <= lease_of(s, x.id).expires <= after + 0.8 + 0.001
    time.sleep(0.5)                                        # past Z's lease, well within A's renewed one
    assert ids(s.adopt("B", [], ("io",))) == [other.id]
    assert s.get(scheduled.id).state == SCHEDULED and lease_of(s, scheduled.id) == Lease(None, None)
    assert lease_of(s, unheld.id) == Lease(None, None)     # renewing leases nobody a job


def test_release_unleases_only_queued_jobs(store):
    q1, q2, running, theirs = job(), job(), job(), job()
    store.insert([q1, q2, running, theirs], "A")
    for x, owner in ((q1, "A"), (q2, "A"), (theirs, "Z")):
        hold(store, x.id, owner)                            # queued jobs held (an earlier greenjobs' ledger)
    store.claim(running, "A").get()
    assert store.backlog(("io",)) == 0
    assert store.release("A") == 2
    assert store.release("A") == 0
    assert lease_of(store, q1.id) == Lease(None, None) and lease_of(store, q2.id) == Lease(None, None)
    assert sorted(o for o, _ in store.owners("me")) == ["A", "Z"]     # A still holds the running one
    assert store.backlog(("io",)) == 2 and store.adopt("B", [], ("io",)) == []   # in the ledger, for anyone
    assert set(ids(store.take("B", ("io",), 10))) == {q1.id, q2.id}
    assert store.get(running.id).state == RUNNING and lease_of(store, running.id).owner == "A"
    assert lease_of(store, theirs.id).owner == "Z" and store.get(theirs.id).state == QUEUED


def test_take_starts_queued_jobs_nobody_holds_by_priority_then_age(store):
    low, high, mid, later_mid, later_low = job(), job(priority=5), job(priority=1), job(priority=1), job()
    running, theirs, scheduled, cpu = job(), job(), job(state=SCHEDULED, run_at=time.time() - 1), cpu_job()
    store.insert([low, high, mid, running, theirs, scheduled, cpu], "A")
    store.insert([later_mid, later_low], "A")
    hold(store, theirs.id, "B")
    assert store.claim(running, "A").get() is True
    assert store.take("C", ("io",), 0) == []
    before = time.time()
    taken = store.take("C", ("io",), 2)
    after = time.time()
    assert ids(taken) == [high.id, mid.id]                               # the older of the two priority 1 jobs
    lease_from, lease_to = before + store.lease_seconds - 0.001, after + store.lease_seconds + 0.001
    for x in taken:
        assert (x.state, x.attempts) == (RUNNING, 1) and before - 0.001 <= x.started_at <= after + 0.001
        got = store.get(x.id)
        assert (got.state, got.attempts, got.started_at) == (RUNNING, 1, pytest.approx(x.started_at))
        lease = lease_of(store, x.id)
        assert lease.owner == "C" and lease_from <= lease.expires <= lease_to
    # B holds its job, the running one is not queued, the scheduled one is due but not promoted, the cpu job
    # is not of the kinds asked
    assert ids(store.take("C", ("io",), 10)) == [later_mid.id, low.id, later_low.id]
    assert store.take("C", ("io",), 10) == [] and store.take("D", ("io",), 10) == []
    assert (store.get(theirs.id).state, lease_of(store, theirs.id).owner) == (QUEUED, "B")
    assert store.get(cpu.id).state == QUEUED and store.get(scheduled.id).state == SCHEDULED
    assert store.claim(Job(id=high.id, handler="echo", kind="io", state=QUEUED), "D").get() is False  # C's
    assert store.finish(taken[0], "D", SUCCEEDED, "1", None) is False     # fenced on C's lease
    assert store.finish(taken[0], "C", SUCCEEDED, "1", None) is True and store.get(high.id).state == SUCCEEDED


def test_servers_taking_at_once_get_each_job_once(make_store, request, tmp_path):
    from tests.store.conftest import BACKENDS
    url = BACKENDS[make_store.backend](request, tmp_path, "take")
    servers = [store_for(url).open() for _ in range(3)]
    try:
        jobs = [job() for _ in range(300)]
        servers[0].insert(jobs, "gone")                                  # queued: held by nobody
        assert servers[1].backlog(("io",)) == 300
        got: dict[str, list[str]] = {f"S{i}": [] for i in range(3)}

        def server(name, s):
            while True:
                taken = s.take(name, ("io",), 7)
                if not taken:
                    return
                got[name] += ids(taken)
                gevent.sleep(0.002)     # (SQLite's writers take turns by its file lock: give the others a moment)
        gevent.joinall([gevent.spawn(server, f"S{i}", s) for i, s in enumerate(servers)], raise_error=True)
        every = [i for taken in got.values() for i in taken]
        assert sorted(every) == sorted(ids(jobs)) and len(set(every)) == 300
        assert sum(1 for taken in got.values() if taken) >= 2          # they shared the work
        for name, taken in got.items():
            assert {lease_of(servers[0], i).owner for i in taken} <= {name}
            assert all((servers[0].get(i).state, servers[0].get(i).attempts) == (RUNNING, 1) for i in taken)
        assert servers[2].backlog(("io",)) == 0
    finally:
        for s in servers:
            s.close()


def test_backlog_counts_queued_jobs_of_the_kinds_asked_that_nobody_holds(store):
    queued = [job(priority=i % 3) for i in range(5)]
    held, done, cancelled = job(), job(), job()
    started = job(state=RUNNING, attempts=1, started_at=time.time())
    scheduled = job(state=SCHEDULED, run_at=time.time() - 1)                 # due, not yet promoted
    other_handler = Job(id=new_id(), handler="sleep", kind="io", state=QUEUED)
    cpus = [cpu_job(), cpu_job()]
    assert store.backlog(("io",)) == 0
    store.insert(queued + [held, done, cancelled, started, scheduled, other_handler] + cpus, "me")
    hold(store, held.id, "someone")
    run_to(store, done)
    store.cancel(cancelled.id, CANCELLED_BY_REQUEST)
    assert store.backlog(("io",)) == 6                     # the five, and the other handler's: counted by kind
    assert store.backlog(("cpu",)) == 2 and store.backlog(("io", "cpu")) == 8
    assert store.backlog(("nope",)) == 0
    taken = store.take("S", ("io",), 2)
    assert len(taken) == 2 and store.backlog(("io",)) == 4 and store.backlog(("cpu",)) == 2
    assert ids(store.promote_due(("io",))) == [scheduled.id] and store.backlog(("io",)) == 5
    dying = [job(state=RUNNING, attempts=1, started_at=time.time()) for _ in range(3)]
    store.insert(dying, "dead")
    assert store.backlog(("io",)) == 5                     # running: held by their runner
    assert set(ids(store.adopt("S", ["dead"], ("io",)))) == set(ids(dying))
    assert store.backlog(("io",)) == 8                     # given back to the ledger
    assert store.requeue(taken, "S") == 2 and store.backlog(("io",)) == 10
    assert len(store.take("T", ("io",), 100)) == 10 and store.backlog(("io",)) == 0
    assert store.backlog(("cpu",)) == 2


def test_requeue_gives_running_jobs_back_and_undoes_the_attempt(store):
    r1, r2, theirs, queued = job(), job(), job(), job()
    store.insert([r1, r2, queued], "me")
    store.insert([theirs], "other")
    for x, owner in ((r1, "me"), (r2, "me"), (theirs, "other")):
        assert store.claim(x, owner).get() is True
    assert store.requeue([], "me") == 0
    assert store.requeue([r1, r2, theirs, queued], "me") == 2
    for x in (r1, r2):
        got = store.get(x.id)
        assert (got.state, got.attempts, got.started_at) == (QUEUED, 0, None)
        assert lease_of(store, x.id) == Lease(None, None)
    assert store.get(theirs.id).state == RUNNING and store.get(theirs.id).attempts == 1
    assert lease_of(store, theirs.id).owner == "other"
    assert store.get(queued.id).state == QUEUED and store.get(queued.id).attempts == 0
    assert store.finish(r1, "me", SUCCEEDED, "1", None) is False          # the attempt was given back
    assert store.adopt("B", [], ("io",)) == []                            # back in the ledger: none to adopt
    assert ids(store.take("B", ("io",), 10)) == [r1.id, r2.id, queued.id]
    assert store.get(r1.id).attempts == 1


def test_requeue_of_interrupted_starts_keeps_them_counted(store):
    """A shutdown's give-back (``started``): the interrupted start stays in ``attempts``, as the README says."""
    r = job()
    store.insert([r], "me")
    assert store.claim(r, "me").get() is True
    assert store.requeue([r], "me", started=True) == 1
    got = store.get(r.id)
    assert (got.state, got.attempts) == (QUEUED, 1)
    [again] = store.take("B", ("io",), 10)
    assert again.attempts == 2


def test_adopt_gives_back_dead_and_expired_jobs_but_not_unheld_or_live_ones(make_store):
    s = make_store("adopt", lease_seconds=0.5)
    d_queued, d_running, d_scheduled, d_done = job(), job(), job(state=SCHEDULED, run_at=time.time() + 60), job()
    d_started, d_unheld = job(state=RUNNING, attempts=1, started_at=time.time()), job()
    s.insert([d_queued, d_running, d_scheduled, d_done, d_started, d_unheld], "dead")
    hold(s, d_queued.id, "dead", seconds=60)             # a queued job the dead runner held, lease still live
    s.claim(d_running, "dead").get()
    run_to(s, d_done, owner="dead")
    expired = job()
    s.insert([expired], "gone")
    s.claim(expired, "gone").get()
    unheld = job()
    s.insert([unheld], "leaver")                         # queued: nobody holds it, nothing to adopt
    mine = job(state=RUNNING, attempts=1, started_at=time.time())
    s.insert([mine], "me")                               # my own lease ran out: not given back to me
    dead_cpu = cpu_job()
    s.insert([dead_cpu], "dead")                         # cpu: not asked for below
    assert s.claim_for_worker(dead_cpu.id, "dead", lambda j, l: Verdict("go", lease_until=time.time() + 60))[0] == "go"
    time.sleep(0.6)
    live = job(state=RUNNING, attempts=1, started_at=time.time())
    s.insert([live], "live")
    assert s.backlog(("io",)) == 2                       # d_unheld and unheld
    adopted = s.adopt("me", ["dead"], ("io",))
    assert s.adopt("me", ["dead"], ("io",)) == []         # all given back; the live lease is kept
    assert set(ids(adopted)) == {d_queued.id, d_running.id, d_started.id, expired.id}
    assert all(a.state == QUEUED for a in adopted)
    by_id = {a.id: a for a in adopted}
    assert (by_id[d_running.id].attempts, by_id[d_started.id].attempts, by_id[expired.id].attempts,
            by_id[d_queued.id].attempts) == (1, 1, 1, 0)                      # an interrupted attempt is counted
    for a in adopted:
        assert lease_of(s, a.id) == Lease(None, None) and s.get(a.id).state == QUEUED
    assert s.backlog(("io",)) == 6
    assert s.get(d_scheduled.id).state == SCHEDULED and s.get(d_done.id).state == SUCCEEDED
    assert (s.get(live.id).state, lease_of(s, live.id).owner) == (RUNNING, "live")
    assert (s.get(mine.id).state, lease_of(s, mine.id).owner) == (RUNNING, "me")
    assert (s.get(dead_cpu.id).state, lease_of(s, dead_cpu.id).owner) == (RUNNING, "dead")
    assert s.finish(d_running, "dead", SUCCEEDED, "1", None) is False        # the dead runner's attempt is fenced
    assert s.claim(s.get(d_running.id), "me").get() is True and s.get(d_running.id).attempts == 2
    back = s.adopt("me", ["dead"], ("cpu",))
    assert ids(back) == [dead_cpu.id] and back[0].state == QUEUED and lease_of(s, dead_cpu.id) == Lease(None, None)
    assert ids(s.adopt("other", [], ("io",))) == [mine.id]                 # expired, and held by someone else


# -- due jobs and sweeping ------------------------------------------------------------------------------------
def test_promote_due_takes_due_jobs_of_the_kinds_asked_up_to_the_limit(store):
    now = time.time()
    due = [job(state=SCHEDULED, run_at=now - 3 + i) for i in range(3)]
    later = job(state=SCHEDULED, run_at=now + 60)
    due_cpu = cpu_job(state=SCHEDULED, run_at=now - 5)
    queued = job()
    store.insert(due + [later, due_cpu, queued], "me")
    first = store.promote_due(("io",), limit=2)
    assert set(ids(first)) == {due[0].id, due[1].id}        # the earliest run_at first
    assert all(j.state == QUEUED for j in first)
    assert store.get(due[2].id).state == SCHEDULED and store.get(due_cpu.id).state == SCHEDULED
    assert ids(store.promote_due(("io",))) == [due[2].id]
    assert store.promote_due(("io",)) == []
    assert store.unpublished() == ([], 0)
    assert ids(store.promote_due(("cpu",))) == [due_cpu.id]
    assert ids(store.unpublished()[0]) == [due_cpu.id]
    assert lease_of(store, due_cpu.id) == Lease(None, None)
    assert store.get(later.id).state == SCHEDULED
    assert all(lease_of(store, x.id) == Lease(None, None) for x in due)          # held by nobody
    assert store.backlog(("io",)) == 4 and store.backlog(("cpu",)) == 1        # with the queued one
    assert store.claim(store.get(due[0].id), "me").get() is True


def test_sweep_deletes_every_terminal_state_and_nothing_active(store):
    done, failed, cancelled = job(), job(), job()
    old_queued, old_scheduled, old_running = job(), job(state=SCHEDULED, run_at=time.time() + 60), job()
    store.insert([done, failed, cancelled, old_queued, old_scheduled, old_running], "me")
    run_to(store, done)
    run_to(store, failed, FAILED)
    store.cancel(cancelled.id, CANCELLED_BY_REQUEST)
    store.claim(old_running, "me").get()
    time.sleep(0.01)
    cut = time.time()
    time.sleep(0.01)
    recent = job()
    store.insert([recent], "me")
    run_to(store, recent, FAILED)
    assert store.sweep(cut) == 3
    assert [store.get(x.id) for x in (done, failed, cancelled)] == [None, None, None]
    assert all(store.get(x.id) is not None for x in (old_queued, old_scheduled, old_running, recent))
    assert store.sweep(cut) == 0
    assert store.sweep(time.time() + 1) == 1           # recent is terminal: gone; the active ones stay
    assert len(store.list()[0]) == 3


def test_sweep_limit_bounds_one_call_and_takes_the_oldest_finish_first(store):
    jobs = [job() for _ in range(5)]
    for x in jobs:                                     # created in this order (seq) ...
        store.insert([x], "me")
    for x in jobs[:4]:
        store.claim(x, "me").get()
    order = [jobs[3], jobs[1], jobs[4], jobs[0], jobs[2]]          # ... finished in this one
    for x, how in zip(order, (SUCCEEDED, FAILED, CANCELLED, SUCCEEDED, FAILED)):
        if how == CANCELLED:
            assert store.cancel(x.id, CANCELLED_BY_REQUEST)[1] is True
        else:
            assert store.finish(x, "me", how, None if how == FAILED else "1", BOOM if how == FAILED else None)
        time.sleep(0.005)
    late = job()                                       # finished after the cut: never swept by it
    store.insert([late], "me")
    cut = time.time()
    time.sleep(0.01)
    run_to(store, late)
    gone = []
    for expected in (2, 2, 1, 0):                      # call again while it returns the limit
        assert store.sweep(cut, limit=2) == expected
        gone = [x.id for x in order if store.get(x.id) is None]
        assert gone == ids(order[:len(gone)])          # always the oldest finish first
    assert gone == ids(order) and store.get(late.id) is not None


def test_sweep_is_not_stalled_by_jobs_created_earlier_that_finished_later(store):
    early, late = job(), job()
    store.insert([early], "me")
    store.insert([late], "me")
    store.claim(early, "me").get()
    run_to(store, late)                                # created later, finished first
    time.sleep(0.01)
    cut = time.time()
    time.sleep(0.01)
    assert store.finish(early, "me", SUCCEEDED, "1", None) is True
    assert store.sweep(cut, limit=1) == 1
    assert store.get(late.id) is None and store.get(early.id) is not None


def test_sweep_forgets_old_idempotency_keys_and_empty_batches(store):
    old_batch, live_batch = "batch-" + new_id(), "batch-" + new_id()
    olds = [job(batch_id=old_batch), job(batch_id=old_batch)]
    store.insert(olds, "me", batch_id=old_batch, keys={0: ("old-key", "fp")})
    for x in olds:
        run_to(store, x)
    keeper = job(batch_id=live_batch)
    store.insert([keeper], "me", batch_id=live_batch)
    time.sleep(0.01)
    cut = time.time()
    time.sleep(0.01)
    fresh = job()
    store.insert([fresh], "me", keys={0: ("new-key", "fp")})
    assert store.sweep(cut) == 2
    assert store.batch_counts(old_batch) is None
    assert store.batch_counts(live_batch) == {"total": 1, "created_at": pytest.approx(keeper.created_at, abs=1),
                                              "counts": {QUEUED: 1}}
    again = job()
    assert store.insert([again], "me", keys={0: ("old-key", "another request")}) == {}   # forgotten: no conflict
    assert store.get(again.id) is not None
    assert store.insert([job()], "me", keys={0: ("new-key", "fp")}) == {0: fresh.id}     # kept


# -- cpu jobs: outbox and worker claims --------------------------------------------------------------------------
def test_unpublished_pages_queued_cpu_jobs_until_marked_published(store):
    cs = [cpu_job() for _ in range(3)]
    running = cpu_job()
    scheduled = cpu_job(state=SCHEDULED, run_at=time.time() + 60)
    store.insert([job(), cs[0], running, scheduled, cs[1], job(), cs[2]], "me")
    assert store.claim_for_worker(running.id, "w1", lambda j, l: Verdict("go", lease_until=time.time() + 60))[0] == "go"
    page, cursor = store.unpublished(limit=2)
    assert ids(page) == [cs[0].id, cs[1].id]
    page2, cursor2 = store.unpublished(after_seq=cursor, limit=2)
    assert ids(page2) == [cs[2].id] and cursor2 > cursor
    assert store.unpublished(after_seq=cursor2) == ([], 0)
    assert all(j.kind == "cpu" and j.state == QUEUED for j in page + page2)
    store.mark_published([])
    store.mark_published([cs[0].id, cs[2].id])
    store.flush()
    assert ids(store.unpublished()[0]) == [cs[1].id]
    store.mark_published([cs[1].id])
    store.flush()
    assert store.unpublished() == ([], 0)


def test_claim_for_worker_carries_out_the_judges_verdict(store):
    c = cpu_job(timeout=10.0)
    store.insert([c], "me")
    seen = []

    def judge(answer, **verdict):
        def decide(job, lease):
            seen.append((job.id, job.state, job.attempts, lease))
            return Verdict(answer, **verdict)
        return decide

    until = time.time() + 30.0
    answer, got = store.claim_for_worker(c.id, "w1", judge("go", lease_until=until))
    assert seen[-1] == (c.id, QUEUED, 0, Lease(None, None))
    assert answer == "go" and (got.id, got.state, got.attempts) == (c.id, RUNNING, 1) and got.started_at
    assert store.get(c.id).state == RUNNING and store.unpublished() == ([], 0)
    answer, got = store.claim_for_worker(c.id, "w2", judge("skip"))
    assert seen[-1] == (c.id, RUNNING, 1, Lease("w1", until))
    assert answer == "skip" and (got.id, got.state, got.attempts) == (c.id, RUNNING, 1)
    assert lease_of(store, c.id) == Lease("w1", until)                    # a skip changes nothing
    lost = error_info("worker_lost", "the worker running this job died 1 times")
    before = time.time()
    answer, got = store.claim_for_worker(c.id, "w2", judge("lost", error=lost))
    assert answer == "lost" and (got.state, got.error, got.errors) == (FAILED, lost, [lost])
    assert got.finished_at >= before - 0.001
    stored = store.get(c.id)
    assert (stored.state, stored.error, stored.errors) == (FAILED, lost, [lost])
    assert lease_of(store, c.id) == Lease(None, None) and store.unpublished() == ([], 0)
    calls = len(seen)
    assert store.claim_for_worker("no-such-job", "w1", judge("go", lease_until=until)) == ("skip", None)
    assert len(seen) == calls                                             # no job, no judge
    assert store.revive(c.id)[1] is True and ids(store.unpublished()[0]) == [c.id]


def test_claim_for_worker_is_atomic_under_concurrent_workers(store):
    c = cpu_job(timeout=10.0)
    store.insert([c], "me")
    judge = _judge()
    results = [gevent.spawn(store.claim_for_worker, c.id, f"w{i}", judge) for i in range(20)]
    gevent.joinall(results, raise_error=True)
    answers = [g.value[0] for g in results]
    assert answers.count("go") == 1 and answers.count("skip") == 19
    winner = f"w{answers.index('go')}"
    assert lease_of(store, c.id).owner == winner and store.get(c.id).attempts == 1


def test_requeue_stale_cpu_requeues_and_republishes_only_expired_cpu_runs(make_store):
    s = make_store("stale", lease_seconds=0.2)
    stale, fresh, queued = cpu_job(), cpu_job(), cpu_job()
    io_running = job()
    s.insert([stale, fresh, queued], "me")
    s.insert([io_running], "me")
    s.claim(io_running, "me").get()                       # its lease runs out too, but it is not a cpu job
    s.mark_published([stale.id, fresh.id, queued.id])
    assert s.claim_for_worker(stale.id, "w1", lambda j, l: Verdict("go", lease_until=time.time() + 0.2))[0] == "go"
    assert s.claim_for_worker(fresh.id, "w2", lambda j, l: Verdict("go", lease_until=time.time() + 60))[0] == "go"
    s.flush()
    assert s.unpublished() == ([], 0)
    time.sleep(0.3)
    back = s.requeue_stale_cpu()
    assert ids(back) == [stale.id] and back[0].state == QUEUED
    assert s.get(stale.id).state == QUEUED and lease_of(s, stale.id) == Lease(None, None)
    assert ids(s.unpublished()[0]) == [stale.id]
    assert s.get(fresh.id).state == RUNNING and lease_of(s, fresh.id).owner == "w2"
    assert s.get(io_running.id).state == RUNNING and s.get(queued.id).state == QUEUED
    assert s.requeue_stale_cpu() == []
    assert s.requeue_stale_cpu(["w9"]) == []                      # another worker's death changes nothing
    back = s.requeue_stale_cpu(["w2"])                            # its worker died: at once, lease or not
    assert ids(back) == [fresh.id] and s.get(fresh.id).state == QUEUED
    assert s.get(io_running.id).state == RUNNING


def test_a_judge_that_raises_fails_only_its_own_claim(make_store):
    s = make_store("judge")
    c = cpu_job()
    s.insert([c], "me")

    def broken(job, lease):
        raise ValueError("the judge broke")
    neighbours = [job() for _ in range(10)]
    inserts = [gevent.spawn(s.insert, [n], "me") for n in neighbours[:5]]
    claim = gevent.spawn(s.claim_for_worker, c.id, "w1", broken)
    inserts += [gevent.spawn(s.insert, [n], "me") for n in neighbours[5:]]
    gevent.joinall(inserts + [claim])
    assert isinstance(claim.exception, ValueError)
    assert all(g.successful() for g in inserts)
    assert all(s.get(n.id) is not None for n in neighbours)
    got = s.get(c.id)
    assert (got.state, got.attempts) == (QUEUED, 0) and ids(s.unpublished()[0]) == [c.id]
    assert s.healthy and s.last_error is None       # an op's own error is not the database failing


# -- webhooks ------------------------------------------------------------------------------------------------------
def test_add_delivery_links_one_delivery_job(store):
    url = "http://127.0.0.1:9/hook"
    done = job(callback_url=url)
    store.insert([done], "me")
    run_to(store, done)
    delivery = Job(id=new_id(), handler="greenjobs.webhook", kind="io", state=QUEUED, kwargs={"job": done.id})
    assert store.add_delivery(done.id, delivery, url, "me") is True
    assert store.get(done.id).callback == {"url": url, "delivery": delivery.id, "state": "pending", "attempts": []}
    got = store.get(delivery.id)
    assert (got.state, got.kind, got.kwargs) == (QUEUED, "io", {"job": done.id})
    assert lease_of(store, delivery.id) == Lease(None, None)             # queued: for any server to take
    assert ids(store.take("other", ("io",), 10)) == [delivery.id]
    second = Job(id=new_id(), handler="greenjobs.webhook", kind="io", state=QUEUED, kwargs={"job": done.id})
    assert store.add_delivery(done.id, second, url, "me") is False
    assert store.get(second.id) is None
    assert store.get(done.id).callback["delivery"] == delivery.id
    third = Job(id=new_id(), handler="greenjobs.webhook", kind="io", state=QUEUED)
    assert store.add_delivery("no-such-job", third, url, "me") is False and store.get(third.id) is None


def test_add_delivery_is_one_transaction(store):
    url = "http://127.0.0.1:9/hook"
    done, other = job(callback_url=url), job()
    store.insert([done, other], "me")
    run_to(store, done)
    clash = Job(id=other.id, handler="greenjobs.webhook", kind="io", state=QUEUED)   # cannot be stored
    with pytest.raises(StoreUnavailable):
        store.add_delivery(done.id, clash, url, "me")
    assert store.get(done.id).callback is None                 # the link was rolled back with it
    assert ids(store.callbacks_due()) == [done.id]
    assert store.get(other.id).handler == "echo"
    delivery = Job(id=new_id(), handler="greenjobs.webhook", kind="io", state=QUEUED)
    assert store.add_delivery(done.id, delivery, url, "me") is True


def test_record_delivery_appends_the_last_attempts_and_the_state(store):
    url = "http://127.0.0.1:9/hook"
    done = job(callback_url=url)
    store.insert([done], "me")
    run_to(store, done)
    delivery = Job(id=new_id(), handler="greenjobs.webhook", kind="io", state=QUEUED)
    store.add_delivery(done.id, delivery, url, "me")
    store.record_delivery(done.id, {"attempt": 1, "status": 500}, "retrying", keep=2)
    assert store.get(done.id).callback["attempts"] == [{"attempt": 1, "status": 500}]
    store.record_delivery(done.id, {"attempt": 2, "status": 502}, "retrying", keep=2)
    store.record_delivery(done.id, {"attempt": 3, "status": 200}, "delivered", keep=2)
    assert store.get(done.id).callback == {"url": url, "delivery": delivery.id, "state": "delivered",
                                           "attempts": [{"attempt": 2, "status": 502}, {"attempt": 3, "status": 200}]}
    plain = job()
    store.insert([plain], "me")
    store.record_delivery(plain.id, {"attempt": 1}, "failed")                # no callback: nothing to record
    store.record_delivery("no-such-job", {"attempt": 1}, "failed")
    assert store.get(plain.id).callback is None


def test_callbacks_due_lists_finished_jobs_with_a_url_and_no_delivery(store):
    url = "http://127.0.0.1:9/hook"
    due = [job(callback_url=url) for _ in range(3)]
    active, plain, linked = job(callback_url=url), job(), job(callback_url=url)
    store.insert(due + [active, plain, linked], "me")
    run_to(store, due[0])
    run_to(store, due[1], FAILED)
    store.cancel(due[2].id, CANCELLED_BY_REQUEST)
    run_to(store, plain)
    run_to(store, linked)
    store.add_delivery(linked.id, Job(id=new_id(), handler="greenjobs.webhook", kind="io", state=QUEUED), url, "me")
    assert ids(store.callbacks_due()) == ids(due)                          # oldest first
    assert ids(store.callbacks_due(limit=2)) == ids(due[:2])
    assert all(j.callback_url == url and j.callback is None for j in store.callbacks_due())


# -- progress ---------------------------------------------------------------------------------------------------
def test_set_progress_is_visible_after_flush_and_only_the_latest_is_kept(store):
    j, waiting = job(), job()
    store.insert([j, waiting], "me")
    store.claim(j, "me").get()
    store.set_progress(j.id, {"done": 1, "of": 3})
    store.set_progress(j.id, {"done": 2, "of": 3})
    store.flush()
    assert store.get(j.id).progress == {"done": 2, "of": 3}
    store.set_progress(waiting.id, {"done": 1})                            # not running: not recorded
    store.flush()
    assert store.get(waiting.id).progress is None
    assert store.finish(j, "me", SUCCEEDED, "1", None) is True
    assert store.get(j.id).progress == {"done": 2, "of": 3}                # finishing keeps the last value
    store.set_progress(j.id, {"done": 99})                                 # late: the job is finished
    store.flush()
    assert store.get(j.id).progress == {"done": 2, "of": 3}


def test_progress_of_many_jobs_coalesces_into_flushes(store):
    jobs = [job() for _ in range(30)]
    store.insert(jobs, "me")
    for x in jobs:
        store.claim(x, "me")
    store.flush()
    for step in range(5):
        for x in jobs:
            store.set_progress(x.id, {"step": step})
    store.flush()
    assert [store.get(x.id).progress for x in jobs] == [{"step": 4}] * 30


# -- many greenlets at once ------------------------------------------------------------------------------------
def test_concurrent_batch_inserts_keep_their_batches_apart(store):
    batches = {f"batch-{i}": [job(batch_id=f"batch-{i}") for _ in range(3)] for i in range(60)}
    gevent.joinall([gevent.spawn(store.insert, jobs, "me", b) for b, jobs in batches.items()], raise_error=True)
    assert len(store.list(limit=1000)[0]) == 180
    for b, jobs in batches.items():
        assert store.batch_counts(b)["total"] == 3 and store.batch_of(ids(jobs)) == b


def test_concurrent_inserts_with_one_key_make_one_job(store):
    jobs = [job() for _ in range(40)]
    greenlets = [gevent.spawn(store.insert, [j], "me", None, {0: ("shared-key", "fp")}) for j in jobs]
    clash = gevent.spawn(store.insert, [job()], "me", None, {0: ("shared-key", "another request")})
    gevent.joinall(greenlets + [clash])
    assert all(g.successful() for g in greenlets)
    winners = {g.value.get(0, j.id) for g, j in zip(greenlets, jobs)}
    assert len(winners) == 1
    assert sum(1 for g in greenlets if g.value == {}) == 1
    assert ids(store.list()[0]) == list(winners)
    assert isinstance(clash.exception, IdempotencyConflict)


def test_concurrent_cancels_and_revives_change_a_job_once(store):
    j = job()
    store.insert([j], "me")
    cancels = [gevent.spawn(store.cancel, j.id, CANCELLED_BY_REQUEST) for _ in range(20)]
    gevent.joinall(cancels, raise_error=True)
    assert [g.value[1] for g in cancels].count(True) == 1
    f = job()
    store.insert([f], "me")
    run_to(store, f, FAILED)
    revives = [gevent.spawn(store.revive, f.id) for _ in range(20)]
    gevent.joinall(revives, raise_error=True)
    assert [g.value[1] for g in revives].count(True) == 1
    assert all(g.value[0].state == QUEUED for g in revives)
    got = store.get(f.id)
    assert (got.state, got.attempts) == (QUEUED, 1) and lease_of(store, f.id) == Lease(None, None)


def test_a_cancel_racing_a_finish_has_one_winner(store):
    jobs = [job() for _ in range(20)]
    store.insert(jobs, "me")
    for x in jobs:
        store.claim(x, "me").get()
    racers = []
    for x in jobs:
        racers.append((gevent.spawn(store.finish, x, "me", SUCCEEDED, "1", None),
                       gevent.spawn(store.cancel, x.id, CANCELLED_BY_REQUEST)))
    gevent.joinall([g for pair in racers for g in pair], raise_error=True)
    for x, (fin, can) in zip(jobs, racers):
        assert fin.value != can.value[1]
        assert store.get(x.id).state == (SUCCEEDED if fin.value else CANCELLED)


def test_held_lists_the_running_jobs_of_the_kinds_asked_leased_to_an_owner(store):
    mine, theirs, queued, cpu = (job(state=RUNNING, attempts=1, started_at=time.time()), job(state=RUNNING, attempts=1,
                                 started_at=time.time()), job(), cpu_job())
    store.insert([mine, queued, cpu], "A")
    store.insert([theirs], "B")
    held = store.held("A", ("io",))
    assert [i for i, _ in held] == [mine.id] and held[0][1] == pytest.approx(mine.started_at)
    assert store.held("nobody", ("io",)) == []
    assert store.finish(mine, "A", SUCCEEDED, "1", None) is True
    assert store.held("A", ("io",)) == []


def server(owner, started, beat, busy=0, role="server", stats=None):
    from greenjobs.pool.store.rows import ServerRecord
    return ServerRecord(owner=owner, host="h1", pid=4242, role=role, version="0.1.0", started_at=started,
                        heartbeat_at=beat, pool_size=100, pool_busy=busy, cpu_workers=2, stats=stats)


def test_the_servers_table_keeps_one_row_per_server_with_its_last_heartbeat(store):
    assert store.servers() == []
    now = time.time()
    store.beat(server("B", now - 5, now), forget_before=now - 60)
    store.beat(server("A", now - 10, now, role="io-worker"), forget_before=now - 60)
    assert [(s.owner, s.role) for s in store.servers()] == [("A", "io-worker"), ("B", "server")]   # oldest first
    store.beat(server("B", now - 5, now + 1, busy=7), forget_before=now - 60)      # a later beat replaces
    rows = {s.owner: s for s in store.servers()}
    assert len(rows) == 2 and rows["B"].pool_busy == 7 and rows["B"].heartbeat_at == pytest.approx(now + 1)
    assert rows["B"] == server("B", now - 5, now + 1, busy=7)                        # every field round-trips
    store.leave("A")
    assert [s.owner for s in store.servers()] == ["B"]
    store.leave("nobody")                                                           # nothing to delete: no error


def test_an_admins_request_stays_in_the_servers_row_through_its_heartbeats(store):
    now = time.time()
    store.beat(server("A", now, now, stats='{"cpu":{"target":2}}'), forget_before=now - 60)
    assert store.servers()[0].stats == '{"cpu":{"target":2}}' and store.servers()[0].control is None
    assert store.request_control("A", '{"id":"r1","size":3}') is True
    assert store.request_control("nobody", '{"id":"r2","size":3}') is False       # no such server: nothing made
    store.beat(server("A", now, now + 1, stats='{"cpu":{"target":3}}'), forget_before=now - 60)
    (row,) = store.servers()
    assert row.control == '{"id":"r1","size":3}' and row.stats == '{"cpu":{"target":3}}'   # a beat keeps it
    assert store.request_control("A", '{"id":"r3","restart":true}') is True       # a later one replaces it
    assert store.servers()[0].control == '{"id":"r3","restart":true}'
    store.leave("A")
    assert store.request_control("A", '{"id":"r4","size":1}') is False and store.servers() == []


def test_a_heartbeat_forgets_servers_silent_since_before_its_cutoff(store):
    now = time.time()
    store.beat(server("old", now - 100, now - 90), forget_before=now - 1000)
    store.beat(server("recent", now - 100, now - 10), forget_before=now - 1000)
    assert len(store.servers()) == 2
    store.beat(server("me", now, now), forget_before=now - 60)
    assert [s.owner for s in store.servers()] == ["old", "recent", "me"][1:]


def test_the_event_log_numbers_events_in_order_and_never_reuses_a_number(store):
    assert store.last_event_seq() == 0 and store.events_after(0, 10) == []
    store.add_events([(1.0, '{"event":"submitted"}'), (2.0, '{"event":"started"}')])
    store.add_events([])                                                       # nothing to write: no error
    store.add_events([(3.0, '{"event":"succeeded"}')])
    rows = store.events_after(0, 10)
    assert [body for _, _, body in rows] == ['{"event":"submitted"}', '{"event":"started"}', '{"event":"succeeded"}']
    seqs = [seq for seq, _, _ in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and store.last_event_seq() == seqs[-1]
    assert [at for _, at, _ in rows] == [1.0, 2.0, 3.0]
    assert store.events_after(seqs[0], 1) == [rows[1]]                        # after a number, at most limit
    assert store.prune_events(keep=1, before=1.5) == 1                        # only what is old enough goes
    assert store.prune_events(keep=1, before=10.0) == 1
    assert store.events_after(0, 10) == [rows[2]]
    store.add_events([(4.0, '{"event":"next"}')])
    assert store.events_after(seqs[-1], 10)[0][0] > seqs[-1]                  # numbering goes on after a prune
    assert store.prune_events(keep=10, before=10.0) == 0
