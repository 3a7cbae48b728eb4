"""The safety net for renders whose end nobody observed.

Run periodically (``manage.py sweep_renders --every 30``). For each open render it:

* fails it when it is past its deadline (``render_timeout``), releasing the hold and
  cancelling a still-queued job so it does not occupy a GPU for nothing;
* settles it when Redis already has the job's outcome (a lost settle job, a client
  that never came back); a first lost worker starts the next attempt instead;
* re-enqueues it as its next attempt when the database has it open but Redis has no
  job for it (Redis restarted without persistence, or the render was created while
  the queue could not take its job);
* marks it running when the worker has picked it up.

It also lets rq fail jobs whose worker stopped heartbeating (→ ``worker_lost``),
expires orphaned holds through the ledger, and forgets idempotency keys older than
their 24 hours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import redis
from django.conf import settings
from django.utils import timezone

from billing import ledger
from imaging import dispatch, lifecycle
from imaging.models import IdempotencyRecord, Render, RenderStatus
from imaging.webhooks import delivery as webhook_delivery

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    settled: int = 0
    timed_out: int = 0
    requeued: int = 0
    marked_running: int = 0
    holds_expired: int = 0
    idempotency_forgotten: int = 0
    webhooks_queued: int = 0
    errors: int = 0

    def __str__(self) -> str:
        return " ".join(f"{name}={value}" for name, value in vars(self).items())


def _time_out(render: Render, report: SweepReport) -> None:
    lifecycle.fail(render.pk, "render_timeout", f"past its deadline at {render.deadline_at.isoformat()}",
                   actor="sweeper")
    report.timed_out += 1


def sweep_render(render: Render, now: datetime, report: SweepReport) -> None:
    try:
        state = dispatch.observe(render.job_id, lifecycle.expected_keys(render))
    except redis.RedisError:
        # Without Redis nothing can be observed; the deadline still applies.
        if render.deadline_at <= now:
            _time_out(render, report)
            return
        raise
    if state.outcome is not None:
        lifecycle.settle(render.pk, state.outcome, actor="sweeper")
        report.settled += 1
    elif render.deadline_at <= now:
        _time_out(render, report)
        try:
            dispatch.cancel_job(render.job_id)
        except redis.RedisError as exc:
            log.warning("sweeper: could not cancel job %s: %r", render.job_id, exc)
    elif state.state == "missing":
        grace = timedelta(seconds=float(settings.RENDER_REQUEUE_AFTER_SECONDS))
        if render.created_at <= now - grace and lifecycle.requeue_missing(render, actor="sweeper"):
            report.requeued += 1
    elif state.state == "running" and render.status == RenderStatus.QUEUED:
        if lifecycle.mark_running(render.pk, job_id=render.job_id, started_at=state.started_at,
                                  actor="sweeper"):
            report.marked_running += 1


def _step(report: SweepReport, what: str, fn: Callable[[], Any]) -> Any:
    """Runs one step of a pass; a failure is logged and counted, never ends the pass."""
    try:
        return fn()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        # Redis restarting or failing over: the next pass retries; no traceback for it.
        report.errors += 1
        log.warning("sweeper: %s failed: Redis unavailable (%s)", what, exc)
        return None
    except Exception:
        report.errors += 1
        log.exception("sweeper: %s failed", what)
        return None


def sweep(now: datetime | None = None, *, batch: int = 1000) -> SweepReport:
    """One pass over open renders; safe to run from several processes at once.

    Each render's step, rq's reaping, hold expiry and the idempotency clean-up run on
    every pass, each on its own: Redis being down fails the steps that need it, not
    the pass (deadlines and hold expiry still apply).
    """
    now = now or timezone.now()
    report = SweepReport()
    _step(report, "reaping abandoned jobs", dispatch.reap_abandoned_jobs)
    due = _step(report, "listing open renders",
                lambda: list(lifecycle.open_renders().order_by("deadline_at")[:batch])) or []
    for render in due:
        _step(report, f"render {render.public_id}", lambda render=render: sweep_render(render, now, report))
    report.holds_expired = _step(report, "expiring holds", lambda: ledger.expire_due_holds(now)) or 0
    cutoff = now - timedelta(seconds=int(settings.IDEMPOTENCY_TTL_SECONDS))
    forgotten = _step(report, "forgetting idempotency keys",
                      lambda: IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete())
    report.idempotency_forgotten = forgotten[0] if forgotten else 0
    report.webhooks_queued = _step(report, "queueing due webhook deliveries",
                                   lambda: webhook_delivery.enqueue_due(now)) or 0
    return report
