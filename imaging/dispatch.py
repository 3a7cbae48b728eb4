"""The web side of the GPU queue: enqueue a render, wait for it, read its outcome.

Only Redis is touched here, never the database; ``imaging.lifecycle`` turns what
this module observes into state changes and money.

The queue is rq's own ``Queue`` with the JSON serializer, not django-rq's: django-rq
4 defers ``enqueue`` to transaction commit, and the caller must know the job is in
Redis before it starts waiting for it. Jobs go out by dotted path, so the web never
imports the GPU worker (or torch).

Each attempt of a render is its own job (``storage_keys.job_id``), enqueued with
rq's ``unique=True`` so that two observers re-enqueueing the same attempt cannot
queue it twice. Once a render has ended, ``imaging:render-job:<render id>`` says
``settled``; a GPU worker that dequeues a job of a settled render skips it.

Waiting is not a sleep-poll loop: rq appends every job outcome to a Redis stream
(``rq:results:<job id>``), and ``XREAD BLOCK`` on that stream returns the moment the
worker writes it. Long waits are made of blocking reads of at most
``redis_clients.BLOCK_SLICE_SECONDS``, each on a client whose socket timeout is
longer than the slice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import redis
from django.conf import settings
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from imaging import redis_clients, storage_keys
from imaging.render_errors import render_failure_code

GPU_QUEUE = "gpu"
GPU_TASK = "gpu_worker.tasks.replace_background"

# Shared by name with gpu_worker.worker and gpu_worker.tasks (the two sides share
# Redis, not code).
WAITER_KEY_PREFIX = "imaging:waiter:"
RENDER_JOB_KEY_PREFIX = "imaging:render-job:"
SETTLED = "settled"

# A job's outcome must outlive the render's deadline, so that whoever looks last
# (a late GET, the sweeper) still finds it. Results are a few hundred bytes.
_MIN_RESULT_TTL_SECONDS = 3600


def redis_connection() -> redis.Redis:
    """The client for ordinary (non-blocking) commands."""
    return redis_clients.commands()


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
    """The small JSON dict the GPU worker receives (see gpu_worker.tasks)."""
    return {
        "render_id": render.public_id,
        "attempt": render.attempt,
        "input_key": render.input_key,
        "output_key": render.output_key,
        "matte_key": render.matte_key,
        "output_format": render.output_format,
        "scene_prompt": render.scene_prompt,
        "preserve_shadow": render.preserve_shadow,
        # Chosen at submission when the client sent none, so a retry on another
        # worker paints the same scene.
        "seed": render.seed,
    }


def _render_job_key(public_id: str) -> str:
    return f"{RENDER_JOB_KEY_PREFIX}{public_id}"


def enqueue_render(render: Any) -> bool:
    """Queues the render's current attempt; False if that job is already in Redis."""
    try:
        gpu_queue().enqueue_call(
            GPU_TASK,
            args=(job_payload(render),),
            job_id=render.job_id,
            timeout=job_timeout(),
            # A job still queued at the render's deadline is not worth running: the
            # sweeper has failed the render and released its hold by then.
            ttl=int(settings.RENDER_DEADLINE_SECONDS),
            result_ttl=result_ttl(),
            failure_ttl=result_ttl(),
            description=f"render {render.public_id} attempt {render.attempt}",
            unique=True,
        )
    except DuplicateJobError:
        return False
    return True


def mark_settled(public_id: str) -> None:
    """Tells GPU workers the render has ended: any job of it still queued is skipped."""
    redis_connection().set(_render_job_key(public_id), SETTLED, ex=result_ttl())


def ping() -> None:
    """Raises redis.RedisError unless the queue's Redis answers."""
    redis_connection().ping()


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
    """How a job ended, in the API's terms (codes already mapped).

    ``job_id`` names the job the outcome belongs to, so that an outcome of an earlier
    attempt can never settle a later one. ``detail`` is internal text (exception
    names, worker messages) for logs and staff, never for clients.
    """

    succeeded: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str = ""
    detail: str = ""
    job_id: str = ""
    # The worker stage a failure happened in (matting, generating, composing), if known.
    stage: str = ""

    @classmethod
    def failure(cls, code: str, detail: str = "", job_id: str = "", stage: str = "") -> Outcome:
        return cls(False, {}, code, detail, job_id, stage)


@dataclass(frozen=True)
class JobState:
    """What Redis says about a render's job right now."""

    state: Literal["missing", "queued", "running", "ended"]
    outcome: Outcome | None = None
    stage: str | None = None
    started_at: datetime | None = None


def _valid_result(value: Any, expected: dict[str, str]) -> bool:
    """A success is believed only if it names the files we asked for."""
    if not isinstance(value, dict):
        return False
    for name in ("output_key", "matte_key"):
        key = value.get(name)
        if not isinstance(key, str) or not storage_keys.is_servable(key):
            return False
        wanted = expected.get(name)
        if wanted and key != wanted:
            return False
    return isinstance(value.get("width"), int) and isinstance(value.get("height"), int)


