"""Where a running render is, as the GPU worker reports it in its RQ job's meta.

The worker writes ``job.meta["stage"]`` (``matting``, ``generating``, ``composing``)
and ``job.meta["stage_started_at"]`` as it goes. Only that one hash field is read
(``HGET rq:job:<id> meta``), not the whole job, because the playground asks about
once a second per open render. The database status stays the authority for the
end of a render: a stage is only shown as current while the render is still open.

A failed render shows where it stopped: the steps before are done, that step failed,
the steps after it were never reached (see ``failed_stage`` for how that is known).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from typing import Any

import redis
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rq.job import Job
from rq.serializers import JSONSerializer

from imaging import dispatch
from imaging.models import Render, RenderStatus

WORKER_STAGES = ("matting", "generating", "composing")
# The steps the page shows, in order; "running" is the worker's start before it names a stage.
STEPS = ("queued", "matting", "generating", "composing", "done")
STEP_NAMES = list(zip(STEPS, ("Queued", "Matting", "Generating", "Composing", "Done")))
LABELS = {
    "queued": "Queued, waiting for a GPU",
    "running": "Starting",
    "matting": "Cutting out the subject",
    "generating": "Generating the scene",
    "composing": "Composing the result",
    "succeeded": "Done",
    "failed": "Failed",
}
FAILED_LABELS = {
    "queued": "Failed before a GPU worker took it",
    "matting": "Failed while cutting out the subject",
    "generating": "Failed while generating the scene",
    "composing": "Failed while composing the result",
}
# What a step's ``data-state`` may be; "" is a step not reached yet, or not known.
DONE, CURRENT, FAILED, NOT_REACHED = "done", "current", "failed", "not-reached"
# Codes that name the step they fail at whatever Redis still knows: the matting engine's
# refusals, and a render that never reached a queue.
STAGE_OF_CODE = {
    "no_subject_found": "matting",
    "backdrop_not_plain": "matting",
    "queue_unavailable": "queued",
}


@dataclass(frozen=True)
class Progress:
    """What the progress display needs; ``phase`` is a step name or a terminal status.

    ``failed_at`` is the step a failed render stopped at (None while it runs, after a
    success, or when nothing says where it failed).
    """

    phase: str
    label: str
    step: int
    elapsed_seconds: float
    stage_elapsed_seconds: float | None
    failed_at: str | None = None

    def states(self) -> dict[str, str]:
        """Each step's state, computed once here so the page and console.js cannot disagree."""
        if self.phase == "succeeded":
            return {step: DONE for step in STEPS}
        if self.phase == "failed" and self.failed_at is None:
            # Nothing says how far it got: claim no step, only that it did not finish.
            return {step: FAILED if step == "done" else "" for step in STEPS}
        now = FAILED if self.phase == "failed" else CURRENT
        after = NOT_REACHED if self.phase == "failed" else ""
        return {step: DONE if index < self.step else now if index == self.step else after
                for index, step in enumerate(STEPS)}

    @property
    def steps(self) -> list[tuple[str, str, str]]:
        """(step, display name, state) in order, for the template."""
        states = self.states()
        return [(step, name, states[step]) for step, name in STEP_NAMES]

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "label": self.label,
            "step": self.step,
            "steps": list(STEPS),
            "states": self.states(),
            "failed_at": self.failed_at,
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "stage_elapsed_seconds": (None if self.stage_elapsed_seconds is None
                                      else round(self.stage_elapsed_seconds, 1)),
        }


