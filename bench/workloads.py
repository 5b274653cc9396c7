"""The workloads as greenjobs runs them over HTTP, plus the floors and ceilings they are read against.

Each returns a dict of metric -> number, so one report shape serves greenjobs, the limits and the
peers (``bench.peers.__main__`` has the same workloads through each peer's own client).
Runs in the harness's gevent-patched process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import gevent

from bench import floors
from bench.client import Conn, post_rate
from bench.rss import PeakSampler, rss

ROOT = Path(__file__).resolve().parent.parent
MB, KB = 1024 * 1024, 1024
POOL_SIZE = 1000


def _batch_wait(srv, jobs: list[dict]) -> None:
    """Submit ``jobs`` in /jobs/batch requests of at most 10,000 and long-poll each batch to the end."""
    conn = Conn("127.0.0.1", srv.port)
    batches = [conn.json("POST", "/jobs/batch", {"jobs": jobs[i:i + 10_000]}, expect=202)["batch"]
               for i in range(0, len(jobs), 10_000)]
    for b in batches:
        while True:
            info = conn.json("GET", f"/batches/{b}?wait=60", expect=200)
            if info["done"]:
                break
        if info["counts"]["succeeded"] != info["total"]:
            raise RuntimeError(f"batch {b}: {info['counts']}")
    conn.close()


def w1(srv, n: int) -> dict:
    """W1: n × sleep 0.1 s via /jobs/batch; wall to the last result; RSS of the server tree and per job."""
    idle = rss(srv.proc.pid)
    with PeakSampler([srv.proc.pid]) as tree, PeakSampler([srv.proc.pid], roots_only=True) as server:
        t0 = time.perf_counter()
        _batch_wait(srv, [{"handler": "sleep", "kwargs": {"seconds": 0.1}}] * n)
        wall = time.perf_counter() - t0
    return {"wall": wall, "peak_rss": tree.peak / MB,
            "rss_per_job": max(0, server.peak - idle) / KB / min(n, POOL_SIZE)}


def w1_single(srv, n: int, clients: int = 1000) -> dict:
    """W1s: n × sleep 0.1 s as single POSTs, each followed by its ?wait long-poll, from 1,000 clients."""
    def worker(count):
        conn = Conn("127.0.0.1", srv.port)
        for _ in range(count):
            job = conn.json("POST", "/jobs", {"handler": "sleep", "kwargs": {"seconds": 0.1}}, expect=202)
            done = conn.json("GET", f"/jobs/{job['id']}?wait=60", expect=200)
            if done["state"] != "succeeded":
                raise RuntimeError(done)
        conn.close()
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, max(1, n // clients)) for _ in range(clients)], raise_error=True)
    return {"wall": time.perf_counter() - t0}


def w1b(srv, n: int, url: str) -> dict:
    """W1b: n × http.get of the 100 ms server via /jobs/batch; vs_floor: over the bare gevent.Pool's
    same GETs measured just before."""
    bare = floors.measure("get", n, url)["wall"]
    with PeakSampler([srv.proc.pid]) as tree:
        t0 = time.perf_counter()
        _batch_wait(srv, [{"handler": "http.get", "kwargs": {"url": url}}] * n)
        wall = time.perf_counter() - t0
    return {"wall": wall, "peak_rss": tree.peak / MB, "vs_floor": wall / bare}


def w2(srv, n: int, iterations: int) -> dict:
    """W2: n × cpu.pbkdf2 of ~50 ms via /jobs/batch; vs_pool: over multiprocessing.Pool measured just before."""
    pool = floors.measure("pbkdf2", n, iterations)["wall"]
    wall = _w2_wall(srv, n, iterations)
    return {"wall": wall, "vs_pool": wall / pool}


def _w2_wall(srv, n: int, iterations: int) -> float:
    t0 = time.perf_counter()
    _batch_wait(srv, [{"handler": "cpu.pbkdf2", "kwargs": {"iterations": iterations, "password": str(i)}}
                      for i in range(n)])
    return time.perf_counter() - t0


def w3(srv, n: int) -> dict:
    """W3: jobs/s accepted by single POST /jobs (64 keep-alive clients) and by /jobs/batch of 1,000;
    drain: n no-op jobs in one batch, n / (first submit → last result)."""
    single = post_rate(srv.port, "/jobs", {"handler": "echo"}, n)
    conn = Conn("127.0.0.1", srv.port)
    body = {"jobs": [{"handler": "echo"}] * min(n, 1000)}
    t0 = time.perf_counter()
    for _ in range(max(1, n // 1000)):
        conn.json("POST", "/jobs/batch", body, expect=202)
    batch = max(1, n // 1000) * len(body["jobs"]) / (time.perf_counter() - t0)
    conn.close()
    gevent.sleep(1.0)                                 # let the accepted no-ops finish first
    t0 = time.perf_counter()
    _batch_wait(srv, [{"handler": "echo"}] * n)
    drain = n / (time.perf_counter() - t0)
    gevent.sleep(1.0)
    app = {f"client64{' coalesced' if coalesce else ''}": client_threads(srv, n, coalesce)
           for coalesce in (False, True)}
    return {"single": single, "batch": batch, "drain": drain, **app}


def client_threads(srv, n: int, coalesce: bool) -> float:
    """jobs/s of the Python client's submit() from 64 threads of an app (bench/client_threads.py, unpatched)."""
    command = [sys.executable, "-m", "bench.client_threads", srv.url, "--threads", "64", "--jobs", str(n)]
    done = subprocess.run(command + (["--coalesce"] if coalesce else []), capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"bench.client_threads failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["rate"]


def _percentiles(times: list[float], prefix: str) -> dict:
    times = sorted(times)
    return {f"{prefix}{p}": times[min(len(times) - 1, int(len(times) * q))]
            for p, q in (("p50", .5), ("p95", .95), ("p99", .99))}


def w4(srv, n: int, kinds=("echo", "cpu")) -> dict:
    """W4: n sequential submit-then-wait round trips of echo and of a tiny cpu job (pbkdf2, 1 iteration), ms.

    ``echo`` and ``cpu`` submit, then long-poll (two requests, as a client following a job does);
    ``echo 1rt`` and ``cpu 1rt`` use ``POST /jobs?wait=``, submit and wait in one round trip."""
    bodies = {"echo": {"handler": "echo"}, "cpu": {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 1}}}
    conn = Conn("127.0.0.1", srv.port)
    out = {}
    for kind in kinds:
        times = []
        body = bodies[kind.split()[0]]
        for _ in range(n):
            t0 = time.perf_counter()
            if kind.endswith(" 1rt"):
                done = conn.json("POST", "/jobs?wait=30", body, expect=202)
            else:
                job = conn.json("POST", "/jobs", body, expect=202)
                done = conn.json("GET", f"/jobs/{job['id']}?wait=30", expect=200)
            times.append((time.perf_counter() - t0) * 1000)
            if done["state"] != "succeeded":
                raise RuntimeError(done)
        out.update(_percentiles(times, f"{kind} "))
    conn.close()
    return out


