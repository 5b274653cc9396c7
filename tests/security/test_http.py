"""Hardening of the HTTP layer against a real pserve: body limits for every body, request framing,
Location, number and path parsing (issue 12 findings 1, 6, 7, 8).  Sockets are raw: no client
library rewrites what is sent."""
import socket
import threading
import time

import pytest

from tests.e2e.helpers import PROBLEM, QUICK_STOP, raw_request
from tests.e2e.helpers import send_raw as send_raw_to

pytestmark = pytest.mark.e2e

TOKENS = {"greenjobs.auth.tokens": "admin-token-for-tests:admin"}


def vm_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(key)


def send_raw(srv, payload: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    return send_raw_to(srv.port, payload, timeout)


@pytest.fixture
def srv(make_server):
    return make_server(app={**QUICK_STOP, **TOKENS, "greenjobs.workers.cpu": 0})


def big_sign_in(srv, size: int, results: list) -> None:
    """POST /session with a form body of ``size`` bytes, sent as fast as the server takes it."""
    head = (f"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\ntoken=").encode()
    chunk = b"a" * (1 << 20)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass                        # the server answered and closed: what we want
        try:
            results.append(sock.recv(4096).split(b" ", 2)[1])
        except OSError:
            results.append(b"closed")


def test_eight_50_mb_sign_in_forms_do_not_grow_the_server(srv, capsys):
    pid = srv.proc.pid
    before = vm_kb(pid, "VmRSS")
    results: list = []
    threads = [threading.Thread(target=big_sign_in, args=(srv, 50 << 20, results)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    peak = vm_kb(pid, "VmHWM")
    with capsys.disabled():
        print(f"\n[security] RSS before {before / 1024:.1f} MB, peak under 8 x 50 MB sign-in bodies "
              f"{peak / 1024:.1f} MB")
    assert results and set(results) <= {b"413", b"closed"}, results
    assert b"413" in results
    assert peak - before < 30 * 1024, (before, peak)      # KB: nothing like 8 x 50 MB was buffered
    assert srv.get("/health").status_code == 200


def test_a_chunked_body_over_the_limit_is_413(srv):
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"   # 2.5 MB > 1 MB
    status, headers, text = send_raw(srv, b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token-for-tests"
                                          b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                                          b"Connection: close\r\n\r\n" + body)
    assert status == 413, text[:300]
    assert headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize("framing", [
    b"Content-Length: 20\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 20\r\nContent-Length: 21\r\n",
    b"Content-Length: 20\r\nContent-Length: 20\r\n",
    b"Content-Length: +20\r\n",
])
def test_ambiguous_body_framing_is_refused(srv, framing):
    body = b'{"handler": "echo"}\n'
    status, _, _ = send_raw(srv, b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token-for-tests\r\n"
                                 b"Content-Type: application/json\r\n" + framing + b"Connection: close\r\n\r\n" + body)
    assert status == 400
    assert srv.get("/jobs", headers={"Authorization": "Bearer admin-token-for-tests"}).json()["jobs"] == []


@pytest.mark.parametrize("line", [
    b"X-Folded: a\r\n continued\r\n",             # obs-fold
    b"Content-Length : 20\r\n",                      # whitespace before the colon
    b"No colon here\r\n",
    b"X-A: a\rTransfer-Encoding: chunked\r\n",       # a bare CR, another field to a parser that splits on it
    b"X-A: a\nX-B: b\r\n",                            # a bare LF ends a line to some parsers, not to others
    b"".join(b"X-F%d: v\r\n" % i for i in range(101)),   # over 100 fields
])
def test_malformed_header_lines_are_refused(srv, line):
    body = b'{"handler": "echo"}\n'
    status, _, _ = send_raw(srv, b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token-for-tests\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: 20\r\n" + line
                                 + b"Connection: close\r\n\r\n" + body)
    assert status == 400
    assert srv.get("/jobs", headers={"Authorization": "Bearer admin-token-for-tests"}).json()["jobs"] == []


def test_location_is_relative_whatever_the_host_header(srv):
    status, headers, _ = raw_request(srv.url, "POST", "/jobs", b'{"handler": "echo"}',
                                     {"Content-Type": "application/json", "Content-Length": "19",
                                      "Authorization": "Bearer admin-token-for-tests", "X-Forwarded-Host": "evil.example"})
    assert status == 202 and headers["location"].startswith("/jobs/"), headers
    payload = (b"POST /jobs HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer admin-token-for-tests\r\n"
               b"Content-Type: application/json\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{\"handler\": \"echo\"}")
    status, headers, _ = send_raw(srv, payload)
    assert status == 202 and headers["location"].startswith("/jobs/"), headers


@pytest.mark.parametrize("path", ["/%ff", "/jobs/%c0%ae", "/dashboard/%fe%ff", "/jobs?after=%ff",
                                  "/events?state=%c0%ae", "/jobs?limit=1&handler=%fe"])
def test_an_undecodable_path_is_400_problem_json(srv, path):
    status, headers, body = raw_request(srv.url, "GET", path)
    assert status == 400 and headers["content-type"].startswith(PROBLEM), body[:200]
    assert b"UTF-8" in body
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("query", ["/jobs?after=%E2%91%A0", "/jobs?after=%C2%B95", "/jobs?after=%D9%A3",
                                   "/jobs?limit=%D9%A3", "/jobs/x?wait=%D9%A3", "/events?last_event_id=%C2%B2"])
def test_numbers_in_the_query_are_ascii_digits_only(srv, query):
    status, headers, body = raw_request(srv.url, "GET", query, headers={"Authorization": "Bearer admin-token-for-tests"})
    assert status == 400 and headers["content-type"].startswith(PROBLEM), (status, body[:200])


def test_sign_in_is_json_only_and_rate_limited(srv):
    form = srv.http.post(srv.url + "/session", data={"token": "admin-token-for-tests"}, timeout=10)
    assert form.status_code == 415
    statuses = [srv.http.post(srv.url + "/session", json={"token": "wrong"}, timeout=10).status_code
                for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429], statuses
    assert "failed dashboard sign-in from 127.0.0.1" in srv.log()


def test_the_allow_list_names_ports_and_is_checked_at_submit(make_server):
    """A bare host allows ports 80 and 443: http.get and webhooks cannot reach loopback's databases and
    brokers, and a refused URL is a 422 at submit, not a job whose error tells open ports from closed ones."""
    srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 0, "greenjobs.webhooks.secret": "s" * 16})
    for port in (6379, 5432, 5672, srv.port):
        refused = srv.post("/jobs", {"handler": "http.get", "kwargs": {"url": f"http://127.0.0.1:{port}/"}})
        assert refused.status_code == 422 and "allowed_hosts" in refused.json()["detail"], refused.text
        hook = srv.post("/jobs", {"handler": "echo", "callback_url": f"http://localhost:{port}/hook"})
        assert hook.status_code == 422, hook.text
    assert srv.get("/jobs").json()["jobs"] == []


def test_connection_failures_look_alike(make_server):
    """Refused, reset or silent: one message, so http.get is no port scanner even on an allowed host:*."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))                  # bound, not listening: refused
    try:
        srv = make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 0, "greenjobs.http.allowed_hosts": "127.0.0.1:*"})
        messages = []
        for sock in (silent, closed):
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
            job = srv.wait(srv.submit("http.get", kwargs={"url": url}, timeout=1.5)["id"], 30)
            assert job["state"] == "failed", job
            messages.append(job["error"]["message"].replace(url, "URL"))
        assert messages[1] == "FetchFailed: GET URL failed: no response"
        # the silent port: the same message, or the job's timeout (with, on a loaded machine whose hub ran the
        # timer late, the note that says so): either way nothing tells a silent port from a closed one
        assert messages[0] == messages[1] or messages[0].startswith("the job ran longer than its timeout of 1.5 s"), \
            messages
    finally:
        silent.close()
        closed.close()


@pytest.mark.parametrize("entries,ok", [("127.0.0.1", True), ("127.0.0.1:8080 [::1]:9000 example.com:*", True),
                                        ("127.0.0.1:0", False), ("host:99999", False), ("host:http", False)])
def test_allow_list_entries_are_checked_at_start(tmp_path, entries, ok):
    from greenjobs.pool.errors import ConfigurationError
    from greenjobs.server.settings import load
    if ok:
        load({"greenjobs.http.allowed_hosts": entries}, str(tmp_path))
    else:
        with pytest.raises(ConfigurationError, match="allowed_hosts"):
            load({"greenjobs.http.allowed_hosts": entries}, str(tmp_path))


@pytest.mark.parametrize("framing,body", [
    (b"Content-Length: 40", b'{"handler": "echo"}'),                  # the client closes after 19 of 40 bytes
    (b"Transfer-Encoding: chunked", b"5\r\n{\"han\r\n"),                 # the chunks stop mid-body
    (b"Transfer-Encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n"),         # a chunk size that is not hex
])
def test_a_body_cut_short_or_badly_chunked_is_400_not_500(srv, framing, body):
    """Found by tests/security/test_request_fuzz.py: pywsgi's OSError/ValueError reached the view as a 500."""
    payload = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token-for-tests\r\n"
               b"Content-Type: application/json\r\n" + framing + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"Incomplete body" in answer
    assert "Traceback" not in srv.log()
