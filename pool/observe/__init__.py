"""Seeing jobs: lifecycle events (GET /events), metrics, signals and webhooks, each a listener."""
