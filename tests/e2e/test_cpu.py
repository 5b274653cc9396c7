"""CPU jobs end to end: a real pserve with its supervised worker processes, on both brokers.

Every cpu-path test runs twice through the ``broker_settings`` fixture: on the embedded SQLite
transport (the default) and on RabbitMQ (127.0.0.1:5672).  Worker processes are found as the
children of the pserve process (``/proc/<pid>/task/*/children``) or through the test-only
handlers of tests/e2e/cpu_handlers.py, which report their pid.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
from kombu import Connection, Producer, Queue

from tests.e2e.helpers import (PROBLEM, QUICK_STOP, assert_problem, list_all, media_type, parse_time, submit_batch,
                               wait_batch, wait_job, wait_until)
from tests.support import free_port, stop_all

pytestmark = pytest.mark.e2e

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
CPU_HANDLERS = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.e2e.cpu_handlers"}


def pbkdf2(iterations: int, password: str = "x", salt: str = "y") -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()


def cpu_app(broker_settings: dict, workers: int, **extra) -> dict:
    return {**QUICK_STOP, **CPU_HANDLERS, "greenjobs.workers.cpu": workers, **broker_settings, **extra}


def namespace(broker_settings: dict) -> str:
    return broker_settings.get("greenjobs.broker.namespace", "greenjobs")


def broker_url(srv, broker_settings: dict) -> str:
    """The kombu URL of the broker the server uses (the embedded one lives next to its ini)."""
    if "greenjobs.broker.url" in broker_settings:
        return broker_settings["greenjobs.broker.url"]
    from greenjobs.pool.cpu import embedded
    embedded.register()
    return "embedded:///" + str(Path(srv.ini).parent / "var" / "queue.sqlite")


@pytest.fixture
def cpu_server(make_server, broker_settings):
    """``cpu_server(workers, **app)``: a server on this test's broker; RabbitMQ queues are deleted afterwards."""
    started = []

    def make(workers: int = 2, **extra):
        srv = make_server(app=cpu_app(broker_settings, workers, **extra), name=f"srv{len(started)}")
        started.append(srv)
        wait_until(lambda: cpu_health(srv)["broker_connected"], 30, message="server connected to the broker")
        return srv

    yield make
    stop_all(started)
    if "greenjobs.broker.url" in broker_settings:
        ns = namespace(broker_settings)
        try:
            with Connection(AMQP_URL, connect_timeout=5) as conn:
                for name in (f"{ns}.jobs.cpu", f"{ns}.control", f"{ns}.dead"):
                    channel = conn.channel()
                    try:
                        channel.queue_delete(name)
                    finally:
                        channel.close()
        except Exception:       # cleanup only; a leftover queue has a unique name
            pass


# ---------------------------------------------------------------------------------------------
# Observing the workers
# ---------------------------------------------------------------------------------------------

def cpu_health(srv) -> dict:
    response = srv.get("/health", timeout=10)
    assert response.status_code == 200, response.text[:500]
    return response.json()["cpu"]


def children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.update(int(p) for p in fh.read().split())
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):       # gone, or going (ESRCH while reading)
        return False


