"""Settings of the HTTP API, and the one place where every package's table is parsed."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping

import greenjobs.pool.settings
from greenjobs.pool.settings import Setting, as_bool, as_float, as_int, as_str


def _entries(text: str) -> tuple[str, ...]:
    """Whitespace-separated entries, checked by greenjobs.server.security, whose messages never echo a token."""
    return tuple(str(text).split())


TABLE = (
    Setting("greenjobs.api.max_body", as_int(1024, 1 << 30), 1 << 20, "largest request body, in bytes (413 above)"),
    Setting("greenjobs.api.max_batch", as_int(1, 1_000_000), 10_000, "most jobs in one POST /jobs/batch"),
    Setting("greenjobs.api.max_wait", as_float(0.0, 3600.0), 60.0, "longest ?wait= a request may hold, in seconds"),
    Setting("greenjobs.api.read_timeout", as_float(0.1, 3600.0), 30.0, "seconds a client has to send a request body"),
    Setting("greenjobs.api.max_page", as_int(1, 10_000), 500, "largest ?limit= of GET /jobs"),
    Setting("greenjobs.api.idempotency_ttl", as_float(1.0, 366 * 86400.0), 86400.0,
            "seconds an Idempotency-Key is remembered"),
    Setting("greenjobs.auth.tokens", _entries, (),
            "bearer tokens: whitespace-separated TOKEN:ROLE[,ROLE] or sha256:HEX:ROLE[,ROLE]; roles read, submit, "
            "admin"),
    Setting("greenjobs.auth.insecure", as_bool, False,
            "serve a non-loopback address with no tokens (no access control)"),
    Setting("greenjobs.auth.session_secret", as_str, None,
            "signs dashboard session cookies (32+ characters); default random per start: sign-ins end at a restart"),
    Setting("greenjobs.auth.session_timeout", as_float(60.0, 30 * 86400.0), 28800.0,
            "seconds an idle dashboard session lasts"),
    Setting("greenjobs.auth.secure_cookie", as_bool, None,
            "Secure flag of the session cookie (HTTPS only); default on unless every bind address is loopback"),
)


def load(raw: Mapping[str, str], here: str) -> SimpleNamespace:
    """Parse every greenjobs.* setting once; paths default relative to ``here`` (the ini's folder)."""
    return greenjobs.pool.settings.load((TABLE,), raw, here)
