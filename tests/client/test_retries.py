"""Safe retries, through a proxy that breaks connections and answers 429/503 in front of a real server."""
import json

import pytest

from greenjobs_client import Client, ConnectionFailed, Overloaded, Unavailable, job_spec
from tests.client.helpers import jobs_with

pytestmark = pytest.mark.e2e


def test_a_submit_whose_answer_was_lost_is_sent_again_and_makes_one_job(proxy, client, marker):
    proxy.add("POST", "/jobs", "reset")         # the server stores the job; the client hears a reset
    job = Client(proxy.url, retries=3).submit("echo", marker=marker)
    sent = proxy.seen("POST", "/jobs")
    assert len(sent) == 2
    assert sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]
    assert sent[0].body == sent[1].body
    assert [j["id"] for j in jobs_with(client, "echo", marker)] == [job.id]


def test_a_submit_that_timed_out_is_sent_again_and_makes_one_job(proxy, client, marker):
    proxy.add("POST", "/jobs", "delay", seconds=1.5)    # answered after the client gave up
    job = Client(proxy.url, timeout=0.5, retries=3).submit("echo", marker=marker)
    assert len(proxy.seen("POST", "/jobs")) == 2
    assert [j["id"] for j in jobs_with(client, "echo", marker)] == [job.id]


def test_429_and_503_are_retried_honouring_retry_after(proxy, client, marker):
    problem = json.dumps({"status": 429, "title": "Too many jobs pending", "detail": "backlog full"}).encode()
    proxy.add("POST", "/jobs", "answer", status=429, headers={"Retry-After": "0.3"}, body=problem)
    proxy.add("POST", "/jobs", "answer", status=503, headers={"Retry-After": "0.3"}, body=problem)
    job = Client(proxy.url, retries=3).submit("echo", marker=marker)
    sent = proxy.seen("POST", "/jobs")
    assert len(sent) == 3 and len({r.headers["idempotency-key"] for r in sent}) == 1
    assert [later.at - earlier.at >= 0.3 for earlier, later in zip(sent, sent[1:])] == [True, True]
    assert job.result(30) == {"marker": marker}


def test_retries_are_bounded_and_the_last_answer_is_raised_with_its_detail(proxy):
    body = json.dumps({"status": 429, "title": "Too many jobs pending", "detail": "42 jobs pending"}).encode()
    proxy.add("POST", "/jobs", "answer", status=429, headers={"Retry-After": "0"}, body=body, times=10)
    with pytest.raises(Overloaded) as caught:
        Client(proxy.url, retries=2).submit("echo")
    assert caught.value.detail == "42 jobs pending" and caught.value.retry_after == 0
    assert len(proxy.seen("POST", "/jobs")) == 3


def test_a_long_retry_after_is_capped_by_max_retry_wait(proxy):
    body = json.dumps({"status": 503, "title": "Shutting down", "detail": "retry shortly"}).encode()
    proxy.add("POST", "/jobs", "answer", status=503, headers={"Retry-After": "3600"}, body=body, times=10)
    with pytest.raises(Unavailable, match="retry shortly"):
        Client(proxy.url, retries=1, max_retry_wait=0.1).submit("echo")
    assert len(proxy.seen("POST", "/jobs")) == 2


def test_a_cancel_whose_answer_was_lost_is_not_sent_again(proxy, client):
    job = client.submit("sleep", seconds=30)
    proxy.add("DELETE", "/jobs/", "reset")
    with pytest.raises(ConnectionFailed, match="may or may not"):
        Client(proxy.url, retries=3).job(job.id).cancel()
    assert len(proxy.seen("DELETE", "/jobs/")) == 1
    assert job.status()["state"] == "cancelled"


def test_a_long_poll_that_broke_is_resumed(proxy, client):
    job = client.submit("sleep", seconds=0.5)
    proxy.add("GET", f"/jobs/{job.id}", "reset")
    assert Client(proxy.url, retries=3).job(job.id).result(30) == {"slept": 0.5}


def test_a_batch_whose_answer_was_lost_is_sent_again_with_the_same_item_keys(proxy, client, marker):
    c = Client(proxy.url, retries=3)
    assert c.batch_keys()       # this server takes per-item idempotency keys
    proxy.add("POST", "/jobs/batch", "reset")
    batch = c.submit_many(job_spec("echo", kwargs={"marker": marker, "n": n}) for n in range(5))
    sent = proxy.seen("POST", "/jobs/batch")
    assert len(sent) == 2 and sent[0].body == sent[1].body
    assert sorted(j["id"] for j in jobs_with(client, "echo", marker)) == sorted(batch.ids)
    assert batch.id is not None and batch.repeated == [0, 1, 2, 3, 4]    # the original batch, named again
    assert batch.wait(30)["counts"]["succeeded"] == 5


def test_without_per_item_keys_a_batch_is_never_sent_twice(proxy, client, marker):
    def older_server(body: bytes) -> bytes:       # an OpenAPI document without batch item keys
        doc = json.loads(body)
        items = doc["paths"]["/jobs/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"]["jobs"]["items"]
        items.get("properties", {}).pop("idempotency_key", None)
        return json.dumps(doc).encode()
    proxy.add("GET", "/openapi.json", "rewrite", rewrite=older_server)
    proxy.add("POST", "/jobs/batch", "reset")
    c = Client(proxy.url, retries=3)
    with pytest.raises(ConnectionFailed, match="may or may not"):
        c.submit_many(job_spec("echo", kwargs={"marker": marker, "n": n}) for n in range(3))
    sent = proxy.seen("POST", "/jobs/batch")
    assert len(sent) == 1 and b"idempotency_key" not in sent[0].body
    assert len(jobs_with(client, "echo", marker)) == 3        # made once, by the one request


def test_a_server_that_is_not_there_is_a_connection_error():
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        Client("http://127.0.0.1:9", retries=1).submit("echo")


def test_requests_reuse_one_keep_alive_connection(proxy):
    c = Client(proxy.url)
    for n in range(20):
        c.submit("echo", n=n)
    c.job(c.submit("echo").id).result(30)
    assert proxy.connections == 1


def test_a_token_is_sent_as_a_bearer_authorization(proxy):
    Client(proxy.url, token="s3cret").submit("echo")
    Client(proxy.url).submit("echo")
    auth = [r.headers.get("authorization") for r in proxy.seen("POST", "/jobs")]
    assert auth == ["Bearer s3cret", None]


def test_result_waits_by_long_poll_not_by_polling(proxy, client):
    job = Client(proxy.url, wait_chunk=30).submit("sleep", seconds=1)
    assert job.result(timeout=30) == {"slept": 1}
    polls = proxy.seen("GET", f"/jobs/{job.id}")
    assert len(polls) == 1 and "wait=30" in polls[0].path