def worker_pids(srv) -> set[int]:
    """Live worker processes (``python -m greenjobs.pool.cpu.worker --one``) that are children of the pserve process."""
    pids = set()
    for pid in children(srv.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().split(b"\0")
        except OSError:
            continue
        if b"greenjobs.pool.cpu.worker" in cmdline and alive(pid):
            pids.add(pid)
    return pids


def wait_workers(srv, count: int, gone: set[int] = frozenset(), timeout: float = 30.0) -> set[int]:
    """Wait until health and /proc both show ``count`` live workers, none of them in ``gone``."""
    def check():
        pids = worker_pids(srv)
        if cpu_health(srv)["workers"] == count and len(pids) == count and not pids & set(gone):
            return pids
        return None
    return wait_until(check, timeout, interval=0.1, message=f"{count} live workers (none of {sorted(gone)})")


def get_job(srv, job_id: str) -> dict:
    response = srv.get(f"/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def wait_running(srv, job_id: str, timeout: float = 30.0, progress: bool = False) -> dict:
    """Wait until the job runs on a worker (and, with ``progress``, has reported its progress)."""
    def check():
        job = get_job(srv, job_id)
        assert job["state"] not in ("succeeded", "failed", "cancelled"), job
        return job if job["state"] == "running" and (not progress or job["progress"]) else None
    return wait_until(check, timeout, interval=0.05, message=f"job {job_id} running")


def progress_pid(job: dict) -> int:
    """The pid an e2ecpu.gate job reported: progress message 'pid N attempt A'."""
    words = job["progress"]["message"].split()
    assert words[0] == "pid", job["progress"]
    return int(words[1])


def run_pid_job(srv, timeout: float = 60.0) -> dict:
    """Submit e2ecpu.pid, wait for it, and check it succeeded in a live worker of this server."""
    job = wait_job(srv, srv.submit("e2ecpu.pid")["id"], timeout)
    assert job["state"] == "succeeded", job
    return job


# ---------------------------------------------------------------------------------------------
# 1. Many jobs, right answers
# ---------------------------------------------------------------------------------------------

def test_200_pbkdf2_jobs_all_succeed_with_the_right_digest(cpu_server):
    srv = cpu_server(workers=2)
    specs = []
    for i in range(200):
        kwargs = {"iterations": 20000 + i}
        if i % 4:                      # one in four keeps the defaults password "x", salt "y"
            kwargs.update(password=f"pw-{i}", salt=f"salt-{i % 13}")
        specs.append({"handler": "cpu.pbkdf2", "kwargs": kwargs})
    batch = submit_batch(srv, specs)
    final = wait_batch(srv, batch["batch"], 150)
    assert final["counts"]["succeeded"] == 200, final["counts"]

    jobs = {j["id"]: j for j in list_all(srv, handler="cpu.pbkdf2")}
    assert set(jobs) == set(batch["ids"])
    wrong = []
    for job_id, spec in zip(batch["ids"], specs):
        job = jobs[job_id]
        assert job["kind"] == "cpu" and job["state"] == "succeeded", job
        assert job["attempts"] == 1, job
        expected = pbkdf2(**spec["kwargs"])
        if job["result"] != expected:
            wrong.append((job_id, spec["kwargs"], job["result"], expected))
    assert not wrong, f"{len(wrong)} wrong digests, e.g. {wrong[:3]}"
    health = cpu_health(srv)
    assert health["running"] == 0 and health["to_publish"] == 0 and health["published"] >= 200, health
    assert health["workers"] == 2 and health["worker_restarts"] == 0, health
    # the supervised workers claimed and reported over their direct lines, not the broker's control queue
    assert health["lines"] == 2, health
    assert health["messages"].get("line:claim") == 200 and health["messages"].get("line:result") == 200, health
    assert not any(key.startswith("broker:") for key in health["messages"]), health
    assert 'greenjobs_cpu_worker_messages_total{route="line",type="claim"} 200.0' in srv.get("/metrics").text


# ---------------------------------------------------------------------------------------------
# 2. A worker SIGKILLed mid-job
# ---------------------------------------------------------------------------------------------

@pytest.mark.faults
def test_sigkill_of_a_worker_mid_job_reruns_the_job_and_replaces_the_worker(cpu_server, tmp_path):
    srv = cpu_server(workers=2)
    before = wait_workers(srv, 2)
    gate = tmp_path / "open"
    job = srv.submit("e2ecpu.gate", kwargs={"path": str(gate), "limit": 60})
    running = wait_running(srv, job["id"], progress=True)
    victim = progress_pid(running)
    assert victim in before, (victim, before)
    assert running["attempts"] == 1

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), 10, message=f"worker {victim} dead")
    # the job is delivered again and runs on another worker (not the dead one)
    rerun = wait_until(lambda: (lambda j: j if j["attempts"] >= 2 and j["progress"]
                                and progress_pid(j) != victim else None)(get_job(srv, job["id"])),
                       60, interval=0.1, message="job started again on another worker")
    assert rerun["state"] == "running", rerun
    gate.touch()

    done = wait_job(srv, job["id"], 60)
    assert done["state"] == "succeeded", done
    assert done["attempts"] >= 2, done
    assert done["result"]["opened"] is True and done["result"]["pid"] != victim, done
    assert done["result"]["attempt"] == done["attempts"], done

    after = wait_workers(srv, 2, gone={victim})
    assert victim not in after
    assert cpu_health(srv)["worker_restarts"] >= 1
    wait_until(lambda: cpu_health(srv)["lines"] == 2, 10, message="the dead worker's line closed, its successor's open")
    assert run_pid_job(srv)["result"]["pid"] in worker_pids(srv)


