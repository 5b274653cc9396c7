"""Periodic jobs: a schedule's definition, how it is validated, and when its slots fall.

A schedule is a job template plus either ``cron`` (five fields, in ``timezone``) or ``every`` (seconds).
Its slots (fire times) are computed from the definition alone, never from "now + interval": ``every``
slots fall at ``start_at + k * every`` (``start_at`` defaults to the Unix epoch, so ``every = 60`` fires on
each minute), cron slots where the expression matches the wall clock in ``timezone``.  The store keeps one
cursor per schedule, ``next_fire_at``, which only moves forward, in the same transaction that inserts the
slot's job (``greenjobs.pool.scheduler``): a restart, a slow tick, a clock that differs between servers or
jumps backwards cannot fire a slot twice.

Daylight saving time (cron in a zone that has it) follows Debian cron, through cronsim: a job at a fixed
time (minute and hour given) inside the hour that is skipped in spring runs once, at the first valid minute
after it (02:30 -> 03:00); a fixed time inside the repeated autumn hour runs once, in its first occurrence.
Expressions with a wildcard or step in the minute or hour (``*/30 * * * *``) keep real time: every 30
minutes stays every 30 minutes through both changes.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from greenjobs.pool.errors import InvalidJobParams, InvalidSchedule
from greenjobs.pool.job import iso
from greenjobs.pool.spec import FIELDS as JOB_FIELDS, parse_spec

#: The job template's fields (a submission's, less the ones a slot decides: when it runs).
TEMPLATE_FIELDS = tuple(f for f in JOB_FIELDS if f not in ("delay", "run_at"))
#: The schedule's own fields.
TIMING_FIELDS = ("cron", "timezone", "every", "missed", "overlap", "paused", "jitter", "start_at", "end_at")
FIELDS = ("name", *TEMPLATE_FIELDS, *TIMING_FIELDS)
#: Fields PATCH may change (a schedule's name is its identity).
CHANGEABLE = tuple(f for f in FIELDS if f != "name")
MISSED = ("skip", "once", "all")
OVERLAP = ("allow", "skip")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_JITTER = 3600.0

#: The JSON Schema of a schedule as POST /schedules takes it (GET /openapi.json publishes it).
SCHEMA = {
    "type": "object", "required": ["name", "handler"], "additionalProperties": False,
    "description": "give either cron or every",
    "properties": {
        "name": {"type": "string", "pattern": NAME.pattern, "description": "unique and stable: the schedule's id"},
        "handler": {"type": "string", "description": "a name from GET /handlers"},
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "max_retries": {"type": "integer", "minimum": 0},
        "callback_url": {"type": "string", "format": "uri"},
        "cron": {"type": "string", "description": "five fields: minute hour day-of-month month day-of-week"},
        "timezone": {"type": "string", "default": "UTC", "description": "an IANA zone for cron, e.g. Europe/Berlin"},
        "every": {"type": "number", "minimum": 1, "description": "seconds between slots"},
        "missed": {"enum": list(MISSED), "default": "skip",
                   "description": "slots missed while no server ran: skip them, fire one catch-up job, or fire each "
                                  "(at most greenjobs.schedules.max_backfill)"},
        "overlap": {"enum": list(OVERLAP), "default": "allow",
                    "description": "skip: do not fire while the previous slot's job is still active"},
        "paused": {"type": "boolean", "default": False},
        "jitter": {"type": "number", "minimum": 0, "maximum": MAX_JITTER,
                   "description": "each slot's job starts up to this many seconds after the slot, at random"},
        "start_at": {"type": "string", "format": "date-time", "description": "no slot before; anchors every"},
        "end_at": {"type": "string", "format": "date-time", "description": "no slot after"},
    },
}


@dataclass
class Schedule:
    """One schedule: its definition (what the user gave) and its state in the ledger."""

    name: str
    job: dict                           # the job template as given: handler, args, kwargs, …
    cron: str | None = None
    timezone: str = "UTC"
    every: float | None = None
    missed: str = "skip"
    overlap: str = "allow"
    jitter: float = 0.0
    start_at: float | None = None
    end_at: float | None = None
    paused: bool = False
    source: str = "api"                 # "api" (POST /schedules) or "ini" (declared, upserted at start)
    revision: int = 0                   # +1 on every change and every firing: the store's compare-and-swap
    next_fire_at: float | None = None   # the cursor: the first slot not yet fired (None: no more slots)
    last_fire_at: float | None = None
    last_job_id: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    # -- the definition ----------------------------------------------------------------
    def definition(self) -> dict[str, Any]:
        """What the user defined, as JSON (times as epoch seconds): what the store keeps and compares."""
        return {**self.job, "cron": self.cron, "timezone": self.timezone, "every": self.every,
                "missed": self.missed, "overlap": self.overlap, "jitter": self.jitter,
                "start_at": self.start_at, "end_at": self.end_at}

    def public(self, last_job: dict | None = None) -> dict[str, Any]:
        """The schedule as the HTTP API shows it."""
        return {"name": self.name, **self.job, "cron": self.cron, "timezone": self.timezone, "every": self.every,
                "missed": self.missed, "overlap": self.overlap, "jitter": self.jitter,
                "start_at": iso(self.start_at), "end_at": iso(self.end_at), "paused": self.paused,
                "source": self.source, "next_fire_at": iso(None if self.paused else self.next_fire_at),
                "last_fire_at": iso(self.last_fire_at), "last_job": last_job,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}

    # -- slots -------------------------------------------------------------------------
    def next_after(self, ts: float) -> float | None:
        """The first slot strictly after ``ts`` (epoch seconds), or None once past ``end_at``."""
        if self.start_at is not None and ts < self.start_at:
            ts = math.nextafter(self.start_at, -math.inf)       # start_at itself may be a slot
        slot = _every_after(self.every, self.start_at or 0.0, ts) if self.every else _cron_after(self.cron, self.zone, ts)
        return None if slot is None or (self.end_at is not None and slot > self.end_at) else slot

    def prev_before(self, ts: float) -> float | None:
        """The last slot strictly before ``ts``, or None if there is none (before ``start_at``)."""
        slot = _every_before(self.every, self.start_at or 0.0, ts) if self.every else _cron_before(self.cron, self.zone, ts)
        if slot is None or (self.start_at is not None and slot < self.start_at):
            return None
        return slot

    @property
    def zone(self):
        return dt_timezone.utc if self.timezone == "UTC" else ZoneInfo(self.timezone)

    def plan(self, now: float, grace: float, max_backfill: int) -> "Plan | None":
        """What to fire at ``now``: None if nothing is due.  Slots up to ``grace`` seconds old are on time
        and fire; older ones were missed (no server ran) and fire as ``missed`` says: none (skip), the newest
        one (once: one catch-up job, besides any on-time slot), or the newest ``max_backfill`` (all).  The
        new cursor is the first slot after ``now``."""
        cursor = self.next_fire_at
        if cursor is None or cursor > now:
            return None
        limit = now - grace
        on_time: list[float] = []
        slot = cursor if cursor > limit else self.next_after(limit)
        while slot is not None and slot <= now and len(on_time) < 1000:
            on_time.append(slot)
            slot = self.next_after(slot)
        after = slot if slot is not None and slot > now else self.next_after(now)
        missed: list[float] = []
        late = cursor <= limit
        wanted = {"all": max_backfill, "once": 1}.get(self.missed, 0) if late else 0
        back = self.prev_before(math.nextafter(limit, math.inf)) if wanted else None
        while back is not None and back >= cursor and len(missed) < wanted:
            missed.append(back)
            back = self.prev_before(back)
        return Plan(fire=sorted(missed) + on_time, next_fire_at=after, missed=late)


@dataclass(frozen=True)
class Plan:
    """A schedule's firing at one tick: the slots to fire now (oldest first) and the cursor after them."""

    fire: list[float]
    next_fire_at: float | None
    missed: bool                # some slots were older than the grace window


