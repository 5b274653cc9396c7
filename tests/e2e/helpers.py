"""Helpers shared by the end-to-end tests (real pserve processes driven over HTTP).

Every loop here is bounded and every HTTP call has a timeout, so a hung server fails a test
instead of hanging the suite.
"""
from __future__ import annotations

import json
import selectors
import socket
import time
from datetime import datetime, timezone

import requests

PROBLEM = "application/problem+json"
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("scheduled", "queued", "running")

#: Settings that keep teardown short: running jobs get 0.5 s on SIGTERM instead of 10 s.
QUICK_STOP = {"greenjobs.shutdown.grace": 0.5}
#: Local test servers listen on random ports: allow any port of loopback (a bare host allows 80 and 443 only).
ANY_LOCAL_PORT = {"greenjobs.http.allowed_hosts": "127.0.0.1:* localhost:*"}
#: Load the test-only handlers of tests/e2e/e2e_handlers.py next to the built-in ones.
E2E_HANDLERS = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.e2e.e2e_handlers"}


def media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def assert_problem(response: requests.Response, status: int, *detail_words: str) -> dict:
    """``response`` is an RFC 9457 problem with ``status`` whose detail mentions every word."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert media_type(response) == PROBLEM, (response.headers.get("Content-Type"), response.text[:300])
    body = response.json()
    assert body["status"] == status, body
    assert isinstance(body.get("title"), str) and body["title"], body
    detail = body.get("detail")
    assert isinstance(detail, str) and len(detail) >= 10, body
    for word in detail_words:
        assert word.lower() in detail.lower(), (word, detail)
    return body


def list_all(srv, page: int = 500, max_pages: int = 200, **filters) -> list[dict]:
    """Every job matching ``filters`` (GET /jobs, paging with ?after=), newest first."""
    jobs: list[dict] = []
    after = None
    for _ in range(max_pages):
        params = {"limit": page, **filters}
        if after:
            params["after"] = after
        response = srv.http.get(srv.url + "/jobs", params=params, timeout=30)
        assert response.status_code == 200, response.text[:500]
        body = response.json()
        jobs += body["jobs"]
        after = body["next"]
        if not after:
            return jobs
    raise AssertionError(f"GET /jobs did not end after {max_pages} pages")


def job_count(srv) -> int:
    return len(list_all(srv))


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout} s (last value {last!r})")


def _long_poll(srv, path: str, done, timeout: float) -> dict:
    """GET ``path?wait=`` repeatedly until ``done(body)``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        wait = max(0.1, min(20.0, deadline - time.monotonic()))
        response = srv.http.get(srv.url + path, params={"wait": wait}, timeout=wait + 30)
        assert response.status_code == 200, response.text[:500]
        body = response.json()
        if done(body):
            return body
    raise AssertionError(f"{path} not done within {timeout} s: {body}")


def wait_batch(srv, batch_id: str, timeout: float = 120.0) -> dict:
    """Long-poll GET /batches/{id}?wait= until done; returns the final batch body."""
    return _long_poll(srv, f"/batches/{batch_id}", lambda body: body["done"], timeout)


def wait_job(srv, job_id: str, timeout: float = 60.0) -> dict:
    """Long-poll GET /jobs/{id}?wait= until terminal; returns the job."""
    return _long_poll(srv, f"/jobs/{job_id}", lambda job: job["state"] in TERMINAL, timeout)


def submit_batch(srv, jobs: list[dict]) -> dict:
    response = srv.post("/jobs/batch", {"jobs": jobs}, timeout=120)
    assert response.status_code == 202, response.text[:500]
    body = response.json()
    assert body["count"] == len(jobs) and len(body["ids"]) == len(jobs), body
    return body


def parse_time(text: str) -> datetime:
    """An API timestamp: ISO 8601, UTC, ending in Z."""
    assert isinstance(text, str) and text.endswith("Z"), text
    moment = datetime.fromisoformat(text[:-1] + "+00:00")
    assert moment.utcoffset() == timezone.utc.utcoffset(None)
    return moment


def raw_request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request on a fresh socket, exactly as given (no client-side rewriting)."""
    host, port = url.split("//", 1)[1].split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return send_raw(int(port), payload, timeout, host)


def send_raw(port: int, payload: bytes, timeout: float = 30.0, host: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    """Send ``payload`` (a whole request, bytes as given) on a fresh socket; read the answer until the close."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return parse_response(b"".join(chunks))


def parse_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, headers, body


def long_poll_many(url: str, paths: list[str], timeout: float) -> list[tuple[int, dict, bytes] | str]:
    """Open one socket per path at once, send every GET, then collect every answer.

    Runs in this thread with non-blocking sockets (no gevent in the test process).  Returns, per
    path, ``(status, headers, body)`` or an error string.
    """
    host, port = url.split("//", 1)[1].split(":")
    selector = selectors.DefaultSelector()
    results: list = [None] * len(paths)
    buffers: dict[int, list[bytes]] = {}
    socks = []
    try:
        for i, path in enumerate(paths):
            sock = socket.create_connection((host, int(port)), timeout=10)
            request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            sock.sendall(request)
            sock.setblocking(False)
            socks.append(sock)
            buffers[i] = []
            selector.register(sock, selectors.EVENT_READ, i)
        open_count = len(paths)
        deadline = time.monotonic() + timeout
        while open_count and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                i = key.data
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    data = b""
                    results[i] = f"socket error {exc!r}"
                if data:
                    buffers[i].append(data)
                    continue
                selector.unregister(key.fileobj)
                open_count -= 1
                if results[i] is None:
                    raw = b"".join(buffers[i])
                    try:
                        results[i] = parse_response(raw)
                    except Exception as exc:  # noqa: BLE001 - reported per request
                        results[i] = f"unparsable response {raw[:200]!r}: {exc!r}"
        for i, result in enumerate(results):
            if result is None:
                results[i] = "no complete answer before the deadline"
    finally:
        for sock in socks:
            sock.close()
        selector.close()
    return results


def decode(body: bytes):
    return json.loads(body.decode("utf-8"))


class LocalHTTP:
    """A tiny HTTP server in a thread of the test process that records every path it is asked for.

    ``/status/NNN`` answers NNN, ``/bytes/N`` answers N bytes, ``/redirect`` answers 302 to
    ``/redirected``; anything else answers 200 "ok".
    """

    def __init__(self, host: str = "127.0.0.1"):
        import http.server
        import threading

        hits: list[str] = []
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                with lock:
                    hits.append(self.path)
                status, body, headers = 200, b"ok", {}
                if self.path.startswith("/status/"):
                    status = int(self.path.split("/")[2])
                elif self.path.startswith("/bytes/"):
                    body = b"x" * int(self.path.split("/")[2])
                elif self.path == "/redirect":
                    status, headers = 302, {"Location": "/redirected"}
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.hits = hits
        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None   # clients closing pooled connections
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
