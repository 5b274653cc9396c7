"""Many jobs at once: read them from JSON Lines, submit them as batches, follow their counts.

Used by ``greenjobs submit --from FILE.jsonl``; free of any terminal output so the CLI draws the
progress and a program can pass its own callbacks.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from greenjobs_client.client import Client
from greenjobs_client.errors import InvalidRequest, WaitTimeout
from greenjobs_client.handles import Batch

#: Bytes of JSON per batch request: under the server's default greenjobs.api.max_body (1 MiB).
MAX_CHUNK_BYTES = 768 * 1024


class JsonlJobs(list):
    """The job objects of a JSON Lines file, with the line each came from (``line_of[i]``)."""

    def __init__(self):
        super().__init__()
        self.line_of: list[int] = []


def read_jsonl(lines: Iterable[str]) -> JsonlJobs:
    """One job object per line (``{"handler": ..., "kwargs": {...}, "priority": ...}``); blank lines skipped.

    Raises ValueError naming the first bad line, before anything is submitted.
    """
    specs = JsonlJobs()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("handler"), str):
            raise ValueError(f"line {number}: must be a JSON object with a \"handler\" string, "
                             f"e.g. {{\"handler\": \"echo\", \"kwargs\": {{\"n\": 1}}}}")
        specs.append(spec)
        specs.line_of.append(number)
    return specs


def chunks(specs: list[dict[str, Any]], max_jobs: int, max_bytes: int = MAX_CHUNK_BYTES) -> Iterator[list[dict]]:
    """Consecutive slices of at most ``max_jobs`` jobs and about ``max_bytes`` of JSON each."""
    chunk: list[dict] = []
    size = 0
    for spec in specs:
        cost = len(json.dumps(spec, separators=(",", ":"))) + 60     # + a per-item idempotency key
        if chunk and (len(chunk) >= max_jobs or size + cost > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(spec)
        size += cost
    if chunk:
        yield chunk


def submit_all(client: Client, specs: list[dict[str, Any]], max_jobs: int = 1000,
               on_submitted: Callable[[int], None] | None = None) -> list[Batch]:
    """Submit every spec in batches of at most ``max_jobs``, calling ``on_submitted(count so far)`` after each."""
    batches, done = [], 0
    for chunk in chunks(specs, max_jobs):
        try:
            batches.append(client.submit_many(chunk))
        except InvalidRequest as exc:        # ``jobs[7].handler`` of this chunk: which line of the file
            raise RejectedItem(exc, done, specs) from None
        done += len(chunk)
        if on_submitted:
            on_submitted(done)
    return batches


class RejectedItem(Exception):
    """A batch was refused because of one of its jobs: ``line`` is that job's line in the file (or None)."""

    def __init__(self, error: InvalidRequest, offset: int, specs):
        self.error = error
        self.line = None
        match = re.match(r"jobs\[(\d+)\]", error.field or "")
        line_of = getattr(specs, "line_of", None)
        if match and line_of is not None and offset + int(match.group(1)) < len(line_of):
            self.line = line_of[offset + int(match.group(1))]
        where = f"line {self.line}: " if self.line is not None else ""
        super().__init__(f"{where}{error.detail} (field {error.field}); nothing from that batch on was submitted")


def totals(answers: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts per state summed over batch answers."""
    summed: dict[str, int] = {}
    for answer in answers:
        for state, count in answer["counts"].items():
            summed[state] = summed.get(state, 0) + count
    return summed


def follow(batches: list[Batch], timeout: float | None = None, tick: float = 0.5,
           on_counts: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
    """Counts per state over every batch, reported to ``on_counts`` about every ``tick`` s until all ended.

    Each round long-polls the oldest unfinished batch for up to ``tick`` s (it answers at once when
    that batch ends) and reads the others' counts; a finished batch is not asked again, so 10,000
    jobs in 10 batches cost at most 10 small requests a round. Raises WaitTimeout after ``timeout``
    seconds with the last counts; the jobs are left running.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[int, dict] = {}
    pending = list(range(len(batches)))
    while True:
        if pending:
            wait = tick if deadline is None else max(0.0, min(tick, deadline - time.monotonic()))
            for n, index in enumerate(pending):
                last[index] = batches[index].counts(wait if n == 0 else 0.0)
            pending = [index for index in pending if not last[index]["done"]]
        summed = totals(last.values())
        if on_counts:
            on_counts(summed)
        if not pending:
            return summed
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"{sum(summed.get(s, 0) for s in ('scheduled', 'queued', 'running'))} jobs had "
                              f"not ended after {timeout} s; they are left running", {"counts": summed})