def _every_after(every: float, anchor: float, ts: float) -> float:
    k = math.floor((ts - anchor) / every) + 1
    slot = anchor + k * every
    while slot <= ts:               # float rounding
        k += 1
        slot = anchor + k * every
    return slot


def _every_before(every: float, anchor: float, ts: float) -> float:
    k = math.ceil((ts - anchor) / every) - 1
    slot = anchor + k * every
    while slot >= ts:
        k -= 1
        slot = anchor + k * every
    return slot


def _cron_walk(expr: str, zone, ts: float, reverse: bool) -> float | None:
    start = datetime.fromtimestamp(ts, zone)
    sim = CronSim(expr, start, reverse=reverse)
    for _ in range(2000):           # bounded: a DST fold maps a few wall-clock slots onto one instant
        try:
            slot = next(sim).timestamp()
        except StopIteration:
            return None
        if (slot < ts) if reverse else (slot > ts):
            return slot
    return None


def _cron_after(expr: str, zone, ts: float) -> float | None:
    return _cron_walk(expr, zone, ts, reverse=False)


def _cron_before(expr: str, zone, ts: float) -> float | None:
    return _cron_walk(expr, zone, ts, reverse=True)


# -- validation ------------------------------------------------------------------------
def parse_schedule(data: Any, registry, settings, source: str = "api") -> Schedule:
    """Validate a schedule object (a POST body, or an ini declaration as a dict); InvalidSchedule names the
    field.  The job template is checked as a submission would be (handler, arguments, timeout, …)."""
    if not isinstance(data, dict):
        raise InvalidSchedule("body", "must be a JSON object with name, handler and cron or every")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidSchedule(unknown[0], f"unknown field; allowed fields: {', '.join(FIELDS)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidSchedule("name", "required: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    template = {k: data[k] for k in TEMPLATE_FIELDS if k in data}
    if isinstance(template.get("expires"), str):
        raise InvalidSchedule("expires", "a schedule's jobs expire a number of seconds after their slot, not at one "
                                         "time (every later slot would be expired)")
    try:
        parse_spec(template, registry, settings)
    except InvalidJobParams as exc:
        raise InvalidSchedule(exc.field, str(exc).split(": ", 1)[-1]) from None
    cron, every = data.get("cron"), data.get("every")
    if (cron is None) == (every is None):
        raise InvalidSchedule("cron", "give either cron (five fields) or every (seconds), not both")
    zone_name = data.get("timezone", "UTC")
    if not isinstance(zone_name, str) or not zone_name or len(zone_name) > 64:
        raise InvalidSchedule("timezone", "must be an IANA time zone name, e.g. UTC or Europe/Berlin")
    try:
        zone = dt_timezone.utc if zone_name == "UTC" else ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule("timezone", f"unknown time zone {zone_name!r}; use an IANA name, e.g. Europe/Berlin") \
            from None
    if cron is not None:
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise InvalidSchedule("cron", "must be five fields: minute hour day-of-month month day-of-week, "
                                          "e.g. '0 3 * * *'")
        try:
            CronSim(cron, datetime.now(zone))
        except (CronSimError, ValueError, IndexError) as exc:
            raise InvalidSchedule("cron", f"{cron!r} is not a valid cron expression ({exc})") from None
    elif isinstance(every, bool) or not isinstance(every, (int, float)) or not 1 <= every <= 366 * 86400:
        raise InvalidSchedule("every", "must be a number of seconds from 1 to 31622400")
    choices = {"missed": MISSED, "overlap": OVERLAP}
    for key, allowed in choices.items():
        if key in data and data[key] not in allowed:
            raise InvalidSchedule(key, f"must be one of {', '.join(allowed)}")
    paused = data.get("paused", False)
    if not isinstance(paused, bool):
        raise InvalidSchedule("paused", "must be true or false")
    jitter = data.get("jitter", 0)
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= MAX_JITTER:
        raise InvalidSchedule("jitter", f"must be a number of seconds from 0 to {MAX_JITTER:.0f}")
    bounds = {}
    for key in ("start_at", "end_at"):
        value = data.get(key)
        if value is None:
            bounds[key] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds[key] = float(value)          # epoch seconds, as the store keeps them
        else:
            bounds[key] = _parse_date(value, key)
    if bounds["start_at"] is not None and bounds["end_at"] is not None and bounds["end_at"] <= bounds["start_at"]:
        raise InvalidSchedule("end_at", "must be after start_at")
    return Schedule(name=name, job=template, cron=cron, timezone=zone_name,
                    every=float(every) if every is not None else None, missed=data.get("missed", "skip"),
                    overlap=data.get("overlap", "allow"), jitter=float(jitter), paused=paused, source=source,
                    **bounds)


def _parse_date(value: Any, key: str) -> float:
    if not isinstance(value, str):
        raise InvalidSchedule(key, "must be an ISO 8601 date-time string, e.g. 2026-12-01T12:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSchedule(key, "must be an ISO 8601 date-time string, e.g. 2026-12-01T12:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)).timestamp()


