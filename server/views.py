"""HTTP views: thin translations between JSON and the runtime."""
from __future__ import annotations

import hashlib
import json
import math

from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.view import view_config

from greenjobs.pool.errors import InvalidIdempotencyKey, InvalidJobParams
from greenjobs.pool.job import SCOPE, STATES, new_id
from greenjobs.pool.spec import parse_spec
from greenjobs.server.body import read_json
from greenjobs.server.problems import Problem


def _settings(request):
    return request.registry.greenjobs_settings


def _runtime(request):
    return request.registry.greenjobs_runtime


def _query_number(request, name: str, lo: float, hi: float | None = None, clamp: bool = False, integer: bool = False):
    text = request.GET.get(name)
    if text is None:
        return None
    try:
        # ASCII only: int() and float() also read other scripts' digits ("٣" as 3), which nobody means
        value = (int(text) if integer else float(text)) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if value != value or value < lo or (hi is not None and value > hi and not clamp):
        kind = "an integer" if integer else "a number"
        raise Problem(400, "Invalid query parameter",
                      f"?{name}= must be {kind} from {lo} to {hi if hi is not None else 'any'} (got {text!r})")
    return min(value, hi) if hi is not None else value


def _wait(request) -> float:
    value = _query_number(request, "wait", 0, _settings(request).api_max_wait, clamp=True)
    return value or 0.0


def _checked_key(key, where: str) -> str:
    """One rule for the Idempotency-Key header and a batch item's ``idempotency_key`` (422 for both)."""
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise InvalidIdempotencyKey(where, "an idempotency key must be 1-255 printable ASCII characters")
    return key


def _scoped(request, key: str) -> str:
    """An Idempotency-Key as stored: scoped by the caller's principal, so a key replayed by another token
    is another key (with access control off there is one principal)."""
    identity = request.identity
    return f"{identity.principal}/{key}" if identity is not None and identity.principal else key


def _scope_unique(request, job) -> None:
    """A unique_key is the caller's own, like an Idempotency-Key: another principal's job is never answered."""
    identity = request.identity
    if job.unique_key is not None and identity is not None and identity.principal:
        job.unique_key = f"{identity.principal}{SCOPE}{job.unique_key}"


