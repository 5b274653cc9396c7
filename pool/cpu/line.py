"""The direct line between a server and each cpu worker it supervises: a socket pair made at spawn.

Over the broker a claim, its answer and a result are three messages, each a commit and a wake-up in two
processes (on the embedded broker 0.5-1.2 ms apiece here); over this line each is one write and one read.
It carries only what a supervised worker says to its own parent and the parent's answers: the claim is
still judged by the ledger (the same ``claim_for_worker``), the result still recorded by the same fence.
Jobs themselves keep coming over the broker, durable, and the broker stays the fallback: a worker whose
line is gone (or whose result the parent could not record) publishes to the control queue as before.

Frames are JSON objects, one per line (``json.dumps`` never writes a raw newline); only these two
processes hold the ends, and a frame over the limit closes the line.  A worker's send has a deadline (a
stopped or stalled server must not hang the worker's main thread, which keeps the broker's heartbeats
and the job's time limit); a send that fails or times out breaks the line for good, and the broker
carries the rest.
"""
from __future__ import annotations

import json
import select
import socket

#: Largest frame either side accepts by default; a server allows twice greenjobs.job.max_result_bytes
#: when that is more (a result carries at most that much, JSON-escaped).
MAX_FRAME = 64 * 1024 * 1024
#: Seconds a worker's send may take before its line counts as broken.
SEND_TIMEOUT = 5.0


def encode(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(raw: bytes) -> dict | None:
    """One frame's object (None for a JSON value that is not an object); ConnectionError if undecodable."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ConnectionError("an undecodable frame on the worker line") from None
    return body if isinstance(body, dict) else None


class Frames:
    """Splits what a socket delivers into raw frames (each scanned once for its end, however many reads it
    took)."""

    def __init__(self, max_frame: int | None = None):
        self.max_frame = max_frame or MAX_FRAME
        self._buf = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._buf)
                if self._scanned > self.max_frame:
                    raise ConnectionError("a frame on the worker line is too large")
                return frames
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end + 1]
            self._scanned = 0


class ParentLine:
    """The worker's end (plain blocking socket; the worker has no gevent).  One request at a time: the
    worker asks, then waits for the answer with the same ``corr``."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.sock.settimeout(SEND_TIMEOUT)        # (reads wait in poll() first, so only sends use it)
        self._frames = Frames()
        self._ready: list = []
        self._poll = select.poll()          # (not select(): it fails for a descriptor numbered 1024 or more)
        self._poll.register(self.sock, select.POLLIN)
        self.broken = False

    def send(self, body: dict) -> None:
        """Send one frame; OSError (the line now broken, and closed: a frame cut short must not be read as
        another) when it failed or took over SEND_TIMEOUT."""
        try:
            self.sock.sendall(encode(body))
        except OSError:
            self.close()
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
                self._ready.extend(body for body in map(decode, self._frames.feed(data)) if body is not None)
            except OSError:
                self.close()
                raise
        return self._ready.pop(0)

    def close(self) -> None:
        self.broken = True
        try:
            self.sock.close()
        except OSError:
            pass


__all__ = ["MAX_FRAME", "SEND_TIMEOUT", "Frames", "ParentLine", "decode", "encode"]
