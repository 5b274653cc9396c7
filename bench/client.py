"""A minimal keep-alive HTTP/1.1 client over (gevent-patched) sockets: cheap enough that the client
does not hide the server's cost on a 2-core machine."""
from __future__ import annotations

import json
import socket


class Conn:
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.host = f"{host}:{port}"

    def request(self, method: str, path: str, body=None) -> tuple[int, bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(data)}\r\n"
                + ("Content-Type: application/json\r\n" if body is not None else "") + "\r\n").encode()
        self.sock.sendall(head + data)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        payload, self.buf = self.buf[:length], self.buf[length:]
        return status, payload

    def json(self, method: str, path: str, body=None, expect: int | None = None):
        status, payload = self.request(method, path, body)
        if expect is not None and status != expect:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def close(self) -> None:
        self.sock.close()


def post_rate(port: int, path: str, body, n: int, clients: int = 64, expect: int = 202) -> float:
    """Requests/s of ``n`` POSTs of ``body`` from ``clients`` keep-alive connections (W3, W6)."""
    return request_rate(port, "POST", path, body, n, clients, expect)


def request_rate(port: int, method: str, path: str, body, n: int, clients: int = 64, expect: int = 200) -> float:
    """Requests/s of ``n`` requests from ``clients`` keep-alive connections, each answered ``expect``.

    Needs a gevent-patched process: each connection is a greenlet.
    """
    import time

    import gevent

    def worker(count):
        conn = Conn("127.0.0.1", port)
        for _ in range(count):
            status, payload = conn.request(method, path, body)
            if status != expect:
                raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        conn.close()

    per = max(1, n // clients)
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, per) for _ in range(clients)], raise_error=True)
    return per * clients / (time.perf_counter() - t0)
