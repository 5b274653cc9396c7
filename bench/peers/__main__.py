"""``python -m bench.peers NAME --only W1,… --runs N --iterations I --url URL [--quick]``.

Runs the workloads on one peer: starts its workers per mode (io, cpu), measures, stops them and
deletes what the run left in the broker. Prints one JSON list of measurements on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from bench import floors
from bench.peers import load
from bench.rss import PeakSampler

MB = 1024 * 1024


def _submit_wave(peer, job, kwargs_list):
    return peer.submit_many(job, kwargs_list) if peer.has_batch else [peer.submit(job, **kw) for kw in kwargs_list]


def fan_out(peer, job, kwargs, n):
    """W1/W1b: n jobs as fast as the client can enqueue, until the last result is visible."""
    with PeakSampler(peer.pids()) as mem:
        t0 = time.perf_counter()
        peer.wait_all(_submit_wave(peer, job, [kwargs] * n))
        wall = time.perf_counter() - t0
    return {"wall": wall, "peak_rss": mem.peak / MB}


def w2(peer, n, iterations):
    """W2: n pbkdf2 jobs; vs_pool: over multiprocessing.Pool measured just before (same load)."""
    pool = floors.measure("pbkdf2", n, iterations)["wall"]
    t0 = time.perf_counter()
    peer.wait_all(_submit_wave(peer, "pbkdf2", [{"iterations": iterations, "password": str(i)} for i in range(n)]))
    wall = time.perf_counter() - t0
    return {"wall": wall, "vs_pool": wall / pool}


def w3(peer, n):
    """Enqueue rate one call at a time and with the batch API; drain = n / (first submit → last result)."""
    out = {}
    t0 = time.perf_counter()
    handles = [peer.submit("echo") for _ in range(n)]
    out["single"] = n / (time.perf_counter() - t0)
    peer.wait_all(handles)
    if peer.has_batch:
        t0 = time.perf_counter()
        handles = peer.submit_many("echo", [{}] * n)
        out["batch"] = n / (time.perf_counter() - t0)
        peer.wait_all(handles)
    t0 = time.perf_counter()
    peer.wait_all(_submit_wave(peer, "echo", [{}] * n))
    out["drain"] = n / (time.perf_counter() - t0)
    return out


def round_trips(peer, job, kwargs, n):
    """W4: n sequential submit-then-wait; p50/p95/p99 in ms."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        peer.result(peer.submit(job, **kwargs), timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {p: times[min(len(times) - 1, int(len(times) * q))] for p, q in (("p50", .5), ("p95", .95), ("p99", .99))}


def sizes(name, quick):
    """Jobs per workload; RQ runs one job at a time per worker, so its W1/W1b/W3 are cut down."""
    full = {"W1": 10_000, "W1b": 10_000, "W2": 200, "W3": 10_000, "W4": 1000}
    if quick:
        full = {"W1": 1000, "W1b": 1000, "W2": 20, "W3": 500, "W4": 50}
    if name == "rq":
        full.update({"W1": 200, "W1b": 200, "W3": 1000} if not quick else {"W1": 50, "W1b": 50, "W3": 100})
    return full


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("name")
    parser.add_argument("--only", default="W1,W1b,W2,W3,W4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, required=True, help="pbkdf2 iterations of ~50 ms")
    parser.add_argument("--url", default="", help="the slow server's URL for W1b")
    parser.add_argument("--quick", action="store_true")
    # redis-py 8 defaults to 100 connections per pool and a 5 s socket timeout: too few for
    # 1,000 greenlets each holding one, too short for a blocking read of a slow result
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0?max_connections=5000&socket_timeout=30")
    parser.add_argument("--logs", default="")
    args = parser.parse_args(argv)
    chosen = args.only.split(",")
    n = sizes(args.name, args.quick)
    full_n = sizes("", args.quick)
    namespace = f"gjbench-{args.name}-{uuid.uuid4().hex[:8]}"
    logs = Path(args.logs or tempfile.mkdtemp(prefix="gjbench-"))
    logs.mkdir(parents=True, exist_ok=True)
    peer = load(args.name, namespace, args.redis)(namespace, args.redis, logs)
    rows: list[dict] = []

    def record(workload, metric, unit, values, mode, scale=1.0, error=None):
        note = f"extrapolated from {n[workload]} jobs" if scale != 1.0 else ""
        rows.append({"workload": workload, "metric": metric, "system": args.name, "unit": unit,
                     "config": peer.configuration(mode), "values": [v * scale for v in values],
                     "n": full_n[workload], "note": note, "error": error})

    plan = {"io": [w for w in ("W1", "W1b", "W3", "W4") if w in chosen], "cpu": [w for w in ("W2", "W4") if w in chosen]}
    for mode, workloads in plan.items():
        if not workloads:
            continue
        try:
            peer.start(mode)
        except Exception as exc:
            for w in workloads:
                record(w, "wall", "", [], mode, error=f"workers did not start: {exc}")
            peer.stop()
            continue
        try:
            for w in workloads:
                samples = []
                try:
                    for _ in range(args.runs):
                        if w == "W1":
                            samples.append(fan_out(peer, "sleep", {"seconds": 0.1}, n[w]))
                        elif w == "W1b":
                            bare = floors.measure("get", full_n[w], args.url)["wall"]
                            sample = fan_out(peer, "http_get", {"url": args.url}, n[w])
                            sample["vs_floor"] = sample["wall"] * full_n[w] / n[w] / bare
                            samples.append(sample)
                        elif w == "W2":
                            samples.append(w2(peer, n[w], args.iterations))
                        elif w == "W3":
                            samples.append(w3(peer, n[w]))
                        elif w == "W4" and mode == "io":
                            samples.append({f"echo {k}": v for k, v in round_trips(peer, "echo", {}, n[w]).items()})
                        else:
                            samples.append({f"cpu {k}": v for k, v in
                                            round_trips(peer, "pbkdf2", {"iterations": 1}, n[w]).items()})
                except Exception as exc:
                    traceback.print_exc()
                    record(w, "error", "", [], mode, error=f"{type(exc).__name__}: {exc}"[:300])
                    continue
                scale = full_n[w] / n[w] if w in ("W1", "W1b") else 1.0
                for metric in samples[0]:
                    unit = {"wall": "s", "peak_rss": "MB"}.get(
                        metric, "jobs/s" if w == "W3" else "ms")
                    record(w, metric, unit, [s[metric] for s in samples], mode,
                           scale=scale if metric == "wall" else 1.0)
        finally:
            peer.stop()
    json.dump(rows, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