def test_rerun_after_a_worker_death_gets_its_own_full_timeout(cpu_server, tmp_path):
    """The hard time limit counts from the start of each attempt.

    Attempt 1 runs ~5 s of its 8 s timeout, then its worker is SIGKILLed; attempt 2 starts on
    another worker and is released after ~4.5 s, well inside its own 8 s.  It must succeed: the
    first attempt's timer (due 8 s after attempt 1 started, i.e. during attempt 2) must not fire.
    """
    srv = cpu_server(workers=2)
    gate = tmp_path / "open"
    job = srv.submit("e2ecpu.gate", kwargs={"path": str(gate), "limit": 60}, timeout=8)
    first = wait_running(srv, job["id"], progress=True)
    victim = progress_pid(first)
    first_start = parse_time(first["started_at"]).timestamp()
    time.sleep(max(0.0, min(6.0, first_start + 5.0 - time.time())))
    os.kill(victim, signal.SIGKILL)

    second = wait_until(lambda: (lambda j: j if j["state"] != "running" or (
        j["attempts"] >= 2 and j["progress"] and progress_pid(j) != victim) else None)(get_job(srv, job["id"])),
        30, interval=0.05, message="attempt 2 running")
    assert second["state"] == "running" and second["attempts"] == 2, second
    second_start = parse_time(second["started_at"]).timestamp()
    assert second_start >= first_start + 5.0 - 0.5, (first["started_at"], second["started_at"])
    # past the moment attempt 1's timeout would have expired, still inside attempt 2's own timeout
    time.sleep(max(0.0, min(6.0, second_start + 4.5 - time.time())))
    gate.touch()

    done = wait_job(srv, job["id"], 30)
    ended = parse_time(done["finished_at"]).timestamp()
    assert done["state"] == "succeeded", (
        f"attempt 2 started {second_start - first_start:.1f} s after attempt 1 and was to be released after 4.5 s "
        f"of its 8 s timeout, yet the job ended {done['state']} {ended - second_start:.1f} s into attempt 2 "
        f"({ended - first_start:.1f} s after attempt 1 started): {done['error']}")
    assert done["attempts"] == 2 and done["result"]["attempt"] == 2, done


# ---------------------------------------------------------------------------------------------
# 3. Hard time limit
# ---------------------------------------------------------------------------------------------

def test_timeout_kills_and_replaces_the_worker(cpu_server):
    srv = cpu_server(workers=1)
    (old,) = wait_workers(srv, 1)
    job = srv.submit("cpu.spin", kwargs={"seconds": 30}, timeout=1)
    assert job["timeout"] == 1
    wait_running(srv, job["id"])
    assert worker_pids(srv) == {old}

    done = wait_job(srv, job["id"], 25)       # long before the 30 s spin would end by itself
    assert done["state"] == "failed", done
    assert done["error"]["kind"] == "timeout", done["error"]
    assert done["result"] is None and done["attempts"] == 1, done

    wait_until(lambda: not alive(old), 15, message=f"timed-out worker {old} killed")
    (new,) = wait_workers(srv, 1, gone={old})
    assert new != old
    health = cpu_health(srv)
    assert health["workers"] == 1 and health["worker_restarts"] >= 1 and health["running"] == 0, health

    following = run_pid_job(srv)
    assert following["result"]["pid"] == new
    # the timed-out job stays failed: its redelivered message was skipped, never run again
    again = get_job(srv, job["id"])
    assert again["state"] == "failed" and again["attempts"] == 1, again
    assert again["finished_at"] == done["finished_at"]


# ---------------------------------------------------------------------------------------------
# 4. Cancel a running cpu job
# ---------------------------------------------------------------------------------------------

