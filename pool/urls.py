"""Outbound URLs (``http.get``, webhooks): one syntax check and one allow-list check, shared."""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)
def url_target(url: str) -> tuple[str, int]:
    """(host, port) the request will really go to, parsed by urllib3; the port defaults by scheme.

    Cached: jobs call the same few endpoints over and over, and urllib3's parser was ~7 % of the hub's time in
    W1b (a check at submit and again at run)."""
    from urllib3.util import parse_url
    parts = parse_url(url)
    return (parts.host or "").lower().strip("[]"), parts.port or (443 if parts.scheme == "https" else 80)


#: The ports a bare host on the allow-list stands for.
WEB_PORTS = (80, 443)


def parse_allowed_entry(entry: str) -> tuple[str, int | None]:
    """``host`` (ports 80 and 443), ``host:port``, ``host:*`` (any port) or ``[v6]:port`` -> (host, port|None|0).

    Returns port 0 for a bare host (the web ports), None for ``*``; ValueError for anything else."""
    text = entry.strip().lower()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "bad")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host or port == "bad":
        raise ValueError(f"{entry!r} is not host, host:port or host:*")
    if port == "":
        return host, 0
    if port == "*":
        return host, None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r}: the port must be 1-65535 or *")
    return host, int(port)


@functools.lru_cache(maxsize=64)
def _allow_list(allowed: tuple[str, ...]) -> frozenset:
    pairs = set()
    for entry in allowed:
        host, port = parse_allowed_entry(entry)
        pairs |= {(host, p) for p in WEB_PORTS} if port == 0 else {(host, port)}
    return frozenset(pairs)


def check_allowed(url: str, allowed) -> None:
    """Raise PermissionError unless the URL's host and port are on ``allowed`` (greenjobs.http.allowed_hosts):
    a bare host allows ports 80 and 443 only, so an allowed host's other services (a database, a broker on
    loopback) are not reachable by accident."""
    host, port = url_target(url)
    pairs = _allow_list(tuple(allowed))
    if (host, port) not in pairs and (host, None) not in pairs:
        raise PermissionError(f"{host}:{port} is not on greenjobs.http.allowed_hosts ({' '.join(allowed)}); a bare "
                              "host there allows ports 80 and 443, host:port or host:* others")
