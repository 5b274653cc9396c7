"""Signal receivers listed in config.ini (``greenjobs.signals``), end to end on a real pserve.

The receivers live in tests/e2e/event_handlers.py and write JSON lines to ``signals.log`` next to
the server's ini (its cwd): current_job is not available in a receiver, which gets
(handler name, job=dict, signal=name).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.event_handlers import LOG, RELEASE
from tests.e2e.helpers import QUICK_STOP, wait_job, wait_until
from tests.support import ROOT, write_ini

pytestmark = pytest.mark.e2e

R = "tests.e2e.event_handlers"
ALL = ("submitted", "started", "progress", "retrying", "succeeded", "failed", "cancelled")


def lines(srv) -> list[dict]:
    path = Path(srv.ini).parent / LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_listed_receivers_see_each_jobs_life_in_order(make_server):
    receivers = " ".join(f"{name}:{R}.record" for name in ALL)
    srv = make_server(app={**QUICK_STOP, "greenjobs.signals": receivers, "greenjobs.retry.base": 0.05,
                           "greenjobs.retry.max": 0.1,
                           "greenjobs.handlers": f"greenjobs.handlers.builtin {R}", "greenjobs.pool.size": 1})
    ok = srv.submit("echo", kwargs={"k": "v"})
    bad = srv.submit("fail", kwargs={"message": "x"}, max_retries=1)
    prog = srv.submit("evt.progress", kwargs={"steps": 2, "pause": 0.15})
    for job in (ok, bad, prog):
        wait_job(srv, job["id"])
    blocker = srv.submit("sleep", kwargs={"seconds": 60})       # pool.size 1: the next one waits
    queued = srv.submit("echo", kwargs={"queued": True})
    assert srv.delete(f"/jobs/{queued['id']}").status_code == 200
    assert srv.delete(f"/jobs/{blocker['id']}").status_code == 200
    wait_until(lambda: len([x for x in lines(srv) if x["job"] == blocker["id"]]) >= 3, 20, message="blocker lines")

    def seq(job):
        return [x["signal"] for x in lines(srv) if x["job"] == job["id"]]

    assert seq(ok) == ["submitted", "started", "succeeded"]
    assert seq(bad) == ["submitted", "started", "retrying", "started", "failed"]
    assert seq(prog)[:2] == ["submitted", "started"] and seq(prog)[-1] == "succeeded"
    assert seq(prog).count("progress") == 2
    assert seq(queued) == ["submitted", "cancelled"]
    assert seq(blocker) == ["submitted", "started", "cancelled"]
    mine = [x for x in lines(srv) if x["job"] == ok["id"]]
    assert {x["sender"] for x in mine} == {"echo"}
    assert mine[0]["kwargs"] == {"k": "v"} and mine[-1]["state"] == "succeeded"
    assert {tuple(x["extra"]) for x in mine} == {()}      # (sender, job=, signal=) and nothing else


def test_a_raising_receiver_changes_nothing_and_is_logged(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.signals": f"started:{R}.explode succeeded:{R}.explode "
                                                              f"succeeded:{R}.record"})
    job = srv.submit("echo", kwargs={"a": 1})
    done = wait_job(srv, job["id"])
    assert (done["state"], done["result"], done["attempts"]) == ("succeeded", {"a": 1}, 1)
    wait_until(lambda: [x for x in lines(srv) if x["job"] == job["id"] and x.get("signal") == "succeeded"
                        and "receiver" not in x], 20, message="the other receiver still ran")
    log = wait_until(lambda: (lambda text: text if text.count(f"receiver exploded on purpose for job {job['id']}") >= 2
                              else None)(srv.log()), 20, message="tracebacks in the server log")
    assert "Traceback (most recent call last)" in log
    assert "explode" in log and job["id"] in log
    metrics = srv.get("/metrics", timeout=30).text
    assert "greenjobs_signal_receiver_errors_total 2.0" in metrics, \
        [line for line in metrics.splitlines() if "signal" in line]
    # the server goes on as before
    assert wait_job(srv, srv.submit("echo")["id"])["state"] == "succeeded"


def test_a_slow_receiver_does_not_delay_the_job(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.signals": f"submitted:{R}.slow started:{R}.slow "
                                                              f"succeeded:{R}.sleep10"})
    job = srv.submit("echo")
    done = wait_job(srv, job["id"], 30)
    assert done["state"] == "succeeded"
    # the job finished while the receivers of its first two signals are still blocked
    entered = wait_until(lambda: [x for x in lines(srv) if x["job"] == job["id"] and x["phase"] == "entered"],
                         10, message="slow receivers entered")
    assert {x["signal"] for x in entered} >= {"submitted", "started"}
    assert not [x for x in lines(srv) if x["job"] == job["id"] and x["phase"] == "left"]
    # other jobs and requests go on too
    for _ in range(5):
        assert wait_job(srv, srv.submit("echo")["id"], 30)["state"] == "succeeded"
    (Path(srv.ini).parent / RELEASE).touch()
    wait_until(lambda: len([x for x in lines(srv) if x["job"] == job["id"] and x["phase"] == "left"
                            and x["receiver"] == "slow"]) == 2, 20, message="slow receivers released")
    wait_until(lambda: [x for x in lines(srv) if x["job"] == job["id"] and x["receiver"] == "sleep10"
                        and x["phase"] == "left"], 30, message="the 10 s receiver finished")


def test_signal_backlog_limit_drops_calls_and_jobs_go_on(make_server):
    srv = make_server(app={**QUICK_STOP, "greenjobs.signals": f"submitted:{R}.slow",
                           "greenjobs.signals.backlog": 2})
    jobs = [srv.submit("echo", kwargs={"i": i}) for i in range(5)]
    assert [wait_job(srv, j["id"])["state"] for j in jobs] == ["succeeded"] * 5
    metrics = srv.get("/metrics", timeout=30).text
    assert "greenjobs_signal_calls_dropped_total 3.0" in metrics, \
        [line for line in metrics.splitlines() if "signal" in line]
    entered = [x for x in lines(srv) if x["phase"] == "entered"]
    assert [x["job"] for x in entered] == [j["id"] for j in jobs[:2]]
    assert "dropped" in srv.log()
    (Path(srv.ini).parent / RELEASE).touch()
    wait_until(lambda: len([x for x in lines(srv) if x["phase"] == "left"]) == 2, 20, message="released")
    extra = srv.submit("echo")                       # room again
    wait_until(lambda: [x for x in lines(srv) if x["job"] == extra["id"]], 20, message="called again")


def start_refused(tmp_path: Path, app: dict) -> tuple[int, str]:
    ini = write_ini(tmp_path, {**QUICK_STOP, **app})
    try:
        proc = subprocess.run([sys.executable, "-m", "pyramid.scripts.pserve", str(ini)], cwd=ini.parent,
                              capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"pserve started (or hung) with a bad greenjobs.signals: {exc.stdout} {exc.stderr}")
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("entry, words", [
    (f"finished:{R}.record", ["greenjobs.signals", "finished", "succeeded"]),
    (f"{R}.record", ["greenjobs.signals"]),
    ("succeeded:", ["greenjobs.signals"]),
    ("succeeded:tests.e2e.no_such_module.record", ["greenjobs.signals", "no_such_module", "cannot be imported"]),
    (f"succeeded:{R}.no_such_function", ["greenjobs.signals", "no_such_function"]),
    (f"succeeded:{R}.not_callable", ["greenjobs.signals", "not callable"]),
])
def test_a_bad_entry_stops_pserve_with_a_clear_message(tmp_path, entry, words):
    code, output = start_refused(tmp_path / "bad", {"greenjobs.signals": entry})
    assert code != 0, output[-2000:]
    assert "greenjobs serving on" not in output
    for word in words:
        assert word in output, (word, output[-2000:])
    assert "Traceback" not in output, output[-3000:]
