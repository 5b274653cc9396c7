"""Several servers on one ledger behave as one: they share the io backlog, a long-poll on one sees a
job end on another, and a cancel on one stops the job where it runs.  Two real pserve processes on
one store: the SQLite file shared by two processes of one host, PostgreSQL with polling alone (the
fallback: notifications off), and PostgreSQL with LISTEN/NOTIFY alone (polling off)."""
import time

import pytest

from tests.e2e.helpers import E2E_HANDLERS, QUICK_STOP, TERMINAL, wait_until

BASE = {**E2E_HANDLERS, **QUICK_STOP, "greenjobs.workers.cpu": 0}


@pytest.fixture(params=["sqlite", "postgres-poll", "postgres-notify"])
def shared_store(request, tmp_path):
    """Settings that put two servers on one ledger, and how they hear of each other's changes."""
    if request.param == "sqlite":
        return {"greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite"}
    url = request.getfixturevalue("postgres").database_url("cluster")
    if request.param == "postgres-poll":
        return {"greenjobs.store.url": url, "greenjobs.cluster.notify": "false"}
    # no polling: only a notification can wake a long-poll or stop a cancelled job in time
    return {"greenjobs.store.url": url, "greenjobs.cluster.poll": 0}


def health(srv) -> dict:
    return srv.get("/health").json()


def test_a_full_server_leaves_its_backlog_to_an_idle_one(make_server, shared_store):
    busy = make_server(app={**BASE, **shared_store, "greenjobs.pool.size": 2}, name="busy")
    idle = make_server(app={**BASE, **shared_store, "greenjobs.pool.size": 50}, name="idle")
    response = busy.post("/jobs/batch", {"jobs": [{"handler": "e2e.pid", "kwargs": {"pause": 0.5}}] * 30})
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    done = [busy.wait(i, 30) for i in ids]
    assert {j["state"] for j in done} == {"succeeded"}, [j for j in done if j["state"] != "succeeded"][:3]
    ran_by = [j["result"] for j in done]
    assert set(ran_by) <= {busy.proc.pid, idle.proc.pid}
    # the busy server can run 2 at a time: the idle one took the rest from the ledger
    assert ran_by.count(idle.proc.pid) >= 10, ran_by
    assert ran_by.count(busy.proc.pid) >= 2, ran_by
    assert all(j["attempts"] == 1 for j in done)


def test_a_long_poll_on_one_server_wakes_when_the_job_ends_on_another(make_server, shared_store):
    a = make_server(app={**BASE, **shared_store}, name="a")
    b = make_server(app={**BASE, **shared_store}, name="b")
    job = a.submit("e2e.pid", kwargs={"pause": 1.0})
    # A wait that nothing wakes answers at its timeout (60 s), reading the job then: only an answer well before
    # it shows the wake-up worked (the margin is for a loaded machine, not a speed target).
    asked = time.monotonic()
    seen = b.wait(job["id"], 60)
    assert seen["state"] == "succeeded" and seen["result"] == a.proc.pid, seen
    assert time.monotonic() - asked < 45, "the long-poll was not woken: it answered at its timeout"
    batch = a.post("/jobs/batch", {"jobs": [{"handler": "e2e.pid", "kwargs": {"pause": 0.5}}] * 5}).json()
    asked = time.monotonic()
    counts = b.get(f"/batches/{batch['batch']}?wait=60").json()
    assert counts["counts"].get("succeeded") == 5, counts
    assert time.monotonic() - asked < 45, "the batch long-poll answered at its timeout"


def test_a_cancel_on_one_server_stops_the_job_where_it_runs(make_server, shared_store):
    a = make_server(app={**BASE, **shared_store}, name="a")
    b = make_server(app={**BASE, **shared_store}, name="b")
    job = a.submit("e2e.pid", kwargs={"pause": 30})
    wait_until(lambda: health(a)["pool"]["busy"] == 1, 20, message="running on a")
    cancelled = b.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    waiting = a.wait(job["id"], 5)        # a long-poll on the runner's server is answered too
    assert waiting["state"] == "cancelled", waiting
    wait_until(lambda: health(a)["pool"]["busy"] == 0, 20, message="a's slot freed")
    assert "cancelled on another server" in a.log()
    assert a.get(f"/jobs/{job['id']}").json()["state"] in TERMINAL
    assert b.get(f"/jobs/{job['id']}").json()["state"] == "cancelled"


