"""``python -m bench.floors sleep|get|pbkdf2|calibrate N [URL|ITERATIONS]``: what the machine allows, one JSON line out.

Each runs in a fresh interpreter: the gevent floors patch their own process, and
multiprocessing.Pool must not run under the patching the harness lives in.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(kind: str, *args) -> dict:
    """Run ``python -m bench.floors kind args…`` in a fresh interpreter and return its JSON line.

    W1b and W2 call it right before each system's own run, so every ratio to a floor is paired
    with a floor measured under the same load (the machine is shared; minutes apart is too far).
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-m", "bench.floors", kind, *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"bench.floors {kind}: {out.stderr[-500:]}")
    return json.loads(out.stdout.splitlines()[-1])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sleep_floor(n: int, seconds: float = 0.1, size: int = 1000) -> dict:
    """W1 floor: a bare gevent.pool.Pool(size) running n gevent.sleep(seconds)."""
    from gevent import monkey
    monkey.patch_all()
    import gevent
    import gevent.pool
    idle = _peak_rss_mb()
    pool = gevent.pool.Pool(size)
    t0 = time.perf_counter()
    for _ in range(n):
        pool.spawn(gevent.sleep, seconds)
    pool.join()
    return {"wall": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(), "idle_rss_mb": idle}


def get_floor(n: int, url: str, size: int = 1000) -> dict:
    """W1b floor: a bare gevent.pool.Pool(size) doing n GETs of ``url`` with one urllib3 PoolManager."""
    from gevent import monkey
    monkey.patch_all()
    import gevent.pool
    import urllib3
    http = urllib3.PoolManager(maxsize=size, block=False, retries=False)

    def get(_):
        response = http.request("GET", url, timeout=30)
        assert response.status == 200, response.status

    pool = gevent.pool.Pool(size)
    t0 = time.perf_counter()
    for i in range(n):
        pool.spawn(get, i)
    pool.join(raise_error=True)
    return {"wall": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}


def pbkdf2(args) -> str:
    return hashlib.pbkdf2_hmac("sha256", args[0].encode(), b"y", args[1]).hex()


def calibrate(target_ms: float = 50.0, probe: int = 20000) -> int:
    """Iterations for one PBKDF2-HMAC-SHA256 call of ~target_ms on this machine."""
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        pbkdf2(("x", probe))
        samples.append(time.perf_counter() - t0)
    return int(probe * target_ms / (statistics.median(samples) * 1000))


def pool_floor(n: int, iterations: int = 0) -> dict:
    """W2 limit: multiprocessing.Pool(cpu_count).map of n pbkdf2 calls (calibrated when iterations=0)."""
    import multiprocessing
    iterations = iterations or calibrate()
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(pbkdf2, [("warm", 1000)] * 4)
        t0 = time.perf_counter()
        pool.map(pbkdf2, [(str(i), iterations) for i in range(n)], chunksize=1)
        return {"wall": time.perf_counter() - t0, "iterations": iterations}


if __name__ == "__main__":
    kind, count = sys.argv[1], int(sys.argv[2])
    if kind == "sleep":
        out = sleep_floor(count)
    elif kind == "calibrate":
        out = {"iterations": calibrate()}
    elif kind == "get":
        out = get_floor(count, sys.argv[3])
    else:
        out = pool_floor(count, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(json.dumps(out))
