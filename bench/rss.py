"""Resident memory of a process tree, read from /proc (no psutil, so a --quick run needs no extra)."""
from __future__ import annotations

import os
import threading
import time


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        found.append(p)
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    return found


def rss(pid: int) -> int:
    """Resident set size of one process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pids: list[int]) -> int:
    """Summed RSS of every process in the trees rooted at ``pids``, in bytes."""
    return sum(rss(p) for root in pids for p in tree(root))


class PeakSampler:
    """Samples the RSS of process trees every ``interval`` s in a thread (a greenlet when patched)."""

    def __init__(self, pids: list[int], interval: float = 0.05, roots_only: bool = False):
        self.pids, self.interval, self.roots_only = pids, interval, roots_only
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        return sum(rss(p) for p in self.pids) if self.roots_only else tree_rss(self.pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.sample())
