"""Scenario 12: one Idempotency-Key from 50 concurrent clients makes exactly one job, also when the
server dies after committing the job and before its answer reaches anyone."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.helpers import list_all, wait_until
from tests.faults.ledger import Ledger

pytestmark = pytest.mark.faults

APP = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.faults.fault_handlers", "greenjobs.store.lease_seconds": 2,
       "greenjobs.shutdown.grace": 0.5, "greenjobs.workers.cpu": 0, "pyramid.includes": "tests.faults.crash_probe"}


def _send(url, body, key, crash):
    """POST until the server answers (a client retrying after a dropped connection, as it should)."""
    headers = {"Idempotency-Key": key, **({"X-Test-Crash": "after-commit"} if crash else {})}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return requests.post(url + "/jobs", json=body, headers=headers, timeout=10)
        except requests.RequestException:
            time.sleep(0.05)                   # dropped or refused: the server is down, try again
    raise AssertionError("the server never answered")


def test_one_key_fifty_clients_and_a_crash_before_the_answer_make_one_job(make_server, store_backend):
    srv = make_server(app={**APP, **store_backend}, name="idem")
    ledger = Ledger(srv.ini.parent)
    body = {"handler": "fault.io", "kwargs": {"seconds": 0.3}}
    # the first submission is accepted and committed, then the server dies before answering
    with pytest.raises(requests.ConnectionError):
        requests.post(srv.url + "/jobs", json=body, timeout=10,
                      headers={"Idempotency-Key": "order-1", "X-Test-Crash": "after-commit"})
    assert srv.proc.wait(10) != 0
    # 50 clients retry the same request concurrently while the server comes back
    with ThreadPoolExecutor(50) as pool:
        pending = [pool.submit(_send, srv.url, body, "order-1", False) for _ in range(50)]
        srv.start()
        answers = [f.result() for f in pending]
    assert {a.status_code for a in answers} == {200}, [a.text[:200] for a in answers if a.status_code != 200]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    for a in answers:
        ledger.accept(a)
    jobs = list_all(srv, handler="fault.io")
    assert [j["id"] for j in jobs] == list(ids)
    wait_until(lambda: srv.wait(next(iter(ids)), 5)["state"] == "succeeded", 60, message="the one job succeeded")
    report = ledger.report({j["id"]: j for j in list_all(srv)})
    print({k: len(v) for k, v in report.items()}, "executions:", dict(ledger.executions()))
    assert not report["lost"] and not report["stuck"] and not report["unexpected"], report


def test_fifty_concurrent_first_submissions_with_a_crash_make_one_job(make_server, store_backend):
    """All 50 race for the key at once; whichever commits first kills the server before answering."""
    srv = make_server(app={**APP, **store_backend}, name="race")
    body = {"handler": "fault.io", "kwargs": {"seconds": 0.3}}
    with ThreadPoolExecutor(50) as pool:
        first = [pool.submit(_try, srv.url, body) for _ in range(50)]
        results = [f.result() for f in first]
    assert srv.proc.wait(10) != 0                 # the crash happened
    # a 202 can never have reached a client (the server died before writing it); a 200 can
    assert all(r is None or r.status_code == 200 for r in results), [r.status_code for r in results if r]
    srv.start()
    again = [_send(srv.url, body, "race-key", False) for _ in range(5)]
    assert {a.status_code for a in again} == {200}
    assert len({a.json()["id"] for a in again} | {r.json()["id"] for r in results if r is not None}) == 1
    assert len(list_all(srv, handler="fault.io")) == 1


def _try(url, body):
    try:
        return requests.post(url + "/jobs", json=body, timeout=10,
                             headers={"Idempotency-Key": "race-key", "X-Test-Crash": "after-commit"})
    except requests.RequestException:
        return None
