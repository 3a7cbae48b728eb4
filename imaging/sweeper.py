"""The safety net for renders whose end nobody observed.

Run periodically (``manage.py sweep_renders --every 30``). For each open render it:

* settles it when Redis already has the job's outcome (a lost settle job, a client
  that never came back);
* fails it when it is past its deadline (``render_timeout``), releasing the hold and
  cancelling a still-queued job so it does not occupy a GPU for nothing;
* re-enqueues it when the database has it open but Redis has no job for it (Redis
  restarted without persistence, or the process died between commit and enqueue);
* marks it running when the worker has picked it up.

It also lets rq fail jobs whose worker died (→ ``worker_lost``), expires orphaned
holds through the ledger, and forgets idempotency keys older than their 24 hours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import ledger
from imaging import dispatch, lifecycle
from imaging.models import IdempotencyRecord, Render, RenderEvent, RenderStatus

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    settled: int = 0
    timed_out: int = 0
    requeued: int = 0
    marked_running: int = 0
    holds_expired: int = 0
    idempotency_forgotten: int = 0

    def __str__(self) -> str:
        return (f"settled={self.settled} timed_out={self.timed_out} requeued={self.requeued} "
                f"marked_running={self.marked_running} holds_expired={self.holds_expired} "
                f"idempotency_forgotten={self.idempotency_forgotten}")


def _requeue(render: Render) -> None:
    dispatch.enqueue_render(render)
    with transaction.atomic():
        RenderEvent.objects.create(render=render, from_status=render.status, to_status=render.status,
                                   actor="sweeper", note="job missing from Redis; re-enqueued")


def sweep_render(render: Render, now: datetime, report: SweepReport) -> None:
    state = dispatch.observe(render.job_id, lifecycle.expected_keys(render))
    if state.outcome is not None:
        lifecycle.settle(render.pk, state.outcome, actor="sweeper")
        report.settled += 1
    elif render.deadline_at <= now:
        dispatch.cancel_job(render.job_id)
        seconds = int((render.deadline_at - render.created_at).total_seconds())
        lifecycle.fail(render.pk, "render_timeout",
                       f"The render did not finish within {seconds} seconds; nothing was charged.",
                       actor="sweeper")
        report.timed_out += 1
    elif state.state == "missing":
        grace = timedelta(seconds=float(settings.RENDER_REQUEUE_AFTER_SECONDS))
        if render.created_at <= now - grace:
            _requeue(render)
            report.requeued += 1
    elif state.state == "running" and render.status == RenderStatus.QUEUED:
        if lifecycle.mark_running(render.pk, started_at=state.started_at, actor="sweeper"):
            report.marked_running += 1


def sweep(now: datetime | None = None, *, batch: int = 1000) -> SweepReport:
    """One pass over open renders; safe to run from several processes at once."""
    now = now or timezone.now()
    report = SweepReport()
    try:
        dispatch.reap_abandoned_jobs()
    except redis.RedisError:
        log.exception("sweeper: could not reap abandoned jobs")
    for render in lifecycle.open_renders().order_by("deadline_at")[:batch]:
        try:
            sweep_render(render, now, report)
        except redis.RedisError:
            # Without Redis nothing can be observed; deadlines still apply.
            if render.deadline_at <= now:
                lifecycle.fail(render.pk, "render_timeout",
                               "The render did not finish before its deadline; nothing was charged.",
                               actor="sweeper")
                report.timed_out += 1
            else:
                log.exception("sweeper: could not observe render %s", render.public_id)
    report.holds_expired = ledger.expire_due_holds(now)
    cutoff = now - timedelta(seconds=int(settings.IDEMPOTENCY_TTL_SECONDS))
    report.idempotency_forgotten, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return report
