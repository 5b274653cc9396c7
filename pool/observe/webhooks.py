"""Webhooks: when a job with a ``callback_url`` ends, POST it there, signed, until it is received.

Each delivery is itself an io job (handler ``greenjobs.webhook``), so it is stored before it is
tried, survives restarts, and is retried with the same full-jitter backoff as any job.  The finished
job and its delivery job are linked in one transaction (``Store.add_delivery``); a crash between a
job's end and that transaction is repaired by the maintenance loop (``Store.callbacks_due``).
Every attempt (time, HTTP status or error) is recorded on the finished job's ``callback``.

The receiver checks ``X-Greenjobs-Signature: sha256=<hex>``, the HMAC-SHA256 with the shared secret
(``greenjobs.webhooks.secret``) of ``<X-Greenjobs-Timestamp>.<raw body>``, and rejects old timestamps.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import logging
from typing import Callable

import gevent
import urllib3

from greenjobs.pool.context import current_job
from greenjobs.pool.job import QUEUED, TERMINAL, Job, iso, new_id
from greenjobs.pool.listeners import Listener
from greenjobs.pool.registry import Handler
from greenjobs.pool.urls import check_allowed, http_pool

log = logging.getLogger(__name__)

HANDLER = "greenjobs.webhook"
#: Seconds a delivery job may run past its request's own limit (greenjobs.webhooks.timeout): the request
#: times out first, as an ordinary failure that is recorded on the job, before the job's timeout kills it.
GRACE = 5.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The value of X-Greenjobs-Signature for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Webhooks(Listener):
    """Creates delivery jobs when jobs with a callback_url end (a listener), and is the handler that
    runs them; ``enqueue(jobs)`` hands stored delivery jobs to the io pool."""

    def __init__(self, settings, store, owner: str, enqueue: Callable[[list[Job]], None]):
        self.settings = settings
        self.store = store
        self.owner = owner
        self.enqueue = enqueue

    def job_event(self, name: str, job: Job) -> None:
        """A job with a callback_url ended: store and start its delivery, off the caller's greenlet."""
        if name in TERMINAL and job.callback_url is not None and job.handler != HANDLER:
            gevent.spawn(self.send, job)

    def send(self, job: Job) -> None:
        """Store and start the delivery of finished ``job`` (maintenance repairs one that fails here)."""
        try:
            delivery = self.delivery_for(job, self.owner)
        except Exception as exc:
            log.warning("job %s: could not store its webhook delivery yet (%s); will retry", job.id, exc)
            return
        if delivery is not None:
            self.enqueue([delivery])

    def handler(self) -> Handler:
        """The internal delivery handler, registered by the runtime (never submitted by clients)."""
        return Handler(HANDLER, self.deliver, kind="io", timeout=self.settings.webhooks_timeout + GRACE,
                       max_retries=self.settings.webhooks_max_attempts - 1,
                       doc="POST a finished job to its callback_url (internal)")

    def delivery_for(self, job: Job, owner: str) -> Job | None:
        """Store the delivery job of a finished ``job``; None if it has none or already has one."""
        if job.callback_url is None or job.handler == HANDLER:
            return None
        delivery = Job(id=new_id(), handler=HANDLER, kind="io", state=QUEUED, kwargs={"job": job.id},
                       timeout=self.settings.webhooks_timeout + GRACE,
                       max_retries=self.settings.webhooks_max_attempts - 1)
        return delivery if self.store.add_delivery(job.id, delivery, job.callback_url, owner) else None

    def deliver(self, job: str) -> dict:
        """The handler: one attempt to POST job ``job`` to its callback_url (raising means retry)."""
        finished = self.store.get(job)
        if finished is None or finished.callback_url is None:
            return {"skipped": "the job is gone (expired) or has no callback_url"}
        attempt = current_job.attempt
        last = attempt >= self.settings.webhooks_max_attempts
        record = {"attempt": attempt, "at": iso(time.time())}
        try:
            check_allowed(finished.callback_url, self.settings.http_allowed_hosts)
            body = json.dumps(finished.public(), separators=(",", ":")).encode()
            stamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "User-Agent": "greenjobs-webhook",
                       "X-Greenjobs-Timestamp": stamp, "X-Greenjobs-Job": finished.id,
                       "X-Greenjobs-Delivery": f"{current_job.id}/{attempt}",
                       "X-Greenjobs-Signature": signature(self.settings.webhooks_secret, stamp, body)}
            response = http_pool().request("POST", finished.callback_url, body=body, headers=headers,
                                          redirect=False, timeout=urllib3.Timeout(total=self.settings.webhooks_timeout))
            record["status"] = response.status
            if not 200 <= response.status < 300:
                raise DeliveryFailed(f"{finished.callback_url} answered {response.status}")
        except Exception as exc:
            record.setdefault("error", f"{type(exc).__name__}: {exc}")
            self.store.record_delivery(finished.id, record, "failed" if last else "retrying")
            raise
        except BaseException:       # the job's own timeout (or a cancel) killed the attempt: still on the record
            record.setdefault("error", f"interrupted after {self.settings.webhooks_timeout + GRACE} s (timeout or cancel)")
            self.store.record_delivery(finished.id, record, "failed" if last else "retrying")
            raise
        self.store.record_delivery(finished.id, record, "delivered")
        return {"delivered": finished.id, "status": response.status}


class DeliveryFailed(Exception):
    """The receiver answered, but not with 2xx."""
