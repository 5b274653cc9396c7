"""Small helpers shared by the client tests."""
from __future__ import annotations

from greenjobs_client import Client


def jobs_with(client: Client, handler: str, marker: str) -> list[dict]:
    """Every job of ``handler`` on the server whose kwargs carry ``marker``."""
    return [job for job in client.jobs(handler=handler, page_size=500) if job["kwargs"].get("marker") == marker]
