"""``python -m bench.schedule_lag [--seconds 600] [--store sqlite|postgres]``: how late slots become jobs.

Two servers (pserve from copies of config.ini) on one ledger, an every-second schedule made over HTTP;
after ``--seconds`` it is paused and every job it made is read back.  Prints the slots fired, whether
any fired twice or was skipped, and the lag from each slot's time to its job's creation (p50, p99,
max): the figure issue 15 asks for.  Both servers share this machine's clock, so the lag is the
scheduler's own (its sleep, the insert's commit), not clock skew.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import requests

from tests.support import ServerProcess, free_port, stop_all, write_ini

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ledger_url(store: str, folder: Path) -> tuple[str, callable]:
    if store == "sqlite":
        return f"sqlite:///{folder}/shared.sqlite", lambda: None
    import psycopg
    name = f"bench_schedule_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return f"{POSTGRES}/{name}", drop


def all_jobs(url: str, schedule: str) -> list[dict]:
    jobs, after = [], None
    while True:
        page = requests.get(f"{url}/jobs", params={"schedule": schedule, "limit": 500, "after": after},
                            timeout=30).json()
        jobs += page["jobs"]
        after = page.get("next")
        if not after:
            return jobs


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule_lag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="greenjobs-schedule-lag-"))
    url, drop = ledger_url(args.store, folder)
    servers = []
    try:
        for name in ("a", "b"):
            ini = write_ini(folder / name, app={"greenjobs.store.url": url, "greenjobs.workers.cpu": 0},
                            server={"port": str(free_port())})
            servers.append(ServerProcess(ini).start())
        a, b = servers
        made = a.post("/schedules", {"name": "tick", "handler": "echo", "every": 1})
        assert made.status_code == 201, made.text
        time.sleep(args.seconds)
        a.post("/schedules/tick/pause", None)
        time.sleep(1)
        jobs = all_jobs(b.url, "tick")
    finally:
        stop_all(servers)
        drop()
    slots = sorted(epoch(j["schedule"]["fire_at"]) for j in jobs)
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:])]
    lags = [(epoch(j["created_at"]) - epoch(j["schedule"]["fire_at"])) * 1000 for j in jobs]
    print(f"schedule lag, {args.store}, two servers, every 1 s for {args.seconds:.0f} s: {len(slots)} slots, "
          f"{len(slots) - len(set(slots))} fired twice, {sum(1 for g in gaps if g > 1.0)} gaps; lag slot -> job "
          f"p50 {percentile(lags, 50):.1f} ms, p99 {percentile(lags, 99):.1f} ms, max {max(lags):.1f} ms")
    return 0 if len(set(slots)) == len(slots) and all(g == 1.0 for g in gaps) else 1


if __name__ == "__main__":
    sys.exit(main())
