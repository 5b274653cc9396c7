"""Access control through the real app: every route with no, wrong, role-lacking and right credentials;
dashboard sessions (cookie flags, CSRF, sign-out); start-up refusals."""
import hashlib
import json

import gevent
import pytest
import webob
import webtest

from greenjobs.pool.errors import ConfigurationError
from greenjobs.pool.job import new_id
from greenjobs.server.routes import ROUTES
from greenjobs.server.wsgi import make_app

ADMIN, READ, SUBMIT = "admin-token-0123456789abcdef", "read-token-0123456789abcdef", "submit-token-0123456789abcd"
HASHED = "hashed-reader-token-0123456789"      # configured only as its sha256
WRONG = "not-a-configured-token-0123456789"
TOKENS = (f"{ADMIN}:admin {READ}:read {SUBMIT}:submit "
          f"sha256:{hashlib.sha256(HASHED.encode()).hexdigest()}:read")
HOLDERS = {"read": [READ, HASHED, ADMIN], "submit": [SUBMIT, ADMIN], "admin": [ADMIN]}
LACKING = {"read": [SUBMIT], "submit": [READ, HASHED], "admin": [READ, SUBMIT]}
OPEN = None

#: (route, method) -> (permission, expected status with the right token).  A route served by the app
#: and missing here fails test_every_served_route_is_covered: give a new route its line.
EXPECTED = {
    ("jobs", "POST"): ("submit", 202),
    ("jobs", "GET"): ("read", 200),
    ("jobs_batch", "POST"): ("submit", 202),
    ("job", "GET"): ("read", 200),
    ("job", "DELETE"): ("admin", 200),
    ("job_retry", "POST"): ("admin", 202),
    ("batch", "GET"): ("read", 200),
    ("handlers", "GET"): ("read", 200),
    ("servers", "GET"): ("read", 200),
    ("server_workers", "POST"): ("admin", 409),         # allowed, but this app's server supervises no cpu workers
    ("throughput", "GET"): ("read", 200),
    ("workflows", "POST"): ("submit", 202),
    ("workflow", "GET"): ("read", 200),
    ("workflow", "DELETE"): ("admin", 200),
    ("schedules", "GET"): ("read", 200),
    ("schedules", "POST"): ("admin", 201),
    ("schedule", "GET"): ("read", 200),
    ("schedule", "PATCH"): ("admin", 200),
    ("schedule", "DELETE"): ("admin", 200),
    ("schedule_pause", "POST"): ("admin", 200),
    ("schedule_resume", "POST"): ("admin", 200),
    ("schedule_run", "POST"): ("admin", 202),
    ("events", "GET"): ("read", 200),
    ("metrics", "GET"): ("read", 200),
    ("health", "GET"): (OPEN, 200),
    ("openapi", "GET"): (OPEN, 200),
    ("session", "GET"): (OPEN, 200),
    ("session", "POST"): (OPEN, 200),
    ("session", "DELETE"): (OPEN, 200),
    ("dashboard", "GET"): (OPEN, 200),                  # the page; its data calls are the routes above
    ("dashboard", "HEAD"): (OPEN, 200),
    ("__dashboard/static/", "ANY"): (OPEN, 200),        # its script and stylesheet
}
#: A path for each route: ROUTES (the API) plus the dashboard's page and static view.
PATTERNS = {**dict(ROUTES), "dashboard": "/", "__dashboard/static/": "/dashboard/static/app.js"}


def build(tmp_path, global_config=None, **settings):
    raw = {"greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": "0", "greenjobs.api.max_wait": "5",
           **settings}
    return make_app({"here": str(tmp_path), **(global_config or {})}, **raw)


@pytest.fixture
def wsgi(tmp_path):
    app = build(tmp_path, **{"greenjobs.auth.tokens": TOKENS})
    with gevent.Timeout(60):
        yield app
    app.registry.greenjobs_runtime.shutdown(0)


@pytest.fixture
def app(wsgi):
    return webtest.TestApp(wsgi)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def call(wsgi, method, path, token=None, body=None, headers=None):
    """One request straight through WSGI; a streamed body (SSE) is closed unread."""
    request = webob.Request.blank(path, method=method, headers={**(bearer(token) if token else {}), **(headers or {})})
    if body is not None:
        request.body, request.content_type = json.dumps(body).encode(), "application/json"
    response = request.get_response(wsgi)
    if response.content_type == "text/event-stream":
        response.app_iter.close()
    return response


