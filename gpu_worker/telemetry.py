"""The GPU worker's Prometheus metrics, served on its own port (Django-free).

One process per worker and no fork per job, so prometheus_client's default registry is
enough (no multiprocess mode). `WORKER_METRICS_PORT` unset: nothing is served.
`WORKER_METRICS_ADDR` defaults to 127.0.0.1: a scraper on another machine needs it set
on purpose, since the page names render ids.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

log = logging.getLogger("gpu_worker.telemetry")

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# The stages of the task's timings that are exported (milliseconds in the result).
EXPORTED_STAGES = ("read", "decode", "matting", "scene", "compose", "encode", "verify", "write", "total")

STAGE_SECONDS = Histogram("gpu_render_stage_seconds", "Time per pipeline stage of a render.",
                          ["stage"], buckets=STAGE_BUCKETS)
RENDERS = Counter("gpu_renders", "Renders finished by this worker, by scene engine and outcome.",
                  ["engine", "outcome"])
FAILURES = Counter("gpu_render_failures", "Renders this worker failed, by error code.", ["code"])
MODEL_LOAD_SECONDS = Gauge("gpu_model_load_seconds", "How long loading the models took at start.")
DEVICE_MEMORY_PEAK = Gauge("gpu_device_memory_peak_bytes",
                           "torch.cuda.max_memory_allocated after the last render (CUDA only).")
BUSY = Gauge("gpu_worker_busy", "1 while a render runs.")
CURRENT_JOB = Info("gpu_worker_current_job", "The render being run now (empty when idle).")


def serve(env: Mapping[str, str] = os.environ) -> int | None:
    """Starts the metrics HTTP server when WORKER_METRICS_PORT is set; returns its port."""
    port = (env.get("WORKER_METRICS_PORT") or "").strip()
    if not port:
        return None
    addr = (env.get("WORKER_METRICS_ADDR") or "127.0.0.1").strip()
    start_http_server(int(port), addr=addr)
    log.info("metrics on http://%s:%s/metrics", addr, port)
    return int(port)


def job_started(render_id: str, job_id: str) -> None:
    BUSY.set(1)
    CURRENT_JOB.info({"render_id": render_id, "job_id": job_id})


def job_finished() -> None:
    BUSY.set(0)
    CURRENT_JOB.info({"render_id": "", "job_id": ""})
    _record_device_memory()


def render_succeeded(timings_ms: Mapping[str, float], engine: str) -> None:
    for stage in EXPORTED_STAGES:
        if stage in timings_ms:
            STAGE_SECONDS.labels(stage).observe(float(timings_ms[stage]) / 1000.0)
    RENDERS.labels(engine or "unknown", "succeeded").inc()


def render_failed(code: str, engine: str = "unknown") -> None:
    RENDERS.labels(engine, "failed").inc()
    FAILURES.labels(code).inc()


def _record_device_memory() -> None:
    """Only when torch is already loaded and on CUDA: never imports torch for this."""
    import sys

    torch: Any = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            DEVICE_MEMORY_PEAK.set(torch.cuda.max_memory_allocated())
    except Exception:  # a metric must never fail a render
        log.debug("could not read CUDA memory", exc_info=True)
