"""The workflow routes: submit a chain, group or chord (role ``submit``), read and wait for it (``read``),
cancel what of it has not ended (``admin``, as cancelling a job is)."""
from __future__ import annotations

from pyramid.view import view_config

from greenjobs.pool.workflows import parse_workflow
from greenjobs.server.body import read_json
from greenjobs.server.views import _runtime, _settings, _wait


@view_config(route_name="workflows", request_method="POST", renderer="json", permission="submit")
def submit_workflow(request):
    """POST /workflows: 202 with the workflow (id, state, jobs in order); 422 naming a bad field."""
    settings = _settings(request)
    data = read_json(request, settings.api_max_body, settings.api_read_timeout)
    plan = parse_workflow(data, request.registry.greenjobs_handlers, settings, settings.api_max_batch)
    answer = _runtime(request).submit_workflow(plan)
    request.response.status_code = 202
    request.response.headers["Location"] = f"/workflows/{plan.id}"
    return answer


@view_config(route_name="workflow", request_method="GET", renderer="json", permission="read")
def get_workflow(request):
    """GET /workflows/{id}: state, result and steps; ?wait= long-polls until every step ended."""
    return _runtime(request).workflow(request.matchdict["id"], _wait(request))


@view_config(route_name="workflow", request_method="DELETE", renderer="json", permission="admin")
def cancel_workflow(request):
    """DELETE /workflows/{id}: cancel every step that has not ended."""
    return _runtime(request).cancel_workflow(request.matchdict["id"])