def submit(app, body, token=ADMIN, status=202):
    return app.post("/jobs", json.dumps(body), content_type="application/json", headers=bearer(token),
                    status=status).json


def request_for(app, route, method):
    """A request that succeeds with the right token: fresh jobs where the call changes one."""
    body = None
    if (route, method) == ("jobs", "POST"):
        body = {"handler": "echo", "kwargs": {"n": 1}}
    elif route == "jobs_batch":
        body = {"jobs": [{"handler": "echo"}]}
    elif route == "session" and method == "POST":
        body = {"token": READ}
    elif (route, method) == ("workflows", "POST"):
        body = {"chain": [{"handler": "echo"}, {"handler": "echo", "immutable": True}]}
    elif (route, method) == ("schedules", "POST"):
        body = {"name": f"s{new_id()}", "handler": "echo", "every": 60}
    elif (route, method) == ("schedule", "PATCH"):
        body = {"every": 30}
    elif route == "server_workers":
        return PATTERNS[route].replace("{owner}", app.app.registry.greenjobs_runtime.owner), {"size": 1}
    if "{name}" in PATTERNS[route]:          # a fresh schedule: DELETE and PATCH change theirs
        name = f"s{new_id()}"
        app.post("/schedules", json.dumps({"name": name, "handler": "echo", "every": 60}),
                 content_type="application/json", headers=bearer(ADMIN), status=201)
        return PATTERNS[route].replace("{name}", name), body
    if route == "job" and method == "DELETE":
        ident = submit(app, {"handler": "sleep", "kwargs": {"seconds": 30}})["id"]
    elif route == "job_retry":
        ident = submit(app, {"handler": "fail", "kwargs": {"message": "boom"}, "max_retries": 0})["id"]
        assert app.get(f"/jobs/{ident}?wait=5", headers=bearer(ADMIN)).json["state"] == "failed"
    elif route == "workflow":
        ident = app.post("/workflows", json.dumps({"group": [{"handler": "sleep", "kwargs": {"seconds": 30}}]}),
                         content_type="application/json", headers=bearer(ADMIN), status=202).json["id"]
    elif route == "batch":
        ident = app.post("/jobs/batch", json.dumps({"jobs": [{"handler": "echo"}]}), content_type="application/json",
                         headers=bearer(ADMIN)).json["batch"]
    else:
        ident = submit(app, {"handler": "echo"})["id"] if "{id}" in PATTERNS[route] else None
    return PATTERNS[route].replace("{id}", ident or ""), body


def test_every_served_route_is_covered(wsgi):
    from pyramid.interfaces import IRoutesMapper
    routes = {route.name for route in wsgi.registry.getUtility(IRoutesMapper).get_routes()}
    assert routes >= {name for name, _ in ROUTES} and routes == set(PATTERNS)
    served = set()
    for item in wsgi.registry.introspector.get_category("views"):
        view = item["introspectable"]
        if view["route_name"] in routes:
            methods = view["request_methods"] or "ANY"
            served |= {(view["route_name"], m) for m in ((methods,) if isinstance(methods, str) else methods)}
    assert served == set(EXPECTED), "give each new (route, method) a line in EXPECTED (and its path in PATTERNS)"


def test_the_openapi_document_names_each_permission(app):
    doc = app.get("/openapi.json").json
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"],
                                                              "type": "http", "scheme": "bearer"}
    for (route, method), (permission, _) in EXPECTED.items():
        if route.startswith(("dashboard", "__dashboard")):     # HTML, not API: not in the document
            continue
        operation = doc["paths"][PATTERNS[route]][method.lower()]
        assert operation.get("x-permission") == permission, (route, method)
        assert operation["security"] == ([] if permission is OPEN else [{"bearer": []}, {"session": []}])
        if permission is not OPEN:
            assert {"401", "403"} <= set(operation["responses"])


def assert_problem(response, status, word):
    assert response.status_int == status, response.text
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == status and word in response.json["detail"], response.json


@pytest.mark.parametrize("route,method", sorted(EXPECTED))
def test_route_with_no_wrong_lacking_and_right_token(app, wsgi, route, method):
    permission, ok = EXPECTED[(route, method)]
    path, body = request_for(app, route, method)
    method = "GET" if method == "ANY" else method
    if permission is OPEN:
        for token in (None, WRONG, READ, ADMIN):
            response = call(wsgi, method, path, token, body)
            assert response.status_int == ok, (token, response.text)
        return
    for token in (None, WRONG):
        response = call(wsgi, method, path, token, body)
        assert_problem(response, 401, "Authorization: Bearer" if token is None else "not carry a valid token")
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and ('error="invalid_token"' in challenge) == (token is not None)
    for token in LACKING[permission]:
        response = call(wsgi, method, path, token, body)
        assert_problem(response, 403, f"needs the {permission!r} permission")
        assert "WWW-Authenticate" not in response.headers
    for token in HOLDERS[permission]:
        if token is not HOLDERS[permission][0]:
            path, body = request_for(app, route, method)      # a fresh job: cancel and retry change theirs
        response = call(wsgi, method, path, token, body)
        assert response.status_int == ok, (token, response.text)


