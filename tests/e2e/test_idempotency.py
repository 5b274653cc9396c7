from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.faults
def test_fifty_concurrent_submissions_with_one_key_make_exactly_one_job(make_server):
    srv = make_server()
    body = {"handler": "sleep", "kwargs": {"seconds": 0.2}}

    def send(_):
        import requests
        r = requests.post(srv.url + "/jobs", json=body, headers={"Idempotency-Key": "same-key"}, timeout=30)
        return r.status_code, r.json()["id"]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, range(50)))
    assert {status for status, _ in answers} <= {200, 202}
    assert [status for status, _ in answers].count(202) == 1
    assert len({job_id for _, job_id in answers}) == 1
    assert len(srv.get("/jobs?handler=sleep&limit=100").json()["jobs"]) == 1


@pytest.mark.faults
def test_the_key_survives_a_crash(make_server):
    srv = make_server()
    first = srv.post("/jobs", {"handler": "echo", "kwargs": {"n": 1}}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    srv.kill()
    srv.start()
    again = srv.post("/jobs", {"handler": "echo", "kwargs": {"n": 1}}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
