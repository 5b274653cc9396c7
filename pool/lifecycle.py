"""When a failed attempt is tried again: one rule for the greenlet pool and the CPU workers."""
from __future__ import annotations

import time
from typing import Callable

RETRYABLE_KINDS = ("exception", "timeout", "retry")


def is_retryable(handler, kind: str, exc: BaseException | None) -> bool:
    """A timeout or an explicit Retry always is; an exception is unless the handler's ``retry_on`` excludes it."""
    if kind not in RETRYABLE_KINDS:
        return False
    if kind == "exception" and handler is not None and handler.retry_on:
        return isinstance(exc, handler.retry_on)
    return True


def retry_at(job, retryable: bool, delay: float | None, backoff: Callable[[int], float]) -> float | None:
    """The time of the next attempt, or None when the job has used its ``max_retries``."""
    if not retryable or job.attempts > job.max_retries:
        return None
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 366 * 86400:
        delay = None                # not a usable number of seconds: the backoff decides
    return time.time() + (backoff(job.attempts) if delay is None else float(delay))
