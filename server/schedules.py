"""The schedule routes: read with role ``read``, manage (create, change, pause, resume, run, delete) as ``admin``."""
from __future__ import annotations

from pyramid.view import view_config

from greenjobs.server.body import read_json


def _scheduler(request):
    return request.registry.greenjobs_runtime.scheduler


def _body(request):
    settings = request.registry.greenjobs_settings
    return read_json(request, settings.api_max_body, settings.api_read_timeout)


def _one(request, schedule) -> dict:
    return _scheduler(request).describe([schedule])[0]


@view_config(route_name="schedules", request_method="GET", renderer="json", permission="read")
def list_schedules(request):
    """GET /schedules: every schedule with its next and last slot and its last job's state."""
    scheduler = _scheduler(request)
    return {"schedules": scheduler.describe(request.registry.greenjobs_runtime.store.list_schedules())}


@view_config(route_name="schedules", request_method="POST", renderer="json", permission="admin")
def create_schedule(request):
    """POST /schedules: a new schedule (201); 409 if the name is taken, 422 naming a bad field."""
    schedule = _scheduler(request).create(_body(request))
    request.response.status_code = 201
    request.response.headers["Location"] = f"/schedules/{schedule.name}"
    return _one(request, schedule)


@view_config(route_name="schedule", request_method="GET", renderer="json", permission="read")
def get_schedule(request):
    """GET /schedules/{name}."""
    return _one(request, _scheduler(request).get(request.matchdict["name"]))


@view_config(route_name="schedule", request_method="PATCH", renderer="json", permission="admin")
def patch_schedule(request):
    """PATCH /schedules/{name}: change some fields (the whole is validated again)."""
    return _one(request, _scheduler(request).patch(request.matchdict["name"], _body(request)))


@view_config(route_name="schedule", request_method="DELETE", renderer="json", permission="admin")
def delete_schedule(request):
    """DELETE /schedules/{name}: no more slots; its jobs stay."""
    name = request.matchdict["name"]
    _scheduler(request).delete(name)
    return {"name": name, "deleted": True}


@view_config(route_name="schedule_pause", request_method="POST", renderer="json", permission="admin")
def pause_schedule(request):
    """POST /schedules/{name}/pause."""
    return _one(request, _scheduler(request).pause(request.matchdict["name"]))


@view_config(route_name="schedule_resume", request_method="POST", renderer="json", permission="admin")
def resume_schedule(request):
    """POST /schedules/{name}/resume: the next slot is the first after now (paused slots are not fired)."""
    return _one(request, _scheduler(request).resume(request.matchdict["name"]))


@view_config(route_name="schedule_run", request_method="POST", renderer="json", permission="admin")
def run_schedule(request):
    """POST /schedules/{name}/run: one extra job now (202), not a slot."""
    job = _scheduler(request).run_now(request.matchdict["name"])
    request.response.status_code = 202
    request.response.headers["Location"] = f"/jobs/{job.id}"
    return job.public()
