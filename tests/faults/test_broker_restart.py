"""Fault scenario 4: the RabbitMQ broker is stopped, started, killed and started again under 500 cpu jobs.

The broker is a private node this test starts itself (tests/faults/rabbit_node.py: another node
name, port and data folder), so the shared RabbitMQ on 127.0.0.1:5672 is never touched.  Jobs are
submitted throughout (a batch first, single jobs all along, a batch right after each fault, a last
batch at the end), so some submissions reach the server while the broker is down.  A submission the
server refuses (503 + Retry-After: it knows the broker is down) was not accepted and is sent again;
only 200/202 answers go into the ledger.  Every accepted job must succeed: publishing is blocked or
retried, never dropped.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
import requests

from tests.e2e.helpers import PROBLEM, list_all, wait_until
from tests.faults.ledger import TERMINAL, Ledger
from tests.faults.rabbit_node import RabbitNode, find_script

pytestmark = pytest.mark.faults

TOTAL = 500
FIRST_BATCH = 100
FAULT_BATCH = 75          # submitted right after each fault, while the broker is down
MAX_SINGLES = 150
JOB = {"handler": "fault.cpu", "kwargs": {"seconds": 0.02}}
DOWN_SECONDS = 3.0


@pytest.fixture
def rabbit(tmp_path):
    """A private RabbitMQ node on a free port; stopped (and its process group killed) at teardown."""
    if find_script("rabbitmq-server") is None or find_script("rabbitmqctl") is None:
        if os.environ.get("CI"):
            pytest.fail("rabbitmq-server is not installed and CI is set: the broker-restart test needs it")
        pytest.skip("rabbitmq-server is not installed")
    node = RabbitNode(tmp_path / "rabbit")
    try:
        node.start(timeout=60)
        yield node
    finally:
        node.close()


class Client:
    """Submits jobs the way a careful client does: an idempotency key on every job, and every refusal
    or transport error retried until the server accepts (bounded)."""

    def __init__(self, srv, ledger: Ledger):
        self.srv = srv
        self.ledger = ledger
        self.lock = threading.Lock()
        self.refusals: list[tuple[int, dict, str]] = []     # (status, headers, body) of every non-2xx answer
        self.transport_errors: list[str] = []
        self.submitted = 0                                   # jobs accepted by this client

    def submit(self, count: int, give_up_after: float = 60.0) -> list[str]:
        """Submit ``count`` fault.cpu jobs (one POST /jobs, or a POST /jobs/batch) until accepted."""
        session = requests.Session()
        if count == 1:
            path, body, headers = "/jobs", dict(JOB), {"Idempotency-Key": uuid.uuid4().hex}
        else:
            path, headers = "/jobs/batch", {}
            body = {"jobs": [{**JOB, "idempotency_key": uuid.uuid4().hex} for _ in range(count)]}
        deadline = time.monotonic() + give_up_after
        try:
            while True:
                try:
                    response = session.post(self.srv.url + path, json=body, headers=headers, timeout=30)
                except requests.RequestException as exc:
                    with self.lock:
                        self.transport_errors.append(f"{path}: {exc!r}")
                    response = None
                if response is not None and response.status_code in (200, 202):
                    with self.lock:
                        self.ledger.accept(response)
                        self.submitted += count
                    payload = response.json()
                    return payload.get("ids") or [payload["id"]]
                if response is not None:
                    with self.lock:
                        self.refusals.append((response.status_code, dict(response.headers), response.text[:500]))
                if time.monotonic() > deadline:
                    raise AssertionError(f"{path} with {count} jobs not accepted within {give_up_after} s; "
                                         f"last answer {response.status_code if response is not None else None}")
                time.sleep(0.5)   # sooner than Retry-After asks: the test keeps probing the outage
        finally:
            session.close()


def _executions(ledger: Ledger) -> tuple[int, int]:
    runs = ledger.executions()
    return sum(c["start"] for c in runs.values()), sum(c["done"] for c in runs.values())


def _log_excerpt(srv, lines: int = 80) -> str:
    keep = [line for line in srv.log().splitlines()
            if any(word in line for word in ("ERROR", "WARN", "Traceback", "broker", "outbox", "exited"))]
    return "\n".join(keep[-lines:])


def test_rabbitmq_stopped_started_and_killed_under_500_cpu_jobs_loses_nothing(rabbit, make_server):
    srv = make_server(app={
        "greenjobs.handlers": "greenjobs.handlers.builtin tests.faults.fault_handlers",
        "greenjobs.broker.url": rabbit.url,
        "greenjobs.broker.connect_timeout": 2,
        "greenjobs.broker.confirm_timeout": 5,
        "greenjobs.workers.cpu": 2,
        "greenjobs.shutdown.grace": 0.5,
    }, name="srv")
    ledger = Ledger(srv.ini.parent)
    client = Client(srv, ledger)
    began = time.monotonic()
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.1f}s {what} (done {_executions(ledger)[1]},"
                        f" accepted {len(ledger.accepted)})")

    # 1. a first batch, then single submissions all along the faults
    client.submit(FIRST_BATCH)
    mark("first batch accepted")
    faults_over = threading.Event()
    single_errors: list[BaseException] = []

    def singles():
        try:
            for _ in range(MAX_SINGLES):
                if faults_over.is_set():
                    return
                client.submit(1)
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            single_errors.append(exc)
    single_thread = threading.Thread(target=singles, name="singles", daemon=True)
    single_thread.start()
    wait_until(lambda: _executions(ledger)[1] >= 30, 60, interval=0.1, message="30 cpu jobs done before the stop")

    def batch_in_background(name: str) -> threading.Thread:
        def run():
            try:
                client.submit(FAULT_BATCH, give_up_after=90)
            except BaseException as exc:  # noqa: BLE001
                single_errors.append(exc)
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    # 2. graceful stop (rabbitmqctl stop), a few seconds down, start again on the same data
    mark("stopping the broker")
    rabbit.stop()
    mark("broker stopped")
    batches = [batch_in_background("after-stop")]
    time.sleep(DOWN_SECONDS)
    rabbit.start(timeout=60)
    mark("broker started again")
    done_before = _executions(ledger)[1]
    wait_until(lambda: _executions(ledger)[1] >= done_before + 40, 60, interval=0.1,
               message=f"40 more cpu jobs done after the broker came back\n{_log_excerpt(srv)}")
    mark("progress after the restart")

    # 3. crash: SIGKILL the node's beam.smp, a few seconds down, start again (durable data survives)
    pid = rabbit.kill()
    mark(f"broker killed (beam pid {pid})")
    batches.append(batch_in_background("after-kill"))
    time.sleep(DOWN_SECONDS)
    rabbit.start(timeout=60)
    mark("broker started after the kill")
    done_before = _executions(ledger)[1]
    wait_until(lambda: _executions(ledger)[1] >= done_before + 20, 60, interval=0.1,
               message=f"20 more cpu jobs done after the broker came back from the kill\n{_log_excerpt(srv)}")
    mark("progress after the second restart")

    # 4. the rest, then wait until every accepted job is terminal
    faults_over.set()
    single_thread.join(60)
    for thread in batches:
        thread.join(90)
    assert not single_thread.is_alive() and not any(t.is_alive() for t in batches), "a submitter hung"
    assert not single_errors, single_errors
    rest = TOTAL - client.submitted
    if rest > 0:
        client.submit(rest)
    mark("all submitted")
    assert len(ledger.accepted) == TOTAL, (len(ledger.accepted), client.submitted)

    deadline = time.monotonic() + 180
    final: dict[str, dict] = {}
    while time.monotonic() < deadline:
        final = {job["id"]: job for job in list_all(srv)}
        if all(final.get(j, {}).get("state") in TERMINAL for j in ledger.accepted):
            break
        time.sleep(0.5)
    mark("waited for terminal states")
    health = srv.get("/health").json()

    report = ledger.report(final)
    runs = ledger.executions()
    executions, _ = _executions(ledger)
    restarted = {j for j, c in runs.items() if c["start"] > 1}
    refused = [status for status, _, _ in client.refusals]
    states: dict[str, int] = {}
    for job_id in ledger.accepted:
        state = final.get(job_id, {}).get("state", "missing")
        states[state] = states.get(state, 0) + 1
    summary = {"accepted": len(ledger.accepted), "executions": executions, "restarted": len(restarted),
               "duplicates": len(report["duplicated"]), "503s": refused.count(503), "other refusals":
               len(refused) - refused.count(503), "transport errors": len(client.transport_errors),
               "lost": len(report["lost"]), "stuck": len(report["stuck"]), "unexpected": len(report["unexpected"]),
               "states": states, "seconds": round(time.monotonic() - began, 1),
               "cpu": health.get("cpu")}
    print("\n" + "\n".join(timeline))
    print("broker restart:", summary)
    context = f"{summary}\n{chr(10).join(timeline)}\nserver log (excerpt):\n{_log_excerpt(srv)}"

    # every refusal was the documented one: 503, Retry-After, a problem+json that says why; never a 500
    for status, headers, body in client.refusals:
        assert status == 503, (status, body, context)
        assert int(headers.get("Retry-After", "0")) > 0, (headers, body)
        assert headers.get("Content-Type", "").split(";")[0].strip().lower() == PROBLEM, (headers, body)
        assert "broker" in body.lower(), body
    assert not client.transport_errors, (client.transport_errors[:5], context)

    # the ledger: nothing lost, nothing stuck, nothing run that was never accepted
    assert not report["lost"], (sorted(report["lost"])[:10], context)
    assert not report["stuck"], ({j: final[j]["state"] for j in sorted(report["stuck"])[:10]}, context)
    assert not report["unexpected"], (sorted(report["unexpected"])[:10], context)
    not_succeeded = {j: (final.get(j) or {}).get("state") for j in ledger.accepted
                     if (final.get(j) or {}).get("state") != "succeeded"}
    assert not not_succeeded, (dict(list(not_succeeded.items())[:10]),
                               [final[j].get("error") for j in list(not_succeeded)[:3] if j in final], context)
    # at-least-once: a job completed twice only if it was started more than once (interrupted)
    assert report["duplicated"] <= restarted, (report["duplicated"] - restarted, context)