def test_other_schemes_and_malformed_headers_are_401(wsgi):
    for header in (f"Basic {ADMIN}", "Bearer", "Bearer ", ADMIN, f"Bearer {ADMIN}x"):
        assert_problem(call(wsgi, "GET", "/jobs", headers={"Authorization": header}), 401, "valid token")
    assert call(wsgi, "GET", "/jobs", headers={"Authorization": f"bearer  {ADMIN} "}).status_int == 200


def test_unknown_routes_and_methods_stay_404_and_405(wsgi):
    assert_problem(call(wsgi, "GET", "/nope"), 404, "no route")
    assert call(wsgi, "PUT", "/jobs").status_int == 405


def sign_in(app, token=ADMIN, status=200, form=False):
    if form:
        return app.post("/session", {"token": token}, status=status)
    return app.post("/session", json.dumps({"token": token}), content_type="application/json", status=status)


def test_sign_in_sets_a_strict_httponly_cookie(app):
    response = sign_in(app)
    assert response.json["roles"] == ["admin"] and response.json["auth"] == "on"
    assert response.json["via"] == "session" and response.json["csrf_token"]
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("greenjobs_session=")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags        # loopback (no ini): plain-HTTP development
    state = app.get("/session").json
    assert state["authenticated"] and state["csrf_token"] == response.json["csrf_token"]


def test_sign_in_with_a_hashed_token(app):
    assert sign_in(app, HASHED).json["roles"] == ["read"]
    assert app.get("/jobs").status_int == 200


def test_a_form_cannot_sign_in_so_a_cross_site_form_cannot_either(app):
    """Login CSRF: an HTML form on another site could post token=ATTACKERS; only JSON is accepted."""
    assert_problem(sign_in(app, ADMIN, form=True, status=415), 415, "application/json")
    assert app.get("/session").json["authenticated"] is False


def test_failed_sign_ins_are_limited_per_client(app, caplog):
    with caplog.at_level("WARNING", logger="greenjobs.server.security"):
        for _ in range(10):
            sign_in(app, WRONG, status=401)
        refused = sign_in(app, ADMIN, status=429)       # even the right token waits
    assert int(refused.headers["Retry-After"]) >= 1
    assert_problem(refused, 429, "retry in")
    assert any("failed dashboard sign-in" in r.getMessage() for r in caplog.records)
    other = app.post("/session", json.dumps({"token": ADMIN}), content_type="application/json",
                     extra_environ={"REMOTE_ADDR": "10.9.9.9"})
    assert other.json["authenticated"] is True            # another client is not held back


@pytest.mark.parametrize("body,status", [({"token": WRONG}, 401), ({"token": ""}, 400), ({}, 400), ([ADMIN], 400)])
def test_sign_in_refusals(app, body, status):
    response = app.post("/session", json.dumps(body), content_type="application/json", status=status)
    assert response.content_type == "application/problem+json"
    assert "Set-Cookie" not in response.headers
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_cookie_requests_need_the_csrf_token_on_unsafe_methods(app):
    csrf = sign_in(app).json["csrf_token"]
    assert app.get("/jobs").status_int == 200                         # safe: no token needed
    body = json.dumps({"handler": "echo"})
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        assert_problem(app.post("/jobs", body, content_type="application/json", headers=headers, status=403),
                       403, "X-CSRF-Token")
    job = app.post("/jobs", body, content_type="application/json", headers={"X-CSRF-Token": csrf}).json
    slow = app.post("/jobs", json.dumps({"handler": "sleep", "kwargs": {"seconds": 30}}),
                    content_type="application/json", headers={"X-CSRF-Token": csrf}).json
    assert_problem(app.delete(f"/jobs/{slow['id']}", status=403), 403, "X-CSRF-Token")
    assert app.delete(f"/jobs/{slow['id']}", headers={"X-CSRF-Token": csrf}).json["state"] == "cancelled"
    assert app.get(f"/jobs/{job['id']}").status_int == 200


