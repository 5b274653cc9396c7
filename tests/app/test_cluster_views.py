"""GET /throughput (the dashboard's history: every alive server's counts, summed) and the checks of
POST /servers/{owner}/workers that need no worker processes: 404, 409 for a lost or unsupervising server,
202 leaving the request in the target's row, and a server acting on its own row's request only once."""
import json
import time

from greenjobs.pool.cpu.control import WorkerControl
from greenjobs.pool.observe import throughput
from greenjobs.pool.store.rows import ServerRecord


def other(owner, beat, supervised=True, counts=None):
    """Another server's heartbeat row, as its own process would write it."""
    stats = {"throughput": {"1": counts or {}, "10": {}}, "cpu": {"supervised": supervised, "target": 2}}
    return ServerRecord(owner=owner, host="elsewhere", pid=1, role="server", version="x", started_at=beat - 10,
                        heartbeat_at=beat, pool_size=10, pool_busy=0, cpu_workers=2, stats=json.dumps(stats))


def beat(app):
    app.app.registry.greenjobs_runtime.members.beat()


def test_throughput_counts_this_servers_jobs_and_adds_the_other_alive_servers(app):
    runtime = app.app.registry.greenjobs_runtime
    ids = [app.post_json("/jobs", {"handler": "echo", "kwargs": {"n": n}}).json["id"] for n in range(5)]
    ids.append(app.post_json("/jobs", {"handler": "fail", "kwargs": {"message": "no"}}).json["id"])
    for job_id in ids:
        app.get(f"/jobs/{job_id}?wait=2")
    now = int(time.time())
    runtime.store.beat(other("B", time.time(), counts={str(now - 2): [7, 6, 1]}), forget_before=0)
    runtime.store.beat(other("lost", time.time() - 120, counts={str(now - 2): [100, 100, 0]}), forget_before=0)
    beat(app)
    body = app.get("/throughput").json
    assert body["servers"] == 2, "this one and B; the lost one is not counted"
    buckets = body["buckets"]
    assert sum(buckets["submitted"]) == 6 + 7 and sum(buckets["succeeded"]) == 5 + 6
    assert sum(buckets["failed"]) == 1 + 1
    assert body["seconds"]["step"] == 1 and len(body["seconds"]["submitted"]) == throughput.MINUTE
    assert buckets["step"] == throughput.STEP and len(buckets["submitted"]) == throughput.SPAN // throughput.STEP
    time.sleep(1.05)                                          # rates leave out the second under way
    mine = next(s for s in app.get("/servers").json["servers"] if s["me"])
    assert mine["rate"] == {"submitted": 0.6, "succeeded": 0.5, "failed": 0.1}, "per second over the last 10 s"


def test_the_series_put_each_second_in_its_place():
    now = 1_000_000.5
    snap = {"1": {"999999": [1, 0, 0], "999990": [2, 1, 0]}, "10": {"999300": [4, 4, 0], "990000": [9, 9, 9]}}
    out = throughput.series([snap, snap], now)
    seconds, buckets = out["seconds"], out["buckets"]
    assert seconds["start"] == 999_940 and seconds["submitted"][-1] == 2 and seconds["submitted"][50] == 4
    assert sum(buckets["submitted"]) == 2 * (1 + 2 + 4), "the bucket older than 15 minutes is left out"
    assert buckets["submitted"][-1] == 0, "the current bucket (1000000-1000009) has no event yet"
    assert buckets["submitted"][-2] == 6, "999990-999999 holds both seconds of both servers"


def test_a_listener_forgets_seconds_older_than_its_span(monkeypatch):
    counter = throughput.Throughput()
    clock = [10_000.0]
    monkeypatch.setattr(throughput.time, "time", lambda: clock[0])
    counter.job_event("submitted", None)
    counter.job_event("progress", None)                        # not counted
    clock[0] += throughput.SPAN + 5
    counter.job_event("succeeded", None)
    assert counter.snapshot() == {"1": {str(int(clock[0])): [0, 1, 0]}, "10": {}}


def test_requests_for_other_servers_are_checked_and_left_in_their_row(app):
    runtime = app.app.registry.greenjobs_runtime
    runtime.store.beat(other("B", time.time()), forget_before=0)
    runtime.store.beat(other("C", time.time(), supervised=False), forget_before=0)
    runtime.store.beat(other("D", time.time() - 120), forget_before=0)     # lost: older than the lease
    beat(app)
    made = app.post_json("/servers/B/workers", {"size": 5}, status=202).json
    assert made["server"] == "B" and made["request"]["size"] == 5 and made["applied"] is None
    stored = {s.owner: s for s in runtime.store.servers()}["B"]
    assert json.loads(stored.control) == made["request"]
    beat(app)                                                 # GET /servers shows the table as of a heartbeat
    listed = next(s for s in app.get("/servers").json["servers"] if s["owner"] == "B")
    assert listed["control"]["requested"]["id"] == made["request"]["id"]
    assert "supervises no cpu workers" in app.post_json("/servers/C/workers", {"size": 1}, status=409).json["detail"]
    assert "has not beaten" in app.post_json("/servers/D/workers", {"restart": True}, status=409).json["detail"]
    assert "GET /servers" in app.post_json("/servers/nobody/workers", {"size": 1}, status=404).json["detail"]
    assert app.post("/servers/B/workers", "[1]", content_type="application/json", status=422).json["detail"]
    assert {s.owner: s for s in runtime.store.servers()}["C"].control is None, "refused: nothing stored"


class FakeSupervisor:
    """Stands in for the worker processes (unit test of WorkerControl's bookkeeping only)."""

    def __init__(self):
        self.count, self.restarts, self.restarting, self.sizes = 2, 0, False, []

    def resize(self, n):
        self.sizes.append(n)
        self.count = n

    def alive(self):
        return self.count


class FakeLock:
    held = True


class FakeRuntime:
    def __init__(self, supervisor):
        self.supervisor, self.host_lock = supervisor, FakeLock()


def test_a_server_acts_once_on_each_request_left_in_its_row():
    sup = FakeSupervisor()
    control = WorkerControl(FakeRuntime(sup))
    request = control.new_request({"size": 4}, by="admin")
    control.heard(json.dumps(request))
    control.heard(json.dumps(request))                        # the next heartbeat reads the same row
    assert sup.sizes == [4] and control.applied["id"] == request["id"] and control.applied["ok"]
    control.heard(json.dumps({"id": "x", "size": "lots"}))    # not a valid request: refused, reported
    assert sup.sizes == [4] and control.applied == {**control.applied, "id": "x", "ok": False}
    control.heard("not json")
    control.heard(None)
    assert sup.sizes == [4]
    newer = control.new_request({"size": 6}, by="admin")
    control.apply(newer)                                       # applied here at once (POST on this server)
    control.heard(json.dumps(request))                         # a heartbeat's read from before: not again
    assert sup.sizes == [4, 6]
    assert control.state() == {"supervised": True, "target": 6, "alive": 6, "restarts": 0, "restarting": False}
    control.rt.supervisor = None
    assert control.state() == {"supervised": False}
