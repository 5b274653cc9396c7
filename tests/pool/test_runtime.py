import gevent
import pytest

from greenjobs.pool.registry import Registry
from greenjobs.pool.errors import JobFinished, Overloaded
from greenjobs.pool.spec import parse_spec
from tests.pool import handlers_for_tests


def wait_terminal(runtime, job_id, rounds=100):
    """Wait until the job is terminal, in bounded 10 s long-polls (retries may take several)."""
    for _ in range(rounds):
        done = runtime.wait(job_id, 10)
        if done.terminal:
            return done
    return done


def submit(runtime, handler, **fields):
    job = parse_spec({"handler": handler, **fields}, runtime.registry, runtime.settings)
    runtime.submit([job])
    return job


def test_echo_runs_and_is_stored(make_runtime):
    rt = make_runtime()
    job = submit(rt, "echo", kwargs={"a": 1})
    done = rt.wait(job.id, 5)
    assert (done.state, done.result, done.attempts) == ("succeeded", {"a": 1}, 1)
    assert rt.store.get(job.id).result == {"a": 1}


def test_timeout_is_enforced_even_when_the_handler_swallows_it(make_runtime):
    rt = make_runtime(pool__size=1)
    job = submit(rt, "test.swallow_everything")
    done = rt.wait(job.id, 5)
    assert done.state == "failed" and done.error["kind"] == "timeout"
    # the slot came back: the next job runs although the runaway greenlet may linger
    assert rt.wait(submit(rt, "echo").id, 5).state == "succeeded"


def test_cancel_running_job_runs_its_cleanup_and_is_never_succeeded(make_runtime):
    rt = make_runtime()
    job = submit(rt, "test.cleanup")
    gevent.sleep(0.05)
    cancelled = rt.cancel(job.id)
    assert cancelled.state == "cancelled"
    gevent.sleep(0.05)
    assert job.id in handlers_for_tests.CLEANUPS
    assert rt.store.get(job.id).state == "cancelled"
    with pytest.raises(JobFinished):
        rt.cancel(job.id)


def test_cancel_queued_job_never_runs(make_runtime):
    rt = make_runtime(pool__size=1)
    blocker = submit(rt, "sleep", kwargs={"seconds": 0.2})
    queued = submit(rt, "echo")
    assert rt.store.get(queued.id).state == "queued"
    assert rt.cancel(queued.id).state == "cancelled"
    rt.wait(blocker.id, 5)
    gevent.sleep(0.05)
    final = rt.store.get(queued.id)
    assert final.state == "cancelled" and final.attempts == 0


def test_backlog_limit_raises_overloaded_and_stores_nothing(make_runtime):
    rt = make_runtime(pool__size=1, pool__max_pending=2)
    for _ in range(3):
        submit(rt, "sleep", kwargs={"seconds": 1})
    before = len(rt.store.list(limit=100)[0])
    with pytest.raises(Overloaded):
        submit(rt, "echo")
    assert len(rt.store.list(limit=100)[0]) == before


def test_priority_then_age_order(make_runtime):
    rt = make_runtime(pool__size=1)
    blocker = submit(rt, "sleep", kwargs={"seconds": 0.1})
    jobs = [submit(rt, "echo", priority=p, kwargs={"n": i}) for i, p in enumerate([1, 5, 9, 5, 0])]
    for j in jobs:
        rt.wait(j.id, 5)
    rt.wait(blocker.id, 5)
    started = sorted((rt.store.get(j.id).started_at, j.kwargs["n"]) for j in jobs)
    assert [n for _, n in started] == [2, 1, 3, 0, 4]


def test_result_must_be_json(make_runtime):
    rt = make_runtime()
    done = rt.wait(submit(rt, "test.not_json").id, 5)
    assert done.state == "failed" and done.error["kind"] == "result_not_json"


def test_a_handlers_own_gevent_timeout_is_an_ordinary_failure(make_runtime):
    rt = make_runtime()
    done = rt.wait(submit(rt, "test.inner_timeout").id, 5)
    assert done.state == "failed" and done.error["kind"] == "exception"


