"""Turn a submitted JSON object into a Job, or say exactly which field is wrong and how to fix it."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from greenjobs.pool.errors import HandlerNotFound, InvalidJobParams
from greenjobs.pool.flow import gate, parse_expires
from greenjobs.pool.job import QUEUED, Job, new_id
from greenjobs.pool.urls import check_allowed, check_url

RESERVED = "greenjobs."      # handler names the server uses itself (webhook deliveries)
MAX_DELAY = 366 * 86400.0    # seconds
MAX_PRIORITY = 9
MAX_RETRIES = 100

#: The JSON Schema of a submitted job: GET /openapi.json publishes it, parse_spec enforces it (and more).
SCHEMA = {
    "type": "object", "required": ["handler"], "additionalProperties": False,
    "not": {"required": ["delay", "run_at"], "description": "give either delay or run_at, not both"},
    "properties": {
        "handler": {"type": "string", "description": "a name from GET /handlers"},
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY, "default": 0},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "seconds; default from the handler"},
        "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
        "delay": {"type": "number", "minimum": 0, "maximum": MAX_DELAY, "description": "seconds before the job may start"},
        "run_at": {"type": "string", "format": "date-time"},
        "expires": {"oneOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DELAY},
                              {"type": "string", "format": "date-time"}],
                    "description": "seconds from now, or a time: a job not started by then ends cancelled with "
                                   "error kind expired and never runs"},
        "unique_key": {"type": "string", "minLength": 1, "maxLength": 255,
                       "description": "while a job with this key is scheduled, queued or running, a submission with "
                                      "it answers that job (200) instead of adding one"},
        "rate_limit": {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*/\\s*[smh]\\s*$",
                       "description": "N/s, N/m or N/h: starts spaced across the cluster (the handler's own limit, "
                                      "if lower, wins)"},
        "rate_key": {"type": "string", "minLength": 1, "maxLength": 200,
                     "description": "a template over kwargs ({name}, {name.host}): one rate bucket per key"},
        "callback_url": {"type": "string", "format": "uri", "maxLength": 2048,
                         "description": "POSTed the finished job, signed (X-Greenjobs-Signature: sha256=HMAC of "
                                        "'<X-Greenjobs-Timestamp>.<body>'); host on greenjobs.http.allowed_hosts"},
    },
}
FIELDS = tuple(SCHEMA["properties"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_spec(data: Any, registry, settings, where: str = "") -> Job:
    """Validate one job object from a request body.  ``where`` prefixes field names (``jobs[3].``)."""
    if not isinstance(data, dict):
        raise InvalidJobParams(where.rstrip(".") or "body", "must be a JSON object with at least a 'handler' field")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidJobParams(f"{where}{unknown[0]}", f"unknown field; allowed fields: {', '.join(FIELDS)}")
    name = data.get("handler")
    if not isinstance(name, str):
        raise InvalidJobParams(f"{where}handler", "required, the name of a registered handler (see GET /handlers)")
    if name.startswith(RESERVED):
        raise InvalidJobParams(f"{where}handler", f"handlers named {RESERVED}* are internal and cannot be submitted")
    try:
        handler = registry.get(name)    # HandlerNotFound lists the known ones
    except HandlerNotFound as exc:
        raise HandlerNotFound(exc.name, exc.known, f"{where}handler") from None

    args = data.get("args", [])
    if not isinstance(args, list):
        raise InvalidJobParams(f"{where}args", "must be a JSON array")
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise InvalidJobParams(f"{where}kwargs", "must be a JSON object")
    priority = data.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise InvalidJobParams(f"{where}priority", f"must be an integer from 0 (lowest) to {MAX_PRIORITY} (highest)")
    # every job has a timeout: it bounds a cpu job's hard limit and its lease in the store
    timeout = data.get("timeout", handler.timeout or settings.job_max_timeout)
    if not _is_number(timeout) or not 0 < timeout <= settings.job_max_timeout:
        raise InvalidJobParams(f"{where}timeout", f"must be a number of seconds in (0, {settings.job_max_timeout}]")
    max_retries = data.get("max_retries", handler.max_retries)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= MAX_RETRIES:
        raise InvalidJobParams(f"{where}max_retries", f"must be an integer from 0 to {MAX_RETRIES}")
    run_at = None
    if "delay" in data and "run_at" in data:
        raise InvalidJobParams(f"{where}delay", "give either delay or run_at, not both")
    if "delay" in data:
        delay = data["delay"]
        if not _is_number(delay) or not 0 <= delay <= MAX_DELAY:
            raise InvalidJobParams(f"{where}delay", f"must be a number of seconds from 0 to {MAX_DELAY:.0f}")
        run_at = time.time() + delay if delay > 0 else None
    elif "run_at" in data:
        run_at = _parse_time(data["run_at"], f"{where}run_at")
    callback_url = data.get("callback_url")
    if "callback_url" in data:          # present means a URL: null is no more "none" than "" is
        try:
            check_url(callback_url, f"{where}callback_url")
            check_allowed(callback_url, settings.http_allowed_hosts)
        except (ValueError, PermissionError) as exc:
            raise InvalidJobParams(f"{where}callback_url", str(exc).removeprefix(f"{where}callback_url ")) from None
        if not settings.webhooks_secret:
            raise InvalidJobParams(f"{where}callback_url", "webhooks are off: set greenjobs.webhooks.secret in the "
                                                          "ini file to sign them")
    expires_at = None
    if "expires" in data:
        expires_at = parse_expires(data["expires"], f"{where}expires", time.time(), MAX_DELAY)
        if run_at is not None and run_at >= expires_at:
            raise InvalidJobParams(f"{where}expires", "is before the job may start (its delay or run_at)")
    unique_key = data.get("unique_key")
    if "unique_key" in data and (not isinstance(unique_key, str) or not 1 <= len(unique_key) <= 255
                                 or not unique_key.isprintable()):
        raise InvalidJobParams(f"{where}unique_key", "must be a string of 1-255 printable characters")
    if handler.validate is not None:
        try:
            if handler.validate_takes_settings:
                handler.validate(args, kwargs, settings)
            else:
                handler.validate(args, kwargs)
        except (ValueError, TypeError) as exc:
            raise InvalidJobParams(f"{where}{str(exc).split(' ', 1)[0]}", str(exc).split(" ", 1)[-1]) from None
    signature = handler.signature
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidJobParams(f"{where}kwargs" if kwargs or not args else f"{where}args",
                                   f"do not fit the handler {handler.name!r}{signature}: {exc}") from None
    return Job(id=new_id(), handler=handler.name, kind=handler.kind, state=QUEUED, args=args, kwargs=kwargs,
               priority=priority, timeout=float(timeout), max_retries=max_retries,
               run_at=run_at, callback_url=callback_url, expires_at=expires_at, unique_key=unique_key,
               gate=gate(handler, data, kwargs, where), rerouted=handler.rerouted is not None)


def _parse_time(value: Any, field: str) -> float:
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidJobParams(field, "must be an ISO 8601 date-time string, e.g. 2026-12-01T12:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidJobParams(field, "must be an ISO 8601 date-time string, e.g. 2026-12-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    ts = moment.timestamp()
    if ts > time.time() + MAX_DELAY:
        raise InvalidJobParams(field, "must be at most one year ahead")
    return ts
