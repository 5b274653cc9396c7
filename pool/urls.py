"""Outbound URLs (``http.get``, webhooks): one syntax check and one allow-list check, shared."""
from __future__ import annotations

from urllib.parse import urlsplit


_pool = None


def http_pool():
    """The one outbound connection pool of this process (http.get and webhooks share it), made on
    first use, after gevent has patched sockets; no retries or redirects of its own."""
    global _pool
    if _pool is None:
        import urllib3
        _pool = urllib3.PoolManager(num_pools=64, maxsize=1000, block=False, retries=False)
    return _pool


def check_url(url, field: str) -> None:
    """Raise ValueError("<field> ...: what to fix") unless ``url`` is a plain absolute http(s) URL."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ValueError(f"{field} must be a string of at most 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an absolute http:// or https:// URL")
    if "\\" in url or "@" in parts.netloc or any(ord(c) < 33 for c in url):
        raise ValueError(f"{field} must not contain user info, backslashes, spaces or control characters")


def url_host(url: str) -> str:
    """The host the request will really go to, parsed by the same parser that makes it (urllib3)."""
    from urllib3.util import parse_url
    return (parse_url(url).host or "").lower().strip("[]")


def check_allowed(url: str, allowed) -> None:
    """Raise PermissionError unless the URL's host is on ``allowed`` (greenjobs.http.allowed_hosts)."""
    host = url_host(url)
    if host not in allowed:
        raise PermissionError(f"host {host!r} is not on greenjobs.http.allowed_hosts ({' '.join(allowed)})")
