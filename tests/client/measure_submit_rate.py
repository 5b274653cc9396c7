"""Measure the client's sequential submit rate with keep-alive and with one connection per request.

Not a test (pytest does not collect it): run it against a server you started, e.g.

    python tests/client/measure_submit_rate.py --url http://127.0.0.1:6543 --jobs 2000

Both runs use the same Client and the same idempotent POST /jobs; the second sends
``Connection: close`` and closes the client's pool after each submit, so every submit opens a
new TCP connection (with the header alone, urllib3 sometimes reuses the socket the server is
closing and the submit goes out again after a "Remote end closed connection"). The runs alternate (keep-alive, close, keep-alive, close, ...) so drift hits both alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

from greenjobs_client import Client


def rate(url: str, jobs: int, keep_alive: bool) -> tuple[float, float, float]:
    """(submits per second, median and 99th percentile latency in ms) for ``jobs`` sequential echo submits."""
    client = Client(url, headers=None if keep_alive else {"Connection": "close"})
    client.submit("echo", warm=True)
    latencies = []
    started = time.perf_counter()
    for n in range(jobs):
        sent = time.perf_counter()
        client.submit("echo", n=n)
        if not keep_alive:
            client.close()      # a new TCP connection for the next submit (urllib3 might reuse the old one)
        latencies.append(time.perf_counter() - sent)
    seconds = time.perf_counter() - started
    client.close()
    latencies.sort()
    return jobs / seconds, 1000 * latencies[len(latencies) // 2], 1000 * latencies[int(len(latencies) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:6543")
    parser.add_argument("--jobs", type=int, default=2000, help="sequential submits per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind")
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for _ in range(args.runs):
        for keep_alive in (True, False):
            results[keep_alive].append(rate(args.url, args.jobs, keep_alive))
    medians = {}
    for keep_alive, label in ((True, "keep-alive"), (False, "connection per request")):
        runs = results[keep_alive]
        medians[keep_alive] = statistics.median(r[0] for r in runs)
        print(f"{label:>24}: median {medians[keep_alive]:7,.0f} submits/s  (runs: "
              + ", ".join(f"{r[0]:,.0f}/s p50 {r[1]:.2f} ms p99 {r[2]:.2f} ms" for r in runs) + ")")
    print(f"{'keep-alive / per-request':>24}: {medians[True] / medians[False]:.2f}x")

if __name__ == "__main__":
    main()
