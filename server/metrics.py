"""``GET /metrics``: Prometheus text format, from a registry of the app's own (pool/metrics.py)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pyramid.response import Response
from pyramid.view import view_config

from greenjobs.pool.observe.metrics import Collector


@view_config(route_name="metrics", request_method="GET", permission="read")
def metrics(request):
    """GET /metrics: the app's metrics in the Prometheus text exposition format."""
    return Response(generate_latest(request.registry.greenjobs_metrics), content_type=CONTENT_TYPE_LATEST.split(";")[0],
                    charset="utf-8")


def includeme(config) -> None:
    """Give the app a collector registry of its own (not the process-global one) and add the view."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(config.registry.greenjobs_runtime))
    config.registry.greenjobs_metrics = registry
    config.scan("greenjobs.server.metrics")
