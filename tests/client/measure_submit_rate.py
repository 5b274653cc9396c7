"""Measure the client's sequential submit rate with keep-alive and with one connection per request.

Not a test (pytest does not collect it): run it against a server you started, e.g.

    python tests/client/measure_submit_rate.py --url http://127.0.0.1:6543 --jobs 2000

Both runs use the same Client and the same idempotent POST /jobs; the second only adds
``Connection: close``, so the server closes every connection and the client opens a new one per
submit. The runs alternate (keep-alive, close, keep-alive, close, ...) so drift hits both alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

from greenjobs_client import Client


def rate(url: str, jobs: int, keep_alive: bool) -> float:
    """Submits per second for ``jobs`` sequential submits of an echo job."""
    client = Client(url, headers=None if keep_alive else {"Connection": "close"})
    client.submit("echo", warm=True)
    started = time.perf_counter()
    for n in range(jobs):
        client.submit("echo", n=n)
    seconds = time.perf_counter() - started
    client.close()
    return jobs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:6543")
    parser.add_argument("--jobs", type=int, default=2000, help="sequential submits per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind")
    args = parser.parse_args()
    results: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.runs):
        for keep_alive in (True, False):
            results[keep_alive].append(rate(args.url, args.jobs, keep_alive))
    for keep_alive, label in ((True, "keep-alive"), (False, "connection per request")):
        runs = ", ".join(f"{r:,.0f}" for r in results[keep_alive])
        print(f"{label:>24}: median {statistics.median(results[keep_alive]):7,.0f} submits/s  (runs: {runs})")
    ratio = statistics.median(results[True]) / statistics.median(results[False])
    print(f"{'keep-alive / per-request':>24}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