def test_cancel_of_a_running_cpu_job_kills_and_replaces_its_worker(cpu_server):
    srv = cpu_server(workers=1)
    (old,) = wait_workers(srv, 1)
    job = srv.submit("cpu.spin", kwargs={"seconds": 30})
    wait_running(srv, job["id"])

    response = srv.delete(f"/jobs/{job['id']}", timeout=30)
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["state"] == "cancelled" and cancelled["result"] is None, cancelled
    assert cancelled["error"]["kind"] == "cancelled", cancelled

    wait_until(lambda: not alive(old), 15, message=f"worker {old} of the cancelled job killed")
    (new,) = wait_workers(srv, 1, gone={old})
    following = run_pid_job(srv)
    assert following["result"]["pid"] == new

    # it stays cancelled (the redelivered message is skipped; the spin never reports success)
    final = get_job(srv, job["id"])
    assert final["state"] == "cancelled" and final["result"] is None and final["attempts"] == 1, final
    assert final["finished_at"] == cancelled["finished_at"]
    assert_problem(srv.delete(f"/jobs/{job['id']}"), 409, job["id"])
    health = cpu_health(srv)
    assert health["running"] == 0 and health["workers"] == 1 and health["worker_restarts"] >= 1, health


# ---------------------------------------------------------------------------------------------
# 5. Cancel a queued cpu job
# ---------------------------------------------------------------------------------------------

