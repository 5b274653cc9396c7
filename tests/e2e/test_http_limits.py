"""Hostile and broken HTTP clients, over raw sockets against a real server."""
import socket
import time

import pytest

pytestmark = pytest.mark.e2e


def exchange(srv, data: bytes, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"Content-Length: 0" in chunks[0]:
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.support import ServerProcess, write_ini
    proc = ServerProcess(write_ini(tmp_path_factory.mktemp("limits"), app={"greenjobs.api.max_body": 4096},
                                   server={"header_timeout": 1, "idle_timeout": 1})).start()
    yield proc
    proc.stop()


def test_too_many_headers_is_400(srv):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    assert exchange(srv, request).startswith(b"HTTP/1.1 400")


def test_oversized_header_block_is_400(srv):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 40000 + b"\r\nX-B: " + b"b" * 40000 + b"\r\n\r\n"
    assert exchange(srv, request).startswith(b"HTTP/1.1 400")


def test_long_request_line_is_414(srv):
    assert exchange(srv, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414")


def test_bad_content_length_is_400(srv):
    request = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n"
    assert exchange(srv, request).startswith(b"HTTP/1.1 400")


def test_chunked_body_over_the_limit_is_413(srv):
    body = b'{"handler": "echo", "kwargs": {"pad": "' + b"x" * 8000 + b'"}}'
    request = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    reply = exchange(srv, request)
    assert reply.startswith(b"HTTP/1.1 413") and b"max_body" in reply


def test_slow_headers_are_cut_off(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(30):                      # one header line every 0.2 s, never finishing
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            time.sleep(0.2)
            sock.setblocking(False)
            try:
                data = sock.recv(100)
            except BlockingIOError:
                data = None
            sock.setblocking(True)
            if data is not None:
                break
        assert data is not None and (data == b"" or data.startswith(b"HTTP/1.1 400")), data


def test_idle_keep_alive_connection_is_closed(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while True:       # a socket.timeout here means the server kept the idle connection open
            chunk = sock.recv(65536)
            if not chunk:
                break     # closed by the server after idle_timeout (1 s)
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")


def test_server_still_serves_after_all_that(srv):
    assert srv.get("/health").status_code == 200
