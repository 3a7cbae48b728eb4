"""The web side of the GPU queue: enqueue a render, wait for it, read its outcome.

Only Redis is touched here, never the database; ``imaging.lifecycle`` turns what
this module observes into state changes and money.

The queue is rq's own ``Queue`` with the JSON serializer, not django-rq's: django-rq
4 defers ``enqueue`` to transaction commit, and the caller must know the job is in
Redis before it starts waiting for it. Jobs go out by dotted path, so the web never
imports the GPU worker (or torch).

Waiting is not a sleep-poll loop: rq appends every job outcome to a Redis stream
(``rq:results:<job id>``), and ``XREAD BLOCK`` on that stream returns the moment the
worker writes it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import redis
from django.conf import settings
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from imaging import storage_keys
from imaging.render_errors import render_failure_code

GPU_QUEUE = "gpu"
GPU_TASK = "gpu_worker.tasks.replace_background"

# A job's outcome must outlive the render's deadline, so that whoever looks last
# (a late GET, the sweeper) still finds it. Results are a few hundred bytes.
_MIN_RESULT_TTL_SECONDS = 3600


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # One pool per process and URL; redis-py pools are thread-safe and fork-aware.
    return redis.Redis.from_url(url, health_check_interval=30)


def redis_connection() -> redis.Redis:
    return _client(settings.RQ_QUEUES[GPU_QUEUE]["URL"])


def gpu_queue() -> Queue:
    return Queue(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer)


def result_ttl() -> int:
    return max(_MIN_RESULT_TTL_SECONDS, 2 * int(settings.RENDER_DEADLINE_SECONDS))


def job_timeout() -> int:
    # RQ_JOB_TIMEOUT (300 s) is below RENDER_DEADLINE_SECONDS (600 s) by default, so a
    # stuck job usually ends as a failed job (render_timeout) before the sweeper has to
    # step in; the deadline stays the authority either way.
    return max(1, int(settings.RQ_JOB_TIMEOUT))


def job_payload(render: Any) -> dict[str, Any]:
    """The small JSON dict the GPU worker receives (the contract of issue 5)."""
    return {
        "render_id": render.public_id,
        "input_key": render.input_key,
        "output_key": render.output_key,
        "matte_key": render.matte_key,
        "output_format": render.output_format,
        "scene_prompt": render.scene_prompt,
        "preserve_shadow": render.preserve_shadow,
        "seed": render.requested_seed,
    }


def enqueue_render(render: Any) -> Job:
    """Puts the render on the gpu queue. Re-enqueueing the same render replaces its job."""
    return gpu_queue().enqueue_call(
        GPU_TASK,
        args=(job_payload(render),),
        job_id=render.job_id,
        timeout=job_timeout(),
        # A job still queued at the render's deadline is not worth running: the
        # sweeper has failed the render and released its hold by then.
        ttl=int(settings.RENDER_DEADLINE_SECONDS),
        result_ttl=result_ttl(),
        failure_ttl=result_ttl(),
        description=f"render {render.public_id}",
    )


def cancel_job(job_id: str) -> None:
    """Best effort: a render that was given up on should not occupy a GPU later."""
    connection = redis_connection()
    # The id may outlive its job hash on the queue list (the hash expires with ttl).
    gpu_queue().remove(job_id)
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return
    if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        job.cancel()


@dataclass(frozen=True)
class Outcome:
    """How a render's job ended, in the API's terms (codes already mapped)."""

    succeeded: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""

    @classmethod
    def failure(cls, code: str, message: str) -> Outcome:
        return cls(False, {}, code, message)


@dataclass(frozen=True)
class JobState:
    """What Redis says about a render's job right now."""

    state: Literal["missing", "queued", "running", "ended"]
    outcome: Outcome | None = None
    stage: str | None = None
    started_at: datetime | None = None


def _valid_result(value: Any, job_payload_keys: dict[str, str]) -> bool:
    """A success is believed only if it names the files we asked for."""
    if not isinstance(value, dict):
        return False
    for name in ("output_key", "matte_key"):
        key = value.get(name)
        if not isinstance(key, str) or not storage_keys.is_servable(key):
            return False
        expected = job_payload_keys.get(name)
        if expected and key != expected:
            return False
    return isinstance(value.get("width"), int) and isinstance(value.get("height"), int)


