"""Flow control: rate limits, concurrency limits, unique jobs and expiry, as rules a job carries.

A job's *gate* is decided at submission and stored with it (``Job.gate``), so every server of a cluster
applies the same rule to it whatever its own handler registry says during a rolling deploy:

- ``every``: seconds between two starts in the job's rate bucket (``rate_limit="N/s|m|h"`` on the handler
  and on the job; the lower rate wins).  Like Celery's ``rate_limit``, starts are spaced evenly, never in a
  burst: ``10/m`` is one start every 6 s, shared by every server of the store.
- ``bucket``: the rate bucket, the handler's name and, with ``rate_key`` (a template over the job's kwargs
  such as ``"{host}"`` or ``"{url.host}"``), the rendered key: one bucket per remote host, tenant, ...
- ``max_running``: at most that many jobs of the handler run at once in the whole cluster.

The store applies a gate when a job would start (``greenjobs.pool.store.flow``): one over its rate waits
``scheduled`` until the start time it reserved, one over its handler's concurrency waits ``scheduled``
with no time until a running one ends.  Neither holds a pool slot or a worker, and neither fails.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from greenjobs.pool.errors import ConfigurationError, InvalidJobParams

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\.host)?\}")
MAX_KEY = 200           # characters of a rendered rate key
#: Why a job that could run does not run yet (``Job.waiting``).
RATE_LIMIT, MAX_RUNNING = "rate_limit", "max_running"
EXPIRED = {"kind": "expired", "message": "the job's next attempt could not start before the job expired",
           "traceback": None}


def parse_rate(text: Any) -> float:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` -> seconds between starts; ValueError says what is wrong."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError('must be a rate like "10/s", "30/m" or "100/h" (a positive number of starts per '
                         "second, minute or hour)")
    return PERIODS[match.group(2)] / float(match.group(1))


def check_template(template: Any) -> str:
    """A rate key template: text with ``{kwarg}`` or ``{kwarg.host}`` fields (no other formatting)."""
    if not isinstance(template, str) or not 1 <= len(template) <= MAX_KEY:
        raise ValueError(f'must be a template of 1-{MAX_KEY} characters over the kwargs, e.g. "{{host}}" or '
                         '"{url.host}"')
    rest = _FIELD.sub("", template)
    if "{" in rest or "}" in rest:
        raise ValueError('may only hold fields like {name} (a kwarg) or {name.host} (the host of a URL kwarg)')
    return template


def render_key(template: str, kwargs: dict) -> str:
    """The rate key of a job: each ``{name}`` replaced by that kwarg (a string or number), ``{name.host}`` by
    the host of that kwarg's URL.  ValueError names the kwarg that is missing or unusable."""
    def field(match):
        name, host = match.group(1), match.group(2)
        if name not in kwargs:
            raise ValueError(f"rate_key {template!r} needs kwargs.{name}")
        value = kwargs[name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"rate_key {template!r}: kwargs.{name} must be a string or a number")
        if host:
            found = urlsplit(str(value)).hostname if isinstance(value, str) else None
            if not found:
                raise ValueError(f"rate_key {template!r}: kwargs.{name} must be a URL with a host")
            return found
        return str(value)
    key = _FIELD.sub(field, template)
    if len(key) > MAX_KEY:
        raise ValueError(f"rate_key {template!r} renders {len(key)} characters (at most {MAX_KEY})")
    return key


def handler_rules(name: str, rate_limit: Any, rate_key: Any, max_running: Any) -> tuple:
    """Check @handler's flow arguments at import: (seconds between starts or None, template or None, N or None)."""
    def checked(field, value, parse):
        try:
            return None if value is None else parse(value)
        except ValueError as exc:
            raise ConfigurationError(f"handler {name!r}: {field} {exc}") from None
    every = checked("rate_limit", rate_limit, parse_rate)
    template = checked("rate_key", rate_key, check_template)
    if max_running is not None and (isinstance(max_running, bool) or not isinstance(max_running, int)
                                    or max_running < 1):
        raise ConfigurationError(f"handler {name!r}: max_running must be a positive integer")
    return every, template, max_running


def gate(handler, data: dict, kwargs: dict, where: str) -> dict | None:
    """The gate of a submitted job (``data``: its spec) under ``handler``'s rules, or None for an ungated job."""
    def field(name, parse):
        try:
            return parse(data[name])
        except ValueError as exc:
            raise InvalidJobParams(f"{where}{name}", str(exc)) from None
    every = handler.rate_every
    if "rate_limit" in data:
        own = field("rate_limit", parse_rate)
        every = own if every is None else max(every, own)        # the lower rate wins
    template = handler.rate_key
    if "rate_key" in data:
        template = field("rate_key", check_template)
        if every is None:
            raise InvalidJobParams(f"{where}rate_key", "needs a rate_limit (on the job or its handler)")
    if every is None and handler.max_running is None:
        return None
    bucket = None
    if every is not None:
        bucket = handler.name
        if template is not None:
            try:
                bucket = f"{handler.name}:{render_key(template, kwargs)}"
            except ValueError as exc:
                raise InvalidJobParams(f"{where}rate_key", str(exc)) from None
    return {"bucket": bucket, "every": every, "max_running": handler.max_running}


def parse_expires(value: Any, field: str, now: float, max_seconds: float) -> float:
    """``expires``: seconds from now (a positive number) or an ISO 8601 time in the future -> epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 < value <= max_seconds:
            raise InvalidJobParams(field, f"must be a number of seconds in (0, {max_seconds:.0f}] or an ISO 8601 time")
        return now + float(value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            at = moment.timestamp()
            if not now < at <= now + max_seconds:
                raise InvalidJobParams(field, "must be a time in the future (at most a year ahead)")
            return at
    raise InvalidJobParams(field, "must be a number of seconds or an ISO 8601 date-time, e.g. 2026-12-01T12:00:00Z")
