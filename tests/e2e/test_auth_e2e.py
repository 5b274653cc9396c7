"""Access control of a real pserve: the refusal to serve a public address unprotected, and tokens over HTTP."""
import pytest

pytestmark = pytest.mark.e2e

ADMIN, SUBMIT, READ = "e2e-admin-0123456789abcdef", "e2e-submit-0123456789abcdef", "e2e-read-0123456789abcdef"
FAST = {"greenjobs.workers.cpu": 0, "greenjobs.store.synchronous": "normal"}


def test_a_public_bind_without_tokens_refuses_to_start(make_server):
    srv = make_server(app=FAST, server={"host": "0.0.0.0"}, start=False)
    with pytest.raises(RuntimeError, match="pserve exited"):
        srv.start()
    assert srv.proc.returncode != 0
    log = srv.log()
    assert "greenjobs: the server binds 0.0.0.0, which is not loopback, and no greenjobs.auth.tokens" in log
    assert "greenjobs.auth.insecure = true" in log
    assert "Traceback" not in log


def test_insecure_true_serves_a_public_bind_without_tokens(make_server):
    srv = make_server(app={**FAST, "greenjobs.auth.insecure": "true"}, server={"host": "0.0.0.0"})
    assert srv.get("/session").json()["auth"] == "off"
    job = srv.submit("echo", kwargs={"n": 1})
    assert srv.wait(job["id"])["state"] == "succeeded"
    assert "access control is OFF on 0.0.0.0" in srv.log()


def test_tokens_over_http(make_server):
    tokens = f"{ADMIN}:admin {SUBMIT}:submit {READ}:read"
    # a public bind makes the cookie Secure by default; this test talks plain HTTP, so it turns that off
    srv = make_server(app={**FAST, "greenjobs.auth.tokens": tokens, "greenjobs.auth.secure_cookie": "false"},
                      server={"host": "0.0.0.0"})
    assert srv.get("/health").status_code == 200                           # load balancers need no token
    body = {"handler": "echo", "kwargs": {"n": 1}}
    nobody = srv.post("/jobs", body)
    assert nobody.status_code == 401 and nobody.headers["Content-Type"].startswith("application/problem+json")
    assert nobody.headers["WWW-Authenticate"].startswith("Bearer")
    assert srv.post("/jobs", body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert srv.post("/jobs", body, headers={"Authorization": f"Bearer {READ}"}).status_code == 403
    accepted = srv.post("/jobs", body, headers={"Authorization": f"Bearer {SUBMIT}"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert srv.get(f"/jobs/{job_id}?wait=10", headers={"Authorization": f"Bearer {SUBMIT}"}).status_code == 403
    done = srv.get(f"/jobs/{job_id}?wait=10", headers={"Authorization": f"Bearer {READ}"})
    assert done.status_code == 200 and done.json()["state"] == "succeeded"
    # the dashboard's way in: a session cookie, with the CSRF token on unsafe requests
    signed_in = srv.post("/session", {"token": ADMIN})
    assert signed_in.status_code == 200 and "greenjobs_session" in srv.http.cookies
    assert "samesite=strict" in signed_in.headers["Set-Cookie"].lower()
    assert srv.get("/jobs").status_code == 200
    assert srv.post("/jobs", body).status_code == 403
    csrf = {"X-CSRF-Token": signed_in.json()["csrf_token"]}
    assert srv.post("/jobs", body, headers=csrf).status_code == 202
    assert srv.delete("/session", headers=csrf).status_code == 200
    assert srv.get("/jobs").status_code == 401
