"""The worker process: RQ's SimpleWorker on the "gpu" queue, models loaded once.

Why SimpleWorker: RQ's default worker forks a child per job, and a CUDA context does
not survive fork; loading multi-gigabyte models per job would be absurd anyway. So jobs
run in the process that loaded the models. Restarting after `--max-jobs` renders (the
supervisor starts a fresh process) bounds any slow leak.

SIGTERM (and Ctrl-C) is a warm shutdown: RQ lets the current render finish, then the
process exits; a second signal stops at once. A worker that dies mid-render stops
heartbeating; the Django side then retries the render once on another worker, and
fails and refunds it only if that one is lost too.

Settlement: when a render ends, successfully or not, the worker enqueues
``imaging.tasks.settle_render(render_id)`` on the "default" queue (JSON serializer) so
the Django side settles the credits even if no web request is waiting. It is done here,
after RQ has saved the job's final status and result, not from inside the task or an
RQ callback (both run before that save), so the settle job always sees the final state.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

log = logging.getLogger("gpu_worker.worker")

SETTLE_QUEUE = "default"
SETTLE_TASK = "imaging.tasks.settle_render"


# Shared by name with imaging.dispatch (the two sides share Redis, not code).
WAITER_KEY_PREFIX = "imaging:waiter:"
# Field of rq's worker hash holding this worker's capabilities (imaging.worker_capabilities).
CAPABILITIES_FIELD = "pixelapi_capabilities"


def redis_client(url: str, *, connect_timeout: float, socket_timeout: float) -> Redis:
    """The worker's Redis client, every timeout explicit (as the web side's clients).

    rq raises the socket timeout of a worker's connection above its dequeue block
    (``BaseWorker._set_connection``), so the blocking dequeue never times out early.
    """
    # Retries a dropped connection, not a timeout (see imaging.redis_clients.retry_policy).
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2, supported_errors=(RedisConnectionError,))
    return Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                          retry=retry, health_check_interval=30)


def request_settlement(connection: Redis, job: Job) -> None:
    """Enqueues the Django-side settlement of the job's render (never raises)."""
    try:
        payload: Any = job.args[0] if job.args else None
        render_id = payload.get("render_id") if isinstance(payload, dict) else None
    except Exception:  # an undeserialisable job has no render to settle
        render_id = None
    if not isinstance(render_id, str):
        log.warning("job %s has no render_id; nothing to settle", job.id)
        return
    try:
        # A web request blocked on this job settles it itself (imaging.dispatch marks
        # the wait under this key); a settle job would only stand aside, at ~10 ms of
        # CPU per render. If that request dies, GET or the sweeper settles instead.
        if connection.exists(f"{WAITER_KEY_PREFIX}{job.id}"):
            return
    except Exception:
        log.exception("could not check for a waiting request; enqueueing settlement")
    try:
        Queue(SETTLE_QUEUE, connection=connection, serializer=JSONSerializer).enqueue(
            SETTLE_TASK, render_id, job.id)
    except Exception:
        # The sweeper settles renders nobody settled; losing this signal costs latency only.
        log.exception("could not enqueue settlement for render %s", render_id)


class GpuWorker(SimpleWorker):
    """Runs renders in-process, heartbeats while it does, and asks for settlement.

    rq's SimpleWorker heartbeats only between jobs, with a TTL of the job timeout plus
    a minute, so a worker killed mid-render would be noticed minutes later. Here a
    thread renews the job's execution every third of ``heartbeat_ttl`` while the render
    runs: a worker that dies (kill -9, OOM, a lost machine) stops renewing, and the
    web side's reaping (``StartedJobRegistry.cleanup``) marks its job abandoned within
    ``heartbeat_ttl`` seconds, which retries the render on another worker.
    """

    def __init__(self, *args: Any, heartbeat_ttl: int = 30,
                 capabilities: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.render_heartbeat_ttl = heartbeat_ttl
        self.capabilities = capabilities or {}
        super().__init__(*args, **kwargs)

    def register_birth(self) -> None:
        """Also says what this worker can render, in rq's own worker hash.

        The hash lives exactly as long as rq keeps the worker registered (it expires
        with the worker's heartbeat), so the web side reads live workers' capabilities
        (``imaging.worker_capabilities``) without a registry of its own.
        """
        super().register_birth()
        if self.capabilities:
            self.connection.hset(self.key, CAPABILITIES_FIELD, json.dumps(self.capabilities))

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """An expected render failure (a RenderError with its code) is one WARNING line
        without a traceback; anything else keeps rq's ERROR line with the traceback."""
        from rq.worker.base import call_exception_handlers

        from gpu_worker.errors import RenderError

        exc = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(exc, RenderError) and exc.code != "render_failed":
            self.log.warning("job %s failed: %s", job.id, exc, extra={"code": exc.code})
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.render_heartbeat_ttl

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, stop), daemon=True,
                                name=f"heartbeat {job.id}")
        beat.start()
        try:
            return super().perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join(timeout=5)
            request_settlement(self.connection, job)

    def _beat(self, job: Job, execution: Any, stop: threading.Event) -> None:
        interval = max(1.0, self.render_heartbeat_ttl / 3)
        while not stop.wait(interval):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:  # Redis away for a moment: the next beat tries again
                log.warning("heartbeat for job %s failed", job.id, exc_info=True)


def run_worker(redis_url: str, queue: str = "gpu", burst: bool = False,
               max_jobs: int | None = None, name: str | None = None, *,
               connect_timeout: float = 2.0, socket_timeout: float = 5.0,
               heartbeat_ttl: int = 30, capabilities: dict[str, Any] | None = None) -> bool:
    """Takes jobs until stopped (or the queue is empty, with `burst`)."""
    connection = redis_client(redis_url, connect_timeout=connect_timeout, socket_timeout=socket_timeout)
    worker = GpuWorker([queue], connection=connection, serializer=JSONSerializer, name=name,
                       heartbeat_ttl=heartbeat_ttl, capabilities=capabilities)
    return worker.work(burst=burst, max_jobs=max_jobs, logging_level="INFO")
