"""Read a JSON request body within the limits: content type, size, read time, nesting, NaN."""
from __future__ import annotations

import json
import math
from typing import Any

import gevent

from greenjobs.server.problems import Problem

JSON_TYPES = ("application/json",)


MAX_DEPTH = 32


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def _check_depth(value: Any) -> None:
    """Reject nesting deeper than MAX_DEPTH, iteratively: deep data must never reach the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise Problem(400, "Malformed JSON", f"the JSON body is nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def read_json(request, max_body: int, read_timeout: float) -> Any:
    """The parsed body, or a Problem: 415 not JSON, 413 too large, 408 too slow, 400 malformed or cut short."""
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
    except (OSError, ValueError) as exc:     # pywsgi: closed before the announced length, or bad chunking
        raise Problem(400, "Incomplete body", f"the request body could not be read ({exc}); send the whole "
                                              f"body its Content-Length announces, or valid chunks") from None
    if len(raw) > max_body:
        raise Problem(413, "Body too large", f"the body exceeds greenjobs.api.max_body={max_body} bytes")
    if not raw:
        raise Problem(400, "Empty body", "the request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        raise Problem(400, "Malformed JSON", f"the JSON body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise Problem(400, "Malformed JSON", f"the body is not valid JSON: {exc}") from None
    _check_depth(data)
    return data
