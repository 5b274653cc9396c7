"""greenjobs_client: submit jobs to a greenjobs server over HTTP and follow them to a result.

Imports neither gevent, Pyramid nor kombu, so a web app that only submits jobs stays light::

    from greenjobs_client import Client
    client = Client("http://127.0.0.1:6543")
    job = client.submit("echo", order=42)              # like Celery's task.delay(order=42)
    job.result(timeout=30)                             # like AsyncResult.get(timeout=30)

The integrations (``greenjobs_client.flask``, ``.django``, ``.pyramid``) and the CLI
(``greenjobs_client.cli``) are separate modules, imported only by those who use them.
"""
from __future__ import annotations

from greenjobs_client.client import Client, job_spec
from greenjobs_client.errors import (
    Conflict, ConnectionFailed, GreenjobsClientError, IdempotencyConflict, InvalidRequest, JobCancelled, JobError,
    JobFailed, NotFound, Overloaded, RequestFailed, ServerError, Unavailable, UnknownHandler, WaitTimeout,
)
from greenjobs_client.handles import TERMINAL, Batch, JobHandle, WorkflowHandle
from greenjobs_client.workflows import chain, chord, group, s, si

__all__ = [
    "Client", "job_spec", "JobHandle", "Batch", "WorkflowHandle", "TERMINAL", "chain", "group", "chord", "s", "si",
    "GreenjobsClientError", "ConnectionFailed", "RequestFailed", "InvalidRequest", "UnknownHandler",
    "IdempotencyConflict", "NotFound", "Conflict", "Overloaded", "Unavailable", "ServerError",
    "JobError", "JobFailed", "JobCancelled", "WaitTimeout",
]
