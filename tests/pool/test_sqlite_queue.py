"""The embedded broker (kombu virtual transport over SQLite), with real kombu producers/consumers."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from kombu import Connection, Consumer, Producer, Queue

from greenjobs.pool.cpu import embedded

embedded.register()


@pytest.fixture
def url(tmp_path):
    return "embedded:///" + str(tmp_path / "queue.sqlite")


def queue(name="jobs"):
    return Queue(name, routing_key=name, queue_arguments={"x-dead-letter-routing-key": "dead"})


def publish(url, bodies, priorities=None, name="jobs"):
    with Connection(url) as conn:
        producer = Producer(conn.channel(), serializer="json")
        queue(name)(producer.channel).declare()
        Queue("dead", routing_key="dead")(producer.channel).declare()
        for i, body in enumerate(bodies):
            producer.publish(body, routing_key=name, priority=(priorities or [0] * len(bodies))[i])


def consume(url, count, ack=True, name="jobs"):
    got = []
    with Connection(url, transport_options={"polling_interval": 0.001}) as conn:
        def on_message(body, message):
            got.append((body, message.delivery_info.get("redelivered")))
            if ack:
                message.ack()
        with Consumer(conn.channel(), [queue(name)], callbacks=[on_message], accept=["json"], prefetch_count=1):
            for _ in range(count * 20):
                if len(got) >= count:
                    break
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    return got


def rows(url):
    import sqlite3
    conn = sqlite3.connect(url[len("embedded:///"):])
    try:
        return conn.execute("SELECT queue, count(*) FROM messages GROUP BY queue").fetchall()
    finally:
        conn.close()


def test_priority_then_age(url):
    publish(url, [{"n": i} for i in range(6)], priorities=[1, 9, 5, 9, 0, 5])
    assert [b["n"] for b, _ in consume(url, 6)] == [1, 3, 2, 5, 0, 4]
    assert rows(url) == []


def test_ack_deletes_and_nothing_is_delivered_twice_at_depth(url):
    publish(url, [{"n": i} for i in range(10_000)])
    got = consume(url, 10_000)
    assert sorted(b["n"] for b, _ in got) == list(range(10_000))
    assert rows(url) == []


def test_unacked_message_comes_back_on_close(url):
    publish(url, [{"n": 1}])
    assert consume(url, 1, ack=False) == [({"n": 1}, False)]
    assert consume(url, 1) == [({"n": 1}, True)]       # restored, flagged redelivered


def test_message_of_a_sigkilled_consumer_is_delivered_again(url, tmp_path):
    publish(url, [{"n": 7}])
    script = textwrap.dedent(f"""
        import os, time
        from kombu import Connection, Consumer, Queue
        from greenjobs.pool.cpu import embedded
        embedded.register()
        with Connection({url!r}, transport_options={{"polling_interval": 0.001}}) as conn:
            def on_message(body, message):
                print("got", body, flush=True)
                time.sleep(60)       # never acks: killed here
            with Consumer(conn.channel(), [Queue("jobs", routing_key="jobs")], callbacks=[on_message],
                          accept=["json"], prefetch_count=1):
                conn.drain_events(timeout=30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert proc.stdout.readline().startswith("got")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert consume(url, 1) == [({"n": 7}, True)]


def test_reject_without_requeue_dead_letters_and_pickle_is_never_loaded(url, tmp_path):
    import pickle
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with Connection(url) as conn:
        producer = Producer(conn.channel())
        queue()(producer.channel).declare()
        Queue("dead", routing_key="dead")(producer.channel).declare()
        producer.publish(pickle.dumps(Evil()), routing_key="jobs", content_type="application/x-python-serialize",
                         content_encoding="binary")
    with Connection(url, transport_options={"polling_interval": 0.001}) as conn:
        rejected = []

        def bad(message, exc):
            rejected.append(exc)
            message.reject(requeue=False)
        with Consumer(conn.channel(), [queue()], callbacks=[lambda b, m: m.ack()], accept=["json"],
                      on_decode_error=bad, prefetch_count=1):
            for _ in range(20):
                if rejected:
                    break
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    assert rejected and not marker.exists()
    assert rows(url) == [("dead", 1)]


def test_no_ack_gets_are_not_redelivered(url):
    publish(url, [{"n": 1}, {"n": 2}])
    with Connection(url) as conn:
        q = queue()(conn.channel())
        assert q.get(no_ack=True).payload == {"n": 1}
    assert [b for b, _ in consume(url, 1)] == [{"n": 2}]
    assert rows(url) == []


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def line_within(proc, seconds: float) -> str:
    """The child's next line of output, or a failure (not a hang) if none comes within ``seconds``."""
    import queue as queues
    import threading
    if not hasattr(proc, "lines"):
        proc.lines = queues.Queue()
        threading.Thread(target=lambda: [proc.lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        return proc.lines.get(timeout=seconds)
    except queues.Empty:
        raise AssertionError(f"no output from the consumer within {seconds} s") from None


@pytest.mark.skipif(not embedded.Doorbell.supported(), reason="the doorbell needs Linux abstract sockets")
def test_a_publish_in_another_process_rings_a_waiting_consumer_awake(url):
    """With polls 2 s apart, a consumer in another process still gets each message within a fraction of that:
    the publish's commit rang its doorbell.  Without the bell it waits for the next poll."""
    script = textwrap.dedent(f"""
        import json, sys, time
        from kombu import Connection, Consumer, Queue
        from greenjobs.pool.cpu import embedded
        embedded.register()
        options = {{"polling_interval": 2.0, "busy_interval": 2.0, "doorbell": sys.argv[1] == "on"}}
        with Connection({url!r}, transport_options=options) as conn:
            def on_message(body, message):
                message.ack()
                print(json.dumps({{"n": body["n"], "lag": time.time() - body["at"]}}), flush=True)
            with Consumer(conn.channel(), [Queue("jobs", routing_key="jobs")], callbacks=[on_message],
                          accept=["json"], prefetch_count=1):
                print("ready", flush=True)
                for _ in range(200):
                    try:
                        conn.drain_events(timeout=2.5)
                    except TimeoutError:
                        pass
    """)
    import json
    import time
    lags = {}
    for mode in ("on", "off"):
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        proc = subprocess.Popen([sys.executable, "-c", script, mode], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=path))
        try:
            assert line_within(proc, 30).strip() == "ready"
            time.sleep(2.5)                          # the consumer has polled once and sleeps now
            seen = []
            with Connection(url) as conn:
                producer = Producer(conn.channel(), serializer="json")
                queue()(producer.channel).declare()
                for n in range(5):
                    producer.publish({"n": n, "at": time.time()}, routing_key="jobs")
                    seen.append(json.loads(line_within(proc, 10)))
                    time.sleep(0.3)
            lags[mode] = sorted(s["lag"] for s in seen)
        finally:
            proc.kill()
            proc.wait(10)
    print(f"\n[doorbell] delivery lag with polls 2 s apart: on {lags['on']}, off {lags['off']}")
    assert lags["on"][2] < 0.5 and lags["off"][2] > 0.5, lags       # medians: rung at once, vs the next poll
