"""``python -m bench.store_rate [--jobs N]``: the ledgers alone, no HTTP: insert, take + complete, sweep.

For each backend (SQLite in a temporary folder; PostgreSQL in a fresh database on 127.0.0.1:5432, dropped
after, skipped when none answers): N no-op jobs inserted in batches of 1,000; taken from the ledger into 500
slots and each finished by its own greenlet (the io pool's pattern: one taker fills the free slots with
``take``, each job records its outcome under the lease); then marked finished
long ago and swept with ``store.sweep`` until caught up.  Prints jobs/s for each step.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from greenjobs.pool.job import QUEUED, SUCCEEDED, Job, new_id  # noqa: E402
from greenjobs.pool.store import open_store  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def measure(url: str, n: int) -> dict:
    store = open_store(url)
    upkeep = gevent.spawn(_maintain, store)         # what a server's maintenance tick does meanwhile
    try:
        jobs = [Job(id=new_id(), handler="echo", kind="io", state=QUEUED) for _ in range(n)]
        start = time.perf_counter()
        for i in range(0, n, 1000):
            store.insert(jobs[i:i + 1000], "bench")
        inserted = time.perf_counter()

        pool, left = Pool(500), n
        while left:
            pool.wait_available()
            taken = store.take("bench", ("io",), pool.free_count())
            left -= len(taken)
            for job in taken:
                pool.spawn(store.finish, job, "bench", SUCCEEDED, "null", None)
            if not taken:
                raise RuntimeError(f"{left} jobs were not found queued")
        pool.join()
        completed = time.perf_counter()
        long_ago = time.time() - 3600
        store._db.write(lambda conn: conn.execute(f"UPDATE jobs SET finished_at = {long_ago}"))
        swept_from, deleted = time.perf_counter(), 0
        while True:
            batch = store.sweep(long_ago + 1, 5000)
            deleted += batch
            if batch < 5000:
                break
        swept = time.perf_counter()
        return {"insert": n / (inserted - start), "take+complete": n / (completed - inserted),
                "sweep": deleted / (swept - swept_from)}
    finally:
        upkeep.kill()
        store.close()


def _maintain(store) -> None:
    while True:
        gevent.sleep(1.0)
        store.maintain()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gjstore-") as folder:
        rows = [("SQLite", measure(f"sqlite:///{folder}/bench.sqlite", args.jobs))]
    try:
        import psycopg
        name = f"gjstore_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(POSTGRES + "/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:         # noqa: BLE001 - no PostgreSQL here: report SQLite alone
        print(f"PostgreSQL skipped: {exc}")
    else:
        try:
            rows.append(("PostgreSQL", measure(f"{POSTGRES}/{name}", args.jobs)))
        finally:
            with psycopg.connect(POSTGRES + "/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for label, rates in rows:
        print(f"{label:10} " + ", ".join(f"{step} {rate:,.0f} jobs/s" for step, rate in rates.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