def _failure_from_job(job: Job | None, exc_string: str | None) -> Outcome:
    error = (job.meta.get("error") if job is not None else None) or {}
    if isinstance(error, dict) and error.get("code"):
        code = render_failure_code(str(error["code"]))
        message = str(error.get("message") or "The render failed.")[:1000]
        if code == "render_failed" and error.get("code") != "render_failed":
            message = "The render failed."  # an unknown worker code's message is not for clients
        return Outcome.failure(code, message)
    text = exc_string or ""
    if "JobTimeoutException" in text:
        return Outcome.failure("render_timeout", "The render took longer than the worker's time limit.")
    if "AbandonedJobError" in text:
        return Outcome.failure("worker_lost", "The GPU worker stopped while running this render.")
    return Outcome.failure("render_failed", "The render failed.")


def _outcome_from_result(job_id: str, result: Result, expected: dict[str, str]) -> Outcome | None:
    if result.type == Result.Type.SUCCESSFUL:
        if _valid_result(result.return_value, expected):
            return Outcome(True, dict(result.return_value))
        return Outcome.failure("render_failed", "The worker returned an unusable result.")
    if result.type == Result.Type.RETRIED:
        return None  # not an end: the job runs again
    if result.type == Result.Type.STOPPED:
        return Outcome.failure("render_failed", "The render was stopped.")
    try:
        job: Job | None = Job.fetch(job_id, connection=redis_connection(), serializer=JSONSerializer)
    except NoSuchJobError:
        job = None
    return _failure_from_job(job, result.exc_string)


def _waiter_key(job_id: str) -> str:
    return f"imaging:waiter:{job_id}"


def wait_for_outcome(job_id: str, timeout: float, expected: dict[str, str] | None = None, *,
                     announce: bool = False) -> Outcome | None:
    """Blocks until the job has an outcome or ``timeout`` seconds pass; None if still running.

    ``announce`` marks the render as watched by a waiting request for the length of
    the wait (see ``has_waiter``); the mark goes out in the same round trip as the
    blocking read.
    """
    connection = redis_connection()
    key = Result.get_key(job_id)
    expected = expected or {}
    block_ms = int(timeout * 1000)
    if block_ms <= 0:
        entries = connection.xrevrange(key, "+", "-", count=1)
    else:
        pipe = connection.pipeline(transaction=False)
        if announce:
            pipe.set(_waiter_key(job_id), 1, px=block_ms + 5000)
        # XREAD BLOCK 0 would mean "forever"; block_ms is at least 1 here.
        pipe.xread({key: "0-0"}, block=block_ms)
        response = pipe.execute()[-1]
        entries = response[0][1][-1:] if response else []
    if not entries:
        return None
    result_id, payload = entries[-1]
    result = Result.restore(job_id, result_id.decode(), payload, connection=connection,
                            serializer=JSONSerializer)
    return _outcome_from_result(job_id, result, expected)


def stop_waiting(job_id: str) -> None:
    redis_connection().delete(_waiter_key(job_id))


def has_waiter(job_id: str) -> bool:
    """True while a request is blocked on this job's outcome and will settle it itself.

    The settle job then leaves the render to that request instead of racing it for
    the render's row lock (which would make the request wait for the loser).
    """
    return bool(redis_connection().exists(_waiter_key(job_id)))


def observe(job_id: str, expected: dict[str, str] | None = None) -> JobState:
    """One look at the job, without waiting."""
    connection = redis_connection()
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        # The job hash may be gone while its outcome stream survives (different TTLs).
        outcome = wait_for_outcome(job_id, 0, expected)
        return JobState("ended", outcome) if outcome is not None else JobState("missing")
    status = job.get_status(refresh=False)
    stage = job.meta.get("stage") if isinstance(job.meta, dict) else None
    if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        outcome = wait_for_outcome(job_id, 0, expected)
        if outcome is None:
            if status == JobStatus.FINISHED:
                outcome = Outcome.failure("render_failed", "The worker's result was lost.")
            elif status == JobStatus.FAILED:
                outcome = _failure_from_job(job, None)
            else:
                outcome = Outcome.failure("render_failed", "The render was cancelled.")
        return JobState("ended", outcome, stage, job.started_at)
    if status == JobStatus.STARTED:
        return JobState("running", None, stage, job.started_at)
    return JobState("queued", None, stage)


def reap_abandoned_jobs() -> None:
    """Lets rq mark jobs of dead workers as failed (AbandonedJobError → worker_lost)."""
    StartedJobRegistry(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer).cleanup()
