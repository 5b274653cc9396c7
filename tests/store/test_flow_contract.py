"""The flow-control part of the JobStore contract, on every backend: gated jobs are admitted where they would
start (a take, a worker's claim) - over their rate they reserve a start time and wait for it, over their
handler's max_running they wait for an end - unique keys make one active job, and expired jobs never start."""
import time

import pytest

from greenjobs.pool import lifecycle
from greenjobs.pool.job import CANCELLED, FAILED, QUEUED, RUNNING, SCHEDULED, SUCCEEDED, Job, new_id
from greenjobs.pool.store.base import Lease

OWNER = "test-owner"


def job(kind="io", handler="h", **fields) -> Job:
    return Job(id=new_id(), handler=handler, kind=kind, state=QUEUED, timeout=30.0, **fields)


def rate(every, bucket="h", cap=None):
    return {"bucket": bucket, "every": every, "max_running": cap}


def cap(n):
    return {"bucket": None, "every": None, "max_running": n}


@pytest.fixture
def woken(store):
    seen = []
    store.on_rate_wait = seen.append
    return seen


@pytest.fixture
def moved(store):
    seen = []
    store.on_steps_moved = seen.append
    return seen


def test_over_its_rate_a_job_reserves_the_next_start_time_and_waits_for_it(store, woken):
    jobs = [job(gate=rate(0.5)) for _ in range(4)]
    store.insert(jobs, OWNER)
    before = time.time()
    taken = store.take(OWNER, ("io",), 10)
    assert [j.id for j in taken] == [jobs[0].id], "one start now; the others wait for their turn"
    waiting = sorted(store.get_many([j.id for j in jobs[1:]]), key=lambda j: j.run_at)
    assert {(j.state, j.waiting) for j in waiting} == {(SCHEDULED, "rate_limit")}
    gaps = [b.run_at - a.run_at for a, b in zip(waiting, waiting[1:])]
    assert gaps == pytest.approx([0.5, 0.5], abs=1e-6)
    assert 0.5 - 0.05 <= waiting[0].run_at - before <= 0.5 + 0.5
    assert woken and woken[-1] == pytest.approx(waiting[0].run_at)
    assert ("h", "rate_limit", 3) in store.waiting_counts()
    assert store.next_due() == pytest.approx(waiting[0].run_at)
    assert store.take(OWNER, ("io",), 10) == [], "a waiting job is not queued: no take starts it early"
    time.sleep(max(0.0, waiting[0].run_at - time.time()) + 0.01)
    promoted = store.promote_due(("io",))
    assert [j.id for j in promoted] == [waiting[0].id]
    started = store.take(OWNER, ("io",), 10)
    assert [j.id for j in started] == [waiting[0].id], "its reservation lets it start"
    assert store.get(waiting[0].id).waiting is None
    assert [(j.state, j.waiting) for j in store.get_many([waiting[1].id])] == [(SCHEDULED, "rate_limit")]


def test_buckets_are_separate_and_ungated_jobs_never_wait(store):
    a = [job(gate=rate(60, "h:a")) for _ in range(2)]
    b = [job(gate=rate(60, "h:b")) for _ in range(2)]
    free = [job() for _ in range(3)]
    store.insert(a + b + free, OWNER)
    started = {j.id for j in store.take(OWNER, ("io",), 10)}
    assert started == {a[0].id, b[0].id, *(j.id for j in free)}


def test_max_running_parks_the_rest_and_an_end_releases_one(store, moved):
    jobs = [job(gate=cap(2)) for _ in range(5)]
    store.insert(jobs, OWNER)
    taken = store.take(OWNER, ("io",), 10)
    assert len(taken) == 2
    parked = [j for j in store.get_many([j.id for j in jobs]) if j.state == SCHEDULED]
    assert len(parked) == 3 and {j.waiting for j in parked} == {"max_running"} and {j.run_at for j in parked} == {None}
    assert store.promote_due(("io",)) == [], "a parked job has no time: never promoted"
    assert store.release_waiting() == [], "no room while two run"

    assert store.finish(taken[0], OWNER, SUCCEEDED, "1", None)
    released = moved[-1].released
    assert len(released) == 1 and released[0].state == QUEUED, "the end released one, in its transaction"
    assert [j.id for j in store.take(OWNER, ("io",), 10)] == [released[0].id]
    assert store.take(OWNER, ("io",), 10) == []

    store.cancel(taken[1].id, lifecycle.CANCELLED_BY_REQUEST)       # a cancel frees a slot too
    assert len(moved[-1].released) == 1
    assert len(store.take(OWNER, ("io",), 10)) == 1


def test_a_dead_runners_slot_is_freed_when_its_lease_is_given_back(store):
    jobs = [job(gate=cap(1)) for _ in range(2)]
    store.insert(jobs, OWNER)
    [first] = store.take("dead-owner", ("io",), 10)
    assert store.take(OWNER, ("io",), 10) == []
    assert store.adopt(OWNER, ["dead-owner"], ("io",)), "the lease is given back"
    store.release_waiting()                   # room again: the parked one competes with the adopted one
    [one] = store.take(OWNER, ("io",), 10)
    assert store.take(OWNER, ("io",), 10) == [], "still one at a time"
    assert store.finish(one, OWNER, SUCCEEDED, "1", None)
    [other] = store.take(OWNER, ("io",), 10)
    assert {one.id, other.id} == {j.id for j in jobs}


