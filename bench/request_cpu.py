"""``python -m bench.request_cpu [--rounds 3] [--requests 4000]``: the server's own CPU per request.

A fresh ``pserve`` (a copy of config.ini) takes ``--requests`` of ``GET /health`` and then of ``POST /jobs``
(echo: the job is also run) from 64 keep-alive connections, ``--rounds`` times; the server's utime + stime
from /proc before and after each gives its CPU per request, and the rates are printed beside it.  CPU time
moves far less than rates when other work shares the machine, so before/after of a change to the request path
reads best here; ``jobs ÷ health`` is W3's single-submit ratio against the same server's health check.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.client import post_rate, request_rate  # noqa: E402
from tests.support import ServerProcess, write_ini  # noqa: E402

CLIENTS = 64


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included, its children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cpu", description=__doc__.split("\n\n")[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory(prefix="gjcpu-") as folder:
        srv = ServerProcess(write_ini(Path(folder), {}, server={"max_connections": 20000})).start()
        try:
            measures = {"health": lambda: request_rate(srv.port, "GET", "/health", None, n, CLIENTS),
                        "jobs": lambda: post_rate(srv.port, "/jobs", {"handler": "echo"}, n, CLIENTS)}
            post_rate(srv.port, "/jobs", {"handler": "echo"}, n // 2)          # warm up both paths
            request_rate(srv.port, "GET", "/health", None, n // 4, CLIENTS)
            time.sleep(1.0)
            seen: dict[str, list[tuple[float, float]]] = {name: [] for name in measures}
            for _ in range(args.rounds):
                for name, measure in measures.items():
                    before = cpu_seconds(srv.proc.pid)
                    rate = measure()
                    time.sleep(0.5)                 # the jobs' outcomes are recorded after their answers
                    seen[name].append(((cpu_seconds(srv.proc.pid) - before) / n * 1e6, rate))
        finally:
            srv.stop()
    out = {}
    for name, pairs in seen.items():
        out[f"{name} cpu_us"] = round(statistics.median(p[0] for p in pairs))
        out[f"{name} rate"] = round(statistics.median(p[1] for p in pairs))
    out["jobs ÷ health"] = round(out["jobs rate"] / out["health rate"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
