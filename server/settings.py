"""Settings of the HTTP API, and the one place where every package's table is parsed."""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Mapping

import handlers.settings
import pool.settings
from pool.settings import Setting, as_float, as_int, parse

TABLE = (
    Setting("greenjobs.api.max_body", as_int(1024, 1 << 30), 1 << 20, "largest request body, in bytes (413 above)"),
    Setting("greenjobs.api.max_batch", as_int(1, 1_000_000), 10_000, "most jobs in one POST /jobs/batch"),
    Setting("greenjobs.api.max_wait", as_float(0.0, 3600.0), 60.0, "longest ?wait= a request may hold, in seconds"),
    Setting("greenjobs.api.read_timeout", as_float(0.1, 3600.0), 30.0, "seconds a client has to send a request body"),
    Setting("greenjobs.api.max_page", as_int(1, 10_000), 500, "largest ?limit= of GET /jobs"),
)


def load(raw: Mapping[str, str], here: str) -> SimpleNamespace:
    """Parse every greenjobs.* setting once; paths default relative to ``here`` (the ini's folder)."""
    settings = parse((pool.settings.TABLE, handlers.settings.TABLE, TABLE), raw, defaults={
        "greenjobs.store.url": "sqlite:///" + os.path.join(here, "var", "greenjobs.sqlite"),
    })
    path = settings.store_url[len("sqlite:///"):]
    settings.store_path = path if os.path.isabs(path) else os.path.join(here, path)
    return settings
