"""Resize or restart a server's cpu workers while it runs, from any server of the cluster (Flower's pool
grow/shrink and restart, for the dashboard's admins).

A request for this server is applied at once.  One for another server is left in its row of the servers
table (``JobStore.request_control``); that server applies it at its next heartbeat (about a second) and
reports the outcome in its own row, so the request survives this server's restart and needs no
connection between servers.  Only the process that supervises a host's workers (the one holding the
host lock) can act: a request to any other says which pid to ask.
"""
from __future__ import annotations

import collections
import json
import logging
import time
import uuid

import gevent

log = logging.getLogger(__name__)

#: The most workers one server may be resized to.
MAX_WORKERS = 256


class ControlRefused(Exception):
    """The request cannot be applied by that server (the message says why and what to do)."""


def parse_request(body) -> dict:
    """The request an admin sent (``{"size": N}`` or ``{"restart": true}``), checked; raises ValueError with
    the fix."""
    if not isinstance(body, dict) or set(body) - {"size", "restart"} or len(body) != 1:
        raise ValueError('send {"size": N} to keep N cpu workers, or {"restart": true} to replace every one')
    if "size" in body:
        size = body["size"]
        if isinstance(size, float) and size.is_integer():     # 3.0 is an integer to JSON Schema (and OpenAPI)
            size = int(size)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_WORKERS:
            raise ValueError(f"size must be an integer from 0 to {MAX_WORKERS}")
        return {"size": size}
    if body["restart"] is not True:
        raise ValueError('restart must be true (send {"size": N} to change how many workers run)')
    return {"restart": True}


class WorkerControl:
    """This server's side: its workers' state for the heartbeat, and applying requests."""

    def __init__(self, runtime):
        self.rt = runtime
        self.applied: dict | None = None        # the last request acted on: its id, what it asked, the outcome
        #: ids of the last requests acted on (or refused): a heartbeat whose read of our row was under way while
        #: a newer request was applied must not apply the older one again
        self._done: collections.deque = collections.deque(maxlen=32)
        self._restart = None                    # the greenlet of a rolling restart

    @property
    def supervising(self) -> bool:
        lock = self.rt.host_lock
        return self.rt.supervisor is not None and lock is not None and lock.held

    def state(self) -> dict:
        """Its cpu workers as the servers table shows them."""
        sup = self.rt.supervisor
        if not self.supervising:
            return {"supervised": False}
        return {"supervised": True, "target": sup.count, "alive": sup.alive(), "restarts": sup.restarts,
                "restarting": sup.restarting}

    def refusal(self) -> str | None:
        """Why this server cannot act on its workers now, or None."""
        if self.rt.supervisor is None:
            return ("this server supervises no cpu workers (greenjobs.workers.cpu = 0, or it runs without an ini):"
                    " resize standalone greenjobs-worker processes where they run")
        if not self.supervising:
            holder = self.rt.host_lock.holder() if self.rt.host_lock is not None else ""
            return (f"another process of this ini on this host (pid {holder or '?'}) supervises its cpu workers:"
                    " ask that server")
        return None

    def new_request(self, request: dict, by: str | None) -> dict:
        """``request`` as it is stored and reported: with an id, who asked and when."""
        return {"id": uuid.uuid4().hex, **request, "by": by, "at": time.time()}

    def apply(self, request: dict) -> dict:
        """Act on ``request`` now; returns what was done.  Raises ControlRefused."""
        why = self.refusal()
        if why is not None:
            raise ControlRefused(why)
        sup = self.rt.supervisor
        if "size" in request:
            before = sup.count
            sup.resize(request["size"])
            result = f"resized from {before} to {request['size']} workers"
        else:
            if self._restart is not None and not self._restart.dead:
                raise ControlRefused("a restart of these workers is under way: wait for it to end")
            self._restart = gevent.spawn(sup.restart)
            sup.restarting = True                # visible at once, before the greenlet first runs
            result = f"restarting {sup.count} workers one at a time"
        log.info("cpu workers: %s (asked by %s)", result, request.get("by") or "an admin")
        self.applied = {"id": request.get("id"), "result": result, "ok": True, "at": time.time()}
        self._done.append(request.get("id"))
        return self.applied

    def heard(self, control: str | None) -> None:
        """This server's row as the last heartbeat read it: apply a request left there not yet acted on."""
        if not control:
            return
        try:
            request = json.loads(control)
        except ValueError:
            return
        if not isinstance(request, dict) or request.get("id") in self._done:
            return
        try:
            parse_request({key: request[key] for key in ("size", "restart") if key in request})
            self.apply(request)
        except (ValueError, ControlRefused) as exc:
            log.warning("cpu workers: a request from %s was refused: %s", request.get("by") or "an admin", exc)
            self.applied = {"id": request.get("id"), "result": str(exc), "ok": False, "at": time.time()}
            self._done.append(request.get("id"))