def test_progress_is_recorded(make_runtime):
    rt = make_runtime()
    done = rt.wait(submit(rt, "test.progress").id, 5)
    assert done.result == done.id
    assert rt.store.get(done.id).progress == {"fraction": 0.5, "message": "half"}


def test_current_job_is_isolated_across_thousands_of_greenlets(make_runtime):
    rt = make_runtime()
    jobs = [submit(rt, "test.progress") for _ in range(1000)]
    results = [rt.wait(j.id, 10) for j in jobs]
    assert [r.result for r in results] == [j.id for j in jobs]


def test_scheduled_job_starts_when_due(make_runtime):
    rt = make_runtime()
    job = submit(rt, "echo", delay=0.5)
    assert rt.store.get(job.id).state == "scheduled"
    done = rt.wait(job.id, 10)
    assert done.state == "succeeded"


def test_shutdown_requeues_running_jobs_for_the_next_start(make_runtime, tmp_path):
    rt = make_runtime()
    job = submit(rt, "sleep", kwargs={"seconds": 30})
    gevent.sleep(0.05)
    rt.shutdown(0.1)
    rt2 = make_runtime()
    assert rt2.io.running(job.id)
    rt2.store.flush()
    assert rt2.store.get(job.id).attempts == 2, "the interrupted start is counted, then the new one"


def test_registry_for_tests_loads():
    assert "test.cleanup" in Registry().load(["tests.pool.handlers_for_tests"])


def test_job_of_an_unregistered_handler_fails_cleanly(make_runtime):
    from greenjobs.pool.job import QUEUED, Job, new_id
    rt = make_runtime()
    ghost = Job(id=new_id(), handler="removed.handler", kind="io", state=QUEUED)
    rt.store.insert([ghost], "gone-host:1:x")
    rt.store._db.write(lambda conn: conn.execute("UPDATE jobs SET lease_owner = NULL"))
    rt.maintenance.adopt_orphans()
    done = rt.wait(ghost.id, 5)
    assert done.state == "failed" and done.error["kind"] == "unknown_handler"
    assert rt.io.stats()["busy"] == 0


def test_flaky_job_succeeds_on_the_expected_attempt(make_runtime):
    rt = make_runtime(retry__base=0.05)
    done = wait_terminal(rt, submit(rt, "flaky", kwargs={"fail_times": 2}, max_retries=3).id)
    assert (done.state, done.result, done.attempts) == ("succeeded", {"attempt": 3}, 3)
    assert [e["kind"] for e in done.errors] == ["exception", "exception"]


def test_failing_job_ends_failed_after_exactly_max_retries_plus_one_attempts(make_runtime):
    rt = make_runtime(retry__base=0.01)
    done = wait_terminal(rt, submit(rt, "fail", max_retries=2).id)
    assert (done.state, done.attempts, len(done.errors)) == ("failed", 3, 3)


def test_outcome_that_could_not_be_stored_is_stored_once_the_store_recovers(make_runtime):
    rt = make_runtime()
    job = submit(rt, "test.big_result_later")
    rt.store.flush()
    pages = rt.store._db.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    rt.store._db.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))   # the disk is "full"
    gevent.sleep(0.6)
    assert rt.store.get(job.id).state == "running" and not rt.store.healthy
    rt.store._db.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))  # space again
    done = rt.wait(job.id, 10)
    assert done.state == "succeeded" and rt.store.get(job.id).result == "x" * 200_000


def test_a_retry_delay_that_is_not_a_number_falls_back_to_the_backoff(make_runtime):
    rt = make_runtime(retry__base=0.01)
    done = wait_terminal(rt, submit(rt, "test.retry_bad_delay", max_retries=1).id)
    assert (done.state, done.attempts) == ("succeeded", 2)


