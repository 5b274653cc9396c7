"""W3 from an app's side: the Python client's single ``submit`` calls from many threads at once (a web app's
request threads), with and without coalescing.  Run unpatched, in its own interpreter, so its threads are
real ones:

    python -m bench.client_threads http://127.0.0.1:6543 --threads 64 --jobs 10000 [--coalesce]

Prints one JSON line: jobs/s from the first call to the last answer, and the requests they took.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

from greenjobs_client import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--coalesce", action="store_true")
    args = parser.parse_args()
    client = Client(args.url, coalesce=args.coalesce, pool_maxsize=args.threads, timeout=60)
    client.submit("echo", warm=True)
    each = max(1, args.jobs // args.threads)
    start = threading.Barrier(args.threads + 1)
    failures: list[BaseException] = []

    def app_thread() -> None:
        start.wait()
        try:
            for _ in range(each):
                client.submit("echo")
        except BaseException as exc:        # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=app_thread) for _ in range(args.threads)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{len(failures)} threads failed, e.g. {failures[0]!r}")
    coalescer = client.coalescer
    print(json.dumps({"rate": each * args.threads / elapsed, "jobs": each * args.threads,
                      "requests": coalescer.requests - 1 if coalescer else each * args.threads}))


if __name__ == "__main__":
    main()
