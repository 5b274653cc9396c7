"""GET /openapi.json: an OpenAPI 3.1 description of the real routes (a test walks both)."""
from __future__ import annotations

import copy

from pyramid.security import NO_PERMISSION_REQUIRED
from pyramid.view import view_config

from greenjobs.pool import schedules, spec, workflows
from greenjobs.pool.job import EVENTS, STATES

_problem = {"description": "error", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_job = {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
_wait = {"name": "wait", "in": "query", "required": False,
         "description": "hold the request until the job (batch) is terminal or this many seconds pass (capped by greenjobs.api.max_wait)",
         "schema": {"type": "number", "minimum": 0}}
_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_schedule_ref = {"$ref": "#/components/schemas/Schedule"}
_schedule = {"description": "the schedule", "content": {"application/json": {"schema": _schedule_ref}}}
_workflow = {"description": "the workflow", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Workflow"}}}}


def _comma_separated(words) -> dict:
    """A query value that lists some of ``words`` separated by commas (empty items are ignored)."""
    word = "|".join(words)
    return {"type": "string", "pattern": f"^({word})?(,({word})?)*$"}


def _errors(*codes: int) -> dict:
    return {str(code): _problem for code in codes}


_batch = {"description": "accepted", "content": {"application/json": {"schema": {
    "type": "object", "properties": {
        "batch": {"type": ["string", "null"]}, "count": {"type": "integer"},
        "ids": {"type": "array", "items": {"type": "string"}, "description": "one per item, in order"},
        "repeated": {"type": "array", "items": {"type": "integer"},
                     "description": "indexes of items whose idempotency_key named an existing job"}}}}}}

JOB_SPEC = spec.SCHEMA     # one schema: the one parse_spec enforces

#: What greenjobs.server.views._checked_key accepts: 1-255 printable ASCII characters.
IDEMPOTENCY_KEY = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}

BATCH_ITEM = {**JOB_SPEC, "properties": {**JOB_SPEC["properties"], "idempotency_key": {
    **IDEMPOTENCY_KEY,
    "description": "repeat-safe item: a key known within greenjobs.api.idempotency_ttl maps the item to its "
                   "original job (listed in `repeated`); the key with another job is a 422"}}}

_token = {"type": "object", "required": ["token"],
          "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 4000}}}
_session = {"description": "the caller's access", "content": {"application/json": {"schema": {
    "type": "object", "properties": {
        "auth": {"type": "string", "enum": ["on", "off"]}, "authenticated": {"type": "boolean"},
        "via": {"type": ["string", "null"], "enum": ["bearer", "session", None]},
        "roles": {"type": "array", "items": {"type": "string"}},
        "permissions": {"type": "array", "items": {"type": "string"}},
        "csrf_token": {"type": ["string", "null"],
                       "description": "send it as X-CSRF-Token on POST/PUT/PATCH/DELETE made with the session cookie"}}}}}}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "greenjobs", "version": "0.1.0",
             "description": "Submit jobs over HTTP and follow them to a result."},
    "paths": {
        "/jobs": {
            "post": {"summary": "Submit a job", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}},
                     "parameters": [{**_wait, "description": "submit, then hold the answer until the job ends "
                                                             "or this many seconds pass (one round trip for short "
                                                             "jobs; capped by greenjobs.api.max_wait)"},
                                    {"name": "Idempotency-Key", "in": "header", "required": False,
                                     "schema": IDEMPOTENCY_KEY,
                                     "description": "repeat-safe submission: the same key and body within "
                                                    "greenjobs.api.idempotency_ttl returns the original job (200)"}],
                     "responses": {"202": _job, "200": _job, **_errors(400, 408, 413, 415, 422, 429, 503)}},
            "get": {"summary": "List jobs, newest first", "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(STATES)}},
                {"name": "handler", "in": "query", "schema": {"type": "string"}},
                {"name": "schedule", "in": "query", "schema": {"type": "string"},
                 "description": "only the jobs this schedule made (its slots and its run-now jobs)"},
                {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200},
                 "description": "only jobs whose args or kwargs (as JSON) contain this text, case-sensitive"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "after", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                 "description": "the `next` value of the previous page"}],
                    "responses": {"200": {"description": "a page of jobs", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                                                         "next": {"type": ["string", "null"]}}}}}},
                                  **_errors(400)}},
        },
        "/jobs/batch": {
            "post": {"summary": "Submit many jobs at once (all or nothing)", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object", "required": ["jobs"], "properties": {
                    "jobs": {"type": "array", "minItems": 1, "items": BATCH_ITEM}}}}}},
                     "responses": {"202": _batch, "200": {**_batch, "description": "every item repeated an earlier "
                                                          "request: nothing new was stored"},
                                   **_errors(400, 408, 413, 415, 422, 429, 503)}},
        },
        "/jobs/{id}": {
            "get": {"summary": "A job; with ?wait=S a long-poll", "parameters": [_id, _wait],
                    "responses": {"200": _job, **_errors(400, 404)}},
            "delete": {"summary": "Cancel a job", "parameters": [_id],
                       "responses": {"200": _job, **_errors(404, 409, 503)}},
        },
        "/jobs/{id}/retry": {
            "post": {"summary": "Run a failed job again (same id, next attempt)", "parameters": [_id],
                     "responses": {"202": _job, **_errors(404, 409, 503)}},
        },
        "/batches/{id}": {
            "get": {"summary": "Counts per state of a batch; with ?wait=S until all are terminal", "parameters": [_id, _wait],
                    "responses": {"200": {"description": "counts", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "integer"},
                                                         "counts": {"type": "object"}, "done": {"type": "boolean"}}}}}},
                                  **_errors(400, 404)}},
        },
        "/handlers": {"get": {"summary": "Registered handlers", "responses": {"200": {"description": "handlers"}}}},
        "/health": {"get": {"summary": "Pool and store health; how many servers of the cluster are alive and lost",
                            "responses": {"200": {"description": "healthy"}, "503": {"description": "unhealthy"}}}},
        "/servers": {"get": {"summary": "Every server and io worker sharing this ledger: host, pid, role, version, "
                                        "started, last heartbeat, pool size and busy, cpu workers, alive",
                             "responses": {"200": {"description": "servers", "content": {"application/json": {
                                 "schema": {"type": "object", "properties": {
                                     "servers": {"type": "array", "items": {"type": "object"}}}}}}},
                                 **_errors(401, 403)}}},
        "/servers/{owner}/workers": {
            "post": {"summary": "Resize (`{\"size\": N}`) or restart one at a time (`{\"restart\": true}`) the cpu "
                                "workers of one server (its `owner` in GET /servers): this server acts at once (200), "
                                "another at its next heartbeat (202; its row in GET /servers shows the outcome)",
                     "parameters": [{"name": "owner", "in": "path", "required": True, "schema": {"type": "string"}}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "oneOf": [{"type": "object", "required": ["size"], "additionalProperties": False,
                                    "properties": {"size": {"type": "integer", "minimum": 0, "maximum": 256}}},
                                   {"type": "object", "required": ["restart"], "additionalProperties": False,
                                    "properties": {"restart": {"const": True}}}]}}}},
                     "responses": {"200": {"description": "applied"}, "202": {"description": "left for that server"},
                                   **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422)}},
        },
        "/throughput": {"get": {"summary": "Jobs submitted, succeeded and failed per second by every alive server, "
                                           "summed: the last minute by second and the last 15 minutes by 10 s",
                                "responses": {"200": {"description": "series"}, **_errors(401, 403)}}},
        "/workflows": {
            "post": {"summary": "Submit a chain, group or chord of steps (job specs or nested workflows); each step "
                                "a job from the start, the later ones waiting for their dependencies",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/WorkflowSpec"}}}},
                     "responses": {"202": _workflow, **_errors(400, 401, 403, 413, 415, 422, 429, 503)}},
        },
        "/workflows/{id}": {
            "get": {"summary": "A workflow's state, result and steps in order; with ?wait=S until every step ended",
                    "parameters": [_id, _wait], "responses": {"200": _workflow, **_errors(400, 404)}},
            "delete": {"summary": "Cancel every step that has not ended", "parameters": [_id],
                       "responses": {"200": _workflow, **_errors(404, 503)}},
        },
        "/schedules": {
            "get": {"summary": "Every schedule: definition, next and last slot, its last job and state",
                    "responses": {"200": {"description": "schedules", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"schedules": {"type": "array", "items": _schedule_ref}}}}}},
                        **_errors(401, 403)}},
            "post": {"summary": "Create a schedule (cron or every); its first slot is the first after now",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/ScheduleSpec"}}}},
                     "responses": {"201": _schedule, **_errors(400, 401, 403, 409, 413, 415, 422)}},
        },
        "/schedules/{name}": {
            "get": {"summary": "One schedule", "parameters": [_name],
                    "responses": {"200": _schedule, **_errors(404)}},
            "patch": {"summary": "Change some of a schedule's fields (validated as a whole); a timing change "
                                 "moves its next slot to the first after now",
                      "parameters": [_name], "requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"type": "object"}}}},
                      "responses": {"200": _schedule, **_errors(400, 404, 413, 415, 422)}},
            "delete": {"summary": "Delete a schedule (the jobs it made stay)", "parameters": [_name],
                       "responses": {"200": {"description": "deleted"}, **_errors(404)}},
        },
        "/schedules/{name}/pause": {"post": {"summary": "Pause: no slot fires until resumed", "parameters": [_name],
                                             "responses": {"200": _schedule, **_errors(404)}}},
        "/schedules/{name}/resume": {"post": {"summary": "Resume: the next slot is the first after now",
                                              "parameters": [_name], "responses": {"200": _schedule, **_errors(404)}}},
        "/schedules/{name}/run": {"post": {"summary": "Run now: one extra job from the template (not a slot)",
                                           "parameters": [_name],
                                           "responses": {"202": _job, **_errors(404, 422, 429, 503)}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/session": {
            "get": {"summary": "Who this request is (auth on/off, roles, the session's CSRF token)",
                    "responses": {"200": _session}},
            "post": {"summary": "Dashboard sign-in: exchange a token for an HttpOnly, SameSite=Strict session cookie",
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _token}}},
                     "responses": {"200": _session, **_errors(400, 401, 409, 413, 415, 429)}},
            "delete": {"summary": "Sign out (send X-CSRF-Token)", "responses": {"200": _session, **_errors(403)}},
        },
        "/events": {"get": {
            "summary": "Job lifecycle events as Server-Sent Events (submitted, started, progress, retrying, "
                       "succeeded, failed, cancelled); ids increase monotonically",
            "parameters": [
                {"name": "handler", "in": "query", "schema": {"type": "string"}, "description": "comma-separated"},
                {"name": "state", "in": "query", "schema": _comma_separated(STATES), "description": "comma-separated"},
                {"name": "event", "in": "query", "schema": _comma_separated(EVENTS), "description": "comma-separated"},
                {"name": "job", "in": "query", "schema": {"type": "string"}, "description": "comma-separated ids"},
                {"name": "recent", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
                 "description": "first replay the newest N matching events the server still holds (history on "
                                "load), then a `replayed` event ({\"events\": n}); ignored when resuming"},
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string", "pattern": "^[0-9]{0,20}$"},
                 "description": "resume after this event (within greenjobs.events.replay events); a `reset` "
                                "event says when some were missed"}],
            "responses": {"200": {"description": "an endless text/event-stream; a `dropped` event ends a stream "
                                                 "that fell behind", "content": {"text/event-stream": {}}},
                          **_errors(400)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)",
                             "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}}}},
    },
    "components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "a token from greenjobs.auth.tokens; roles: read (GETs), submit (POST /jobs, "
                                  "/jobs/batch), admin (everything: cancel, retry and managing schedules included)"},
        "session": {"type": "apiKey", "in": "cookie", "name": "greenjobs_session",
                    "description": "set by POST /session; unsafe methods also need the X-CSRF-Token header"},
    }, "schemas": {
        "JobSpec": JOB_SPEC,
        "ScheduleSpec": schedules.SCHEMA,
        "WorkflowSpec": workflows.SCHEMA,
        "Workflow": {"type": "object", "properties": {
            "id": {"type": "string"}, "kind": {"enum": list(workflows.KINDS)},
            "state": {"enum": ["running", "succeeded", "failed", "cancelled"],
                      "description": "running until every step ended; then failed if any step failed"},
            "result": {"description": "once succeeded: a chain's last step's, a chord's body's, a group's list"},
            "counts": {"type": "object", "description": "steps per state"},
            "jobs": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "handler": {"type": "string"}, "state": {"enum": list(STATES)},
                "waiting_for": {"type": ["integer", "null"], "description": "dependencies not yet succeeded"},
                "error": {"type": ["object", "null"]}}}}}},
        "Schedule": {"type": "object", "properties": {
            **schedules.SCHEMA["properties"],
            "start_at": {"type": ["string", "null"], "format": "date-time"},
            "end_at": {"type": ["string", "null"], "format": "date-time"},
            "cron": {"type": ["string", "null"]}, "every": {"type": ["number", "null"]},
            "source": {"enum": ["api", "ini"], "description": "ini: declared in an ini, upserted at start"},
            "next_fire_at": {"type": ["string", "null"], "format": "date-time"},
            "last_fire_at": {"type": ["string", "null"], "format": "date-time"},
            "last_job": {"type": ["object", "null"], "description": "id and state of the last slot's job"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"}}},
        "Job": {"type": "object", "properties": {
            "id": {"type": "string"}, "handler": {"type": "string"}, "kind": {"type": "string", "enum": ["io", "cpu"]},
            "state": {"type": "string", "enum": list(STATES)}, "priority": {"type": "integer"},
            "args": {"type": "array"}, "kwargs": {"type": "object"}, "result": {}, "error": {"type": ["object", "null"]},
            "attempts": {"type": "integer"}, "progress": {"type": ["object", "null"]}, "batch": {"type": ["string", "null"]},
            "timeout": {"type": ["number", "null"]}, "max_retries": {"type": "integer"},
            "run_at": {"type": ["string", "null"], "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "callback_url": {"type": ["string", "null"]},
            "callback": {"type": ["object", "null"], "description": "webhook delivery: url, delivery (job id), "
                                                                  "state (pending, retrying, delivered, failed), attempts"},
            "workflow": {"type": ["object", "null"], "description": "the workflow the job is a step of: id, and "
                                                                  "waiting_for (dependencies not yet succeeded)"},
            "schedule": {"type": ["object", "null"], "description": "the schedule that made the job: name, and "
                                                                  "fire_at, its slot (null for a run-now job)"}}},
        "Problem": {"type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                                     "status": {"type": "integer"}, "detail": {"type": "string"}}},
    }},
}


def for_server(document: dict, registry) -> dict:
    """The document as this server enforces it: its handlers, limits and access control.

    Each operation's permission is read from the views themselves (so they cannot drift) and named as
    ``x-permission`` even with access control off; only with it on do operations require a credential.
    """
    from pyramid.interfaces import IRoutesMapper
    document = copy.deepcopy(document)
    settings = registry.greenjobs_settings
    schemas = document["components"]["schemas"]
    submittable = [h.name for h in registry.greenjobs_handlers if not h.name.startswith(spec.RESERVED)]
    for schema in (schemas["JobSpec"], _batch_item(document)):
        schema["properties"]["handler"]["enum"] = submittable
        schema["properties"]["timeout"]["maximum"] = settings.job_max_timeout
        if not settings.webhooks_secret:        # webhooks off: a callback_url is refused (422)
            del schema["properties"]["callback_url"]
    template = schemas["ScheduleSpec"]["properties"]      # its own copies: Schedule shares these dicts
    template["handler"] = {**template["handler"], "enum": submittable}
    template["timeout"] = {**template["timeout"], "maximum": settings.job_max_timeout}
    if not settings.webhooks_secret:
        del template["callback_url"]
    _batch_body(document)["properties"]["jobs"]["maxItems"] = settings.api_max_batch
    for parameter in document["paths"]["/jobs"]["get"]["parameters"]:
        if parameter["name"] == "limit":
            parameter["schema"]["maximum"] = settings.api_max_page
    enforced = registry.greenjobs_security.enabled
    patterns = {route.name: route.pattern for route in registry.getUtility(IRoutesMapper).get_routes()}
    for item in registry.introspector.get_category("views"):
        view = item["introspectable"]
        methods = view["request_methods"]
        operations = document["paths"].get(patterns.get(view["route_name"]), {})
        for method in (methods,) if isinstance(methods, str) else methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            permission = next((r["value"] for r in item["related"] if r.category_name == "permissions"),
                              "admin")      # no permission given: greenjobs.server.security's default
            if permission == NO_PERMISSION_REQUIRED or not enforced:
                operation["security"] = []
            else:
                operation["security"] = [{"bearer": []}, {"session": []}]
                operation["responses"].update(_errors(401, 403))
            if permission != NO_PERMISSION_REQUIRED:
                operation["x-permission"] = permission
    return document


def _batch_body(document: dict) -> dict:
    return document["paths"]["/jobs/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _batch_item(document: dict) -> dict:
    return _batch_body(document)["properties"]["jobs"]["items"]


@view_config(route_name="openapi", request_method="GET", renderer="json", permission=NO_PERMISSION_REQUIRED)
def openapi(request):
    """GET /openapi.json: the OpenAPI 3.1 document, with this server's limits filled in."""
    document = getattr(request.registry, "greenjobs_openapi", None)
    if document is None:
        document = request.registry.greenjobs_openapi = for_server(DOCUMENT, request.registry)
    return document