def parse_stage_time(value: Any) -> datetime | None:
    """The worker may write epoch seconds or an ISO 8601 string; anything else is ignored."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(float(value), tz=dt_timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is not None and timezone.is_naive(parsed):
            parsed = parsed.replace(tzinfo=dt_timezone.utc)
        return parsed
    return None


def read_job_meta(job_id: str) -> dict[str, Any] | None:
    """The job's meta as the worker saved it; None when the job is gone or Redis is unreachable."""
    if not job_id:
        return None
    try:
        raw = dispatch.redis_connection().hget(Job.key_for(job_id), "meta")
    except redis.RedisError:
        return None
    if not raw:
        return None
    try:
        meta = JSONSerializer.loads(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def read_job_stage(job_id: str) -> tuple[str | None, datetime | None]:
    """(stage, stage_started_at) from the job's meta; (None, None) when unknown or unreadable."""
    meta = read_job_meta(job_id)
    if meta is None:
        return None, None
    stage = meta.get("stage")
    if stage not in WORKER_STAGES:
        return None, None
    return stage, parse_stage_time(meta.get("stage_started_at"))


@dataclass(frozen=True)
class JobFacts:
    """What a job's hash says about how far a worker got with it."""

    started: bool  # a worker took it (rq wrote started_at)
    stage: str | None  # the last stage the worker named
    errored: bool  # the worker recorded an error (job.meta["error"])


def read_job_facts(job_id: str) -> JobFacts | None:
    """One round trip to the job's hash; None when the job is gone or Redis is unreachable."""
    if not job_id:
        return None
    key = Job.key_for(job_id)
    try:
        with dispatch.redis_connection().pipeline(transaction=False) as pipeline:
            pipeline.exists(key)
            pipeline.hmget(key, ["started_at", "meta"])
            exists, (started_at, raw_meta) = pipeline.execute()
    except redis.RedisError:
        return None
    if not exists:
        return None
    try:
        meta = JSONSerializer.loads(raw_meta) if raw_meta else {}
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    stage = meta.get("stage")
    return JobFacts(started=bool(started_at), stage=stage if stage in WORKER_STAGES else None,
                    errored=bool(meta.get("error")))


def failed_stage(render: Render) -> str | None:
    """The step a failed render stopped at, or None when nothing says.

    Best source first:
    - ``Render.failed_stage``, where the model stores it (settlement would copy it
      from the job's meta, which Redis keeps only for ``dispatch.result_ttl()``);
    - the error codes that name their step (``STAGE_OF_CODE``);
    - the job in Redis: the worker's last ``stage`` is the step it failed in; an
      error with no stage means it failed before its first step (reading the input,
      loading the models), shown as a failed matting step; a job no worker started
      failed in the queue;
    - a render that timed out and was never seen running waited in the queue for its
      whole deadline (no GPU worker took it), the usual fate on a machine with none.
    """
    stored = getattr(render, "failed_stage", "")
    if stored in STEPS[:-1]:
        return stored
    if render.error_code in STAGE_OF_CODE:
        return STAGE_OF_CODE[render.error_code]
    job = read_job_facts(render.job_id)
    if job is not None:
        if job.stage is not None:
            return job.stage
        if job.errored:
            return WORKER_STAGES[0]
        if not job.started:
            return "queued"
        return None
    if render.error_code == "render_timeout" and render.started_at is None:
        return "queued"
    return None


def _failed(render: Render, elapsed: float) -> Progress:
    stage = failed_stage(render)
    if stage is None:
        return Progress("failed", LABELS["failed"], STEPS.index("done"), elapsed, None)
    return Progress("failed", FAILED_LABELS[stage], STEPS.index(stage), elapsed, None, failed_at=stage)


def progress_of(render: Render, *, now: datetime | None = None) -> Progress:
    """The render's phase and timings; asks Redis only while it runs, or where a failed one stopped."""
    now = now or timezone.now()
    end = render.finished_at if render.is_terminal and render.finished_at else now
    elapsed = max(0.0, (end - render.created_at).total_seconds())
    if render.status == RenderStatus.SUCCEEDED:
        return Progress("succeeded", LABELS["succeeded"], STEPS.index("done"), elapsed, None)
    if render.status == RenderStatus.FAILED:
        return _failed(render, elapsed)
    if render.status == RenderStatus.QUEUED:
        return Progress("queued", LABELS["queued"], 0, elapsed, None)
    stage, stage_started_at = read_job_stage(render.job_id)
    if stage is None:
        since = render.started_at
        return Progress("running", LABELS["running"], 1, elapsed,
                        None if since is None else max(0.0, (now - since).total_seconds()))
    stage_elapsed = None if stage_started_at is None else max(0.0, (now - stage_started_at).total_seconds())
    return Progress(stage, LABELS[stage], STEPS.index(stage), elapsed, stage_elapsed)
