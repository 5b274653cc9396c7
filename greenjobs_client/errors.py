"""What the client raises: one family, one class per thing a caller may want to catch.

HTTP errors carry the server's problem+json (``status``, ``title``, ``detail`` and any extra
fields such as ``field`` or ``known_handlers``); job errors carry the job as the server showed it.
"""
from __future__ import annotations

from typing import Any


class GreenjobsClientError(Exception):
    """Base of every error this package raises."""


class ConnectionFailed(GreenjobsClientError):
    """The server could not be reached, or the connection broke, and retrying was not safe or did not help."""


class RequestFailed(GreenjobsClientError):
    """The server answered with an error status; ``detail`` says what to fix."""

    def __init__(self, status: int, title: str, detail: str, problem: dict[str, Any] | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail
        self.problem = problem or {}
        self.retry_after = retry_after


class InvalidRequest(RequestFailed):
    """400, 405, 413, 415 or 422: the request itself is wrong (bad field, body too large, ...)."""

    @property
    def field(self) -> str | None:
        """The offending field of a 422 (``kwargs``, ``jobs[3].priority``, ...), if the server named one."""
        return self.problem.get("field")


class UnknownHandler(InvalidRequest):
    """422: no handler by that name is registered on the server; ``known_handlers`` lists those that are."""

    @property
    def known_handlers(self) -> list[str]:
        """Names of the handlers the server does have (empty if it did not say)."""
        return list(self.problem.get("known_handlers") or [])


class IdempotencyConflict(InvalidRequest):
    """422: the Idempotency-Key was already used for a different job."""


class NotFound(RequestFailed):
    """404: no such job, batch or route (finished jobs are deleted after greenjobs.store.ttl)."""


class Conflict(RequestFailed):
    """409: the job is not in a state that allows it (cancel of a finished job, retry of one that did not fail)."""


class Overloaded(RequestFailed):
    """429: the server's backlog stayed full through every retry; submit later or more slowly."""


class Unavailable(RequestFailed):
    """503: the server stayed unable to accept work (store, broker, shutdown) through every retry."""


class ServerError(RequestFailed):
    """500 or another unexpected status: the server failed; its log has the traceback."""


class JobError(GreenjobsClientError):
    """A job ended without a result; ``job`` is the job as the server showed it."""

    def __init__(self, message: str, job: dict[str, Any]):
        super().__init__(message)
        self.job = job
        self.job_id = job.get("id")


class JobFailed(JobError):
    """The job ended ``failed``: ``kind`` (exception, timeout, worker_lost, ...), ``message`` and the remote
    ``traceback`` text come from the server; ``errors`` holds every failed attempt's error."""

    def __init__(self, job: dict[str, Any]):
        error = job.get("error") or {}
        self.kind: str | None = error.get("kind")
        self.message: str = error.get("message") or ""
        self.traceback: str | None = error.get("traceback")
        self.errors: list[dict] = list(job.get("errors") or [])
        super().__init__(f"job {job.get('id')} ({job.get('handler')}) failed: {self.kind}: {self.message}", job)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n\nremote traceback:\n{self.traceback}" if self.traceback else text


class JobCancelled(JobError):
    """The job was cancelled before it finished."""

    def __init__(self, job: dict[str, Any]):
        super().__init__(f"job {job.get('id')} ({job.get('handler')}) was cancelled", job)


class WaitTimeout(GreenjobsClientError, TimeoutError):
    """A wait ran out before the job (or batch) ended; it is left running. ``last`` is what was last seen."""

    def __init__(self, message: str, last: dict[str, Any]):
        super().__init__(message)
        self.last = last


BY_STATUS: dict[int, type[RequestFailed]] = {
    400: InvalidRequest, 405: InvalidRequest, 413: InvalidRequest, 415: InvalidRequest, 422: InvalidRequest,
    404: NotFound, 409: Conflict, 429: Overloaded, 503: Unavailable,
}


def error_for(status: int, problem: dict[str, Any], retry_after: float | None = None) -> RequestFailed:
    """The typed exception for an error answer, from its status and problem+json body."""
    title = str(problem.get("title") or "")
    detail = str(problem.get("detail") or title or f"HTTP {status}")
    cls = BY_STATUS.get(status, ServerError if status >= 500 or status < 400 else RequestFailed)
    if status == 422 and "known_handlers" in problem:
        cls = UnknownHandler
    elif status == 422 and title == "Idempotency-Key reused":
        cls = IdempotencyConflict
    return cls(status, title, detail, problem, retry_after)
