"""Read a JSON request body within the limits: content type, size, read time, nesting, NaN."""
from __future__ import annotations

import json
from typing import Any

import gevent

from server.problems import Problem

JSON_TYPES = ("application/json",)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(request, max_body: int, read_timeout: float) -> Any:
    """The parsed body, or a Problem: 415 not JSON, 413 too large, 408 too slow, 400 malformed."""
    ctype = (request.content_type or "").lower()
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise Problem(415, "Unsupported media type",
                      f"send the body as JSON with 'Content-Type: application/json' (got {ctype or 'none'!r})")
    length = request.content_length
    if length is not None and length > max_body:
        raise Problem(413, "Body too large",
                      f"the body is {length} bytes; the limit is greenjobs.api.max_body={max_body} bytes"
                      " (split large submissions into several batches)")
    stream = request.environ["wsgi.input"]
    try:
        with gevent.Timeout(read_timeout):
            raw = stream.read(min(length, max_body + 1) if length is not None else max_body + 1)
    except gevent.Timeout:
        raise Problem(408, "Request timeout", f"the body was not received within {read_timeout} s") from None
    if len(raw) > max_body:
        raise Problem(413, "Body too large", f"the body exceeds greenjobs.api.max_body={max_body} bytes")
    if not raw:
        raise Problem(400, "Empty body", "the request body is empty; send a JSON object")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise Problem(400, "Malformed JSON", "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise Problem(400, "Malformed JSON", f"the body is not valid JSON: {exc}") from None