def test_a_late_result_of_an_earlier_cpu_attempt_cannot_end_the_attempt_now_running(make_runtime):
    """A worker's result names its attempt: attempt 1's result redelivered (or late) while attempt 2 runs on the same
    worker is refused by the store's fence, and attempt 2's own result is recorded."""
    import time

    from greenjobs.pool.job import error_info
    from greenjobs.pool.lifecycle import Verdict
    rt = make_runtime(workers__cpu=0)
    job = submit(rt, "cpu.pbkdf2", kwargs={"iterations": 1}, max_retries=1)
    rt.store.flush()
    go = lambda job, lease: Verdict("go", lease_until=time.time() + 30)      # noqa: E731
    first = rt.store.claim_for_worker(job.id, "W", go)[1]
    assert first.attempts == 1
    assert rt.store.retry(first, "W", time.time() - 1, error_info("exception", "boom")) is True
    assert [j.id for j in rt.store.promote_due(("cpu",))] == [job.id]
    assert rt.store.claim_for_worker(job.id, "W", go)[1].attempts == 2
    rt.cpu._on_result({"job": job.id, "worker": "W", "attempt": 1, "state": "succeeded", "result": 1})
    assert rt.store.get(job.id).state == "running"
    rt.cpu._on_result({"job": job.id, "worker": "W", "attempt": 2, "state": "succeeded", "result": 2})
    got = rt.store.get(job.id)
    assert (got.state, got.result, got.attempts) == ("succeeded", 2, 2)


def test_a_job_leased_to_us_in_the_ledger_but_never_started_here_is_given_back_and_runs(make_runtime):
    """A take whose commit succeeded while its answer was lost leaves jobs running under our lease that no
    greenlet runs: the maintenance duty gives them back (only once they are old enough) and they run."""
    import time

    from greenjobs.pool.job import RUNNING, Job, new_id
    rt = make_runtime()
    fresh = Job(id=new_id(), handler="echo", kind="io", state=RUNNING, attempts=1, started_at=time.time())
    lost = Job(id=new_id(), handler="echo", kind="io", state=RUNNING, attempts=1, started_at=time.time() - 60)
    rt.store.insert([fresh, lost], rt.owner)
    assert {i for i, _ in rt.store.held(rt.owner, ("io",))} == {fresh.id, lost.id}
    rt.maintenance.requeue_unstarted()
    done = rt.wait(lost.id, 10)
    assert (done.state, done.attempts) == ("succeeded", 1)     # the lost attempt was undone, then it ran here
    assert rt.store.get(fresh.id).state == RUNNING             # too recent to be judged lost


def test_a_cpu_job_still_held_by_a_dead_worker_after_a_while_is_requeued_and_republished(make_runtime, monkeypatch):
    """A worker on this host died holding a running cpu job, and no message of the job is left to redeliver: once
    the worker has been dead STRANDED_AFTER seconds, the job goes back to the outbox (not before: a redelivery
    claimed by another worker within that time counts against a poison job)."""
    import socket
    import time

    from greenjobs.pool import maintenance
    from greenjobs.pool.lifecycle import Verdict
    rt = make_runtime(workers__cpu=0)
    job = submit(rt, "cpu.pbkdf2", kwargs={"iterations": 1})
    rt.store.flush()
    dead = f"{socket.gethostname()}:999999999:1:dead"           # a pid that cannot exist on this host
    go = lambda job, lease: Verdict("go", lease_until=time.time() + 3600)      # noqa: E731
    assert rt.store.claim_for_worker(job.id, dead, go)[0] == "go"
    published = []
    monkeypatch.setattr(rt.cpu, "publish", lambda jobs: published.extend(j.id for j in jobs))
    rt.maintenance.adopt_orphans()
    rt.maintenance.repair_outbox()
    assert rt.store.get(job.id).state == "running" and published == []         # dead, but only just
    monkeypatch.setattr(maintenance, "STRANDED_AFTER", 0.0)
    rt.maintenance.adopt_orphans()
    rt.maintenance.repair_outbox()
    assert rt.store.get(job.id).state == "queued" and job.id in published