def test_release_waiting_finds_room_left_by_ends_it_did_not_see(store):
    jobs = [job(gate=cap(1)) for _ in range(2)]
    store.insert(jobs, OWNER)
    [first] = store.take(OWNER, ("io",), 10)
    assert store.take(OWNER, ("io",), 10) == []
    store.requeue([first], OWNER)             # a shutdown gives it back: no end, nothing released
    store.cancel(first.id, lifecycle.CANCELLED_BY_REQUEST)
    assert store.get(jobs[1].id).state in (SCHEDULED, QUEUED)
    if store.get(jobs[1].id).state == SCHEDULED:
        assert [j.id for j in store.release_waiting()] == [jobs[1].id]
    assert [j.id for j in store.take(OWNER, ("io",), 10)] == [jobs[1].id]


def test_a_worker_claim_admits_a_gated_cpu_job(store):
    jobs = [job(kind="cpu", handler="c", gate=cap(1)) for _ in range(2)]
    store.insert(jobs, OWNER)

    def judge(j, lease: Lease):
        return lifecycle.judge_worker_claim(j, lease.owner, lease.expires, False, lambda w: False, 3, 30.0, time.time())
    assert store.claim_for_worker(jobs[0].id, "w1", judge)[0] == "go"
    answer, held = store.claim_for_worker(jobs[1].id, "w2", judge)
    assert answer == "skip" and store.get(jobs[1].id).waiting == "max_running"
    running = store.get(jobs[0].id)
    assert store.finish(running, "w1", SUCCEEDED, "1", None)
    assert store.get(jobs[1].id).state == QUEUED
    assert store.claim_for_worker(jobs[1].id, "w2", judge)[0] == "go"


def test_one_active_job_per_unique_key_and_a_new_one_once_it_ended(store):
    first = job(unique_key="report-7")
    assert store.insert([first], OWNER) == {}
    again = job(unique_key="report-7")
    assert store.insert([again], OWNER) == {0: first.id}
    assert store.get(again.id) is None
    twice = [job(unique_key="k2"), job(unique_key="k2"), job()]
    assert store.insert(twice, OWNER, batch_id=new_id()) == {1: twice[0].id}, "within one batch too"
    [taken] = [j for j in store.take(OWNER, ("io",), 10) if j.id == first.id]
    assert store.insert([job(unique_key="report-7")], OWNER) == {0: first.id}, "running is active"
    assert store.finish(taken, OWNER, FAILED, None, {"kind": "exception", "message": "x", "traceback": None})
    fresh = job(unique_key="report-7")
    assert store.insert([fresh], OWNER) == {}, "ended: a new job"
    revived, changed = store.revive(first.id)
    assert not changed and revived.state == FAILED, "not revived while another holds its key"


def test_an_expired_job_is_never_started_and_ends_expired(store):
    soon = job(expires_at=time.time() + 0.3)
    cpu = job(kind="cpu", expires_at=time.time() + 0.3)
    later = job(expires_at=time.time() + 60)
    store.insert([soon, cpu, later], OWNER)
    time.sleep(0.35)
    assert {j.id for j in store.take(OWNER, ("io",), 10)} == {later.id}

    def judge(j, lease: Lease):
        return lifecycle.judge_worker_claim(j, lease.owner, lease.expires, False, lambda w: False, 3, 30.0, time.time())
    answer, ended = store.claim_for_worker(cpu.id, "w1", judge)
    assert (answer, ended.state, ended.error["kind"]) == ("lost", CANCELLED, "expired"), "ended at the claim"
    expired = {j.id: j for j in store.expire_due()}
    assert set(expired) == {soon.id}
    for j in (store.get(soon.id), store.get(cpu.id)):
        assert j.state == CANCELLED and j.error["kind"] == "expired"
    assert store.get(later.id).state == RUNNING
    assert store.expire_due() == []


def test_a_late_reservation_asks_its_bucket_again(store):
    """A job that reserved a start but is taken more than one interval late (every slot busy) does not start
    beside a fresh job in the same interval: it goes through the bucket again."""
    jobs = [job(gate=rate(0.3)) for _ in range(3)]
    store.insert(jobs, OWNER)
    assert len(store.take(OWNER, ("io",), 10)) == 1
    time.sleep(0.3 * 3 + 0.1)       # both reservations are now more than an interval old
    assert len(store.promote_due(("io",))) == 2
    assert len(store.take(OWNER, ("io",), 10)) == 1, "one start per interval, however late"


