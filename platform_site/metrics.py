"""The web's Prometheus metrics, the request-timing middleware and the /metrics view.

gunicorn serves with several worker processes, each with its own counters; when
PROMETHEUS_MULTIPROC_DIR is set (it must be, under gunicorn with more than one worker,
and emptied at each deploy) prometheus_client keeps the values in files there and the
view sums every process's. Without it (runserver, tests) the process's own registry
is served. The queue figures are read from Redis at scrape time (`QueueCollector`), so
they are right whichever process answers.

/metrics answers 404 when METRICS_TOKEN is empty (nothing is exposed by accident) and
401 without ``Authorization: Bearer <METRICS_TOKEN>``.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               REGISTRY, generate_latest)
from prometheus_client.core import GaugeMetricFamily

from platform_site.middleware import HybridMiddleware

log = logging.getLogger("platform_site.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUEST_SECONDS = Histogram("web_request_seconds", "Request latency by URL route and status.",
                            ["route", "method", "status"], buckets=LATENCY_BUCKETS)
RENDERS_ACCEPTED = Counter("renders_accepted", "Renders created (credits reserved, job queued).")
RENDERS_SUCCEEDED = Counter("renders_succeeded", "Renders that ended with an output.")
RENDERS_FAILED = Counter("renders_failed", "Renders that ended failed, by error code.", ["code"])
CREDITS_CHARGED = Counter("credits_charged", "Credits captured for successful renders.")
RENDERS_WAITING = Gauge("renders_waiting", "Requests waiting on a render's outcome now.",
                        multiprocess_mode="livesum")
IDEMPOTENT_REPLAYS = Counter("idempotent_replays", "Answers replayed for a reused Idempotency-Key.")
RATE_LIMITED = Counter("rate_limited", "429 answers, by the limit that refused.", ["limit"])


def record_settled(render: Any) -> None:
    """Counts a render that has just ended (called once, by the state machine)."""
    if render.status == "succeeded":
        RENDERS_SUCCEEDED.inc()
        if render.credits_charged:
            CREDITS_CHARGED.inc(render.credits_charged)
    else:
        RENDERS_FAILED.labels(render.error_code or "unknown").inc()


class QueueCollector:
    """The "gpu" queue as Redis has it now: depth, age of the oldest job, workers alive."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from rq import Worker

        from imaging.dispatch import gpu_queue

        depth = GaugeMetricFamily("gpu_queue_depth", "Jobs waiting on the gpu queue.")
        age = GaugeMetricFamily("gpu_queue_oldest_job_age_seconds",
                                "Age of the oldest waiting job (0 when empty).")
        workers = GaugeMetricFamily("gpu_workers_alive", "rq workers registered on the gpu queue.")
        up = GaugeMetricFamily("gpu_queue_up", "1 when Redis answered this scrape.")
        try:
            queue = gpu_queue()
            depth.add_metric([], queue.count)
            oldest = queue.get_jobs(0, 0)
            enqueued = oldest[0].enqueued_at if oldest else None
            if enqueued is not None and enqueued.tzinfo is None:
                enqueued = enqueued.replace(tzinfo=timezone.utc)
            age.add_metric([], (datetime.now(timezone.utc) - enqueued).total_seconds() if enqueued else 0.0)
            workers.add_metric([], len(Worker.all(queue=queue)))
            up.add_metric([], 1)
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("queue metrics unavailable: %r", exc)
            up.add_metric([], 0)
            yield up
            return
        yield from (depth, age, workers, up)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(QueueCollector())
    return registry


class _Forward:
    """Serves the process's default registry inside a per-scrape one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        return self.source.collect()


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = str(getattr(settings, "METRICS_TOKEN", "") or "")
    if not token:
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        response = JsonResponse({"error": {"code": "authentication_failed",
                                           "message": "A valid metrics bearer token is required."}},
                                status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


class RequestMetricsMiddleware(HybridMiddleware):
    """Times each request by its URL pattern's route (never the raw path: ids would
    make one series per render) and status."""

    def before(self, request: HttpRequest) -> None:
        request.metrics_started = time.perf_counter()  # type: ignore[attr-defined]
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        started = getattr(request, "metrics_started", time.perf_counter())
        match = getattr(request, "resolver_match", None)
        route = (match.route or match.view_name) if match is not None else "unmatched"
        REQUEST_SECONDS.labels(route or "unmatched", request.method or "", str(response.status_code)).observe(
            time.perf_counter() - started)
        return response
