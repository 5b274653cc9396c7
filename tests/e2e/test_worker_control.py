"""Admins resize and restart a running server's cpu workers (Flower's pool grow/shrink and restart), on that
server or through another one on the same ledger: real pserve processes, real worker processes, counted by
their pids; cpu jobs submitted around a rolling restart all succeed, each once."""
from pathlib import Path

import pytest

from tests.e2e.helpers import QUICK_STOP, wait_until

pytestmark = pytest.mark.e2e


def worker_pids(srv) -> set[int]:
    """The live cpu worker processes ``srv`` started (its children running greenjobs.pool.cpu.worker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == srv.proc.pid and state != "Z" and b"greenjobs.pool.cpu.worker" in cmdline:
            found.add(int(entry.name))
    return found


def row(srv, owner=None) -> dict:
    servers = srv.get("/servers").json()["servers"]
    return next(s for s in servers if (s["owner"] == owner if owner else s["me"]))


@pytest.fixture
def pair(make_server, tmp_path):
    """Two servers on one SQLite ledger, each supervising two cpu workers of its own ini."""
    app = {**QUICK_STOP, "greenjobs.store.url": f"sqlite:///{tmp_path}/shared.sqlite", "greenjobs.workers.cpu": 2}
    return make_server(app=app, name="a"), make_server(app=app, name="b")


def test_resize_and_restart_this_servers_workers_while_jobs_run(pair):
    a, _ = pair
    me = row(a)["owner"]
    wait_until(lambda: len(worker_pids(a)) == 2, 30, message="two workers at start")
    for bad, word in (({"size": -1}, "from 0 to"), ({"size": "3"}, "integer"), ({}, "restart"),
                      ({"restart": False}, "must be true"), ({"size": 1, "restart": True}, "size")):
        answer = a.post(f"/servers/{me}/workers", bad)
        assert answer.status_code == 422 and word in answer.json()["detail"], (bad, answer.text)
    assert len(worker_pids(a)) == 2, "a refused request changed nothing"

    answer = a.post(f"/servers/{me}/workers", {"size": 3})
    assert answer.status_code == 200 and answer.json()["applied"]["result"] == "resized from 2 to 3 workers"
    wait_until(lambda: len(worker_pids(a)) == 3 and a.get("/health").json()["cpu"]["workers"] == 3, 30,
               message="three workers")
    assert row(a)["cpu"]["target"] == 3

    answer = a.post(f"/servers/{me}/workers", {"size": 1})
    assert answer.status_code == 200
    wait_until(lambda: len(worker_pids(a)) == 1, 30, message="one worker after shrinking")
    assert a.get("/health").json()["cpu"]["workers"] == 1

    a.post(f"/servers/{me}/workers", {"size": 2})
    before = wait_until(lambda: (lambda p: p if len(p) == 2 else None)(worker_pids(a)), 30, message="two again")
    jobs = [a.submit("cpu.spin", kwargs={"seconds": 0.3})["id"] for _ in range(8)]
    answer = a.post(f"/servers/{me}/workers", {"restart": True})
    assert answer.status_code == 200 and "restarting 2 workers" in answer.json()["applied"]["result"]
    assert row(a)["cpu"]["restarting"] is True
    again = a.post(f"/servers/{me}/workers", {"restart": True})
    assert again.status_code == 409 and "under way" in again.json()["detail"]
    wait_until(lambda: not row(a)["cpu"]["restarting"], 60, message="the restart ended")
    after = worker_pids(a)
    assert len(after) == 2 and not after & before, (before, after)
    done = [a.wait(job_id, 60) for job_id in jobs]
    assert [j["state"] for j in done] == ["succeeded"] * 8, done
    assert all(j["attempts"] == 1 for j in done), [j["attempts"] for j in done]


def test_a_request_to_another_server_is_applied_at_its_next_heartbeat(pair):
    a, b = pair
    b_owner = row(b)["owner"]
    def a_sees_b_supervising():
        seen = [s for s in a.get("/servers").json()["servers"] if s["owner"] == b_owner]
        return len(worker_pids(b)) == 2 and seen and seen[0]["cpu"]["supervised"]

    wait_until(a_sees_b_supervising, 30, message="a sees b supervising its workers")
    answer = a.post(f"/servers/{b_owner}/workers", {"size": 3})
    assert answer.status_code == 202 and answer.json()["applied"] is None, answer.text
    request_id = answer.json()["request"]["id"]
    wait_until(lambda: len(worker_pids(b)) == 3, 30, message="b resized by a request made on a")
    seen = wait_until(lambda: (lambda r: r if (r["control"]["applied"] or {}).get("id") == request_id else None)(
        row(a, b_owner)), 10, message="b's row reports the request done")
    assert seen["control"]["applied"]["ok"] is True and seen["cpu"]["target"] == 3
    assert seen["control"]["requested"]["size"] == 3
    assert len(worker_pids(a)) == 2, "a's own workers are untouched"

    missing = a.post("/servers/nobody/workers", {"size": 1})
    assert missing.status_code == 404 and "GET /servers" in missing.json()["detail"]
    b.stop()
    gone = a.post(f"/servers/{b_owner}/workers", {"size": 1})
    assert gone.status_code == 404, gone.text             # a clean stop deleted its row
