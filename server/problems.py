"""The only module that maps errors to HTTP: every error answer is application/problem+json.

``detail`` always says what to fix.  Unexpected exceptions are logged with their traceback and
answered 500 without internals.
"""
from __future__ import annotations

import json
import logging

from pyramid.exceptions import BadCSRFOrigin, BadCSRFToken
from pyramid.httpexceptions import HTTPException
from pyramid.response import Response
from pyramid.view import exception_view_config, forbidden_view_config, notfound_view_config

from greenjobs.pool import errors

log = logging.getLogger(__name__)


class Problem(Exception):
    """An HTTP-level client error raised by the views (bad body, bad query parameter, ...)."""

    def __init__(self, status: int, title: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


STATUS = {
    errors.HandlerNotFound: (422, "Unknown handler"),
    errors.InvalidJobParams: (422, "Invalid job"),
    errors.InvalidIdempotencyKey: (422, "Invalid Idempotency-Key"),
    errors.IdempotencyConflict: (422, "Idempotency-Key reused"),
    errors.JobNotFound: (404, "Not found"),
    errors.InvalidSchedule: (422, "Invalid schedule"),
    errors.InvalidWorkflow: (422, "Invalid workflow"),
    errors.ScheduleExists: (409, "Schedule exists"),
    errors.BadCursor: (400, "Invalid query parameter"),
    errors.JobFinished: (409, "Job already finished"),
    errors.IllegalTransition: (409, "Illegal state change"),
    errors.Overloaded: (429, "Too many jobs pending"),
    errors.StoreUnavailable: (503, "Store unavailable"),
    errors.ShuttingDown: (503, "Shutting down"),
    errors.QueueUnavailable: (503, "Queue unavailable"),
}


def status_of(exc: errors.GreenjobsError) -> tuple[int, str]:
    """(status, title) of the nearest class in ``exc``'s MRO that STATUS maps, so a subclass of a
    known error keeps its family's status; (500, ...) only for an unmapped family."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, "Internal error"


def problem_response(status: int, title: str, detail: str, headers: dict | None = None, **extra) -> Response:
    """An application/problem+json response (RFC 9457) with ``status``, ``title`` and a ``detail`` that says what
    to fix."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    response = Response(json.dumps(body), status=status, content_type="application/problem+json", charset="utf-8")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@exception_view_config(Problem)
def problem_view(exc: Problem, request):
    """A view's own client error (bad body or query parameter) as problem+json."""
    return problem_response(exc.status, exc.title, exc.detail, exc.headers)


@exception_view_config(errors.GreenjobsError)
def greenjobs_error_view(exc: errors.GreenjobsError, request):
    """A greenjobs error as problem+json, with its family's status (and Retry-After where it has one)."""
    status, title = status_of(exc)
    headers, extra = {}, {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, errors.HandlerNotFound):
        extra["known_handlers"] = exc.known
        extra["field"] = exc.field          # jobs[3].handler in a batch
    if isinstance(exc, errors.InvalidJobParams):
        extra["field"] = exc.field
    if status == 500:
        log.error("unmapped greenjobs error on %s %s: %r", request.method, request.path, exc)
    return problem_response(status, title, str(exc), headers, **extra)


def _methods(registry, route_name: str) -> list[str]:
    """The methods the views of a route accept, read from Pyramid's own registrations (cached)."""
    cache = registry.__dict__.setdefault("greenjobs_route_methods", {})
    if route_name not in cache:
        methods: set[str] = set()
        for item in registry.introspector.get_category("views"):
            view = item["introspectable"]
            if view["route_name"] == route_name:
                declared = view["request_methods"]
                methods.update((declared,) if isinstance(declared, str) else declared or ("GET",))
        if "GET" in methods:
            methods.add("HEAD")
        cache[route_name] = sorted(m.upper() for m in methods)
    return cache[route_name]


@notfound_view_config()
def not_found_view(exc, request):
    """404 for an unknown path; 405 with Allow when the path exists but the method does not."""
    route = request.matched_route
    methods = _methods(request.registry, route.name) if route is not None else []
    if methods and request.method not in methods:      # the path exists; the method does not
        allowed = ", ".join(methods)
        return problem_response(405, "Method not allowed", f"{request.method} is not allowed on {request.path};"
                                f" allowed: {allowed}", {"Allow": allowed})
    return problem_response(404, "Not found", f"no route for {request.method} {request.path}; see GET /openapi.json")


@forbidden_view_config()
def forbidden_view(exc, request):
    """A failed permission check: 401 with a Bearer challenge if nobody signed in, else 403 (server/security.py)."""
    reason = str(exc.result) if getattr(exc, "result", None) is not None else str(exc.detail or exc.explanation)
    if request.identity is None:
        challenge = 'Bearer realm="greenjobs"'
        if "Authorization" in request.headers:
            challenge += ', error="invalid_token"'
        return problem_response(401, "Unauthorized", reason, {"WWW-Authenticate": challenge})
    return problem_response(403, "Forbidden", reason)


@exception_view_config(BadCSRFToken)
@exception_view_config(BadCSRFOrigin)
def csrf_failed_view(exc, request):
    """Pyramid says 400; it is a refusal of a signed-in browser request, so 403."""
    detail = ("a request signed in with the session cookie must send the X-CSRF-Token header from GET /session"
              " (or authenticate with 'Authorization: Bearer TOKEN' instead)")
    if isinstance(exc, BadCSRFOrigin):
        detail = f"the Origin/Referer of this request is not this site: {exc.detail}"
    return problem_response(403, "CSRF check failed", detail)


@exception_view_config(HTTPException)
def http_exception_view(exc: HTTPException, request):
    """Pyramid's own HTTP exceptions (e.g. 405 from a predicate) as problem+json."""
    detail = exc.detail or exc.explanation or exc.title
    if exc.code == 405:
        detail = f"{request.method} is not allowed on {request.path}; see GET /openapi.json"
    return problem_response(exc.code, exc.title, str(detail), {k: v for k, v in exc.headers.items()
                                                                 if k.lower() in ("allow", "retry-after")})


@exception_view_config(Exception)
def unexpected_error_view(exc: Exception, request):
    """Anything else: logged with its traceback, answered 500 without internals."""
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(500, "Internal error", "the server failed unexpectedly; the error is in its log")


def includeme(config) -> None:
    """Register the error views (config.include('greenjobs.server.problems'))."""
    config.scan(__name__)
