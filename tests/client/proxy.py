"""A small HTTP/1.1 proxy in front of a real greenjobs server, to put faults between it and the client.

It counts the TCP connections and records the requests it sees, and a rule can, for the next N
requests matching a method and path prefix: forward the request and then reset the connection
instead of answering (the server did the work, the client never hears), forward and answer late
(a client read timeout), answer with a status of its own without forwarding (429/503), or
rewrite the server's answer.
"""
from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Rule:
    method: str
    prefix: str
    action: str                 # "reset" | "delay" | "answer" | "rewrite"
    times: int = 1
    status: int = 0
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    rewrite: Callable[[bytes], bytes] | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.requests: list[Seen] = []
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # -- rules ----------------------------------------------------------------------------
    def add(self, method: str, prefix: str, action: str, **kw) -> Rule:
        rule = Rule(method, prefix, action, **kw)
        with self.lock:
            self.rules.append(rule)
        return rule

    def seen(self, method: str, prefix: str) -> list[Seen]:
        return [r for r in list(self.requests) if r.method == method and r.path.startswith(prefix)]

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    # -- serving --------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _rule_for(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.times > 0 and rule.method == method and path.startswith(rule.prefix):
                    rule.times -= 1
                    return rule
        return None

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", 0))
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(Seen(method, path, headers, body))
                rule = self._rule_for(method, path)
                if rule is not None and rule.action == "answer":
                    self._reply(conn, rule.status, rule.headers, rule.body)
                    continue
                status, reason, answer_headers, answer = self._forward(method, path, headers, body)
                if rule is not None and rule.action == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return          # closed with RST: the client never hears the answer
                if rule is not None and rule.action == "delay":
                    time.sleep(rule.seconds)
                if rule is not None and rule.action == "rewrite":
                    answer = rule.rewrite(answer)
                self._reply(conn, status, answer_headers, answer, reason)
                if headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k not in ("connection", "host", "content-length")}
            upstream.request(method, path, body=body or None, headers=sent)
            response = upstream.getresponse()
            answer = response.read()
            kept = {k: v for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")}
            return response.status, response.reason, kept, answer
        finally:
            upstream.close()

    @staticmethod
    def _reply(conn: socket.socket, status: int, headers: dict, body: bytes, reason: str = "Proxy") -> None:
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
