"""Run by test_flow_contract: two PostgreSQL stores (two servers) claim gated cpu jobs of two rate buckets in
opposite orders, each pair in one group commit, under gevent's patching (so their transactions overlap, as two
servers' do).  Exits 1 if a write failed (a deadlock) or a store turned unhealthy."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from greenjobs.pool import lifecycle  # noqa: E402
from greenjobs.pool.job import QUEUED, Job, new_id  # noqa: E402
from greenjobs.pool.store import open_store  # noqa: E402


def judge(job, lease):
    return lifecycle.judge_worker_claim(job, lease.owner, lease.expires, False, lambda w: False, 3, 30.0, time.time())


def main(url: str) -> int:
    a, b = open_store(url, lease_seconds=5.0), open_store(url, lease_seconds=5.0)
    answers, failures = [], []
    try:
        for _ in range(20):
            jobs = {k: Job(id=new_id(), handler="h", kind="cpu", state=QUEUED, timeout=30.0,
                           gate={"bucket": f"h:{k[0]}", "every": 0.001, "max_running": None})
                    for k in ("a1", "b1", "b2", "a2")}
            a.insert(list(jobs.values()), "probe")
            claims = [gevent.spawn(a.claim_for_worker, jobs["a1"].id, "wa", judge),
                      gevent.spawn(a.claim_for_worker, jobs["b1"].id, "wa", judge),
                      gevent.spawn(b.claim_for_worker, jobs["b2"].id, "wb", judge),
                      gevent.spawn(b.claim_for_worker, jobs["a2"].id, "wb", judge)]
            gevent.joinall(claims, timeout=30)
            for g in claims:
                if g.exception is not None:
                    failures.append(repr(g.exception))
                else:
                    answers.append(g.value[0])
            if not (a.healthy and b.healthy):
                failures.append(f"unhealthy: {a.last_error or b.last_error}")
                break
    finally:
        a.close()
        b.close()
    print("answers", sorted(set(answers)), len(answers), "failures", failures)
    return 1 if failures or "go" not in answers else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
