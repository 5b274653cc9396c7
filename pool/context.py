"""``current_job``: inside a handler, the job that this greenlet (or worker thread) runs.

In the spirit of paste.registry: a module-level proxy that resolves per greenlet.  It rests on a
ContextVar, and greenlet gives every greenlet its own context, so thousands of concurrent jobs
each see their own and nothing leaks from one job to the next.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable

_current: ContextVar["JobContext | None"] = ContextVar("greenjobs_current_job", default=None)


class JobContext:
    """What a running handler may know and do about its own job."""

    __slots__ = ("job", "settings", "_report")

    def __init__(self, job, settings, report_progress: Callable[[str, dict], None]):
        self.job = job
        self.settings = settings
        self._report = report_progress

    @property
    def id(self) -> str:
        """The running job's id."""
        return self.job.id

    @property
    def handler(self) -> str:
        """Name of the handler the job was submitted to."""
        return self.job.handler

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self.job.attempts

    @property
    def args(self) -> list:
        """The job's positional arguments, as submitted (JSON values)."""
        return self.job.args

    @property
    def kwargs(self) -> dict:
        """The job's keyword arguments, as submitted (JSON values)."""
        return self.job.kwargs

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1]; stored (coalesced) and shown on the job."""
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress fraction must be between 0 and 1")
        value = {"fraction": fraction, "message": None if message is None else str(message)[:500]}
        self.job.progress = value
        self._report(self.job.id, value)


def activate(ctx: JobContext | None):
    """Bind ``ctx`` for the calling greenlet; returns a token for :func:`deactivate`."""
    return _current.set(ctx)


def deactivate(token) -> None:
    """Restore the binding from before the :func:`activate` call that returned ``token``."""
    _current.reset(token)


class _CurrentJob:
    """Proxy: attribute access goes to the JobContext of the calling greenlet."""

    def _get(self) -> JobContext:
        ctx = _current.get()
        if ctx is None:
            raise RuntimeError("current_job is only available inside a running job handler")
        return ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __bool__(self) -> bool:
        return _current.get() is not None

    def __repr__(self) -> str:
        ctx = _current.get()
        return f"<current_job {ctx.id if ctx else 'unbound'}>"


current_job = _CurrentJob()
