"""Settings: one table per package, parsed and validated once at start-up.

Every problem is collected and reported together, unknown ``greenjobs.*`` keys included,
so a bad config.ini fails fast with one line per key saying what is expected.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace
from typing import Any, Callable, Iterable, Mapping

from greenjobs.pool import schedules
from greenjobs.pool.errors import ConfigurationError
from greenjobs.pool.urls import parse_allowed_entry
from greenjobs.pool.job import EVENTS

PREFIX = "greenjobs."


@dataclass(frozen=True)
class Setting:
    """One key: ``convert`` turns the ini string into a typed value or raises ValueError."""

    key: str
    convert: Callable[[str], Any]
    default: Any
    help: str

    @property
    def attr(self) -> str:
        """``greenjobs.pool.size`` -> ``pool_size``."""
        key = self.key[len(PREFIX):] if self.key.startswith(PREFIX) else self.key
        return key.replace(".", "_")


def as_int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """Converter factory: an integer in [lo, hi] (None: unbounded)."""
    def convert(text: str) -> int:
        value = int(str(text).strip())
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"an integer in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]")
        return value
    convert.expects = f"an integer in [{lo}, {hi}]"  # type: ignore[attr-defined]
    return convert


def as_float(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """Converter factory: a number in [lo, hi] (None: unbounded); NaN is refused."""
    def convert(text: str) -> float:
        value = float(str(text).strip())
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError
        return value
    convert.expects = f"a number in [{lo}, {hi}]"  # type: ignore[attr-defined]
    return convert


def as_bool(text: str) -> bool:
    """Strict: true/false/yes/no/on/off/1/0 only, so a typo is an error rather than False."""
    value = str(text).strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError


as_bool.expects = "true or false"  # type: ignore[attr-defined]


def as_words(text: str) -> tuple[str, ...]:
    """Whitespace- or comma-separated words."""
    return tuple(w for w in str(text).replace(",", " ").split() if w)


as_words.expects = "a list of words separated by spaces"  # type: ignore[attr-defined]


SIGNAL_NAMES = EVENTS     # one signal per lifecycle event


def as_receivers(text: str) -> tuple[tuple[str, str], ...]:
    """``failed:myapp.hooks.alert succeeded:myapp.hooks.count`` -> ((signal, dotted path), ...)."""
    entries = []
    for word in as_words(text):
        name, _, path = word.partition(":")
        if name not in SIGNAL_NAMES or not path or "." not in path:
            raise ValueError
        entries.append((name, path))
    return tuple(entries)


as_receivers.expects = ("SIGNAL:module.function entries, SIGNAL one of "  # type: ignore[attr-defined]
                        + ", ".join(SIGNAL_NAMES))


def as_hosts(text: str) -> tuple[str, ...]:
    """Allow-list entries (greenjobs.pool.urls.parse_allowed_entry checks each)."""
    entries = as_words(text)
    for entry in entries:
        parse_allowed_entry(entry)
    return entries


as_hosts.expects = "host, host:port or host:* entries separated by spaces"  # type: ignore[attr-defined]


def as_choice(*choices: str) -> Callable[[str], str]:
    """Converter factory: one of ``choices``, case-insensitive (the value is lower-cased)."""
    def convert(text: str) -> str:
        value = str(text).strip().lower()
        if value not in choices:
            raise ValueError
        return value
    convert.expects = "one of " + ", ".join(choices)  # type: ignore[attr-defined]
    return convert


def as_str(text: str) -> str:
    """Converter: the text stripped of surrounding whitespace; empty is an error."""
    value = str(text).strip()
    if not value:
        raise ValueError
    return value


as_str.expects = "a non-empty string"  # type: ignore[attr-defined]


def as_store_url(text: str) -> str:
    """Converter: a ``sqlite:///PATH`` URL with a non-empty path, or a ``postgresql://`` (libpq) URL."""
    value = str(text).strip()
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise ValueError


def redact_url(text: str) -> str:
    """A URL as it may be shown in an error or a log line: any password replaced by ***."""
    head, sep, rest = str(text).partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return str(text)
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}{':***' if ':' in userinfo else ''}@{hostpart}"


as_store_url.expects = ("sqlite:///PATH (an absolute or %(here)s-relative path) or "  # type: ignore[attr-defined]
                        "postgresql://USER@HOST:5432/DATABASE")
as_store_url.shown = redact_url  # type: ignore[attr-defined]


def as_broker_url(text: str) -> str:
    """Converter: an ``embedded:///PATH``, ``amqp://`` or ``pyamqp://`` broker URL."""
    value = str(text).strip()
    if not (value.startswith("embedded:///") or value.startswith("amqp://") or value.startswith("pyamqp://")):
        raise ValueError
    return value


as_broker_url.expects = "embedded:///PATH or amqp://user:password@host:5672//"  # type: ignore[attr-defined]


