"""Lifecycle events at the pool level: the EventLog ring, the SignalSender, the metrics' histograms.

Real runtimes (tests/pool/conftest.py: real SQLite, real greenlets), no sockets.  Every blinker
receiver a test connects is disconnected in a ``finally`` (the ``connected`` fixture), so nothing
leaks from one test into the next.
"""
from __future__ import annotations

import logging
import time

import gevent
import gevent.event
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from greenjobs.pool.observe import signals
from greenjobs.pool.observe.events import NAMES, EventLog
from greenjobs.pool.job import Job, new_id
from greenjobs.pool.observe.metrics import BUCKETS, Collector, JobMetrics
from greenjobs.pool.observe.signals import SignalSender
from greenjobs.pool.spec import parse_spec


def job(handler="echo", state="queued", **fields) -> Job:
    return Job(id=new_id(), handler=handler, kind="io", state=state, **fields)


def submit(runtime, handler, **fields):
    spec = parse_spec({"handler": handler, **fields}, runtime.registry, runtime.settings)
    runtime.submit([spec])
    return spec


def wait_terminal(runtime, job_id, rounds=6):
    done = None
    for _ in range(rounds):
        done = runtime.wait(job_id, 5)
        if done.terminal:
            return done
    return done


@pytest.fixture
def connected():
    """``connected(signal_name, receiver)``: connect (strongly) and disconnect at teardown."""
    made = []

    def connect(name, receiver, sender=None):
        signal = signals.BY_NAME[name]
        if sender is None:
            signal.connect(receiver, weak=False)
        else:
            signal.connect(receiver, sender=sender, weak=False)
        made.append((signal, receiver))
        return receiver

    try:
        yield connect
    finally:
        for signal, receiver in made:
            signal.disconnect(receiver)


# ---------------------------------------------------------------------------------------------
# EventLog
# ---------------------------------------------------------------------------------------------

def test_ids_strictly_increase_and_events_carry_the_job():
    log = EventLog(100)
    j = job()
    events = [log.append(name, j) for name in NAMES]
    ids = [e.id for e in events]
    assert all(b == a + 1 for a, b in zip(ids, ids[1:])), ids
    assert log.last_id == ids[-1]
    for e, name in zip(events, NAMES):
        assert (e.name, e.job_id, e.handler) == (name, j.id, "echo")
        assert e.data["id"] == e.id and e.data["event"] == name and e.data["job"] == j.id
        frame = e.sse().decode()
        assert frame.startswith(f"id: {e.id}\nevent: {name}\ndata: {{") and frame.endswith("\n\n")


def test_ids_increase_across_a_restart():
    """A new log (a restarted server) starts above the ids the previous one handed out."""
    first = EventLog(100)
    last = [first.append("submitted", job()).id for _ in range(50)][-1]
    time.sleep(0.01)
    second = EventLog(100)
    assert second.append("submitted", job()).id > last


def test_since_without_a_gap():
    log = EventLog(100)
    ids = [log.append("submitted", job()).id for _ in range(10)]
    new, gap = log.since(ids[3])
    assert [e.id for e in new] == ids[4:] and gap is False
    assert log.since(ids[-1]) == ([], False)
    new, gap = log.since(ids[0] - 1)          # everything, still no gap
    assert [e.id for e in new] == ids and gap is False


def test_since_on_an_empty_log():
    log = EventLog(100)
    assert log.since(log.last_id) == ([], False)


def test_since_reports_a_gap_once_events_left_the_ring():
    log = EventLog(100)
    ids = [log.append("submitted", job()).id for _ in range(250)]
    new, gap = log.since(ids[10])
    assert gap is True
    assert [e.id for e in new] == ids[-100:]
    # the oldest id still kept, and the one just before it, are no gap
    assert log.since(ids[-101]) == (log.since(ids[-101])[0], False)
    assert [e.id for e in log.since(ids[-101])[0]] == ids[-100:]
    assert log.since(ids[-100])[1] is False


def test_ring_is_bounded_at_its_size():
    log = EventLog(100)
    for _ in range(5000):
        log.append("progress", job())
    assert len(log._ring) == 100
    ids = [e.id for e in log._ring]
    assert ids == list(range(log.last_id - 99, log.last_id + 1))


def test_watch_is_set_by_the_next_append():
    log = EventLog(100)
    log.subscribers = 1                      # as a GET /events reader does before it watches
    wake = log.watch()
    assert not wake.is_set()
    got = []
    reader = gevent.spawn(lambda: got.append(wake.wait(5)))
    gevent.sleep(0)
    log.append("submitted", job())
    reader.join(5)
    assert got == [True]
    assert not log.watch().is_set()          # a fresh Event for the next round


