"""Connection slots are given back: after a 408 or 413 on an unread body, a silent new connection,
and a max_connections the open-files limit cannot hold (issue 12 finding 2)."""
import socket
import time

import pytest

from greenjobs.server.httpserver import RESERVED_FDS, fit_connections
from tests.e2e.helpers import QUICK_STOP

pytestmark = pytest.mark.e2e


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection (True) or ``seconds`` pass (False)."""
    sock.settimeout(0.2)
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not data:
            return True, got
        got += data
    return False, got


@pytest.fixture
def srv(make_server):
    return make_server(app={**QUICK_STOP, "greenjobs.workers.cpu": 0, "greenjobs.api.read_timeout": 1},
                       server={"header_timeout": 1, "idle_timeout": 60})


def test_a_body_shorter_than_announced_gets_408_then_the_connection_closes(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                     b'{"handler": "echo"')
        closed, got = closed_within(sock, 8)
    assert got.startswith(b"HTTP/1.1 408"), got[:100]
    assert closed, "the connection stayed open after the 408"


def test_a_refused_large_body_closes_the_connection_instead_of_reading_it(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n{")
        closed, got = closed_within(sock, 5)
    assert got.startswith(b"HTTP/1.1 413") and closed, got[:100]


def test_a_new_connection_that_sends_nothing_is_cut_at_header_timeout(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        started = time.monotonic()
        closed, _ = closed_within(sock, 10)
    assert closed and time.monotonic() - started < 5


def test_a_kept_alive_connection_waits_idle_timeout_not_header_timeout(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        closed, _ = closed_within(sock, 3)          # past header_timeout (1 s), within idle_timeout (60 s)
        assert not closed
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        closed, got = closed_within(sock, 5)
        assert got.startswith(b"HTTP/1.1 200") and closed


def test_max_connections_is_fitted_to_the_open_files_limit():
    assert fit_connections(20_000, None) == 20_000
    assert fit_connections(20_000, 100_000) == 20_000
    assert fit_connections(20_000, 1500) == 1500 - RESERVED_FDS
