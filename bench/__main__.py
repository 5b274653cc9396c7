"""``python -m bench [--quick] [--only W1,W3]``: greenjobs measured on the fixed workloads.

It starts the server itself from a copy of config.ini on a free port, runs each workload three
times (once with --quick), and prints medians with min-max and the ratio to the ideal.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

from bench.client import Conn  # noqa: E402
from tests.support import ServerProcess, write_ini  # noqa: E402


def w1_batch(srv, n=10_000, seconds=0.1):
    """W1: n sleep jobs via /jobs/batch, then one batch long-poll.  Ideal: n / pool * seconds."""
    conn = Conn("127.0.0.1", srv.port)
    t0 = time.perf_counter()
    batches = []
    for start in range(0, n, 10_000):
        res = conn.json("POST", "/jobs/batch", {"jobs": [{"handler": "sleep", "kwargs": {"seconds": seconds}}
                                                         for _ in range(min(10_000, n - start))]}, expect=202)
        batches.append(res["batch"])
    for b in batches:
        info = conn.json("GET", f"/batches/{b}?wait=600", expect=200)
        assert info["done"] and info["counts"]["succeeded"] == info["total"], info
    conn.close()
    return time.perf_counter() - t0


def w1_single(srv, n=10_000, seconds=0.1, clients=1000):
    """W1 via single POSTs and per-job ?wait long-polls from ``clients`` keep-alive connections."""
    def worker(count):
        conn = Conn("127.0.0.1", srv.port)
        for _ in range(count):
            job = conn.json("POST", "/jobs", {"handler": "sleep", "kwargs": {"seconds": seconds}}, expect=202)
            done = conn.json("GET", f"/jobs/{job['id']}?wait=600", expect=200)
            assert done["state"] == "succeeded", done
        conn.close()
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, n // clients) for _ in range(clients)], raise_error=True)
    return time.perf_counter() - t0


def w3_single(srv, n=10_000, clients=64):
    """W3: jobs/s accepted by single POST /jobs over ``clients`` keep-alive connections."""
    def worker(count):
        conn = Conn("127.0.0.1", srv.port)
        for _ in range(count):
            conn.json("POST", "/jobs", {"handler": "echo"}, expect=202)
        conn.close()
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, n // clients) for _ in range(clients)], raise_error=True)
    return (n // clients * clients) / (time.perf_counter() - t0)


def w3_batch(srv, n=10_000, size=1000):
    """W3: jobs/s accepted (durably) by /jobs/batch of ``size``."""
    conn = Conn("127.0.0.1", srv.port)
    body = {"jobs": [{"handler": "echo"} for _ in range(size)]}
    t0 = time.perf_counter()
    for _ in range(n // size):
        conn.json("POST", "/jobs/batch", body, expect=202)
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def w4_echo(srv, n=1000):
    """W4: sequential submit-then-wait of echo; returns p50, p99 in ms."""
    conn = Conn("127.0.0.1", srv.port)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        job = conn.json("POST", "/jobs", {"handler": "echo"}, expect=202)
        conn.json("GET", f"/jobs/{job['id']}?wait=10", expect=200)
        times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


POOL_SCRIPT = """
import hashlib, multiprocessing, os, statistics, sys, time
def f(args):
    return hashlib.pbkdf2_hmac("sha256", args[0].encode(), b"y", args[1]).hex()
def calibrate(target_ms=50.0, n=20000):
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        f(("x", n))
        samples.append(time.perf_counter() - t0)
    return int(n * target_ms / (statistics.median(samples) * 1000))
if __name__ == "__main__":
    n = int(sys.argv[1])
    iterations = calibrate()
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(f, [("warm", 1000)] * 4)
        t0 = time.perf_counter()
        pool.map(f, [(str(i), iterations) for i in range(n)], chunksize=1)
        print(iterations, time.perf_counter() - t0)