def test_cancel_of_a_queued_cpu_job_never_runs_it(cpu_server, tmp_path):
    srv = cpu_server(workers=1)
    gate = tmp_path / "open"
    blocker = srv.submit("e2ecpu.gate", kwargs={"path": str(gate), "limit": 60})
    blocker_pid = progress_pid(wait_running(srv, blocker["id"], progress=True))
    queued = srv.submit("e2ecpu.pid")
    assert queued["state"] == "queued", queued
    wait_until(lambda: cpu_health(srv)["to_publish"] == 0 and cpu_health(srv)["published"] >= 2, 15,
               message="queued job published to the broker")

    response = srv.delete(f"/jobs/{queued['id']}", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "cancelled" and body["attempts"] == 0 and body["started_at"] is None, body

    gate.touch()
    assert wait_job(srv, blocker["id"], 60)["state"] == "succeeded"
    # a job submitted after it runs, so the worker has passed over the cancelled one's message
    following = run_pid_job(srv)
    assert following["result"]["pid"] == blocker_pid, "no worker should have died"
    final = get_job(srv, queued["id"])
    assert final["state"] == "cancelled" and final["attempts"] == 0, final
    assert final["started_at"] is None and final["result"] is None, final
    assert cpu_health(srv)["worker_restarts"] == 0


# ---------------------------------------------------------------------------------------------
# 6. Priority order on one worker
# ---------------------------------------------------------------------------------------------

PRIORITIES = [3, 9, 0, 5, 1, 7, 2, 8, 4, 6, 0, 9]


def test_priority_orders_cpu_jobs_on_one_worker(cpu_server, tmp_path):
    srv = cpu_server(workers=1)
    gate = tmp_path / "open"
    blocker = srv.submit("e2ecpu.gate", kwargs={"path": str(gate), "limit": 60})
    wait_running(srv, blocker["id"], progress=True)
    ids = []
    for priority in PRIORITIES:
        job = srv.submit("e2ecpu.pid", priority=priority)
        assert job["state"] == "queued" and job["priority"] == priority, job
        ids.append(job["id"])
    # every job is on the broker before the worker is free to take one
    wait_until(lambda: (lambda h: h["to_publish"] == 0 and h["published"] >= 1 + len(ids))(cpu_health(srv)), 15,
               message="every job published")
    gate.touch()

    jobs = [wait_job(srv, job_id, 60) for job_id in ids]
    assert all(j["state"] == "succeeded" for j in jobs), [(j["state"], j["error"]) for j in jobs]
    starts = [parse_time(j["started_at"]) for j in jobs]
    assert len(set(starts)) == len(starts), "two jobs started at the same millisecond on one worker"
    order = [PRIORITIES[n] for n in sorted(range(len(ids)), key=lambda n: starts[n])]
    assert order == sorted(PRIORITIES, reverse=True), f"start order by priority: {order}"


# ---------------------------------------------------------------------------------------------
# 7. Health answers while the cores are busy and 1,000 io jobs are in flight
# ---------------------------------------------------------------------------------------------

def test_health_answers_while_cpu_jobs_and_1000_io_jobs_run(cpu_server):
    srv = cpu_server(workers=2)
    spins = [srv.submit("cpu.spin", kwargs={"seconds": 8})["id"] for _ in range(2)]
    wait_until(lambda: cpu_health(srv)["running"] == 2, 30, message="both workers spinning")
    batch = submit_batch(srv, [{"handler": "sleep", "kwargs": {"seconds": 4}}] * 1000)

    answers, both_busy = [], 0
    for _ in range(60):
        response = srv.get("/health", timeout=10)
        answers.append(response.status_code)
        if response.status_code == 200:
            body = response.json()
            if body["cpu"]["running"] == 2 and body["pool"]["busy"] + body["pool"]["pending"] >= 1:
                both_busy += 1
            if body["pool"]["busy"] == 0 and body["pool"]["pending"] == 0:
                break
        time.sleep(0.1)
    assert answers and set(answers) == {200}, answers
    assert both_busy >= 1, "health never saw both cpu workers and the io jobs busy at once"

    assert wait_batch(srv, batch["batch"], 60)["counts"]["succeeded"] == 1000
    for job_id in spins:
        done = wait_job(srv, job_id, 60)
        assert done["state"] == "succeeded" and done["result"]["spun"] == 8, done


# ---------------------------------------------------------------------------------------------
# 8. Broker unreachable at start-up
# ---------------------------------------------------------------------------------------------

@pytest.mark.faults
def test_unreachable_broker_answers_503_for_cpu_jobs_and_io_jobs_keep_working(make_server):
    closed = free_port()
    srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 1,
                           "greenjobs.broker.url": f"amqp://guest:guest@127.0.0.1:{closed}//",
                           "greenjobs.broker.connect_timeout": 1})
    health = srv.get("/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["cpu"]["broker_connected"] is False, health.json()

    response = srv.post("/jobs", {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 20000}}, timeout=30)
    assert_problem(response, 503)
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, response.headers
    batch = srv.post("/jobs/batch", {"jobs": [{"handler": "echo"}, {"handler": "cpu.spin", "kwargs": {"seconds": 1}}]},
                     timeout=30)
    assert_problem(batch, 503)
    assert batch.headers.get("Retry-After"), batch.headers
    assert list_all(srv) == [], "nothing is stored for a refused submission"

    for i in range(5):
        job = wait_job(srv, srv.submit("echo", kwargs={"i": i})["id"], 30)
        assert job["state"] == "succeeded" and job["result"] == {"i": i}, job
    assert srv.get("/health", timeout=10).status_code == 200
    assert_problem(srv.post("/jobs", {"handler": "cpu.spin", "kwargs": {"seconds": 1}}, timeout=30), 503)
    assert media_type(srv.post("/jobs", {"handler": "cpu.spin", "kwargs": {"seconds": 1}}, timeout=30)) == PROBLEM


# ---------------------------------------------------------------------------------------------
# 9. Poison job
# ---------------------------------------------------------------------------------------------

@pytest.mark.faults
def test_poison_job_ends_worker_lost_and_other_cpu_jobs_succeed(cpu_server):
    srv = cpu_server(workers=2, **{"greenjobs.workers.redeliveries": 1})
    poison = srv.submit("e2ecpu.poison")
    specs = [{"handler": "cpu.pbkdf2", "kwargs": {"iterations": 20000, "password": f"p{i}"}} for i in range(10)]
    batch = submit_batch(srv, specs)

    done = wait_job(srv, poison["id"], 90)
    assert done["state"] == "failed", done
    assert done["error"]["kind"] == "worker_lost", done["error"]
    # max_retries 0 + 1 run + 1 redelivery: it ran twice, and the third delivery was refused
    assert done["attempts"] == 2, done
    assert done["result"] is None

    final = wait_batch(srv, batch["batch"], 90)
    assert final["counts"]["succeeded"] == 10, final["counts"]
    for job_id, spec in zip(batch["ids"], specs):
        assert get_job(srv, job_id)["result"] == pbkdf2(**spec["kwargs"])
    wait_workers(srv, 2, timeout=60)
    assert cpu_health(srv)["worker_restarts"] >= 2
    run_pid_job(srv)
    again = get_job(srv, poison["id"])
    assert again["state"] == "failed" and again["attempts"] == 2, again
    # every job has ended, so none is running on a worker any more (checked last: a stale entry
    # here means the server still tracks the lost job, with its timeout timer armed)
    wait_until(lambda: cpu_health(srv)["running"] == 0, 10, interval=0.2,
               message="health cpu.running back to 0 after the poison job failed worker_lost")