def test_bearer_requests_need_no_csrf_token_even_beside_a_cookie(app):
    sign_in(app, READ)
    assert app.post("/jobs", json.dumps({"handler": "echo"}), content_type="application/json",
                    headers=bearer(SUBMIT)).status_int == 202
    # the header alone decides: a bad one is not rescued by the valid cookie
    assert_problem(app.get("/jobs", headers=bearer(WRONG), status=401), 401, "valid token")
    assert app.get("/session", headers=bearer(SUBMIT)).json["via"] == "bearer"
    assert app.get("/session", headers=bearer(SUBMIT)).json["csrf_token"] is None


def test_a_cookie_lacking_the_role_is_403_before_csrf(app):
    csrf = sign_in(app, READ).json["csrf_token"]
    assert_problem(app.post("/jobs", json.dumps({"handler": "echo"}), content_type="application/json",
                            headers={"X-CSRF-Token": csrf}, status=403), 403, "'submit' permission")


def test_sign_out_needs_csrf_expires_the_cookie_and_revokes_a_copy(app):
    csrf = sign_in(app).json["csrf_token"]
    stolen = app.cookies["greenjobs_session"]
    assert_problem(app.delete("/session", status=403), 403, "X-CSRF-Token")
    response = app.delete("/session", headers={"X-CSRF-Token": csrf})
    assert response.json["authenticated"] is False
    assert "max-age=0" in response.headers["Set-Cookie"].lower()
    assert "greenjobs_session" not in app.cookies
    assert_problem(app.get("/jobs", status=401), 401, "Authorization: Bearer")
    app.set_cookie("greenjobs_session", stolen)                        # a copy taken before sign-out
    assert_problem(app.get("/jobs", status=401), 401, "session has expired or was signed out")


def test_a_tampered_cookie_is_401(app):
    sign_in(app, READ)
    value = app.cookies["greenjobs_session"]
    app.set_cookie("greenjobs_session", value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB"))
    assert_problem(app.get("/jobs", status=401), 401, "session")


def test_a_session_outlives_no_token_removed_from_the_config(tmp_path):
    """The cookie holds which token signed in, not its roles: a restart without that token ends it."""
    secret = "s" * 40
    first = build(tmp_path, **{"greenjobs.auth.tokens": TOKENS, "greenjobs.auth.session_secret": secret})
    app = webtest.TestApp(first)
    sign_in(app, READ)
    cookie = app.cookies["greenjobs_session"]
    first.registry.greenjobs_runtime.shutdown(0)
    second = build(tmp_path, **{"greenjobs.auth.tokens": f"{ADMIN}:admin", "greenjobs.auth.session_secret": secret})
    try:
        again = webtest.TestApp(second)
        again.set_cookie("greenjobs_session", cookie)
        assert again.get("/jobs", status=401).status_int == 401
    finally:
        second.registry.greenjobs_runtime.shutdown(0)


def test_auth_off_permits_everything_and_has_nothing_to_sign_in_to(tmp_path):
    wsgi = build(tmp_path)
    try:
        app = webtest.TestApp(wsgi)
        assert app.get("/session").json == {"auth": "off", "authenticated": False, "via": None,
                                            "roles": ["admin", "read", "submit"],
                                            "permissions": ["admin", "read", "submit"], "csrf_token": None}
        assert app.post("/jobs", json.dumps({"handler": "echo"}), content_type="application/json",
                        headers=bearer(WRONG)).status_int == 202
        assert_problem(sign_in(app, status=409), 409, "nothing to sign in to")
    finally:
        wsgi.registry.greenjobs_runtime.shutdown(0)


# -- start-up -------------------------------------------------------------------------------

def ini_binding(tmp_path, **server):
    from tests.support import write_ini
    path = write_ini(tmp_path / "ini", server=server)
    return {"__file__": str(path), "here": str(path.parent)}


@pytest.mark.parametrize("entries,words", [
    ("tok-0123456789abcdef:reader", "entry 1: unknown role(s) 'reader'; roles are admin, read, submit"),
    ("a-0123456789abcdef:read tok-0123456789abcdef", "entry 2: expected TOKEN:ROLE[,ROLE]"),
    ("tok-0123456789abcdef:", "entry 1: expected"),
    ("sha256:abc:read", "entry 1: sha256: must be followed by 64 hex digits"),
    ("tok-0123456789abcdef:read tok-0123456789abcdef:admin", "entry 2: the same token as entry 1"),
])
def test_bad_tokens_stop_start_up_without_echoing_them(tmp_path, entries, words):
    with pytest.raises(ConfigurationError) as info:
        build(tmp_path, **{"greenjobs.auth.tokens": entries})
    assert words in str(info.value)
    assert "tok-0123456789abcdef" not in str(info.value)


def test_a_short_session_secret_stops_start_up(tmp_path):
    with pytest.raises(ConfigurationError, match="session_secret is 5 characters; use at least 32"):
        build(tmp_path, **{"greenjobs.auth.tokens": TOKENS, "greenjobs.auth.session_secret": "short"})


def test_a_non_loopback_bind_without_tokens_refuses_to_start(tmp_path):
    with pytest.raises(ConfigurationError) as info:      # greenjobs.server.app turns it into SystemExit (tests/e2e)
        build(tmp_path, ini_binding(tmp_path, host="0.0.0.0"))
    text = str(info.value)
    assert "binds 0.0.0.0, which is not loopback" in text and "greenjobs.auth.insecure = true" in text


@pytest.mark.parametrize("server,auth,secure", [
    ({"host": "0.0.0.0"}, {"greenjobs.auth.insecure": "true"}, True),
    ({"host": "0.0.0.0"}, {"greenjobs.auth.tokens": TOKENS}, True),
    ({"host": "0.0.0.0"}, {"greenjobs.auth.tokens": TOKENS, "greenjobs.auth.secure_cookie": "false"}, False),
    ({"host": "127.0.0.1"}, {"greenjobs.auth.tokens": TOKENS}, False),
    ({"host": "::1"}, {}, False),
])
def test_what_starts_and_whether_the_cookie_is_secure(tmp_path, server, auth, secure):
    wsgi = build(tmp_path, ini_binding(tmp_path, **server), **auth)
    try:
        app = webtest.TestApp(wsgi)
        state = app.get("/session").json
        assert state["auth"] == ("on" if "greenjobs.auth.tokens" in auth else "off")
        if state["auth"] == "on":
            flags = [p.strip().lower() for p in sign_in(app).headers["Set-Cookie"].split(";")]
            assert ("secure" in flags) == secure
    finally:
        wsgi.registry.greenjobs_runtime.shutdown(0)


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False), ("::", False), ("", False),
                                           ("10.0.0.5", False), ("example.com", False)])
