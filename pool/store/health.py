"""Whether a store accepts writes: what ``/health`` and ``greenjobs_store_ok`` report.

A write that fails for the database's own reason (disk full, locked, connection lost) marks the
store unhealthy at once.  It is healthy again only once a write succeeds ``HOLD`` seconds or more
after the last failure: under a partial fault (a full disk where small updates still fit in free
pages, but new jobs do not) successes and failures interleave, and "the last write worked" would
flap between 200 and 503 while submissions are refused.  A store that nobody writes to while it
is unhealthy is probed with an empty transaction by ``ping()`` once ``HOLD`` has passed, so an idle
server taken out of a load balancer's rotation comes back by itself.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

#: Seconds without a failed write before a successful one makes the store healthy again.
HOLD = 1.0


class WriteHealth:
    """The health flag shared by both ledgers' committers."""

    def __init__(self) -> None:
        self.healthy = True
        self.last_error: str | None = None
        self._failed_at = float("-inf")

    def failed(self, exc: BaseException) -> None:
        text = str(exc).strip()
        error = text.splitlines()[0] if text else repr(exc)
        if self.healthy:
            log.error("store write failed: %s", error)
        self.healthy, self.last_error, self._failed_at = False, error, time.monotonic()

    def succeeded(self) -> None:
        if self.probe_due():
            self.healthy, self.last_error = True, None
            log.warning("store writes succeed again")

    def probe_due(self) -> bool:
        """True while unhealthy once ``HOLD`` seconds have passed since the last failed write."""
        return not self.healthy and time.monotonic() - self._failed_at >= HOLD