def parse(tables: Iterable[Iterable[Setting]], raw: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
          strict: bool = True) -> SimpleNamespace:
    """Convert ``raw`` ini settings with the given tables into a namespace (``greenjobs.pool.size`` -> ``pool_size``).

    ``defaults`` overrides a table default (e.g. paths computed from ``%(here)s``).
    Raises ConfigurationError listing every bad or unknown key at once (unknown ones only if ``strict``).
    """
    known: dict[str, Setting] = {}
    for table in tables:
        for setting in table:
            known[setting.key] = setting
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, setting in known.items():
        if key in raw:
            text = raw[key]
            try:
                values[setting.attr] = setting.convert(text)
            except (ValueError, TypeError):
                expects = getattr(setting.convert, "expects", "a valid value")
                shown = getattr(setting.convert, "shown", str)(text)      # never a password
                problems.append(f"{key} = {shown!r}: expected {expects} ({setting.help})")
        else:
            values[setting.attr] = (defaults or {}).get(key, setting.default)
    for key in sorted(raw) if strict else ():
        if key.startswith(PREFIX) and key not in known and not key.startswith(schedules.INI_PREFIX):
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{key}: unknown setting{hint}")
    if problems:
        raise ConfigurationError("invalid settings in the ini file:\n  " + "\n  ".join(problems))
    return SimpleNamespace(**values)


def default_cpu_count() -> int:
    """Logical CPUs of this machine (1 if unknown): the default number of CPU worker processes."""
    return os.cpu_count() or 1


#: Settings of the pool package (job execution and the store).
TABLE = (
    Setting("greenjobs.handlers", as_words, ("greenjobs.handlers.builtin",),
            "modules whose @handler functions are registered"),
    Setting("greenjobs.setup", as_words, (),
            "functions (module:name) called once per process that runs jobs, with the settings, before the handler"
            " modules load (greenjobs.pool.hooks); they may return middleware"),
    Setting("greenjobs.middleware", as_words, (),
            "objects or classes (module:name) with before_job(job) / after_job(job, error), around every attempt"),
    Setting("greenjobs.http.allowed_hosts", as_hosts, ("127.0.0.1", "localhost"),
            "hosts that http.get and webhooks may call: host (ports 80 and 443), host:port or host:*"),
    Setting("greenjobs.pool.size", as_int(1, 100_000), 1000, "I/O jobs running at once, as greenlets"),
    Setting("greenjobs.schedules", as_words, (),
            "names of the schedules this ini declares, each with greenjobs.schedule.NAME.FIELD keys (README: Schedules)"),
    Setting("greenjobs.schedules.grace", as_float(0.5, 86_400.0), 10.0,
            "seconds a slot may be late and still fire as on time; older slots were missed (a schedule's missed)"),
    Setting("greenjobs.schedules.max_backfill", as_int(1, 100_000), 100,
            "most missed slots a schedule with missed = all fires at once"),
    Setting("greenjobs.pool.max_pending", as_int(0, 10_000_000), 100_000,
            "jobs waiting for a slot before submissions get 429"),
    Setting("greenjobs.store.url", as_store_url, None,
            "where the job ledger lives: sqlite:///PATH (default %(here)s/var/greenjobs.sqlite) or postgresql://…"),
    Setting("greenjobs.store.synchronous", as_choice("full", "normal"), "full",
            "full: every commit is fsynced (survives power loss); normal: survives a killed process only"),
    Setting("greenjobs.store.ttl", as_float(0.0, 10 * 366 * 86400.0), 7 * 86400.0,
            "seconds a finished job (and its result) is kept; 0 keeps them forever"),
    Setting("greenjobs.store.lease_seconds", as_float(1.0, 3600.0), 30.0,
            "how long a runner's claim on a job lasts without renewal before another runner may take it"),
    Setting("greenjobs.cluster.poll", as_float(0.0, 60.0), 0.5,
            "seconds between reads of the ledger for jobs waited for or running here that other servers ended,"
            " cancelled or took over (0: never, for a server that is alone on its ledger)"),
    Setting("greenjobs.cluster.notify", as_bool, True,
            "PostgreSQL: hear other servers' changes at once with LISTEN/NOTIFY (off behind PgBouncer in transaction"
            " mode: then greenjobs.cluster.poll alone)"),
    Setting("greenjobs.workers.cpu", as_int(0, 1024), default_cpu_count(),
            "CPU worker processes the server starts and supervises (0: run them elsewhere with greenjobs-worker)"),
    Setting("greenjobs.workers.max_pending", as_int(0, 10_000_000), 100_000,
            "cpu jobs waiting for a worker (all servers') before cpu submissions get 429"),
    Setting("greenjobs.workers.redeliveries", as_int(0, 100), 3,
            "times a cpu job whose worker died mid-job is run again before it fails with worker_lost"),
    Setting("greenjobs.broker.url", as_broker_url, None,
            "where cpu jobs are queued: embedded:///PATH (default %(here)s/var/queue.sqlite) or amqp://..."),
    Setting("greenjobs.broker.namespace", as_str, "greenjobs", "prefix of every queue name"),
    Setting("greenjobs.broker.connect_timeout", as_float(0.1, 600.0), 5.0, "seconds to connect to the broker"),
    Setting("greenjobs.broker.confirm_timeout", as_float(0.1, 600.0), 5.0,
            "seconds to wait for the broker to confirm a published job"),
    Setting("greenjobs.broker.heartbeat", as_int(0, 3600), 10, "AMQP heartbeat seconds (0: off)"),
    Setting("greenjobs.broker.polling_interval", as_float(0.0005, 5.0), 0.005,
            "seconds between polls of the embedded broker when idle"),
    Setting("greenjobs.job.max_timeout", as_float(0.001, 31_536_000.0), 86_400.0,
            "largest timeout (seconds) a job may ask for"),
    Setting("greenjobs.job.max_result_bytes", as_int(16, 1 << 30), 1 << 20,
            "largest JSON result a job may return, in bytes"),
    Setting("greenjobs.retry.base", as_float(0.0, 86400.0), 1.0,
            "seconds: a retry waits a random time up to base * 2^(attempt-1) (full jitter)"),
    Setting("greenjobs.retry.max", as_float(0.0, 86400.0), 300.0, "seconds: the longest wait before a retry"),
    Setting("greenjobs.shutdown.grace", as_float(0.0, 3600.0), 10.0,
            "seconds running jobs get to finish on SIGTERM before they are requeued"),
    Setting("greenjobs.webhooks.secret", as_str, None,
            "shared secret that signs webhook deliveries (HMAC-SHA256); callback_url is refused without it"),
    Setting("greenjobs.webhooks.max_attempts", as_int(1, 100), 5,
            "delivery attempts of a webhook (with full-jitter backoff between them) before it is given up"),
    Setting("greenjobs.webhooks.timeout", as_float(0.1, 300.0), 10.0, "seconds one webhook delivery may take"),
    Setting("greenjobs.events.replay", as_int(100, 1_000_000), 50_000,
            "recent lifecycle events kept for GET /events (Last-Event-ID resumes within them)"),
    Setting("greenjobs.events.shared", as_bool, True,
            "GET /events on every server shows every server's events in one order (through the ledger's events"
            " table); false: each server streams its own"),
    Setting("greenjobs.events.heartbeat", as_float(0.5, 3600.0), 15.0,
            "seconds between heartbeat comments on an idle event stream"),
    Setting("greenjobs.events.max_lag", as_float(0.1, 3600.0), 10.0,
            "seconds an event stream may fall behind (its next event this old) before it is dropped"),
    Setting("greenjobs.events.max_streams", as_int(0, 1_000_000), 10_000,
            "event streams (GET /events) open at once; past it new ones get 503"),
    Setting("greenjobs.hub.guard", as_bool, True,
            "watch the event loop for blocks (a thread and a tick on the hub; false: nothing is watched)"),
    Setting("greenjobs.hub.max_blocking", as_float(0.005, 60.0), 0.1,
            "seconds the event loop may go without switching before it counts as blocked (by a job, a request"
            " or the server itself): logged with the stack, counted on the job and in /metrics"),
    Setting("greenjobs.hub.reroute", as_bool, True,
            "send an io handler whose jobs keep blocking the event loop to the cpu worker processes"),
    Setting("greenjobs.hub.reroute_after", as_int(1, 1_000_000), 3,
            "blocks over greenjobs.hub.max_blocking after which an io handler is rerouted (kind = auto: the first)"),
    Setting("greenjobs.signals", as_receivers, (), "signal receivers to connect: SIGNAL:module.function ..."),
    Setting("greenjobs.signals.backlog", as_int(1, 10_000_000), 10_000,
            "signal receiver calls that may wait at once; past it, calls are dropped and counted"),
)