def test_every_server_sees_the_cluster_in_the_servers_table(make_server, shared_store):
    # short enough to see a crash soon, long enough that a loaded machine never lets a live server's lease
    # (renewed every lease/3) run out, which would move its running job to the other server
    lease = {"greenjobs.store.lease_seconds": 6}
    a = make_server(app={**BASE, **shared_store, **lease, "greenjobs.pool.size": 7}, name="a")
    b = make_server(app={**BASE, **shared_store, **lease, "greenjobs.pool.size": 5}, name="b")

    def servers(srv) -> dict:
        return {s["pid"]: s for s in srv.get("/servers").json()["servers"]}

    pids = {a.proc.pid, b.proc.pid}
    wait_until(lambda: set(servers(a)) == pids and set(servers(b)) == pids, 20, message="both servers in both views")
    seen = servers(b)
    assert seen[a.proc.pid]["pool_size"] == 7 and seen[b.proc.pid]["pool_size"] == 5, seen
    assert [s["me"] for s in (seen[a.proc.pid], seen[b.proc.pid])] == [False, True]
    assert all(s["alive"] and s["role"] == "server" and s["version"] for s in seen.values()), seen
    assert health(a)["cluster"] == {"servers": 2, "lost": 0}
    metrics = a.get("/metrics").text
    assert 'greenjobs_cluster_servers{state="alive"} 2.0' in metrics and "greenjobs_cluster_pool_size 12.0" in metrics
    job = a.submit("e2e.pid", kwargs={"pause": 30})
    wait_until(lambda: servers(b)[a.proc.pid]["pool_busy"] == 1, 20, message="a's load seen from b")
    a.delete(f"/jobs/{job['id']}")
    a.kill()                                      # a crash: its row stays, its heartbeat stops
    wait_until(lambda: health(b)["cluster"] == {"servers": 1, "lost": 1}, 20, message="a lost")
    assert servers(b)[a.proc.pid]["alive"] is False
    c = make_server(app={**BASE, **shared_store, **lease}, name="c")
    wait_until(lambda: c.proc.pid in servers(b), 20, message="c seen from b")
    assert c.stop() == 0                          # a clean shutdown deletes its row
    wait_until(lambda: c.proc.pid not in servers(b), 20, message="c gone from b's view")
    assert a.proc.pid in servers(b)               # a lost server stays until it is forgotten


def test_an_event_stream_on_any_server_shows_every_servers_events_in_one_order(make_server, shared_store):
    from tests.e2e.test_events import SSE
    a = make_server(app={**BASE, **shared_store}, name="a")
    b = make_server(app={**BASE, **shared_store}, name="b")
    on_b = SSE(b.url)
    try:
        job = a.submit("e2e.pid", kwargs={"pause": 0.2})             # runs on a: b never holds it
        seen = on_b.wait_job(job["id"], "succeeded", timeout=30)
        assert [e["event"] for e in seen] == ["submitted", "started", "succeeded"], seen
        assert seen[-1]["data"]["state"] == "succeeded"
        ids = [int(e["id"]) for e in seen]
        assert ids == sorted(ids) and len(set(ids)) == 3
        # one order: a stream on a, resumed after b's first id, replays the same events with the same ids
        on_a = SSE(a.url, headers={"Last-Event-ID": str(ids[0] - 1)})
        try:
            replay = on_a.wait_job(job["id"], "succeeded", timeout=30)
            assert [int(e["id"]) for e in replay] == ids
            assert not [f for f in on_a.frames if f["event"] == "reset"], on_a.frames[:3]
        finally:
            on_a.close()
        other = b.submit("e2e.pid")                                   # and b's own events, after a's
        later = on_b.wait_job(other["id"], "succeeded", timeout=30)
        assert int(later[0]["id"]) > ids[-1]
    finally:
        on_b.close()
