"""Handles on submitted work: a ``JobHandle`` per job and a ``Batch`` per ``POST /jobs/batch``.

Waiting is always a long-poll (``?wait=S``) repeated until the job or batch ends or the caller's
timeout runs out; the server answers the moment the job ends, so nothing sleeps in between.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from greenjobs_client.errors import JobCancelled, JobFailed, WaitTimeout

if TYPE_CHECKING:
    from greenjobs_client.client import Client

TERMINAL = frozenset(("succeeded", "failed", "cancelled"))


def long_poll(fetch, done, timeout: float | None, chunk: float, what: str) -> dict:
    """Call ``fetch(wait_seconds)`` until ``done(answer)`` or ``timeout`` seconds pass (None: no limit).

    A server that answers a long-poll early without news (one shutting down) would turn this into a
    busy loop, so an early empty answer costs a short pause before the next poll.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    early = 0
    while True:
        wait = chunk if deadline is None else max(0.0, min(chunk, deadline - time.monotonic()))
        started = time.monotonic()
        answer = fetch(round(wait, 3))
        if done(answer):
            return answer
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise WaitTimeout(f"{what} did not end within {timeout} s; it is left as it is "
                              f"({answer.get('state', answer.get('counts'))})", answer)
        if wait > 0 and now - started < wait / 10:
            early += 1
            time.sleep(min(1.0, 0.05 * 2 ** early))
        else:
            early = 0


class JobHandle:
    """One job on the server: follow it, wait for its result, cancel or retry it."""

    __slots__ = ("client", "id", "last")

    def __init__(self, client: Client, job_id: str, last: dict[str, Any] | None = None):
        self.client, self.id = client, job_id
        self.last = last     # the job as last seen, or None

    def __repr__(self) -> str:
        state = self.last.get("state") if self.last else "?"
        return f"<JobHandle {self.id} {state}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id and other.client is self.client

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def url(self) -> str:
        """The job's absolute URL on the server (what a web app puts in a 202's Location)."""
        return f"{self.client.base_url}/jobs/{self.id}"

    def status(self) -> dict[str, Any]:
        """The job now, as the server shows it (``state``, ``result``, ``error``, ``attempts``, ``progress``, ...)."""
        self.last = self.client._get_job(self.id)
        return self.last

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The job once it has ended, whatever its state; WaitTimeout after ``timeout`` seconds (None: no limit)."""
        self.last = long_poll(lambda wait: self.client._get_job(self.id, wait),
                              lambda job: job["state"] in TERMINAL, timeout, self.client.wait_chunk,
                              f"job {self.id}")
        return self.last

    def result(self, timeout: float | None = None) -> Any:
        """The job's result once it succeeded.

        Raises JobFailed (remote error kind, message, traceback) or JobCancelled if it ended otherwise,
        and WaitTimeout if it is still running after ``timeout`` seconds (the job is left running).
        """
        job = self.wait(timeout)
        if job["state"] == "failed":
            raise JobFailed(job)
        if job["state"] == "cancelled":
            raise JobCancelled(job)
        return job["result"]

    def cancel(self) -> dict[str, Any]:
        """Cancel a scheduled, queued or running job; Conflict if it already ended."""
        self.last = self.client._transport.request("DELETE", f"/jobs/{quote(self.id, safe='')}")[1]
        return self.last

    def retry(self) -> dict[str, Any]:
        """Run a failed job again (same id, next attempt); Conflict unless it failed."""
        self.last = self.client._transport.request("POST", f"/jobs/{quote(self.id, safe='')}/retry")[1]
        return self.last


class Batch:
    """The jobs of one ``POST /jobs/batch``: ``ids`` in the order submitted, ``handles``, and their counts.

    ``id`` is None when every item repeated an earlier request that was not itself a batch.
    """

    def __init__(self, client: Client, batch_id: str | None, ids: list[str], repeated: list[int] | None = None):
        self.client, self.id, self.ids = client, batch_id, list(ids)
        self.repeated = list(repeated or [])     # indexes of items that named an existing job
        self.handles = [JobHandle(client, job_id) for job_id in self.ids]

    def __repr__(self) -> str:
        return f"<Batch {self.id} of {len(self.ids)}>"

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(self.handles)

    def counts(self, wait: float = 0.0) -> dict[str, Any]:
        """``{"total", "counts": {state: n}, "done"}``; with ``wait``, the server holds the answer until
        every job ended or ``wait`` seconds passed."""
        if self.id is not None:
            return self.client._transport.request("GET", f"/batches/{quote(self.id, safe='')}",
                                                  query={"wait": wait or None}, wait=wait)[1]
        counts: dict[str, int] = {}
        for handle in self.handles:
            state = handle.status()["state"]
            counts[state] = counts.get(state, 0) + 1
        return {"total": len(self.ids), "counts": counts, "done": set(counts) <= TERMINAL}

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The counts once every job ended; WaitTimeout after ``timeout`` seconds (jobs left running)."""
        if self.id is None:
            for handle in self.handles:
                handle.wait(timeout)
            return self.counts()
        return long_poll(self.counts, lambda answer: answer["done"], timeout, self.client.wait_chunk,
                         f"batch {self.id}")

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every job's result in submission order; raises JobFailed/JobCancelled for the first that did not succeed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait(timeout)
        return [handle.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
                for handle in self.handles]


class WorkflowHandle:
    """A workflow on the server (``client.run(...)``): its state, its steps, its result."""

    __slots__ = ("client", "id", "last")

    def __init__(self, client: Client, workflow_id: str, last: dict[str, Any] | None = None):
        self.client, self.id, self.last = client, workflow_id, last

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    @property
    def jobs(self) -> list[JobHandle]:
        """Its steps, in the order the workflow lists them."""
        last = self.last or self.status()
        return [JobHandle(self.client, job["id"]) for job in last["jobs"]]

    def status(self, wait: float = 0.0) -> dict[str, Any]:
        """``{"state", "result", "counts", "jobs": [...]}`` now (or after at most ``wait`` seconds of waiting)."""
        self.last = self.client._transport.request("GET", f"/workflows/{quote(self.id, safe='')}",
                                                   query={"wait": wait or None}, wait=wait)[1]
        return self.last

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The workflow once every step ended; WaitTimeout after ``timeout`` seconds (it is left running)."""
        return long_poll(self.status, lambda answer: answer["state"] != "running", timeout, self.client.wait_chunk,
                         f"workflow {self.id}")

    def result(self, timeout: float | None = None) -> Any:
        """Its result once it succeeded (a chain's last step's, a chord's body's, a group's list); raises
        JobFailed with the first failed step (its remote error), or JobCancelled."""
        answer = self.wait(timeout)
        if answer["state"] == "succeeded":
            return answer["result"]
        failed = next((job for job in answer["jobs"] if job["state"] == "failed"), None)
        if failed is not None:
            raise JobFailed(self.client.get(failed["id"]))
        first = next(job for job in answer["jobs"] if job["state"] == "cancelled")
        raise JobCancelled(self.client.get(first["id"]))

    def cancel(self) -> dict[str, Any]:
        """Cancel every step that has not ended."""
        self.last = self.client._transport.request("DELETE", f"/workflows/{quote(self.id, safe='')}")[1]
        return self.last
