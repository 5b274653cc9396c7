"""The direct line between a server and each cpu worker it supervises: a socket pair made at spawn.

Over the broker a claim, its answer and a result are three messages, each a commit and a wake-up in two
processes (on the embedded broker 0.5-1.2 ms apiece here); over this line each is one write and one read.
It carries only what a supervised worker says to its own parent and the parent's answers: the claim is
still judged by the ledger (the same ``claim_for_worker``), the result still recorded by the same fence.
Jobs themselves keep coming over the broker, durable, and the broker stays the fallback: a worker whose
line is gone (or whose result the parent could not record) publishes to the control queue as before.

Frames are JSON objects, one per line (``json.dumps`` never writes a raw newline); only these two
processes hold the ends, and a frame over MAX_FRAME closes the line.
"""
from __future__ import annotations

import json
import select
import socket

#: Largest frame either side accepts (a result carries at most greenjobs.job.max_result_bytes, which is
#: capped well below this).
MAX_FRAME = 64 * 1024 * 1024


def encode(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


class Frames:
    """Splits what a socket delivers into decoded frames."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list:
        self._buf += data
        frames = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_FRAME:
                    raise ConnectionError("a frame on the worker line is too large")
                return frames
            raw = bytes(self._buf[:end])
            del self._buf[:end + 1]
            try:
                body = json.loads(raw)
            except ValueError:
                raise ConnectionError("an undecodable frame on the worker line") from None
            if isinstance(body, dict):
                frames.append(body)


class ParentLine:
    """The worker's end (plain blocking socket; the worker has no gevent).  One request at a time: the
    worker asks, then waits for the answer with the same ``corr``."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self._frames = Frames()
        self._ready: list = []
        self._poll = select.poll()          # (not select(): it fails for a descriptor numbered 1024 or more)
        self._poll.register(self.sock, select.POLLIN)
        self.broken = False

    def send(self, body: dict) -> None:
        try:
            self.sock.sendall(encode(body))
        except OSError:
            self.broken = True
            raise

    def receive(self, timeout: float) -> dict | None:
        """The next frame from the parent, or None after ``timeout`` s; OSError when the line is gone."""
        while not self._ready:
            try:
                if not self._poll.poll(max(0.0, timeout) * 1000):
                    return None
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the worker line")
                self._ready.extend(self._frames.feed(data))
            except OSError:
                self.broken = True
                raise
        return self._ready.pop(0)

    def close(self) -> None:
        self.broken = True
        self.sock.close()


__all__ = ["MAX_FRAME", "Frames", "ParentLine", "encode"]