def test_an_idempotency_key_on_a_unique_repeat_answers_the_active_job(store):
    first = job(unique_key="u")
    store.insert([first], OWNER)
    repeat = job(unique_key="u")
    assert store.insert([repeat], OWNER, keys={0: ("idem-1", "fp")}) == {0: first.id}
    assert store.insert([job(unique_key="u")], OWNER, keys={0: ("idem-1", "fp")}) == {0: first.id}, \
        "the key points at the job that exists"


def test_two_servers_admitting_in_opposite_bucket_orders_never_deadlock(request):
    """PostgreSQL: one group commit may hold the flow row of one op while another op of it waits for another
    row; two servers doing so in opposite orders must not deadlock (a short lock wait, then a deferral).  Run in
    a process of its own with gevent's patching, as a server runs, so the two stores' transactions overlap."""
    import subprocess
    import sys
    url = request.getfixturevalue("postgres").schema_url(f"flowlocks_{new_id()[:12]}")
    probe = subprocess.run([sys.executable, "-m", "tests.store.flow_locks_probe", url], capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stdout[-2000:] + probe.stderr[-3000:]
    assert "answers" in probe.stdout


def test_a_late_start_pushes_the_next_start_of_its_bucket_back(store):
    """Starts of a bucket are never closer than its interval: a reserved job taken late (a loaded server) moves
    the next reservation back instead of both starting within one interval."""
    jobs = [job(gate=rate(0.5)) for _ in range(3)]
    store.insert(jobs, OWNER)
    assert len(store.take(OWNER, ("io",), 10)) == 1
    first, second = sorted(store.get_many([j.id for j in jobs[1:]]), key=lambda j: j.run_at)
    time.sleep(max(0.0, first.run_at + 0.4 - time.time()))          # the first reservation, 0.4 s late
    assert [j.id for j in store.promote_due(("io",))] == [first.id]
    [late] = store.take(OWNER, ("io",), 10)
    started = time.time()
    time.sleep(max(0.0, second.run_at + 0.01 - time.time()))        # the second one's reserved time
    assert [j.id for j in store.promote_due(("io",))] == [second.id]
    assert store.take(OWNER, ("io",), 10) == [], "not 0.1 s after the late one"
    pushed = store.get(second.id)
    assert pushed.state == SCHEDULED and pushed.waiting == "rate_limit"
    assert pushed.run_at == pytest.approx(started + 0.5, abs=0.05)


def test_the_runner_of_an_ended_attempt_is_kept(store):
    """``ran_by``: the lease owner of the attempt that ended (finished, retried, cancelled while running)."""
    done, retried, cancelled = job(), job(), job()
    store.insert([done, retried, cancelled], OWNER)
    taken = {j.id: j for j in store.take("host-a:123:1:x", ("io",), 10)}
    assert store.finish(taken[done.id], "host-a:123:1:x", SUCCEEDED, "1", None)
    assert store.retry(taken[retried.id], "host-a:123:1:x", time.time() + 60,
                       {"kind": "exception", "message": "x", "traceback": None})
    store.cancel(cancelled.id, lifecycle.CANCELLED_BY_REQUEST)
    for job_id in (done.id, retried.id, cancelled.id):
        got = store.get(job_id)
        assert got.ran_by == "host-a:123:1:x", (job_id, got.state, got.ran_by)
        assert got.public()["ran_by"] == {"id": "host-a:123:1:x", "host": "host-a", "pid": 123}
    never = job()
    store.insert([never], OWNER)
    store.cancel(never.id, lifecycle.CANCELLED_BY_REQUEST)
    assert store.get(never.id).ran_by is None, "never ran: nobody"


def test_list_finds_jobs_by_text_in_their_arguments(store):
    a = job(kwargs={"order": "A-1042", "note": "gift"})
    b = job(args=["A-1043"])
    c = job(kwargs={"order": "B-7"})
    store.insert([a, b, c], OWNER)
    assert [j.id for j in store.list(text="A-104")[0]] == [b.id, a.id]
    assert [j.id for j in store.list(text="gift", limit=5)[0]] == [a.id]
    assert store.list(text="a-104")[0] == [], "case-sensitive on both ledgers"
    assert [j.id for j in store.list(text='"B-7"')[0]] == [c.id], "as JSON: quotes match too"


def test_how_a_job_blocked_the_event_loop_is_recorded_whatever_its_state(store):
    """``record_blocked`` (the hub guard's write): fire and forget, on a running or an already ended job."""
    running, ended = job(), job()
    store.insert([running, ended], OWNER)
    taken = {j.id: j for j in store.take(OWNER, ("io",), 10)}
    assert store.finish(taken[ended.id], OWNER, SUCCEEDED, "1", None)
    store.record_blocked(running.id, {"count": 1, "longest_ms": 150, "total_ms": 150})
    store.record_blocked(ended.id, {"count": 2, "longest_ms": 900, "total_ms": 1200})
    store.flush()
    assert store.get(running.id).blocked == {"count": 1, "longest_ms": 150, "total_ms": 150}
    assert store.get(ended.id).public()["blocked"] == {"count": 2, "longest_ms": 900, "total_ms": 1200}
    assert store.get(ended.id).state == SUCCEEDED
