"""JSON over HTTP with urllib3: pooled keep-alive connections, bounded retries, typed errors.

One ``Transport`` is shared by every thread of a process (urllib3's pool is thread-safe). A request
is sent again only when that cannot make a second job: always when the connection was never made,
on 429/503 (the server stored nothing), and after a broken connection or a read timeout only when
the caller says the request is repeat-safe (a GET, or a submit under an idempotency key).
"""
from __future__ import annotations

import json
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from greenjobs_client.errors import ConnectionFailed, ServerError, error_for

RETRY_STATUSES = (429, 503)


def encode(body: Any) -> bytes:
    """Compact JSON; anything that is not JSON (a datetime, a set, NaN) is refused here, before any I/O."""
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job arguments and options must be JSON values (str, int, float, bool, None, "
                        f"list, dict): {exc}") from None


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class Transport:
    """Sends JSON requests to one greenjobs server and decodes JSON answers."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0, retries: int = 5,
                 max_retry_wait: float = 30.0, headers: dict[str, str] | None = None, pool_maxsize: int = 10):
        """``timeout``: seconds to connect and to wait for an answer (plus the ``wait`` of a long-poll).
        ``retries``: how many times one request may be sent again; ``max_retry_wait``: the longest
        pause between two sends (a longer Retry-After is shortened to it)."""
        url = urllib3.util.parse_url(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:6543 (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.max_retry_wait = timeout, retries, max_retry_wait
        self.headers = {"Accept": "application/json, application/problem+json", "User-Agent": "greenjobs-client"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.headers.update(headers or {})
        # block=False: a burst of threads opens extra connections instead of queueing behind the pool
        self.pool = urllib3.PoolManager(maxsize=pool_maxsize, block=False, retries=False)

    def close(self) -> None:
        """Close the pooled connections (e.g. at exit); a later request opens new ones."""
        self.pool.clear()

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None,
                headers: dict[str, str] | None = None, wait: float = 0.0,
                resend: bool | None = None) -> tuple[int, Any, Any]:
        """Send and decode; returns (status, JSON body, headers) of a 2xx answer, raises RequestFailed otherwise.

        ``wait``: seconds the server may hold the request (a long-poll), added to the read timeout.
        ``resend``: whether the request may be sent again after it may have reached the server
        (default: only for GET).
        """
        if resend is None:
            resend = method == "GET"
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        data = encode(body) if body is not None else None
        all_headers = dict(self.headers, **(headers or {}))
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout + wait)
        attempt = 0
        while True:
            try:
                response = self.pool.request(method, url, body=data, headers=all_headers, timeout=timeout,
                                             redirect=False)
            except (NewConnectionError, ConnectTimeoutError) as exc:     # never reached the server
                if attempt >= self.retries:
                    raise ConnectionFailed(f"cannot connect to {self.base_url}: {exc}") from exc
            except HTTPError as exc:        # reset, closed mid-answer, read timeout: it may have been stored
                if not resend or attempt >= self.retries:
                    raise ConnectionFailed(f"{method} {path} to {self.base_url} broke off ({exc}); "
                                           f"it may or may not have been carried out") from exc
            else:
                status = response.status
                pause = retry_after(response.headers.get("Retry-After"))
                if status in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(min(self.max_retry_wait, pause if pause is not None else self._backoff(attempt)))
                    attempt += 1
                    continue
                return status, self._decode(response, status, pause), response.headers
            time.sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Full jitter up to 0.1·2^attempt seconds, at most max_retry_wait."""
        return random.uniform(0, min(self.max_retry_wait, 0.1 * 2 ** attempt))

    @staticmethod
    def _decode(response, status: int, pause: float | None) -> Any:
        raw = response.data
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            if 200 <= status < 300:
                raise ServerError(status, "Not JSON", f"the server answered {status} with a body that is not "
                                  f"JSON: {raw[:200]!r}; is the URL a greenjobs server?") from None
            data = {"title": response.reason or "", "detail": raw[:500].decode(errors="replace")}
        if 200 <= status < 300:
            return data
        raise error_for(status, data if isinstance(data, dict) else {}, pause)