def patched(schedule: Schedule, changes: Any, registry, settings) -> Schedule:
    """``schedule`` with PATCH ``changes`` applied and validated as a whole; its state is kept, its cursor
    recomputed if the timing changed."""
    if not isinstance(changes, dict):
        raise InvalidSchedule("body", "must be a JSON object of the fields to change")
    if "name" in changes and changes["name"] != schedule.name:
        raise InvalidSchedule("name", "a schedule's name cannot change: create a new one and delete this one")
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidSchedule(unknown[0], f"unknown field; fields that can change: {', '.join(CHANGEABLE)}")
    merged = {"name": schedule.name, **{k: v for k, v in schedule.definition().items() if v is not None},
              "paused": schedule.paused, **changes}
    if "cron" in changes and changes["cron"] is not None:
        merged.pop("every", None)
    if "every" in changes and changes["every"] is not None:
        merged.pop("cron", None)
    merged = {k: v for k, v in merged.items() if v is not None}
    fresh = parse_schedule(merged, registry, settings, source=schedule.source)
    return replace(fresh, revision=schedule.revision, next_fire_at=schedule.next_fire_at,
                   last_fire_at=schedule.last_fire_at, last_job_id=schedule.last_job_id,
                   created_at=schedule.created_at)


# -- ini declarations ----------------------------------------------------------------------
INI_PREFIX = "greenjobs.schedule."
_JSON_FIELDS = ("args", "kwargs")
_NUMBER_FIELDS = ("priority", "max_retries")
_FLOAT_FIELDS = ("timeout", "every", "jitter")