def test_no_lost_wake_up_when_an_append_lands_between_watch_and_since():
    log = EventLog(100)
    log.subscribers = 1
    cursor = log.last_id
    wake = log.watch()                       # 1. watch
    appended = log.append("submitted", job())   # 2. an append slips in
    new, gap = log.since(cursor)             # 3. read
    assert [e.id for e in new] == [appended.id] and not gap
    cursor = new[-1].id
    wake = log.watch()
    other = log.append("started", job())     # between this watch and the next since: still seen
    assert wake.is_set()
    assert [e.id for e in log.since(cursor)[0]] == [other.id]


def test_many_readers_are_woken_by_one_append():
    log = EventLog(100)
    log.subscribers = 50
    woken = []

    def reader(i):
        if log.watch().wait(5):
            woken.append(i)

    readers = [gevent.spawn(reader, i) for i in range(50)]
    gevent.sleep(0)
    log.append("submitted", job())
    gevent.joinall(readers, timeout=5)
    assert sorted(woken) == list(range(50))


def test_close_wakes_readers_for_good():
    log = EventLog(100)
    log.subscribers = 1
    wake = log.watch()
    log.close()
    assert wake.is_set() and log.closed


# ---------------------------------------------------------------------------------------------
# SignalSender
# ---------------------------------------------------------------------------------------------

def test_receivers_see_one_jobs_life_in_order(make_runtime, connected):
    rt = make_runtime()
    seen = []
    for name in ("submitted", "started", "succeeded", "failed", "cancelled", "retrying"):
        connected(name, lambda sender, job, signal, **kw: seen.append((signal, sender, job["id"], job["state"])))
    j = submit(rt, "echo", kwargs={"x": 1})
    assert wait_terminal(rt, j.id).state == "succeeded"
    for _ in range(100):
        if len([s for s in seen if s[2] == j.id]) >= 3:
            break
        gevent.sleep(0.01)
    mine = [s for s in seen if s[2] == j.id]
    assert [s[0] for s in mine] == ["submitted", "started", "succeeded"], mine
    assert {s[1] for s in mine} == {"echo"}
    assert mine[-1][3] == "succeeded"


def test_receiver_gets_a_snapshot_not_the_live_job(make_runtime, connected):
    rt = make_runtime()
    snapshots = []
    connected("submitted", lambda sender, job, signal, **kw: snapshots.append(job))
    j = submit(rt, "echo")
    assert wait_terminal(rt, j.id).state == "succeeded"
    gevent.sleep(0.05)
    mine = [s for s in snapshots if s["id"] == j.id]
    assert len(mine) == 1
    assert isinstance(mine[0], dict) and mine[0]["state"] != "succeeded", mine


def test_connect_via_one_handler_only(make_runtime, connected):
    rt = make_runtime()
    seen = []
    connected("succeeded", lambda sender, job, signal, **kw: seen.append(sender), sender="echo")
    a = submit(rt, "echo")
    b = submit(rt, "sleep", kwargs={"seconds": 0})
    assert wait_terminal(rt, a.id).state == wait_terminal(rt, b.id).state == "succeeded"
    gevent.sleep(0.05)
    assert seen == ["echo"]


def test_a_raising_receiver_is_logged_and_the_job_still_succeeds(make_runtime, connected, caplog):
    rt = make_runtime()
    calls = []

    def explode(sender, job, signal, **kw):
        raise RuntimeError("receiver exploded on purpose")

    connected("started", explode)
    connected("succeeded", explode)
    connected("succeeded", lambda sender, job, signal, **kw: calls.append(job["id"]))   # still called
    with caplog.at_level(logging.ERROR, logger="greenjobs.pool.observe.signals"):
        j = submit(rt, "echo", kwargs={"v": 2})
        done = wait_terminal(rt, j.id)
        gevent.sleep(0.05)
    assert (done.state, done.result) == ("succeeded", {"v": 2})
    assert rt.store.get(j.id).state == "succeeded"
    assert calls == [j.id]
    records = [r for r in caplog.records if r.name == "greenjobs.pool.observe.signals" and r.exc_info]
    assert len(records) == 2, caplog.text
    assert all("receiver exploded on purpose" in str(r.exc_info[1]) for r in records)
    assert "Traceback" in caplog.text and j.id in caplog.text
    assert rt.signals.failed == 2


def test_a_sleeping_receiver_does_not_delay_the_job(make_runtime, connected):
    rt = make_runtime()
    release = gevent.event.Event()
    entered, left = [], []

    def slow(sender, job, signal, **kw):
        entered.append((signal, job["id"]))
        release.wait(5)                       # as good as gevent.sleep(5), but ends when told
        left.append((signal, job["id"]))

    for name in ("submitted", "started"):
        connected(name, slow)
    j = submit(rt, "echo")
    done = rt.wait(j.id, 4)
    # the job is finished while both receivers are still blocked in their own greenlets
    assert done.state == "succeeded"
    assert ("started", j.id) in entered and left == []
    assert rt.signals.pending == 2
    release.set()
    for _ in range(100):
        if len(left) == 2:
            break
        gevent.sleep(0.01)
    assert sorted(left) == [("started", j.id), ("submitted", j.id)]
    assert rt.signals.pending == 0


