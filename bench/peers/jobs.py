"""The job bodies every peer runs, so each peer's task module only wraps them in its decorator.

Matches greenjobs' built-ins: ``sleep`` (cooperative under a gevent worker), ``http_get`` (one shared
urllib3 pool, like ``http.get``), ``pbkdf2`` (``cpu.pbkdf2``), ``echo`` (no-op).
"""
from __future__ import annotations

import hashlib
import os
import time

NAMESPACE = os.environ.get("BENCH_NS", "gjbench")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")

_http = None


def sleep(seconds: float) -> dict:
    time.sleep(seconds)              # patched by the gevent worker pools: cooperative there
    return {"slept": seconds}


def http_get(url: str) -> dict:
    global _http
    if _http is None:                # created on first use, after the worker has patched sockets
        import urllib3
        _http = urllib3.PoolManager(num_pools=64, maxsize=1000, block=False, retries=False)
    started = time.perf_counter()
    response = _http.request("GET", url, redirect=False, timeout=30)
    return {"status": response.status, "bytes": len(response.data), "elapsed": time.perf_counter() - started}


def pbkdf2(iterations: int, password: str = "x", salt: str = "y") -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()


def echo(**kwargs) -> dict:
    return kwargs
