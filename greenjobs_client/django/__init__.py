"""Django: a client configured from ``settings.GREENJOBS``, and submissions that wait for the commit.

    # settings.py
    GREENJOBS = {"URL": "http://127.0.0.1:6543", "TOKEN": None, "TIMEOUT": 10}

    # signals.py
    @receiver(post_save, sender=Order)
    def order_saved(sender, instance, created, **kwargs):
        if created:
            submit_on_commit("orders.confirm", kwargs={"order_id": instance.pk},
                             idempotency_key=f"order-{instance.pk}-confirm")

``submit_on_commit`` hands the submission to ``transaction.on_commit``: it is sent once the
surrounding transaction commits (at once in autocommit), and never if it rolls back, so a job
never names a row that does not exist. The job is sent after the commit, so a process that dies
in between loses it: give a key derived from the row (as above) and re-submit from a sweep if
that matters; the server makes one job per key.

When no job may be lost, add ``"greenjobs_client.django"`` to ``INSTALLED_APPS`` and use the
outbox (``greenjobs_client.django.outbox.enqueue``): the job is a row written in your transaction
and a relay sends it, again until the server has it. This module imports no model, so listing the
package as an app is all it takes.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction

from greenjobs_client.client import Client
from greenjobs_client.handles import JobHandle
from greenjobs_client.transport import encode

_client: Client | None = None
_lock = threading.Lock()


def config() -> dict[str, Any]:
    """``settings.GREENJOBS`` (an empty dict when it is not set)."""
    return dict(getattr(settings, "GREENJOBS", None) or {})


def make_client(**overrides: Any) -> Client:
    """A new client from ``settings.GREENJOBS`` (URL, TOKEN, TIMEOUT); ``overrides`` go to ``Client``."""
    conf = config()
    if not conf.get("URL"):
        raise ImproperlyConfigured("set GREENJOBS = {\"URL\": \"http://127.0.0.1:6543\"} in your "
                                   "Django settings to submit greenjobs jobs")
    return Client(conf["URL"], token=conf.get("TOKEN"), timeout=float(conf.get("TIMEOUT", 10.0)), **overrides)


def get_client() -> Client:
    """The process's client, made from ``settings.GREENJOBS`` on first use and shared by every thread."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = make_client()
    return _client


def _reset(setting: str, **kwargs: Any) -> None:
    """Tests that override GREENJOBS get a client for the new settings."""
    global _client
    if setting == "GREENJOBS":
        with _lock:
            _client = None


setting_changed.connect(_reset)


def submit(handler: str, /, *args: Any, **kwargs: Any) -> JobHandle:
    """Submit now (not waiting for any transaction), with the settings' client."""
    return get_client().submit(handler, *args, **kwargs)


def submit_on_commit(handler: str, /, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                     using: str | None = None, on_submitted: Callable[[JobHandle], None] | None = None,
                     **options: Any) -> None:
    """Submit ``handler(*args, **kwargs)`` once the transaction on ``using`` commits; nothing if it rolls back.

    ``options`` are those of ``Client.submit_with`` (priority, delay, idempotency_key, ...);
    ``on_submitted`` receives the job handle. The arguments are checked and copied now, so a
    non-JSON value raises TypeError before the commit and later changes to them do not reach the job.
    """
    # a deep copy, and a non-JSON argument fails here, inside the transaction, not after the commit
    args, kwargs = json.loads(encode(list(args))), json.loads(encode(dict(kwargs or {})))

    def send() -> None:
        handle = get_client().submit_with(handler, args, kwargs, **options)
        if on_submitted is not None:
            on_submitted(handle)

    transaction.on_commit(send, using=using)