def test_is_loopback(host, loopback):
    from greenjobs.server.security import is_loopback
    assert is_loopback(host) is loopback


def test_bind_hosts_reads_every_server_section_and_waitress_listen(tmp_path):
    from greenjobs.server.security import bind_hosts
    path = tmp_path / "x.ini"
    path.write_text("[DEFAULT]\naddr = 10.1.2.3\n[app:main]\nuse = egg:greenjobs\n"
                    "[server:main]\nuse = egg:greenjobs#gevent\n"
                    "[server:w]\nuse = egg:waitress#main\nlisten = 127.0.0.1:8080 [::1]:8080 *:8081\n"
                    "[server:bare]\nuse = egg:waitress#main\n"
                    "[server:var]\nuse = egg:greenjobs#gevent\nhost = %(addr)s\n")
    hosts = bind_hosts({"__file__": str(path), "here": str(tmp_path), "addr": "192.168.0.9"})
    assert hosts == ["127.0.0.1", "127.0.0.1", "[::1]", "0.0.0.0", "0.0.0.0", "192.168.0.9"]
    assert bind_hosts({"here": str(tmp_path)}) == []


def test_idempotency_keys_are_scoped_by_token(app):
    """A submit-only token replaying an admin's key (same body, or another) reaches nothing of the admin's."""
    body = {"handler": "echo", "kwargs": {"secret": "admin's"}}
    post = lambda token, data, status: app.post(  # noqa: E731
        "/jobs", json.dumps(data), content_type="application/json", status=status,
        headers={**bearer(token), "Idempotency-Key": "order-1"})
    admins = post(ADMIN, body, 202).json
    again = post(ADMIN, body, 200).json
    assert again["id"] == admins["id"]
    theirs = post(SUBMIT, body, 202).json                     # the same key and body: their own new job
    assert theirs["id"] != admins["id"]
    other = post(SUBMIT, {"handler": "echo"}, 422)             # their key, their body: a conflict with *their* job
    assert admins["id"] not in other.text and theirs["id"] in other.text
    batch = app.post("/jobs/batch", json.dumps({"jobs": [{**body, "idempotency_key": "order-1"}]}),
                     content_type="application/json", headers=bearer(READ), status=403)
    assert admins["id"] not in batch.text