def test_backlog_limit_drops_and_counts(connected, caplog):
    sender = SignalSender(limit=3)
    gate = gevent.event.Event()
    ran = []

    def stuck(sender_name, job, signal, **kw):
        gate.wait(5)
        ran.append(job["id"])

    connected("progress", stuck)
    jobs = [job(state="running") for _ in range(10)]
    with caplog.at_level(logging.WARNING, logger="greenjobs.pool.observe.signals"):
        for j in jobs:
            sender.send("progress", j)
    assert (sender.pending, sender.dropped) == (3, 7)
    assert "dropped" in caplog.text
    gate.set()
    for _ in range(100):
        if sender.pending == 0:
            break
        gevent.sleep(0.01)
    assert sender.pending == 0 and sorted(ran) == sorted(j.id for j in jobs[:3])
    sender.send("progress", jobs[-1])         # room again once the backlog drained
    gevent.sleep(0.05)
    assert ran[-1] == jobs[-1].id and sender.dropped == 7


def test_send_without_receivers_spawns_nothing():
    sender = SignalSender(limit=1)
    for _ in range(100):
        sender.send("cancelled", job(state="cancelled"))
    assert (sender.pending, sender.dropped) == (0, 0)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def test_histograms_put_each_observation_in_its_bucket():
    m = JobMetrics()
    t0 = 1000.0
    for wait, run in ((0.0005, 0.002), (0.02, 0.3), (7.0, 45.0), (5000.0, 9000.0)):
        j = job(state="running", created_at=t0, started_at=t0 + wait)
        m.job_event("started", j)
        j.state, j.finished_at = "succeeded", t0 + wait + run
        m.job_event("succeeded", j)
    waits = dict(m.queue_wait["echo"].cumulative())
    runs = dict(m.duration["echo"].cumulative())
    assert waits["0.001"] == 1 and waits["0.025"] == 2 and waits["10.0"] == 3 and waits["3600.0"] == 3
    assert waits["+Inf"] == 4
    assert runs["0.001"] == 0 and runs["0.005"] == 1 and runs["0.5"] == 2 and runs["60.0"] == 3 and runs["+Inf"] == 4
    assert m.queue_wait["echo"].total == pytest.approx(0.0005 + 0.02 + 7.0 + 5000.0)
    assert m.duration["echo"].total == pytest.approx(0.002 + 0.3 + 45.0 + 9000.0)
    counts = [c for _, c in m.duration["echo"].cumulative()]
    assert counts == sorted(counts) and len(counts) == len(BUCKETS) + 1


def test_boundary_values_fall_in_the_le_bucket():
    m = JobMetrics()
    for bound in BUCKETS:
        j = job(state="running", created_at=0.0, started_at=bound)
        m.job_event("started", j)
    cumulative = m.queue_wait["echo"].cumulative()
    for i, (le, count) in enumerate(cumulative[:-1]):
        assert count == i + 1, (le, count)       # a value equal to a bound counts as <= bound


def test_queue_wait_counts_from_run_at_and_cancel_has_no_duration():
    m = JobMetrics()
    j = job(state="running", created_at=100.0, run_at=160.0, started_at=160.5)
    m.job_event("started", j)
    assert m.queue_wait["echo"].total == pytest.approx(0.5)
    c = job(state="cancelled", created_at=0.0)
    m.job_event("cancelled", c)
    assert "echo" not in m.duration and m.events[("cancelled", "echo")] == 1


def test_collector_exposes_the_runs_of_a_runtime(make_runtime):
    rt = make_runtime()
    ok = [submit(rt, "echo", kwargs={"i": i}) for i in range(5)]
    bad = [submit(rt, "fail", kwargs={"message": "no"}) for _ in range(2)]
    for j in ok + bad:
        wait_terminal(rt, j.id)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(rt))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}

    def value(family, sample, **labels):
        return sum(s.value for s in families[family].samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("greenjobs_jobs_submitted", "greenjobs_jobs_submitted_total", handler="echo") == 5
    assert value("greenjobs_jobs_submitted", "greenjobs_jobs_submitted_total", handler="fail") == 2
    assert value("greenjobs_jobs_finished", "greenjobs_jobs_finished_total", handler="echo", state="succeeded") == 5
    assert value("greenjobs_jobs_finished", "greenjobs_jobs_finished_total", handler="fail", state="failed") == 2
    assert value("greenjobs_job_duration_seconds", "greenjobs_job_duration_seconds_count", handler="echo") == 5
    assert value("greenjobs_job_queue_wait_seconds", "greenjobs_job_queue_wait_seconds_count", handler="fail") == 2
    assert value("greenjobs_job_duration_seconds", "greenjobs_job_duration_seconds_bucket", handler="echo",
                 le="+Inf") == 5
