"""Checks every request passes before any view runs: a path and query that decode, one body size limit.

A Pyramid tween at the top of the chain, so it holds for every route (JSON, forms, multipart, the
dashboard) and for the error views themselves: a path or query that is not UTF-8 is a 400, never a
500 of a view that reads ``request.path`` or ``request.GET``; a body larger than ``greenjobs.api.max_body`` is refused before
it is read (by its Content-Length) or as soon as a chunked body passes the limit.
"""
from __future__ import annotations

from urllib.parse import unquote_to_bytes

from pyramid.tweens import INGRESS

from greenjobs.server.problems import Problem, problem_response


class LimitedInput:
    """``wsgi.input`` that raises a 413 Problem once more than ``limit`` bytes have been read."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.read_so_far = stream, limit, 0

    def _count(self, data: bytes) -> bytes:
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise Problem(413, "Body too large", f"the body exceeds greenjobs.api.max_body={self.limit} bytes")
        return data

    def read(self, size: int = -1) -> bytes:
        """Read like the stream, at most one byte past the limit (then 413)."""
        room = self.limit + 1 - self.read_so_far
        return self._count(self.stream.read(room if size is None or size < 0 else min(size, room)))

    def readline(self, size: int = -1) -> bytes:
        """Read a line like the stream, at most one byte past the limit (then 413)."""
        room = self.limit + 1 - self.read_so_far
        return self._count(self.stream.readline(room if size is None or size < 0 else min(size, room)))

    def __iter__(self):
        return iter(self.readline, b"")


def guard_tween_factory(handler, registry):
    """The tween: 400 for an undecodable path or query, 413 for a body over greenjobs.api.max_body."""
    limit = registry.greenjobs_settings.api_max_body

    def guard(request):
        environ = request.environ
        try:
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return problem_response(400, "Malformed path", "the request path is not valid percent-encoded UTF-8")
        try:
            unquote_to_bytes(environ.get("QUERY_STRING", "").encode("latin-1")).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return problem_response(400, "Malformed query", "the query string is not valid percent-encoded UTF-8")
        text = environ.get("CONTENT_LENGTH") or ""
        length = int(text) if text.isascii() and text.isdigit() else None
        if length is not None and length > limit:
            response = problem_response(413, "Body too large", f"the body is {length} bytes; the limit is "
                                        f"greenjobs.api.max_body={limit} bytes (split large submissions)")
            response.headers["Connection"] = "close"
            return response
        if "wsgi.input" in environ:
            environ["wsgi.input"] = LimitedInput(environ["wsgi.input"], limit)
        return handler(request)

    return guard


def includeme(config) -> None:
    """Put the guard in front of every other tween and view."""
    config.add_tween("greenjobs.server.guard.guard_tween_factory", under=INGRESS)