def _fingerprint(data) -> str:
    """What makes two requests under one Idempotency-Key "the same": their canonical JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@view_config(route_name="jobs", request_method="POST", renderer="json", permission="submit")
def submit(request):
    """POST /jobs: store one job (202, Location), or return the original for a repeated Idempotency-Key (200);
    ?wait= holds the answer until it ends."""
    settings = _settings(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        _checked_key(key, "Idempotency-Key")
    body = read_json(request, settings.api_max_body, settings.api_read_timeout)
    job = parse_spec(body, request.registry.greenjobs_handlers, settings)
    _scope_unique(request, job)
    keys = {0: (_scoped(request, key), _fingerprint(body))} if key is not None else None
    wait = _wait(request)       # ?wait=S: submit, then hold the answer until the job ends (or S s)
    if wait:
        job, created = _runtime(request).submit_and_wait(job, keys, wait)
    else:
        repeats = _runtime(request).submit([job], keys=keys)
        created = not repeats
        if repeats:             # a repeat: the original job, not a second one
            job = _runtime(request).get(repeats[0])
    request.response.status_code = 202 if created else 200
    request.response.headers["Location"] = f"/jobs/{job.id}"
    return job.public()


@view_config(route_name="jobs_batch", request_method="POST", renderer="json", permission="submit")
def submit_batch(request):
    """All or nothing.  An item's ``idempotency_key`` makes it safe to send again: a known key maps the
    item to its original job (listed in ``repeated``); when every item repeats one earlier batch, that
    batch is answered with 200, so a client can simply resend a batch whose response it lost."""
    settings = _settings(request)
    body = read_json(request, settings.api_max_body, settings.api_read_timeout)
    items = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise Problem(422, "Invalid batch", "the body must be {\"jobs\": [job, ...]} with at least one job")
    unknown = sorted(set(body) - {"jobs"})
    if unknown:                 # strict, like the fields of a job
        raise InvalidJobParams(unknown[0], "unknown field of a batch; the body is {\"jobs\": [job, ...]}")
    if len(items) > settings.api_max_batch:
        raise Problem(422, "Invalid batch", f"a batch holds at most greenjobs.api.max_batch={settings.api_max_batch}"
                                            f" jobs; this one has {len(items)}; split it")
    registry = request.registry.greenjobs_handlers
    jobs, keys, same_as = [], {}, {}
    first_with: dict[str, tuple[int, str]] = {}
    for i, item in enumerate(items):
        keyed = isinstance(item, dict) and "idempotency_key" in item
        key = item.pop("idempotency_key") if keyed else None
        jobs.append(parse_spec(item, registry, settings, where=f"jobs[{i}]."))
        _scope_unique(request, jobs[-1])
        if not keyed:
            continue
        key, fingerprint = _checked_key(key, f"jobs[{i}].idempotency_key"), _fingerprint(item)
        if key in first_with:   # the same key twice in one batch: one job, or a conflict
            j, earlier = first_with[key]
            if earlier != fingerprint:
                raise InvalidJobParams(f"jobs[{i}].idempotency_key", f"also used by jobs[{j}] for a different job")
            same_as[i] = j
        else:
            first_with[key] = (i, fingerprint)
            keys[i] = (_scoped(request, key), fingerprint)
    batch_id = new_id()
    if not keys:                # the common case: no item keys (a unique_key may still answer an active job)
        repeats = _runtime(request).submit(jobs, batch_id)
        unique, ids = jobs, [repeats.get(n, job.id) for n, job in enumerate(jobs)]
        repeated = sorted(repeats)
    else:
        unique = [job for i, job in enumerate(jobs) if i not in same_as]
        position = {id(job): n for n, job in enumerate(unique)}
        origin = [position[id(jobs[same_as.get(i, i)])] for i in range(len(jobs))]   # item -> its stored job
        repeats = _runtime(request).submit(unique, batch_id, {origin[i]: k for i, k in keys.items()})
        ids = [repeats.get(n, unique[n].id) for n in origin]
        repeated = [i for i, n in enumerate(origin) if n in repeats]
    if len(repeats) == len(unique):     # nothing new: answer with the original batch if there is one
        batch_id = _runtime(request).batch_of(ids)
        request.response.status_code = 200
    else:
        request.response.status_code = 202
    if batch_id is not None:
        request.response.headers["Location"] = f"/batches/{batch_id}"
    return {"batch": batch_id, "count": len(jobs), "ids": ids, "repeated": repeated}


@view_config(route_name="job", request_method="GET", renderer="json", permission="read")
def get_job(request):
    """GET /jobs/{id}: the job; ?wait=S long-polls until it is terminal or S seconds pass."""
    wait = _wait(request)
    runtime = _runtime(request)
    job_id = request.matchdict["id"]
    job = runtime.wait(job_id, wait) if wait else runtime.get(job_id)
    return job.public()


@view_config(route_name="job", request_method="DELETE", renderer="json", permission="admin")
def cancel_job(request):
    """DELETE /jobs/{id}: cancel a scheduled, queued or running job (409 if it already ended)."""
    return _runtime(request).cancel(request.matchdict["id"]).public()


@view_config(route_name="job_retry", request_method="POST", renderer="json", permission="admin")
def retry_job(request):
    """POST /jobs/{id}/retry: run a failed job again under the same id (202; 409 unless it failed)."""
    job = _runtime(request).retry(request.matchdict["id"])
    request.response.status_code = 202
    request.response.headers["Location"] = f"/jobs/{job.id}"
    return job.public()


@view_config(route_name="jobs", request_method="GET", renderer="json", permission="read")
def list_jobs(request):
    """GET /jobs: newest first, filtered by ?state=, ?handler=, ?schedule= and ?q= (text in the args or kwargs,
    as JSON), paged with ?limit= and ?after=."""
    state = request.GET.get("state")
    if state is not None and state not in STATES:
        raise Problem(400, "Invalid query parameter", f"?state= must be one of {', '.join(STATES)} (got {state!r})")
    limit = _query_number(request, "limit", 1, _settings(request).api_max_page, integer=True) or 50
    handler = request.GET.get("handler") or None
    schedule = request.GET.get("schedule") or None
    after = request.GET.get("after") or None
    text = request.GET.get("q") or None
    if text is not None and len(text) > 200:
        raise Problem(400, "Invalid query parameter", "?q= searches for at most 200 characters")
    jobs, last = _runtime(request).list(state, handler, limit, after, schedule, text)
    return {"jobs": [job.public() for job in jobs], "next": str(last) if len(jobs) == limit else None}


@view_config(route_name="batch", request_method="GET", renderer="json", permission="read")
def get_batch(request):
    """GET /batches/{id}: counts per state and whether every job ended; ?wait= long-polls until done."""
    batch_id = request.matchdict["id"]
    info = _runtime(request).batch(batch_id, _wait(request))
    counts = {state: info["counts"].get(state, 0) for state in STATES}
    active = counts["scheduled"] + counts["queued"] + counts["running"]
    return {"id": batch_id, "total": info["total"], "counts": counts, "done": active == 0}


@view_config(route_name="handlers", request_method="GET", renderer="json", permission="read")
def list_handlers(request):
    """GET /handlers: the registered handlers, their kind, defaults, flow control (with how many jobs it holds
    back now: ``waiting``) and doc."""
    store = _runtime(request).store
    waiting: dict[str, dict[str, int]] = {}
    for name, reason, n in store.waiting_counts():
        waiting.setdefault(name, {})[reason] = n
    active: dict[str, dict[str, int]] = {}
    for name, state, n in store.active_counts():
        active.setdefault(name, {})[state] = n
    return {"handlers": [{**h.describe(), "active": active.get(h.name, {}), "waiting": waiting.get(h.name, {})}
                         for h in request.registry.greenjobs_handlers]}


@view_config(route_name="health", request_method="GET", renderer="json", permission=NO_PERMISSION_REQUIRED)
def health(request):
    """GET /health: 200 while the server accepts jobs and its store writes, else 503; pools, workers and store."""
    report = _runtime(request).health()
    if report["status"] != "ok":
        request.response.status_code = 503
    return report
