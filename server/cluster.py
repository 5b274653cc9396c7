"""The cluster routes: every server on the ledger (read), the cluster's throughput (read), and resizing or
restarting one server's cpu workers (admin)."""
from __future__ import annotations

import json
import logging

from pyramid.view import view_config

from greenjobs.pool.cpu.control import ControlRefused, parse_request
from greenjobs.server.body import read_json
from greenjobs.server.problems import Problem

log = logging.getLogger(__name__)


def _runtime(request):
    return request.registry.greenjobs_runtime


@view_config(route_name="servers", request_method="GET", renderer="json", permission="read")
def list_servers(request):
    """GET /servers: every server and io worker sharing this ledger, from the servers table as of this
    server's last heartbeat (at most a maintenance tick old); lost ones until they are forgotten."""
    return {"servers": _runtime(request).members.describe()}


@view_config(route_name="throughput", request_method="GET", renderer="json", permission="read")
def cluster_throughput(request):
    """GET /throughput: jobs submitted, succeeded and failed per second by every alive server, summed: the
    last minute second by second and the last 15 minutes in 10-second buckets (the dashboard's history)."""
    return _runtime(request).members.throughput()


@view_config(route_name="server_workers", request_method="POST", renderer="json", permission="admin")
def control_workers(request):
    """POST /servers/{owner}/workers ``{"size": N}`` or ``{"restart": true}``: this server acts at once (200);
    another alive one at its next heartbeat (202; its row in GET /servers reports the outcome)."""
    runtime = _runtime(request)
    settings = request.registry.greenjobs_settings
    try:
        wanted = parse_request(read_json(request, settings.api_max_body, settings.api_read_timeout))
    except ValueError as exc:
        raise Problem(422, "Invalid workers request", str(exc)) from None
    owner = request.matchdict["owner"]
    identity = request.identity
    control = runtime.worker_control
    order = control.new_request(wanted, identity.principal if identity is not None else None)
    if owner == runtime.owner:
        try:
            applied = control.apply(order)
        except ControlRefused as exc:
            raise Problem(409, "Cannot change these workers", str(exc)) from None
        # kept in our row too, so every server's GET /servers shows the last request (applied already: the
        # heartbeat that reads it back knows its id and leaves it)
        try:
            runtime.store.request_control(owner, json.dumps(order, separators=(",", ":")))
        except Exception as exc:
            log.warning("cpu workers: the request was applied but not noted in the servers table: %s", exc)
        return {"server": owner, "request": order, "applied": applied}
    target = next((s for s in runtime.members.describe() if s["owner"] == owner), None)
    if target is None:
        raise Problem(404, "No such server", f"no server {owner!r} in the servers table: GET /servers lists them")
    if not target["alive"]:
        raise Problem(409, "That server is lost", f"server {owner!r} has not beaten for "
                      f"{target['heartbeat_age']:.0f} s: its workers cannot be changed")
    if not target["cpu"].get("supervised"):
        raise Problem(409, "Cannot change these workers", f"server {owner!r} supervises no cpu workers (another "
                      "process on its host does, or it runs none): ask the server whose row shows them")
    if not runtime.store.request_control(owner, json.dumps(order, separators=(",", ":"))):
        raise Problem(404, "No such server", f"server {owner!r} left the cluster")
    request.response.status_code = 202
    return {"server": owner, "request": order, "applied": None}
