"""Jobs submitted, succeeded and failed per second, kept for the last minutes, for the dashboard's history.

Counted in memory as events happen (a dict lookup per event) and written into this server's heartbeat,
so a page that opens shows the last minutes at once, and the sum over the servers table is the whole
cluster's throughput (``GET /throughput``) without a scan of the job table.  The last MINUTE seconds go
into the heartbeat one by one; older ones, up to SPAN, in STEP-second buckets.
"""
from __future__ import annotations

import time

from greenjobs.pool.listeners import Listener

#: The events counted, in the order of each bucket's counts.
NAMES = ("submitted", "succeeded", "failed")
_INDEX = {name: i for i, name in enumerate(NAMES)}
MINUTE = 60             # seconds kept one by one
STEP = 10               # seconds per bucket beyond them
SPAN = 900              # seconds kept in all (15 minutes)


class Throughput(Listener):
    """Per-second counts of NAMES over the last SPAN seconds."""

    def __init__(self) -> None:
        self._seconds: dict[int, list[int]] = {}        # epoch second -> counts, oldest first

    def job_event(self, name: str, job) -> None:
        index = _INDEX.get(name)
        if index is None:
            return
        second = int(time.time())
        counts = self._seconds.get(second)
        if counts is None:
            counts = self._seconds[second] = [0, 0, 0]
            self._forget(second - SPAN)
        counts[index] += 1

    def _forget(self, before: int) -> None:
        seconds = self._seconds
        while seconds:
            oldest = next(iter(seconds))
            if oldest >= before:
                return
            del seconds[oldest]

    def snapshot(self, now: float | None = None) -> dict:
        """What the heartbeat carries: ``{"1": {second: counts}, "10": {bucket start: counts}}`` (only the seconds
        with any event: an idle server's is empty), keys as strings (JSON)."""
        now_s = int(time.time() if now is None else now)
        self._forget(now_s - SPAN)
        recent: dict[str, list[int]] = {}
        older: dict[str, list[int]] = {}
        for second, counts in self._seconds.items():
            if second >= now_s - MINUTE:
                recent[str(second)] = list(counts)
            else:
                bucket = older.setdefault(str(second - second % STEP), [0, 0, 0])
                for i, n in enumerate(counts):
                    bucket[i] += n
        return {"1": recent, str(STEP): older}


def series(snapshots: list[dict], now: float) -> dict:
    """The sum of several servers' snapshots as dense series: the last MINUTE whole seconds (``seconds``) and
    the last SPAN seconds in STEP-second buckets (``buckets``, the newest one partial), each name a list."""
    now_s = int(now)
    sec_start = now_s - MINUTE
    bucket_end = now_s - now_s % STEP + STEP               # the current bucket's end (exclusive)
    bucket_start = bucket_end - SPAN
    per_second = {name: [0] * MINUTE for name in NAMES}
    per_bucket = {name: [0] * (SPAN // STEP) for name in NAMES}

    def add_bucket(second: int, counts) -> None:
        if bucket_start <= second < bucket_end:
            slot = (second - bucket_start) // STEP
            for name, n in zip(NAMES, counts):
                per_bucket[name][slot] += n

    for snap in snapshots:
        for key, counts in (snap.get("1") or {}).items():
            second = int(key)
            if sec_start <= second < now_s:
                for name, n in zip(NAMES, counts):
                    per_second[name][second - sec_start] += n
            add_bucket(second, counts)
        for key, counts in (snap.get(str(STEP)) or {}).items():
            add_bucket(int(key), counts)
    return {"seconds": {"step": 1, "start": sec_start, **per_second},
            "buckets": {"step": STEP, "start": bucket_start, **per_bucket}}