def load(tables: Iterable[Iterable[Setting]], raw: Mapping[str, Any], here: str, strict: bool = True) -> SimpleNamespace:
    """Parse the pool table plus ``tables``; paths default to, and are resolved against, ``here``."""
    settings = parse((TABLE, *tables), raw, strict=strict, defaults={
        "greenjobs.store.url": "sqlite:///" + os.path.join(here, "var", "greenjobs.sqlite"),
        "greenjobs.broker.url": "embedded:///" + os.path.join(here, "var", "queue.sqlite"),
    })
    settings.store_path = None          # a file only for SQLite
    if settings.store_url.startswith("sqlite:///"):
        path = settings.store_url[len("sqlite:///"):]
        settings.store_path = path if os.path.isabs(path) else os.path.join(here, path)
        settings.store_url = "sqlite:///" + settings.store_path
    if settings.broker_url.startswith("embedded:///"):
        path = settings.broker_url[len("embedded:///"):]
        settings.broker_url = "embedded:///" + (path if os.path.isabs(path) else os.path.join(here, path))
    settings.here = here
    # [app:main]'s own keys, for the application's handlers (current_job.settings.app["shop.price_api"])
    settings.app = MappingProxyType({k: v for k, v in raw.items() if isinstance(k, str) and not k.startswith(PREFIX)
                                     and not k.startswith("pyramid.") and k not in ("use", "here", "__file__")})
    settings.schedule_declarations, problems = schedules.from_ini(settings.schedules, raw)
    if problems and strict:
        raise ConfigurationError("invalid schedules in the ini file:\n  " + "\n  ".join(problems))
    return settings
