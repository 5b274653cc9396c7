"""URL routes of the HTTP API (one table, so the OpenAPI test can walk it)."""

ROUTES = (
    ("jobs", "/jobs"),
    ("jobs_batch", "/jobs/batch"),
    ("job", "/jobs/{id}"),
    ("job_retry", "/jobs/{id}/retry"),
    ("batch", "/batches/{id}"),
    ("handlers", "/handlers"),
    ("health", "/health"),
    ("servers", "/servers"),
    ("server_workers", "/servers/{owner}/workers"),
    ("throughput", "/throughput"),
    ("workflows", "/workflows"),
    ("workflow", "/workflows/{id}"),
    ("schedules", "/schedules"),
    ("schedule", "/schedules/{name}"),
    ("schedule_pause", "/schedules/{name}/pause"),
    ("schedule_resume", "/schedules/{name}/resume"),
    ("schedule_run", "/schedules/{name}/run"),
    ("openapi", "/openapi.json"),
    ("session", "/session"),
    ("events", "/events"),
    ("metrics", "/metrics"),
)


def includeme(config) -> None:
    """Pyramid include hook: add every route of ROUTES (views attach to them by name)."""
    for name, pattern in ROUTES:
        config.add_route(name, pattern)