# ---------------------------------------------------------------------------------------------
# 10. Garbage and pickle messages are dead-lettered, never deserialised
# ---------------------------------------------------------------------------------------------

class Pickled:
    """Unpickling this creates the file ``path`` (what an attacker's __reduce__ could do)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def publish_raw(url: str, routing_key: str, messages: list[tuple[bytes, str, str]]) -> None:
    with Connection(url, connect_timeout=5) as conn:
        producer = Producer(conn.channel())
        for body, content_type, encoding in messages:
            producer.publish(body=body, content_type=content_type, content_encoding=encoding,
                             routing_key=routing_key, delivery_mode=2)


def dead_letters(url: str, queue: str, want: int, timeout: float = 30.0) -> list:
    """Take up to ``want`` messages off the dead-letter queue, never decoding them: (body bytes, content type)."""
    got: list = []
    deadline = time.monotonic() + timeout
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        dead = Queue(queue, routing_key=queue, durable=True, channel=channel)
        while len(got) < want and time.monotonic() < deadline:
            # an explicit ack: the embedded transport ignores no_ack (the row would stay reserved)
            message = dead.get(no_ack=False)
            if message is None:
                time.sleep(0.1)
                continue
            body = message.body if isinstance(message.body, bytes) else message.body.encode("latin-1")
            got.append((body, message.content_type))
            message.ack()
    return got


@pytest.mark.faults
def test_garbage_and_pickle_messages_on_the_job_queue_are_dead_lettered(cpu_server, broker_settings, tmp_path):
    srv = cpu_server(workers=2)
    pids = wait_workers(srv, 2)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Pickled(str(marker)))
    # the payload is live: unpickling it here does create its file (so the check below can fail)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Pickled(str(control)))).close()
    assert control.exists()

    ns = namespace(broker_settings)
    url = broker_url(srv, broker_settings)
    sent = [
        (payload, "application/x-python-serialize", "binary"),
        (b"\xff\xfe{not json", "application/json", "utf-8"),
        (b'{"hello": "not a job"}', "application/json", "utf-8"),
    ]
    publish_raw(url, f"{ns}.jobs.cpu", sent)

    dead = dead_letters(url, f"{ns}.dead", len(sent))
    assert sorted(body for body, _ in dead) == sorted(body for body, _, _ in sent), dead
    assert dict(dead)[payload] == "application/x-python-serialize"
    assert not marker.exists(), "a worker unpickled the message"

    # the workers lived on (none crashed or was replaced) and still run jobs
    health = cpu_health(srv)
    assert health["workers"] == 2 and health["worker_restarts"] == 0, health
    assert worker_pids(srv) == pids
    following = run_pid_job(srv)
    assert following["result"]["pid"] in pids
    assert not marker.exists()
    assert dead_letters(url, f"{ns}.dead", 1, timeout=1.0) == [], "more dead letters than messages sent"


@pytest.mark.faults
def test_pickle_message_on_the_control_queue_is_dead_lettered(cpu_server, broker_settings, tmp_path):
    """The server's own consumer (worker -> server messages) refuses pickle as well."""
    srv = cpu_server(workers=1)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Pickled(str(marker)))
    ns = namespace(broker_settings)
    url = broker_url(srv, broker_settings)
    publish_raw(url, f"{ns}.control", [(payload, "application/x-python-serialize", "binary")])

    dead = dead_letters(url, f"{ns}.dead", 1)
    assert [body for body, _ in dead] == [payload], dead
    assert not marker.exists(), "the server unpickled the message"
    run_pid_job(srv)
    assert srv.get("/health", timeout=10).status_code == 200
    assert not marker.exists()