"""


def w2_cpu(srv, n=200):
    """W2: n cpu.pbkdf2 jobs of ~50 ms; returns (greenjobs wall s, multiprocessing.Pool wall s, ratio)."""
    import subprocess
    # calibration and the limit run in a fresh, unpatched interpreter: multiprocessing hangs under
    # gevent's patching
    out = subprocess.run([sys.executable, "-c", POOL_SCRIPT, str(n)], capture_output=True, text=True, check=True)
    iterations, limit = int(out.stdout.split()[0]), float(out.stdout.split()[1])
    conn = Conn("127.0.0.1", srv.port)
    t0 = time.perf_counter()
    res = conn.json("POST", "/jobs/batch", {"jobs": [{"handler": "cpu.pbkdf2", "kwargs": {
        "iterations": iterations, "password": str(i)}} for i in range(n)]}, expect=202)
    info = conn.json("GET", f"/batches/{res['batch']}?wait=600", expect=200)
    wall = time.perf_counter() - t0
    assert info["counts"]["succeeded"] == n, info
    conn.close()
    return wall, limit, wall / limit


def dispatch_latency(srv, n=100):
    """Idle dispatch: submit a tiny cpu job, then read created_at -> started_at; returns p50, p99 in ms."""
    from datetime import datetime
    conn = Conn("127.0.0.1", srv.port)
    samples = []
    for _ in range(n):
        gevent.sleep(0.05)                       # idle between jobs
        job = conn.json("POST", "/jobs", {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 1}}, expect=202)
        done = conn.json("GET", f"/jobs/{job['id']}?wait=30", expect=200)
        created, started = (datetime.fromisoformat(done[k].replace("Z", "+00:00")) for k in ("created_at", "started_at"))
        samples.append((started - created).total_seconds() * 1000)
    conn.close()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]


WORKLOADS = {
    "W1": ("10,000 x sleep 0.1 s via /jobs/batch (pool 1000)", w1_batch, 1.0, "s"),
    "W1s": ("10,000 x sleep 0.1 s, POST + ?wait per job, 1000 clients", w1_single, 1.0, "s"),
    "W3": ("single POST /jobs, 64 keep-alive clients", w3_single, None, "jobs/s"),
    "W3b": ("POST /jobs/batch of 1000", w3_batch, None, "jobs/s"),
    "W4": ("echo submit+wait round trip p50/p99", w4_echo, None, "ms"),
    "W2": ("200 x cpu.pbkdf2 ~50 ms: wall / multiprocessing.Pool / ratio", w2_cpu, None, "s"),
    "D": ("idle cpu dispatch, submit -> worker start p50/p99", dispatch_latency, None, "ms"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small N, one run (for CI)")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default="", help="write results to this file")
    parser.add_argument("--broker", choices=("embedded", "rabbitmq"), default="embedded",
                        help="where cpu jobs are queued")
    parser.add_argument("--server", choices=("gevent", "waitress"), default="gevent",
                        help="the [server:main] runner: ours (gevent.pywsgi) or waitress under the same patching")
    args = parser.parse_args(argv)
    chosen = [w for w in (args.only.split(",") if args.only else WORKLOADS) if w]
    runs = 1 if args.quick else args.runs
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        app = {} if args.broker == "embedded" else {
            "greenjobs.broker.url": "amqp://guest:guest@127.0.0.1:5672//",
            "greenjobs.broker.namespace": f"gjbench-{int(time.time())}"}
        if args.server == "waitress":
            ini = write_ini(Path(tmp), app, server={"use": "egg:waitress#main", "threads": 1100,
                                                    "connection_limit": 2000, "backlog": 2048}, replace_server=True)
        else:
            ini = write_ini(Path(tmp), app, server={"max_connections": 20000})
        srv = ServerProcess(ini).start()
        try:
            for name in chosen:
                title, fn, ideal, unit = WORKLOADS[name]
                kwargs = {"n": {"W4": 100, "W2": 20, "D": 20}.get(name, 1000)} if args.quick else {}
                values = [fn(srv, **kwargs) for _ in range(runs)]
                if isinstance(values[0], tuple):
                    med = tuple(statistics.median(v[i] for v in values) for i in range(len(values[0])))
                    shown = " / ".join(f"{m:.2f}" for m in med)
                    shown = shown if len(shown) < 14 else shown.replace(" ", "")
                else:
                    med = statistics.median(values)
                    shown = f"{med:.3f}" if unit == "s" else f"{med:,.0f}"
                ratio = f"{med / (ideal * (kwargs.get('n', 10000) / 10000)):.2f}x ideal" if ideal else ""
                print(f"{name:4} {title:58} {shown:>14} {unit:7} {ratio}", flush=True)
                results.append({"workload": name, "title": title, "median": med, "runs": values, "unit": unit})
        finally:
            srv.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
