"""Where a running render is, as the GPU worker reports it in its RQ job's meta.

The worker writes ``job.meta["stage"]`` (``matting``, ``generating``, ``composing``)
and ``job.meta["stage_started_at"]`` as it goes. Only that one hash field is read
(``HGET rq:job:<id> meta``), not the whole job, because the playground asks about
once a second per open render. The database status stays the authority for the
end of a render: a stage is only shown while the render is still open.
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


@dataclass(frozen=True)
class Progress:
    """What the progress display needs; ``phase`` is a step name or a terminal status."""

    phase: str
    label: str
    step: int
    elapsed_seconds: float
    stage_elapsed_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "label": self.label,
            "step": self.step,
            "steps": list(STEPS),
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


def read_job_stage(job_id: str) -> tuple[str | None, datetime | None]:
    """(stage, stage_started_at) from the job's meta; (None, None) when unknown or unreadable."""
    if not job_id:
        return None, None
    try:
        raw = dispatch.redis_connection().hget(Job.key_for(job_id), "meta")
    except redis.RedisError:
        return None, None
    if not raw:
        return None, None
    try:
        meta = JSONSerializer.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(meta, dict):
        return None, None
    stage = meta.get("stage")
    if stage not in WORKER_STAGES:
        return None, None
    return stage, parse_stage_time(meta.get("stage_started_at"))


def progress_of(render: Render, *, now: datetime | None = None) -> Progress:
    """The render's phase and timings; asks Redis only while the render is running."""
    now = now or timezone.now()
    end = render.finished_at if render.is_terminal and render.finished_at else now
    elapsed = max(0.0, (end - render.created_at).total_seconds())
    if render.status == RenderStatus.SUCCEEDED:
        return Progress("succeeded", LABELS["succeeded"], STEPS.index("done"), elapsed, None)
    if render.status == RenderStatus.FAILED:
        return Progress("failed", LABELS["failed"], STEPS.index("done"), elapsed, None)
    if render.status == RenderStatus.QUEUED:
        return Progress("queued", LABELS["queued"], 0, elapsed, None)
    stage, stage_started_at = read_job_stage(render.job_id)
    if stage is None:
        since = render.started_at
        return Progress("running", LABELS["running"], 1, elapsed,
                        None if since is None else max(0.0, (now - since).total_seconds()))
    stage_elapsed = None if stage_started_at is None else max(0.0, (now - stage_started_at).total_seconds())
    return Progress(stage, LABELS[stage], STEPS.index(stage), elapsed, stage_elapsed)
