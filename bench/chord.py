"""``python -m bench.chord [--headers 10000] [--store sqlite|postgres]``: one chord of N header jobs, timed.

A server (pserve from a copy of config.ini, no cpu workers) takes ``{"chord": {"header": [wf.add(i) × N],
"body": wf.total}}`` in one POST; prints how long the POST took and how long until the workflow's result
was visible (``GET /workflows/{id}?wait=``), and checks the result.  Each header's end is one counter
update on the body's row, and the body's input is read once: the time grows with N, not N².
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.schedule_lag import ledger_url
from tests.support import ServerProcess, free_port, stop_all, write_ini


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chord", description=__doc__.split("\n\n")[0])
    parser.add_argument("--headers", type=int, default=10_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="greenjobs-chord-"))
    url, drop = ledger_url(args.store, folder)
    ini = write_ini(folder / "srv", app={"greenjobs.store.url": url, "greenjobs.workers.cpu": 0,
                                         "greenjobs.api.max_batch": args.headers + 1,
                                         "greenjobs.api.max_body": 64 * (args.headers + 1) + 4096,
                                         "greenjobs.handlers": "greenjobs.handlers.builtin tests.workflow_handlers"},
                    server={"port": str(free_port())})
    srv = ServerProcess(ini).start()
    try:
        body = {"chord": {"header": [{"handler": "wf.add", "args": [i]} for i in range(args.headers)],
                          "body": {"handler": "wf.total"}}}
        start = time.perf_counter()
        made = requests.post(f"{srv.url}/workflows", json=body, timeout=300)
        posted = time.perf_counter()
        assert made.status_code == 202, made.text[:500]
        workflow = made.json()["id"]
        while True:
            done = requests.get(f"{srv.url}/workflows/{workflow}", params={"wait": 30}, timeout=90).json()
            if done["state"] != "running":
                break
        ended = time.perf_counter()
    finally:
        stop_all([srv])
        drop()
    ok = done["state"] == "succeeded" and done["result"] == sum(range(args.headers))
    print(f"chord of {args.headers} header jobs, {args.store}: POST {posted - start:.2f} s, result visible "
          f"{ended - start:.2f} s after the POST began ({args.headers / (ended - start):,.0f} header jobs/s); "
          f"{'result right' if ok else 'WRONG: ' + str(done)[:300]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