def from_ini(names: tuple[str, ...], raw: dict[str, str]) -> tuple[list[dict], list[str]]:
    """The schedules an ini declares (``greenjobs.schedules = a b`` and ``greenjobs.schedule.a.cron = …``)
    as dicts for :func:`parse_schedule`, and every problem found (a key of an undeclared schedule, a bad value)."""
    import json
    found: dict[str, dict] = {name: {"name": name} for name in names}
    problems = []
    for key in sorted(k for k in raw if k.startswith(INI_PREFIX)):
        name, _, attr = key[len(INI_PREFIX):].rpartition(".")
        if name not in found:
            problems.append(f"{key}: schedule {name!r} is not declared in greenjobs.schedules"
                            f" ({' '.join(names) or 'empty'})")
            continue
        if attr not in CHANGEABLE:
            problems.append(f"{key}: unknown schedule field; allowed: {', '.join(CHANGEABLE)}")
            continue
        text = str(raw[key]).strip()
        try:
            if attr in _JSON_FIELDS:
                value: Any = json.loads(text)
            elif attr in _NUMBER_FIELDS:
                value = int(text)
            elif attr in _FLOAT_FIELDS:
                value = float(text)
            elif attr == "paused":
                if text.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                    raise ValueError("true or false")
                value = text.lower() in ("true", "yes", "on", "1")
            else:
                value = text
        except ValueError as exc:
            problems.append(f"{key} = {text!r}: {exc}")
            continue
        found[name][attr] = value
    return list(found.values()), problems


def check_ini(declared: list[dict], registry, settings) -> tuple[list[Schedule], list[str]]:
    """Validate ini-declared schedules with the registry; (schedules, problems) naming the ini key."""
    schedules, problems = [], []
    for data in declared:
        try:
            schedules.append(parse_schedule(data, registry, settings, source="ini"))
        except (InvalidSchedule, InvalidJobParams) as exc:
            field_name = getattr(exc, "field", "")
            problems.append(f"{INI_PREFIX}{data['name']}.{field_name}: {str(exc).split(': ', 1)[-1]}")
        except Exception as exc:  # noqa: BLE001 - HandlerNotFound and friends
            problems.append(f"{INI_PREFIX}{data['name']}.handler: {exc}")
    return schedules, problems




@dataclass(frozen=True)
class Advance:
    """A schedule's cursor move, made in the transaction that inserts its slots' jobs (or alone, for slots
    skipped): applied only if the schedule is still at ``revision``, so two servers cannot both fire a slot."""

    name: str
    revision: int
    next_fire_at: float | None
    last_fire_at: float | None
    last_job_id: str | None
