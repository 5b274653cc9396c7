"""The JobStore interface: what every ledger backend provides, in terms of Jobs only.

Placeholder for slice 1; the full contract is written with the store seam.
"""
from __future__ import annotations

from typing import Protocol


class Pending(Protocol):
    """A write queued for the next commit: ``get()`` waits for it and says whether it took effect."""

    def get(self) -> bool: ...


class JobStore(Protocol):
    """The durable job ledger."""
