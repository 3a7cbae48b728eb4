"""What the live GPU workers can render, as they announced it in rq's worker registry.

Each GPU worker writes its capabilities (``{"engine", "studio", "diffusion"}``) into its
own rq worker hash at start (``gpu_worker.worker.GpuWorker.register_birth``); the hash
expires with the worker's heartbeat, so only live workers count. The playground uses it
to suggest studio prompts when no worker has a diffusion model: a new user on a fresh
machine then sees what works instead of a 503 for the first scene prompt they try.
"""

from __future__ import annotations

import json
import logging
import time

import redis
from rq.worker import Worker

from imaging import dispatch

log = logging.getLogger(__name__)

# Shared by name with gpu_worker.worker.CAPABILITIES_FIELD (the sides share Redis, not code).
CAPABILITIES_FIELD = "pixelapi_capabilities"
# The playground asks on every page view; workers come and go far more slowly.
CACHE_SECONDS = 10.0

_cache: tuple[float, dict[str, bool] | None] = (0.0, None)


def live_capabilities() -> dict[str, bool] | None:
    """{"studio": any live worker has it, "diffusion": ...}; None when no worker is known."""
    global _cache
    checked_at, value = _cache
    if time.monotonic() - checked_at < CACHE_SECONDS:
        return value
    try:
        value = _read()
    except (redis.RedisError, OSError):
        log.warning("could not read the GPU workers' capabilities", exc_info=True)
        value = None
    _cache = (time.monotonic(), value)
    return value


def _read() -> dict[str, bool] | None:
    connection = dispatch.redis_connection()
    keys = sorted(Worker.all_keys(queue=dispatch.gpu_queue()))
    if not keys:
        return None
    found = {"studio": False, "diffusion": False}
    known = False
    with connection.pipeline() as pipeline:
        for key in keys:
            pipeline.hget(key, CAPABILITIES_FIELD)
        answers = pipeline.execute()
    for answer in answers:
        try:
            announced = json.loads(answer) if answer else None
        except ValueError:
            announced = None
        if not isinstance(announced, dict):
            continue
        known = True
        for engine in found:
            found[engine] = found[engine] or bool(announced.get(engine))
    return found if known else None


def diffusion_installed() -> bool | None:
    """True when a live GPU worker can paint scene prompts, False when none can, None if unknown."""
    capabilities = live_capabilities()
    return None if capabilities is None else capabilities["diffusion"]


def forget() -> None:
    """Drops the cached answer (tests, and a worker that just started)."""
    global _cache
    _cache = (0.0, None)
