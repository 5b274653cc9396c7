"""``Client``: submit jobs to a greenjobs server and follow them, over its HTTP API.

Every submission carries an idempotency key the client makes (uuid4) unless the caller gives one,
so a submit sent again after a timeout or a reset connection returns the job the first one made.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from greenjobs_client.coalesce import Coalescer
from greenjobs_client.handles import Batch, JobHandle, WorkflowHandle
from greenjobs_client.transport import Transport

OPTIONS = ("priority", "timeout", "max_retries", "delay", "run_at")


def job_spec(handler: str, /, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
             priority: int | None = None, timeout: float | None = None, max_retries: int | None = None,
             delay: float | None = None, run_at: datetime | str | None = None,
             idempotency_key: str | None = None, expires: float | datetime | str | None = None,
             unique_key: str | None = None, rate_limit: str | None = None,
             rate_key: str | None = None) -> dict[str, Any]:
    """One job as the API takes it (for ``submit_many``); options left None take the server's defaults.

    ``priority`` 0-9 (higher first), ``timeout`` seconds, ``delay`` seconds or ``run_at`` (a datetime,
    naive meaning UTC, or an ISO 8601 string), ``idempotency_key`` to make the item repeat-safe
    across separate calls.  Flow control: ``expires`` (seconds or a time: not started by then, it ends
    ``expired`` and never runs; Celery's ``expires``), ``unique_key`` (while a job with it is active, a
    submission with it answers that job), ``rate_limit`` ("10/m"; the handler's, if lower, wins) and
    ``rate_key`` (a template over kwargs, "{host}": one rate bucket per key).
    """
    spec: dict[str, Any] = {"handler": handler}
    if args:
        spec["args"] = list(args)
    if kwargs:
        spec["kwargs"] = dict(kwargs)
    if isinstance(run_at, datetime):
        run_at = run_at.isoformat()
    if isinstance(expires, datetime):
        expires = (expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)).isoformat()
    for name, value in (("priority", priority), ("timeout", timeout), ("max_retries", max_retries),
                        ("delay", delay), ("run_at", run_at), ("idempotency_key", idempotency_key),
                        ("expires", expires), ("unique_key", unique_key), ("rate_limit", rate_limit),
                        ("rate_key", rate_key)):
        if value is not None:
            spec[name] = value
    return spec


class Client:
    """A connection to one greenjobs server, safe to share between threads (one per process is enough).

    ``timeout``: seconds to connect and to get an answer (a long-poll gets its wait on top).
    ``coalesce``: send concurrent ``submit`` calls of many threads together, one batch request for many
    (greenjobs_client.coalesce: each call keeps its id, key and errors; a lone call goes at once).
    ``retries``/``max_retry_wait``: how often and how long a request is sent again after 429/503
    (honouring Retry-After) or, when that is safe, a broken connection. ``wait_chunk``: seconds
    asked per long-poll (the server caps it at greenjobs.api.max_wait). ``headers`` are added to
    every request; ``token`` is sent as ``Authorization: Bearer``.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0, *, retries: int = 5,
                 max_retry_wait: float = 30.0, wait_chunk: float = 30.0, headers: dict[str, str] | None = None,
                 pool_maxsize: int = 10, coalesce: bool = False):
        self._transport = Transport(base_url, token, timeout, retries, max_retry_wait, headers, pool_maxsize)
        self.coalescer = Coalescer(self) if coalesce else None
        self.base_url = self._transport.base_url
        self.wait_chunk = wait_chunk
        self._batch_keys: bool | None = None      # does POST /jobs/batch take per-item keys? (asked once)

    def __repr__(self) -> str:
        return f"<greenjobs Client {self.base_url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (the client opens new ones if used again)."""
        self._transport.close()

    # -- submitting ---------------------------------------------------------------------
    def submit(self, handler: str, /, *args: Any, **kwargs: Any) -> JobHandle:
        """Submit ``handler(*args, **kwargs)`` with the server's default options, like Celery's ``delay()``."""
        return self.submit_with(handler, args, kwargs)

    def submit_with(self, handler: str, /, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                    priority: int | None = None, timeout: float | None = None, max_retries: int | None = None,
                    delay: float | None = None, run_at: datetime | str | None = None,
                    idempotency_key: str | None = None, expires: float | datetime | str | None = None,
                    unique_key: str | None = None, rate_limit: str | None = None,
                    rate_key: str | None = None) -> JobHandle:
        """Submit with options, like Celery's ``apply_async()`` (see ``job_spec`` for each option).

        Sent again after a broken connection under the same ``idempotency_key`` (a uuid4 unless
        given), so it makes exactly one job. Give your own key (``f"order-{pk}"``) to make
        submissions from separate calls or processes collapse into one job too.
        """
        spec = job_spec(handler, args, kwargs, priority=priority, timeout=timeout, max_retries=max_retries,
                        delay=delay, run_at=run_at, expires=expires, unique_key=unique_key, rate_limit=rate_limit,
                        rate_key=rate_key)
        key = idempotency_key or uuid.uuid4().hex
        if self.coalescer is not None:
            job_id, job = self.coalescer.submit(spec, key)
            return JobHandle(self, job_id, job)
        job = self._post_job(spec, key)
        return JobHandle(self, job["id"], job)

    def _post_job(self, spec: dict[str, Any], key: str) -> dict[str, Any]:
        """``POST /jobs`` of one spec under ``key`` (sent again after a broken connection): the job."""
        return self._transport.request("POST", "/jobs", spec, headers={"Idempotency-Key": key}, resend=True)[1]

    def submit_many(self, specs: Iterable[Mapping[str, Any]]) -> Batch:
        """Submit many jobs in one ``POST /jobs/batch`` (all or nothing); each spec as ``job_spec`` makes it.

        When the server takes per-item idempotency keys, every item gets one (uuid4 unless given) and
        the batch is sent again after a broken connection; with an older server it is not (that
        could make every job twice) and ConnectionFailed says so.
        """
        items = [dict(spec) for spec in specs]
        if not items:
            raise ValueError("submit_many needs at least one job")
        for i, item in enumerate(items):
            if not isinstance(item.get("handler"), str):
                raise ValueError(f"job {i} has no 'handler'; build items with greenjobs_client.job_spec()")
        keyed = self.batch_keys()
        if keyed:
            for item in items:
                item.setdefault("idempotency_key", uuid.uuid4().hex)
        elif any("idempotency_key" in item for item in items):
            raise ValueError(f"the server at {self.base_url} does not take idempotency_key in batch items")
        _, answer, _ = self._transport.request("POST", "/jobs/batch", {"jobs": items}, resend=keyed)
        return Batch(self, answer.get("batch"), answer["ids"], answer.get("repeated"))

    def batch_keys(self) -> bool:
        """Whether the server's ``POST /jobs/batch`` takes ``idempotency_key`` per item (read once from
        its OpenAPI document)."""
        if self._batch_keys is None:
            doc = self._transport.request("GET", "/openapi.json")[1]
            try:
                post = doc["paths"]["/jobs/batch"]["post"]
                items = post["requestBody"]["content"]["application/json"]["schema"]["properties"]["jobs"]["items"]
                if "$ref" in items:     # "#/components/schemas/Name"
                    items = doc["components"]["schemas"][items["$ref"].rsplit("/", 1)[-1]]
                self._batch_keys = "idempotency_key" in items.get("properties", {})
            except (KeyError, TypeError, AttributeError):
                self._batch_keys = False
        return self._batch_keys

    def run(self, workflow: Mapping[str, Any]) -> WorkflowHandle:
        """Submit a workflow (``greenjobs_client.workflows``: chain, group, chord) in one ``POST /workflows``:
        every step is stored at once, each starting when what it depends on succeeded."""
        _, answer, _ = self._transport.request("POST", "/workflows", dict(workflow))
        return WorkflowHandle(self, answer["id"], answer)

    def workflow(self, workflow_id: str) -> WorkflowHandle:
        """A handle on an existing workflow (no request is made)."""
        return WorkflowHandle(self, workflow_id)

    # -- following ----------------------------------------------------------------------
    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job (no request is made)."""
        return JobHandle(self, job_id)

    def batch(self, batch_id: str) -> Batch:
        """A handle on an existing batch, for its counts and wait (its job ids are not known)."""
        return Batch(self, batch_id, [])

    def get(self, job_id: str) -> dict[str, Any]:
        """The job now, as the server shows it; NotFound if there is none."""
        return self._get_job(job_id)

    def page(self, state: str | None = None, handler: str | None = None, limit: int = 50,
             after: str | None = None, search: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of jobs, newest first (``search``: text in their args or kwargs), and the cursor of the next
        page (None after the last)."""
        page = self._transport.request("GET", "/jobs", query={"state": state, "handler": handler, "limit": limit,
                                                              "after": after, "q": search})[1]
        return page["jobs"], page.get("next") if len(page["jobs"]) >= limit else None

    def jobs(self, state: str | None = None, handler: str | None = None, page_size: int = 100,
             limit: int | None = None, schedule: str | None = None) -> Iterator[dict[str, Any]]:
        """Jobs newest first, optionally of one ``state``, ``handler`` and ``schedule`` (the jobs its slots
        and run-nows made), fetched a page at a time; at most ``limit`` of them (None: all)."""
        after, count = None, 0
        while True:
            size = page_size if limit is None else min(page_size, limit - count)
            if size <= 0:
                return
            page = self._transport.request("GET", "/jobs", query={"state": state, "handler": handler,
                                                                  "schedule": schedule, "limit": size,
                                                                  "after": after})[1]
            for job in page["jobs"]:
                yield job
                count += 1
            after = page.get("next")
            if not after:
                return

    # -- schedules ----------------------------------------------------------------------
    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, each with ``next_fire_at``, ``last_fire_at`` and ``last_job`` {id, state}."""
        return self._transport.request("GET", "/schedules")[1]["schedules"]

    def schedule(self, name: str) -> dict[str, Any]:
        """One schedule; NotFound if there is none of that name."""
        return self._transport.request("GET", _schedule_path(name))[1]

    def add_schedule(self, name: str, handler: str, /, args: Iterable[Any] = (),
                     kwargs: Mapping[str, Any] | None = None, *, cron: str | None = None,
                     every: float | None = None, **options: Any) -> dict[str, Any]:
        """Make a schedule that submits ``handler(*args, **kwargs)`` on each ``cron`` slot (five fields, in
        ``timezone``, default UTC) or ``every`` seconds; needs an admin token.

        ``options``: the job's ``priority``, ``timeout``, ``max_retries``, ``callback_url``, and the
        schedule's ``timezone``, ``missed`` (skip, once, all), ``overlap`` (allow, skip), ``paused``,
        ``jitter``, ``start_at``/``end_at`` (datetimes or ISO 8601 strings). Conflict if the name is taken,
        InvalidRequest naming the field that is wrong.
        """
        body = {"name": name, "handler": handler, **_schedule_fields(options)}
        if args:
            body["args"] = list(args)
        if kwargs:
            body["kwargs"] = dict(kwargs)
        for field, value in (("cron", cron), ("every", every)):
            if value is not None:
                body[field] = value
        return self._transport.request("POST", "/schedules", body)[1]

    def update_schedule(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change some of a schedule's fields (``cron="0 9 * * *"``, ``kwargs={...}``, ...); None removes an
        optional one (``end_at=None``). The schedule is validated again as a whole."""
        return self._transport.request("PATCH", _schedule_path(name), _schedule_fields(fields, keep_none=True),
                                       resend=True)[1]

    def pause_schedule(self, name: str) -> dict[str, Any]:
        """No slot fires until ``resume_schedule``; the slots passed meanwhile are not fired."""
        return self._transport.request("POST", _schedule_path(name, "pause"), resend=True)[1]

    def resume_schedule(self, name: str) -> dict[str, Any]:
        """Fire again from the first slot after now."""
        return self._transport.request("POST", _schedule_path(name, "resume"), resend=True)[1]

    def run_schedule(self, name: str) -> JobHandle:
        """Submit one extra job from the schedule's template now (not a slot: the next slot stays)."""
        job = self._transport.request("POST", _schedule_path(name, "run"))[1]
        return JobHandle(self, job["id"], job)

    def delete_schedule(self, name: str) -> None:
        """No more slots; the jobs it made stay."""
        self._transport.request("DELETE", _schedule_path(name))

    def handlers(self) -> list[dict[str, Any]]:
        """The handlers the server can run (name, kind, timeout, ...)."""
        return self._transport.request("GET", "/handlers")[1]["handlers"]

    def health(self) -> dict[str, Any]:
        """The server's /health answer (raises Unavailable when it reports 503)."""
        return self._transport.request("GET", "/health")[1]

    def _get_job(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        return self._transport.request("GET", f"/jobs/{quote(job_id, safe='')}", query={"wait": wait or None},
                                       wait=wait)[1]


def _schedule_path(name: str, action: str | None = None) -> str:
    return f"/schedules/{quote(name, safe='')}" + (f"/{action}" if action else "")


def _schedule_fields(fields: Mapping[str, Any], keep_none: bool = False) -> dict[str, Any]:
    """Fields as the API takes them: datetimes as ISO 8601, args as a list; None left out unless kept."""
    body = {}
    for name, value in fields.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name == "args" and value is not None:
            value = list(value)
        if value is not None or keep_none:
            body[name] = value
    return body
