"""An attempt's outcome, shaped in one place for every executor.

What a handler returned or raised becomes an :class:`Outcome` here — in the greenlet pool and in
a cpu worker alike (the worker sends it to the server as a message, :func:`to_message`).  The
server records it in one place, ``greenjobs.pool.listeners.Sink.record``.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from typing import Any

from greenjobs.pool import lifecycle
from greenjobs.pool.errors import Retry
from greenjobs.pool.job import CANCELLED, FAILED, SUCCEEDED, error_info


@dataclass(slots=True)
class Outcome:
    """How one attempt ended: ``state`` succeeded/failed/cancelled, the result as JSON text, or the
    error; ``retryable`` and ``delay`` (seconds, from ``raise Retry(delay=...)``) steer a retry."""

    state: str
    result_json: str | None = None
    error: dict | None = None
    retryable: bool = False
    delay: float | None = None


def failed(kind: str, message: str, tb: str | None = None, retryable: bool = False,
           delay: float | None = None) -> Outcome:
    """A failure of ``kind`` (machine-readable: timeout, exception, result_too_large, ...)."""
    return Outcome(FAILED, None, error_info(kind, message, tb), retryable, delay)


def succeeded(value: Any, max_bytes: int) -> Outcome:
    """A returned value: succeeded if it is JSON of at most ``max_bytes`` (greenjobs.job.max_result_bytes)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        return failed("result_not_json", f"the handler returned a value that is not JSON-serialisable: {exc}")
    if len(text) > max_bytes:
        return failed("result_too_large", f"the result is {len(text)} bytes; the limit is "
                                          f"greenjobs.job.max_result_bytes={max_bytes}")
    return Outcome(SUCCEEDED, text)


def from_exception(exc: BaseException, handler, tb: str | None = None) -> Outcome:
    """What a handler raised (call inside the ``except``, or pass its traceback as ``tb``)."""
    kind = "retry" if isinstance(exc, Retry) else "exception"
    delay = getattr(exc, "delay", None)
    return failed(kind, f"{type(exc).__name__}: {exc}", tb if tb is not None else traceback.format_exc(limit=20),
                  retryable=lifecycle.is_retryable(handler, kind, exc), delay=delay)


def timed_out(timeout: float | None, detail: str = "") -> Outcome:
    """The attempt ran past its timeout (settled from outside the handler); always retryable."""
    return failed("timeout", f"the job ran longer than its timeout of {timeout} s{detail}", retryable=True)


def unknown_handler(why: str) -> Outcome:
    """The handler is not registered where the job ran."""
    return failed("unknown_handler", why)


def cancelled() -> Outcome:
    """A cancel settled the attempt."""
    return Outcome(CANCELLED, None, lifecycle.CANCELLED_BY_REQUEST)


#: Marks an attempt cut short by shutdown: never recorded, the job is given back instead.
INTERRUPTED = Outcome("interrupted")


_UNSET = object()


def to_message(outcome: Outcome, value: Any = _UNSET) -> dict:
    """The worker -> server form of an outcome (JSON): the result travels as a value (``value``, the
    handler's return value, saves parsing the result's JSON again)."""
    if outcome.state == SUCCEEDED:
        return {"state": SUCCEEDED, "result": json.loads(outcome.result_json) if value is _UNSET else value}
    return {"state": outcome.state, "error": outcome.error, "retryable": outcome.retryable, "delay": outcome.delay}


def from_message(body: dict, max_bytes: int) -> Outcome:
    """The server's reading of a worker's result message; anything malformed is a failure, never a 500."""
    if body.get("state") == SUCCEEDED:
        return succeeded(body.get("result"), max_bytes)
    error = body.get("error")
    if not isinstance(error, dict):
        error = error_info("exception", "the worker reported a failure without details")
    delay = body.get("delay")
    return Outcome(FAILED, None, error, bool(body.get("retryable")),
                   delay if isinstance(delay, (int, float)) and not isinstance(delay, bool) else None)
