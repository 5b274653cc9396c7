"""Settings of the HTTP API, and the one place where every package's table is parsed."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping

import handlers.settings
import pool.settings
from pool.settings import Setting, as_float, as_int

TABLE = (
    Setting("greenjobs.api.max_body", as_int(1024, 1 << 30), 1 << 20, "largest request body, in bytes (413 above)"),
    Setting("greenjobs.api.max_batch", as_int(1, 1_000_000), 10_000, "most jobs in one POST /jobs/batch"),
    Setting("greenjobs.api.max_wait", as_float(0.0, 3600.0), 60.0, "longest ?wait= a request may hold, in seconds"),
    Setting("greenjobs.api.read_timeout", as_float(0.1, 3600.0), 30.0, "seconds a client has to send a request body"),
    Setting("greenjobs.api.max_page", as_int(1, 10_000), 500, "largest ?limit= of GET /jobs"),
    Setting("greenjobs.api.idempotency_ttl", as_float(1.0, 366 * 86400.0), 86400.0,
            "seconds an Idempotency-Key is remembered"),
)


def load(raw: Mapping[str, str], here: str) -> SimpleNamespace:
    """Parse every greenjobs.* setting once; paths default relative to ``here`` (the ini's folder)."""
    return pool.settings.load((handlers.settings.TABLE, TABLE), raw, here)
