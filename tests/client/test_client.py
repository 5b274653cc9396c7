"""The Python client against a real server: submit, follow, results, errors, listing."""
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from greenjobs_client import (
    Client, Conflict, IdempotencyConflict, InvalidRequest, JobCancelled, JobFailed, NotFound, UnknownHandler,
    WaitTimeout, job_spec,
)
from tests.client.helpers import jobs_with

pytestmark = pytest.mark.e2e


def test_submit_and_result_like_celery_delay_and_get(client, marker):
    job = client.submit("echo", marker=marker, n=1)
    assert job.result(timeout=30) == {"marker": marker, "n": 1}
    assert job.status()["state"] == "succeeded"
    assert job.url == f"{client.base_url}/jobs/{job.id}"


def test_a_kwarg_may_be_named_handler_or_self(client):
    assert client.submit("echo", handler="x", self="y").result(30) == {"handler": "x", "self": "y"}


def test_positional_args_reach_the_handler(client):
    job = client.submit("client.args", 1, [2], x=3)
    assert job.result(30) == {"args": [1, [2]], "kwargs": {"x": 3}}


def test_submit_with_options(client, marker):
    job = client.submit_with("echo", kwargs={"marker": marker}, priority=7, timeout=5, max_retries=2, delay=30)
    seen = job.status()
    assert (seen["state"], seen["priority"], seen["timeout"], seen["max_retries"]) == ("scheduled", 7, 5.0, 2)
    assert job.cancel()["state"] == "cancelled"


def test_run_at_takes_a_datetime(client):
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    job = client.submit_with("echo", run_at=when)
    assert job.status()["state"] == "scheduled"
    assert job.status()["run_at"].startswith(when.strftime("%Y-%m-%dT%H:%M"))
    job.cancel()


def test_a_failed_job_raises_job_failed_with_the_remote_error(client):
    job = client.submit("fail", message="no such customer")
    with pytest.raises(JobFailed) as caught:
        job.result(timeout=30)
    error = caught.value
    assert error.kind == "exception"
    assert "no such customer" in error.message
    assert "Traceback" in error.traceback and "no such customer" in error.traceback
    assert error.job_id == job.id and len(error.errors) == 1
    assert "remote traceback" in str(error)


def test_a_timed_out_wait_leaves_the_job_running(client):
    job = client.submit("sleep", seconds=2)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        job.result(timeout=0.3)
    assert time.monotonic() - started < 1.5       # it did not wait for the job
    assert caught.value.last["state"] in ("queued", "running")
    assert isinstance(caught.value, TimeoutError)
    assert job.result(timeout=30) == {"slept": 2}    # the job went on and succeeded


def test_cancel_then_result_raises_job_cancelled(client):
    job = client.submit("sleep", seconds=30)
    assert job.cancel()["state"] == "cancelled"
    with pytest.raises(JobCancelled):
        job.result(timeout=10)


def test_retry_runs_a_failed_job_again(client):
    job = client.submit("flaky", fail_times=1)
    with pytest.raises(JobFailed):
        job.result(timeout=30)
    assert job.retry()["id"] == job.id
    assert job.result(timeout=30) == {"attempt": 2}


def test_typed_errors_carry_the_problem_detail(client):
    with pytest.raises(UnknownHandler) as caught:
        client.submit("no.such.handler")
    assert "echo" in caught.value.known_handlers and caught.value.status == 422
    assert "no.such.handler" in caught.value.detail

    with pytest.raises(InvalidRequest) as caught:
        client.submit_with("echo", priority=12)
    assert caught.value.field == "priority" and "0" in caught.value.detail

    with pytest.raises(NotFound) as caught:
        client.job("0" * 32).status()
    assert "0" * 32 in caught.value.detail

    done = client.submit("echo")
    done.result(30)
    with pytest.raises(Conflict) as caught:
        done.cancel()
    assert caught.value.status == 409 and "already ended" in caught.value.detail


def test_one_idempotency_key_makes_one_job_and_another_body_is_a_conflict(client, marker):
    first = client.submit_with("echo", kwargs={"marker": marker}, idempotency_key=f"k-{marker}")
    again = client.submit_with("echo", kwargs={"marker": marker}, idempotency_key=f"k-{marker}")
    assert again.id == first.id
    assert len(jobs_with(client, "echo", marker)) == 1
    with pytest.raises(IdempotencyConflict):
        client.submit_with("echo", kwargs={"marker": marker, "other": 1}, idempotency_key=f"k-{marker}")


def test_non_json_arguments_are_refused_before_any_request(client):
    with pytest.raises(TypeError, match="JSON"):
        client.submit("echo", when=datetime.now())
    with pytest.raises(TypeError, match="JSON"):
        client.submit("echo", x=float("nan"))


def test_submit_many_is_one_batch_and_waits_by_long_poll(client, marker):
    batch = client.submit_many(job_spec("echo", kwargs={"marker": marker, "n": n}) for n in range(25))
    assert len(batch) == 25 and batch.id
    counts = batch.wait(timeout=30)
    assert counts["done"] and counts["counts"]["succeeded"] == 25
    assert batch.results(timeout=30) == [{"marker": marker, "n": n} for n in range(25)]


def test_a_batch_is_all_or_nothing_and_names_the_bad_item(client, marker):
    specs = [job_spec("echo", kwargs={"marker": marker}), job_spec("echo", priority=99)]
    with pytest.raises(InvalidRequest) as caught:
        client.submit_many(specs)
    assert caught.value.field == "jobs[1].priority"
    assert jobs_with(client, "echo", marker) == []


def test_jobs_iterates_every_page_newest_first(client, marker):
    ids = [client.submit("echo", marker=marker, n=n).id for n in range(7)]
    listed = [job["id"] for job in client.jobs(handler="echo", page_size=2)
              if job["kwargs"].get("marker") == marker]
    assert listed == ids[::-1]
    assert len(list(client.jobs(handler="echo", page_size=2, limit=5))) == 5


def test_jobs_filters_by_state(client, marker):
    job = client.submit("fail", message=marker)
    with pytest.raises(JobFailed):
        job.result(30)
    failed = list(client.jobs(state="failed", handler="fail"))
    assert job.id in [j["id"] for j in failed] and {j["state"] for j in failed} == {"failed"}


def test_one_client_is_safe_to_share_between_threads(client, marker):
    results, errors = [], []

    def work(t):
        try:
            for n in range(10):
                results.append(client.submit("echo", marker=marker, t=t, n=n).result(30))
        except Exception as exc:     # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted((r["t"], r["n"]) for r in results) == [(t, n) for t in range(8) for n in range(10)]
    assert len(jobs_with(client, "echo", marker)) == 80


def test_base_url_must_be_http():
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:6543")
