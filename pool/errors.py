"""The greenjobs error family.

Each class says when it is raised; only ``greenjobs.server.problems`` knows how they map to HTTP.
"""
from __future__ import annotations


class GreenjobsError(Exception):
    """Base of every error greenjobs raises on purpose."""


class ConfigurationError(GreenjobsError):
    """A setting or handler declaration is wrong; raised at start-up, never per request."""


class HandlerNotFound(GreenjobsError):
    """A job names a handler that is not registered."""

    def __init__(self, name: str, known: list[str], field: str = "handler"):
        self.name, self.known, self.field = name, known, field
        super().__init__(f"unknown handler {name!r}; known handlers: {', '.join(known) or '(none)'}")


class InvalidJobParams(GreenjobsError):
    """A submitted job has a field of the wrong type or out of range."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class InvalidIdempotencyKey(InvalidJobParams):
    """An Idempotency-Key (header or batch item) is not 1-255 printable ASCII characters."""


class IdempotencyConflict(GreenjobsError):
    """An Idempotency-Key was reused with a different request body."""


class JobNotFound(GreenjobsError):
    """No job (or batch) with that id exists in the store."""


class InvalidSchedule(InvalidJobParams):
    """A schedule's definition has a field of the wrong type or out of range (a bad cron expression, …)."""


class InvalidWorkflow(InvalidJobParams):
    """A workflow body that is not one of chain, group, chord of valid steps (the field is named)."""


class ScheduleNotFound(JobNotFound):
    """No schedule with that name exists in the store."""


class ScheduleExists(GreenjobsError):
    """POST /schedules with a name that is taken (PATCH changes a schedule)."""


class ScheduleRaced(GreenjobsError):
    """The store refused to fire a schedule's slots: another server fired them, or the schedule changed, since
    this one read it.  Internal: the scheduler reads the schedule again; never an HTTP answer."""


class BadCursor(GreenjobsError):
    """A list request's ``after`` cursor is not one this server handed out."""


class JobFinished(GreenjobsError):
    """The job is already in a terminal state, so it cannot be cancelled."""


class IllegalTransition(GreenjobsError):
    """A state change that the job model does not allow (e.g. succeeded -> running)."""


class Overloaded(GreenjobsError):
    """The pending queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        self.retry_after = retry_after
        super().__init__(message)


class StoreUnavailable(GreenjobsError):
    """The store could not write (disk full, locked, unwritable); nothing was stored."""

    retry_after = 5


class QueueUnavailable(GreenjobsError):
    """The broker for cpu jobs cannot be reached; nothing was stored."""

    retry_after = 5


class ShuttingDown(GreenjobsError):
    """The server is stopping and accepts no new jobs."""

    retry_after = 5


class Retry(Exception):
    """Raised by a handler to ask for another attempt, optionally after ``delay`` seconds.

    It counts against the job's ``max_retries`` like any failure.
    """

    def __init__(self, message: str = "retry requested", delay: float | None = None):
        super().__init__(message)
        self.delay = delay