def _failure_from_job(job_id: str, job: Job | None, exc_string: str | None) -> Outcome:
    meta = job.meta if job is not None and isinstance(job.meta, dict) else {}
    error = meta.get("error") or {}
    stage = meta.get("failed_stage") or meta.get("stage") or ""
    stage = stage if isinstance(stage, str) and len(stage) <= 16 else ""
    if isinstance(error, dict) and error.get("code"):
        reported = str(error["code"])
        detail = f"worker: {reported}: {error.get('message') or ''}"[:2000]
        return Outcome.failure(render_failure_code(reported), detail, job_id, stage)
    text = exc_string or ""
    if "JobTimeoutException" in text:
        return Outcome.failure("render_timeout", "rq: JobTimeoutException", job_id, stage)
    if "AbandonedJobError" in text:
        return Outcome.failure("worker_lost", "rq: AbandonedJobError (worker heartbeat expired)",
                               job_id, stage)
    return Outcome.failure("render_failed", text[-2000:], job_id, stage)


def _outcome_from_result(job_id: str, result: Result, expected: dict[str, str]) -> Outcome | None:
    if result.type == Result.Type.SUCCESSFUL:
        if _valid_result(result.return_value, expected):
            return Outcome(True, dict(result.return_value), job_id=job_id)
        return Outcome.failure("render_failed", f"unusable worker result: {result.return_value!r}"[:2000],
                               job_id)
    if result.type == Result.Type.RETRIED:
        return None  # not an end: the job runs again
    if result.type == Result.Type.STOPPED:
        return Outcome.failure("render_failed", "rq: job stopped", job_id)
    try:
        job: Job | None = Job.fetch(job_id, connection=redis_connection(), serializer=JSONSerializer)
    except NoSuchJobError:
        job = None
    return _failure_from_job(job_id, job, result.exc_string)


def waiter_ttl_ms(timeout: float) -> int:
    """A waiter mark outlives its wait a little, so it never lapses while the wait goes on."""
    return int(timeout * 1000) + 5000


def waiter_key(job_id: str) -> str:
    return f"{WAITER_KEY_PREFIX}{job_id}"


def restore_outcome(job_id: str, entry: tuple[bytes, dict], expected: dict[str, str]) -> Outcome | None:
    result_id, payload = entry
    result = Result.restore(job_id, result_id.decode(), payload, connection=redis_connection(),
                            serializer=JSONSerializer)
    return _outcome_from_result(job_id, result, expected)


def wait_for_outcome(job_id: str, timeout: float, expected: dict[str, str] | None = None, *,
                     announce: bool = False) -> Outcome | None:
    """Blocks until the job has an outcome or ``timeout`` seconds pass; None if still running.

    ``announce`` marks the job as watched by a waiting request for the length of the
    wait (see ``has_waiter``). Raises redis.RedisError when Redis cannot be reached;
    the caller decides what the client is told.
    """
    expected = expected or {}
    stream = Result.get_key(job_id)
    if timeout <= 0:
        entries = redis_connection().xrevrange(stream, "+", "-", count=1)
        return restore_outcome(job_id, entries[0], expected) if entries else None
    deadline = time.monotonic() + timeout
    if announce:
        redis_connection().set(waiter_key(job_id), 1, px=waiter_ttl_ms(timeout))
    reader = redis_clients.blocking()
    last_id = "0-0"
    while True:
        remaining = deadline - time.monotonic()
        # XREAD BLOCK 0 would mean "forever": at least 1 ms, at most one slice.
        block_ms = max(1, int(min(remaining, redis_clients.BLOCK_SLICE_SECONDS) * 1000))
        response = reader.xread({stream: last_id}, block=block_ms)
        for entry in (response[0][1] if response else []):
            last_id = entry[0]
            outcome = restore_outcome(job_id, entry, expected)
            if outcome is not None:
                return outcome
        if deadline - time.monotonic() <= 0:
            return None


def stop_waiting(job_id: str) -> None:
    redis_connection().delete(waiter_key(job_id))


def has_waiter(job_id: str) -> bool:
    """True while a request is blocked on this job's outcome and will settle it itself.

    The settle job then leaves the render to that request instead of racing it for
    the render's row lock (which would make the request wait for the loser), and a
    retry with the same Idempotency-Key is told the first request is still running.
    """
    return bool(redis_connection().exists(waiter_key(job_id)))


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
                outcome = Outcome.failure("render_failed", "rq: the job finished but its result was lost",
                                          job_id)
            elif status == JobStatus.FAILED:
                outcome = _failure_from_job(job_id, job, None)
            else:
                outcome = Outcome.failure("render_failed", f"rq: job {status}", job_id)
        return JobState("ended", outcome, stage, job.started_at)
    if status == JobStatus.STARTED:
        return JobState("running", None, stage, job.started_at)
    return JobState("queued", None, stage)


def reap_abandoned_jobs() -> None:
    """Lets rq fail jobs whose worker stopped heartbeating (AbandonedJobError → worker_lost)."""
    StartedJobRegistry(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer).cleanup()
