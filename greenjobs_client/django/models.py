"""The outbox table: one row per job written in the application's transaction, until a relay has sent it."""
from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from greenjobs_client.client import job_spec


class OutboxJob(models.Model):
    """A job to submit: pending (``sent_at`` and ``rejected_at`` empty), sent (``job_id`` is the server's
    job) or rejected (the server refused it with a 4xx that retrying cannot fix; ``last_error`` says why).

    ``options`` holds ``Client.submit_with``'s options as the API takes them (a ``delay`` is stored as
    the ``run_at`` it means, so a late send does not delay the job further). ``attempts``,
    ``next_try_at`` and ``last_error`` are the relay's backoff after failed sends.
    """

    id = models.BigAutoField(primary_key=True)
    handler = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    # sent as the Idempotency-Key: a re-send (after a crash between send and mark) answers the same job
    idempotency_key = models.CharField(max_length=255, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    job_id = models.CharField(max_length=64, blank=True, default="")
    rejected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "greenjobs_outbox"
        verbose_name = "outbox job"
        # the relay's query (sent_at IS NULL AND next_try_at <= now) and the pruning of old sent rows
        indexes = [models.Index(fields=["sent_at", "next_try_at"], name="greenjobs_outbox_due")]

    def __str__(self) -> str:
        return f"outbox {self.pk} {self.handler} ({self.state})"

    @property
    def state(self) -> str:
        """``pending``, ``sent`` or ``rejected``."""
        return "sent" if self.sent_at else "rejected" if self.rejected_at else "pending"

    @property
    def rejected(self) -> bool:
        """Refused by the server for good: never sent again."""
        return self.rejected_at is not None

    def spec(self) -> dict[str, Any]:
        """The job as ``POST /jobs`` takes it: the same body on every send, so the server's Idempotency-Key
        check sees a repeat, not a conflict."""
        return job_spec(self.handler, self.args, self.kwargs, **self.options)
