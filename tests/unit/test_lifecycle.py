"""The rules above the store: retries, leasing, worker claims; and the outcome shapes every executor uses."""
import json
import time

import pytest

from greenjobs.pool import lifecycle, outcomes
from greenjobs.pool.errors import Retry
from greenjobs.pool.job import QUEUED, RUNNING, TRANSITIONS, Job
from greenjobs.pool.registry import Handler


def job(**kw):
    return Job(**{"id": "j1", "handler": "echo", "kind": "io", "state": QUEUED, **kw})


def test_backoff_is_full_jitter_capped():
    backoff = lifecycle.Backoff(base=2, cap=10)
    delays = [backoff(attempt) for attempt in (1, 2, 3, 10, 50) for _ in range(200)]
    assert all(0 <= d <= 10 for d in delays)
    assert max(backoff(1) for _ in range(200)) <= 2


def test_every_store_move_is_in_the_transition_table():
    for sources, targets in (lifecycle.CLAIM, lifecycle.FINISH, lifecycle.RETRY, lifecycle.CANCEL, lifecycle.REVIVE,
                             lifecycle.GIVE_BACK, lifecycle.PROMOTE, lifecycle.WORKER_LOST):
        for source in sources:
            for target in (targets if isinstance(targets, tuple) else (targets,)):
                assert target in TRANSITIONS[source], (source, target)


def test_running_io_jobs_are_leased_and_cpu_jobs_published():
    # a queued io job is held by nobody: whichever server has a free slot takes it
    assert not lifecycle.leased(job()) and not lifecycle.to_publish(job())
    assert lifecycle.leased(job(state="running")) and not lifecycle.leased(job(kind="cpu", state="running"))
    assert lifecycle.to_publish(job(kind="cpu")) and not lifecycle.leased(job(kind="cpu"))
    assert not lifecycle.leased(job(state="scheduled")) and not lifecycle.to_publish(job(kind="cpu", state="scheduled"))


def test_retry_at_honours_max_retries_and_a_usable_delay():
    assert lifecycle.retry_at(job(attempts=1, max_retries=0), True, None, lambda a: 1.0) is None
    assert lifecycle.retry_at(job(attempts=1, max_retries=1), False, None, lambda a: 1.0) is None
    before = time.time()
    at = lifecycle.retry_at(job(attempts=1, max_retries=1), True, 30, lambda a: 1.0)
    assert before + 30 <= at <= time.time() + 30                    # the delay asked for, not the backoff
    before = time.time()
    at = lifecycle.retry_at(job(attempts=1, max_retries=1), True, "soon", lambda a: 5.0)   # not a number: backoff
    assert before + 5 <= at <= time.time() + 5


def test_worker_claim_verdicts():
    judge = dict(redelivered=False, worker_dead=lambda holder: holder == "dead", max_redeliveries=1,
                 lease_seconds=5.0, now=100.0)
    go = lifecycle.judge_worker_claim(job(kind="cpu", timeout=10.0), None, None, **judge)
    assert go.answer == "go" and go.lease_until == 115.0
    running = job(kind="cpu", state=RUNNING, attempts=1)
    assert lifecycle.judge_worker_claim(running, "alive", 200.0, **judge).answer == "skip"
    assert lifecycle.judge_worker_claim(running, "dead", 200.0, **judge).answer == "go"
    assert lifecycle.judge_worker_claim(running, "alive", 50.0, **judge).answer == "go"     # lease expired
    lost = lifecycle.judge_worker_claim(job(kind="cpu", state=RUNNING, attempts=2), "dead", 200.0, **judge)
    assert lost.answer == "lost" and lost.error["kind"] == "worker_lost"
    assert lifecycle.judge_worker_claim(job(state="succeeded"), None, None, **judge).answer == "skip"


def test_outcome_shapes():
    ok = outcomes.succeeded({"a": 1}, 100)
    assert (ok.state, json.loads(ok.result_json)) == ("succeeded", {"a": 1})
    assert outcomes.succeeded(object(), 100).error["kind"] == "result_not_json"
    assert outcomes.succeeded(float("nan"), 100).error["kind"] == "result_not_json"
    assert outcomes.succeeded("x" * 200, 100).error["kind"] == "result_too_large"
    try:
        raise Retry("later", delay=3)
    except Retry as exc:
        retry = outcomes.from_exception(exc, None)
    assert (retry.error["kind"], retry.retryable, retry.delay) == ("retry", True, 3)
    assert "Retry: later" in retry.error["message"] and "Traceback" in retry.error["traceback"]
    picky = Handler("h", lambda: None, retry_on=(KeyError,))
    assert outcomes.from_exception(ValueError("no"), picky, tb="").retryable is False
    assert outcomes.from_exception(KeyError("k"), picky, tb="").retryable is True
    assert outcomes.timed_out(2.0).retryable and outcomes.timed_out(2.0).error["kind"] == "timeout"
    assert outcomes.cancelled().error == lifecycle.CANCELLED_BY_REQUEST


@pytest.mark.parametrize("outcome", [outcomes.succeeded([1, 2], 100), outcomes.failed("exception", "boom", "tb", True, 2.0),
                                     outcomes.unknown_handler("nope")])
def test_worker_messages_round_trip(outcome):
    message = json.loads(json.dumps(outcomes.to_message(outcome)))
    assert outcomes.from_message(message, 100) == outcome


def test_a_malformed_worker_result_is_a_failure_not_a_crash():
    assert outcomes.from_message({"state": "failed", "error": "??", "delay": True}, 100).error["kind"] == "exception"
    assert outcomes.from_message({"state": "succeeded", "result": "x" * 500}, 100).error["kind"] == "result_too_large"