def w5(srv, n_sleep: int, n_cpu: int, iterations: int) -> dict:
    """W5: GET /health latency (ms) every 10 ms while W1 and W2 run together."""
    times: list[float] = []
    load = [gevent.spawn(_batch_wait, srv, [{"handler": "sleep", "kwargs": {"seconds": 0.1}}] * n_sleep),
            gevent.spawn(_w2_wall, srv, n_cpu, iterations)]
    conn = Conn("127.0.0.1", srv.port)
    while not all(g.dead for g in load):
        t0 = time.perf_counter()
        conn.json("GET", "/health", expect=200)
        times.append((time.perf_counter() - t0) * 1000)
        gevent.sleep(0.01)
    conn.close()
    gevent.joinall(load, raise_error=True)
    out = _percentiles(times, "health ")
    del out["health p95"]
    return out


def dispatch(srv, n: int) -> dict:
    """D: idle cpu dispatch, created_at → started_at of a tiny cpu job after 50 ms idle; ms."""
    conn = Conn("127.0.0.1", srv.port)
    samples = []
    for _ in range(n):
        gevent.sleep(0.05)
        job = conn.json("POST", "/jobs", {"handler": "cpu.pbkdf2", "kwargs": {"iterations": 1}}, expect=202)
        done = conn.json("GET", f"/jobs/{job['id']}?wait=30", expect=200)
        created, started = (datetime.fromisoformat(done[k].replace("Z", "+00:00")) for k in ("created_at", "started_at"))
        samples.append((started - created).total_seconds() * 1000)
    conn.close()
    out = _percentiles(samples, "")
    del out["p95"]
    return out


# -- floors and ceilings, each in a fresh interpreter ----------------------------------

def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def start_module(module: str, *args, port: int) -> subprocess.Popen:
    """A ``python -m module args…`` helper server, once it accepts connections on ``port``."""
    proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def ceiling(kind: str, n: int) -> float:
    """W6: requests/s of a hello-world app (``bench.hello`` kind) under W3's client."""
    from tests.support import free_port
    port = free_port()
    proc = start_module("bench.hello", kind, port, port=port)
    try:
        post_rate(port, "/", {"handler": "echo"}, min(n, 1000), expect=200)     # warm up
        return post_rate(port, "/", {"handler": "echo"}, n, expect=200)
    finally:
        proc.terminate()
        proc.wait(10)


def w7(servers: list, n: int) -> dict:
    """W7: W3 single and drain and W1 spread over ``servers`` (processes sharing one ledger), as a load
    balancer would: each gets an equal share of the clients and of the jobs; rates over the whole."""
    share = max(1, n // len(servers))
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(post_rate, s.port, "/jobs", {"handler": "echo"}, share, 64 // len(servers))
                    for s in servers], raise_error=True)
    single = share * len(servers) / (time.perf_counter() - t0)
    gevent.sleep(1.0)                                 # let the accepted no-ops finish first
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(_batch_wait, s, [{"handler": "echo"}] * share) for s in servers], raise_error=True)
    drain = share * len(servers) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(_batch_wait, s, [{"handler": "sleep", "kwargs": {"seconds": 0.1}}] * share)
                    for s in servers], raise_error=True)
    return {"single": single, "drain": drain, "wall": time.perf_counter() - t0}
