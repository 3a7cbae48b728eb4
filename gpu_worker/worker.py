"""The worker process: RQ's SimpleWorker on the "gpu" queue, models loaded once.

Why SimpleWorker: RQ's default worker forks a child per job, and a CUDA context does
not survive fork; loading multi-gigabyte models per job would be absurd anyway. So jobs
run in the process that loaded the models. Restarting after `--max-jobs` renders (the
supervisor starts a fresh process) bounds any slow leak.

SIGTERM (and Ctrl-C) is a warm shutdown: RQ lets the current render finish, then the
process exits; a second signal stops at once. The render sweeper on the Django side
fails and refunds whatever a killed worker left behind.

Settlement: when a render ends, successfully or not, the worker enqueues
``imaging.tasks.settle_render(render_id)`` on the "default" queue (JSON serializer) so
the Django side settles the credits even if no web request is waiting. It is done here,
after RQ has saved the job's final status and result, not from inside the task or an
RQ callback (both run before that save), so the settle job always sees the final state.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

log = logging.getLogger("gpu_worker.worker")

SETTLE_QUEUE = "default"
SETTLE_TASK = "imaging.tasks.settle_render"


# Shared by name with imaging.dispatch (the two sides share Redis, not code).
WAITER_KEY_PREFIX = "imaging:waiter:"


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
            SETTLE_TASK, render_id)
    except Exception:
        # The sweeper settles renders nobody settled; losing this signal costs latency only.
        log.exception("could not enqueue settlement for render %s", render_id)


class GpuWorker(SimpleWorker):
    """Runs renders in-process and asks the Django side to settle each one."""

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        try:
            return super().perform_job(job, queue, execution)
        finally:
            request_settlement(self.connection, job)


def run_worker(redis_url: str, queue: str = "gpu", burst: bool = False,
               max_jobs: int | None = None, name: str | None = None) -> bool:
    """Takes jobs until stopped (or the queue is empty, with `burst`)."""
    connection = Redis.from_url(redis_url)
    worker = GpuWorker([queue], connection=connection, serializer=JSONSerializer, name=name)
    return worker.work(burst=burst, max_jobs=max_jobs, logging_level="INFO")
