"""The PostgreSQL ledger crashed and restarted under 500 io submissions (a private cluster, never the
shared one): nothing accepted is lost, 503s come only while it is down, and the server takes
submissions again soon after it is back, by itself."""
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import list_all, wait_until
from tests.faults.ledger import Ledger
from tests.faults.pg_cluster import PgCluster

pytestmark = pytest.mark.faults

TOTAL = 500
APP = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.faults.fault_handlers", "greenjobs.store.lease_seconds": 2,
       "greenjobs.shutdown.grace": 0.5, "greenjobs.workers.cpu": 0}


@pytest.fixture
def cluster():
    if not PgCluster.available():
        pytest.skip("no initdb/pg_ctl/runuser on this machine")
    # not under tmp_path: its parents are root's alone, and the cluster runs as the postgres user
    pg = PgCluster(Path(tempfile.mkdtemp(prefix="greenjobs-pg-"))).init()
    yield pg
    pg.destroy()


def test_postgres_crashed_and_restarted_under_500_submissions_loses_nothing(cluster, make_server):
    srv = make_server(app={**APP, "greenjobs.store.url": cluster.url}, name="srv")
    ledger = Ledger(srv.ini.parent)
    answers: list[tuple[float, int]] = []            # (time, status) of every answer
    lock = threading.Lock()
    todo = list(range(TOTAL))

    def client():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            key = uuid.uuid4().hex                  # the same key on every retry: one job per submission
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    r = requests.post(srv.url + "/jobs", json={"handler": "fault.io", "kwargs": {"seconds": 0.05}},
                                      headers={"Idempotency-Key": key}, timeout=15)
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
                with lock:
                    answers.append((time.monotonic(), r.status_code))
                if r.status_code in (200, 202):
                    with lock:
                        ledger.accept(r)
                    break
                assert r.status_code == 503, r.text[:300]
                time.sleep(0.05)
            else:
                raise AssertionError("a submission was never accepted")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(ledger.accepted) >= 100, 60, message="100 accepted before the crash")
    down = time.monotonic()
    cluster.stop("immediate")                       # a crash: no checkpoint, every connection cut
    wait_until(lambda: srv.get("/health").status_code == 503, 10, message="/health says the store is down")
    time.sleep(2)
    cluster.start()
    back = time.monotonic()
    for t in threads:
        t.join(120)
    assert len(ledger.accepted) == TOTAL

    refused = [at for at, status in answers if status == 503]
    accepted_after = [at for at, status in answers if status in (200, 202) and at > back]
    assert refused, "the crash was not noticed"
    assert all(down <= at <= back + 2.0 for at in refused), "503 outside the outage"
    assert accepted_after and accepted_after[0] - back < 2.0, "no recovery within 2 s of the database's return"
    wait_until(lambda: srv.get("/health").status_code == 200, 10, message="/health ok again")
    wait_until(lambda: all(j["state"] in ("succeeded", "failed", "cancelled") for j in list_all(srv)), 60,
               interval=0.5, message="every job terminal")
    final = {j["id"]: j for j in list_all(srv)}
    report = ledger.report(final)
    print({k: len(v) for k, v in report.items()}, f"503s: {len(refused)}",
          f"first 202 after return: {accepted_after[0] - back:.2f} s")
    assert not report["lost"] and not report["stuck"] and not report["unexpected"], report
    assert len(final) == TOTAL and all(j["state"] == "succeeded" for j in final.values())
