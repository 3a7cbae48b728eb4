"""The render state machine. Every state change is one function here.

    queued ──▶ running ──▶ succeeded   (hold captured: 22 credits charged)
       ▲          │
       │          ├──▶ queued again    (worker lost: the next attempt, same seed, hold kept)
       │          │
       └──────────┴──────▶ failed      (hold released: nothing charged)

Each transition is atomic, locks the render row first (``select_for_update``), and
writes a ``RenderEvent`` naming who observed it. The render's move to a terminal
status and the hold's resolution are decided in the same transaction, under that
lock, so whichever observer sees the end first (the waiting request, a later GET,
the settle job, the sweeper) settles it, and every later observer finds a terminal
render and changes nothing. A success that arrives after the sweeper has failed the
render therefore charges nothing: the render is already terminal and its hold
already released.

Attempts: an outcome belongs to the job it came from (``Outcome.job_id``) and settles
the render only if that job is the render's current attempt. A lost worker is our
failure, not the customer's: the first loss starts the next attempt (a new job with
its own output keys, the same seed, on whichever worker takes it) with the hold still
pending and the deadline unchanged; only a second loss ends the render
``worker_lost``.

Lock order is render row, then (inside ``billing.ledger``) the credit account row.
Nothing takes them in the other order, so settlement cannot deadlock against
submission.

What clients read in ``error_message`` is the error registry's text for the code;
what happened inside goes to ``error_detail`` and the log, with the render id.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import ledger
from imaging import dispatch, ratelimit, storage_keys
from imaging.dispatch import Outcome
from gpu_worker import logs
from platform_site import metrics
from imaging.models import OPEN_STATUSES, Render, RenderEvent, RenderStatus
from imaging.webhooks import events as webhook_events
from platform_site.api_errors import REGISTRY

log = logging.getLogger(__name__)

# A render whose worker dies is run once more; a second loss ends it.
RETRIES_AFTER_WORKER_LOSS = 1


def public_message(code: str) -> str:
    """The only text about a failure that reaches a client: the registry's."""
    entry = REGISTRY.get(code) or REGISTRY["render_failed"]
    return entry.description


def _event(render: Render, from_status: str, actor: str, note: str = "") -> None:
    RenderEvent.objects.create(
        render=render, from_status=from_status, to_status=render.status, actor=actor, note=note
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _apply_success(render: Render, result: dict[str, Any]) -> None:
    render.status = RenderStatus.SUCCEEDED
    render.output_key = result["output_key"]
    render.matte_key = result["matte_key"]
    render.width = _int_or_none(result.get("width"))
    render.height = _int_or_none(result.get("height"))
    seed = _int_or_none(result.get("seed"))
    if seed is not None:
        render.seed = seed
    generated = result.get("scene_generated")
    render.scene_generated = generated if isinstance(generated, bool) else None
    # Stored as reported; the serializer reads only the documented keys out of them.
    for name in _RESULT_PARTS:
        value = result.get(name)
        setattr(render, name, value if isinstance(value, dict) else {})


_RESULT_PARTS = ("timings_ms", "subject", "scene", "exactness", "shadow", "light", "diagnostics",
                 "engine")

_SETTLED_FIELDS = [
    "status", "started_at", "finished_at", "credits_charged", "error_code", "error_message",
    "error_detail", "failed_stage", "output_key", "matte_key", "width", "height", "seed",
    "scene_generated", *_RESULT_PARTS,
]

_ATTEMPT_FIELDS = ["status", "attempt", "workers_lost", "job_id", "output_key", "matte_key", "started_at"]


def _next_attempt(render: Render) -> None:
    """Points the render at a fresh job with fresh output keys (not yet enqueued)."""
    render.attempt += 1
    render.job_id = storage_keys.job_id(render.public_id, render.attempt)
    render.output_key = storage_keys.output_key(render.public_id, render.output_format, render.attempt)
    render.matte_key = storage_keys.matte_key(render.public_id, render.attempt)
    render.status = RenderStatus.QUEUED
    render.started_at = None


def _retries_after_loss(render: Render, outcome: Outcome, now: datetime) -> bool:
    return (outcome.error_code == "worker_lost"
            and render.workers_lost < RETRIES_AFTER_WORKER_LOSS
            and render.deadline_at > now)


def settle(render_id: int, outcome: Outcome, *, actor: str) -> Render:
    """Ends an open render (see `_settle`); its log lines meanwhile carry the render id."""
    token = logs.render_id.set(logs.render_id.get())
    try:
        return _settle(render_id, outcome, actor=actor)
    finally:
        logs.render_id.reset(token)


def _settle(render_id: int, outcome: Outcome, *, actor: str) -> Render:
    """Ends an open render with ``outcome`` and resolves its hold; a no-op once ended.

    Success captures the hold, a first lost worker starts the next attempt, anything
    else releases the hold. An outcome of a job that is not the render's current
    attempt changes nothing. Returns the render as it is after the call.
    """
    with transaction.atomic():
        render = Render.objects.select_for_update().get(pk=render_id)
        logs.render_id.set(render.public_id)
        if render.is_terminal or (outcome.job_id and outcome.job_id != render.job_id):
            return render
        before = render.status
        now = timezone.now()
        if _retries_after_loss(render, outcome, now):
            lost = render.attempt
            render.workers_lost += 1
            _next_attempt(render)
            render.save(update_fields=_ATTEMPT_FIELDS)
            _event(render, before, actor, f"worker lost on attempt {lost} ({outcome.detail}); "
                                          f"retrying as attempt {render.attempt}, hold {render.hold_id} kept")
            retried = True
        else:
            retried = False
            render.finished_at = now
            if render.started_at is None and outcome.succeeded:
                render.started_at = now
            if outcome.succeeded:
                _apply_success(render, outcome.result)
                charged = render.hold_id is not None and ledger.capture(
                    render.hold_id, reference=render.public_id, actor=f"imaging:{actor}"
                )
                # A hold resolved elsewhere (expired by billing) is never charged twice
                # or late: the customer keeps the output and pays nothing.
                render.credits_charged = settings.CREDITS_PER_RENDER if charged else 0
                note = f"hold {render.hold_id} captured" if charged else (
                    f"hold {render.hold_id} was already resolved; not charged")
            else:
                if outcome.error_code == "worker_lost":
                    render.workers_lost += 1
                render.status = RenderStatus.FAILED
                render.error_code = outcome.error_code
                render.error_message = public_message(outcome.error_code)
                render.error_detail = outcome.detail[:4000]
                render.failed_stage = outcome.stage[:16]
                render.credits_charged = 0
                released = render.hold_id is not None and ledger.release(
                    render.hold_id, actor=f"imaging:{actor}")
                note = f"{outcome.error_code}; hold {render.hold_id} " + (
                    "released" if released else "was already resolved")
                log.warning("render %s failed %s (attempt %s, seen by %s): %s", render.public_id,
                            outcome.error_code, render.attempt, actor, outcome.detail or "-",
                            extra={"code": outcome.error_code})
            render.save(update_fields=_SETTLED_FIELDS + ["workers_lost"])
            _event(render, before, actor, note)
            webhook_events.render_settled(render)  # the outbox row, in this transaction
            # Counted after the commit: a rolled-back settle never ended the render.
            transaction.on_commit(lambda: metrics.record_settled(render))
    # Outside the transaction: Redis is not rolled back with the database, and none of
    # this may turn a settled render into an error (the slot frees itself at the
    # deadline; a missing "settled" mark only costs a worker a wasted run).
    if retried:
        _enqueue_quietly(render, "retry after a lost worker")
    else:
        _quietly(ratelimit.give_back_render_slot, render.api_key_id, render.public_id, render.user_id)
        _quietly(dispatch.mark_settled, render.public_id)
    return render


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except redis.RedisError as exc:
        log.warning("%s(%s) failed: %r", getattr(fn, "__name__", fn), ", ".join(map(str, args)), exc)


def _enqueue_quietly(render: Render, why: str) -> None:
    """Queues the render's current attempt; if Redis is down the sweeper queues it later."""
    try:
        dispatch.enqueue_render(render)
    except redis.RedisError as exc:
        log.warning("render %s attempt %s (%s) could not be queued yet: %r; the sweeper will queue it",
                    render.public_id, render.attempt, why, exc)


def fail(render_id: int, code: str, detail: str = "", *, actor: str) -> Render:
    """Fails an open render (timeouts, dispatch errors) and releases its hold."""
    return settle(render_id, Outcome.failure(code, detail), actor=actor)


def requeue_missing(render: Render, *, actor: str) -> bool:
    """Starts the next attempt of an open render whose job Redis no longer has.

    Conditional on the attempt the caller saw, so of several sweepers that notice the
    same missing job exactly one queues a new one. Returns True for that one.
    """
    with transaction.atomic():
        current = Render.objects.select_for_update().get(pk=render.pk)
        if current.is_terminal or current.attempt != render.attempt:
            return False
        before = current.status
        missing = current.job_id
        _next_attempt(current)
        current.save(update_fields=_ATTEMPT_FIELDS)
        _event(current, before, actor, f"job {missing} missing from Redis; re-enqueued as attempt "
                                       f"{current.attempt}")
    _enqueue_quietly(current, "job missing from Redis")
    return True


def mark_running(render_id: int, *, job_id: str, started_at: datetime | None, actor: str) -> bool:
    """queued → running, when an observer sees the worker has picked the job up.

    A conditional UPDATE rather than a row lock: losing the race to another observer,
    or to settlement, is fine and must not block anyone.
    """
    with transaction.atomic():
        moved = Render.objects.filter(pk=render_id, status=RenderStatus.QUEUED, job_id=job_id).update(
            status=RenderStatus.RUNNING, started_at=started_at or timezone.now()
        )
        if moved:
            RenderEvent.objects.create(render_id=render_id, from_status=RenderStatus.QUEUED,
                                       to_status=RenderStatus.RUNNING, actor=actor)
    return bool(moved)


def expected_keys(render: Render) -> dict[str, str]:
    return {"output_key": render.output_key, "matte_key": render.matte_key}


def refresh(render: Render, *, actor: str) -> Render:
    """Looks at the render's job once and records whatever has changed.

    Without Redis nothing can be observed: the render comes back as it is.
    """
    if render.is_terminal:
        return render
    try:
        state = dispatch.observe(render.job_id, expected_keys(render))
    except redis.RedisError as exc:
        log.warning("render %s: cannot observe job %s: %r", render.public_id, render.job_id, exc)
        return render
    if state.outcome is not None:
        return settle(render.pk, state.outcome, actor=actor)
    if state.state == "running" and render.status == RenderStatus.QUEUED:
        if mark_running(render.pk, job_id=render.job_id, started_at=state.started_at, actor=actor):
            render.refresh_from_db()
    return render


def wait_and_settle(render: Render, timeout: float, *, actor: str) -> Render:
    """Waits up to ``timeout`` seconds for the render to end, then settles what it saw.

    A retry after a lost worker is waited for within the same window. When Redis
    fails mid-wait the render comes back as it is (the caller answers 202 with its
    id); GET, the settle job or the sweeper settle it later. Must not be called inside
    a transaction: the wait would hold it (and its locks) open for the whole window.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("wait_and_settle must not run inside a database transaction")
    with metrics.RENDERS_WAITING.track_inprogress():
        return _wait_and_settle(render, timeout, actor=actor)


def _wait_and_settle(render: Render, timeout: float, *, actor: str) -> Render:
    deadline = time.monotonic() + timeout
    while not render.is_terminal:
        job_id = render.job_id
        try:
            outcome = dispatch.wait_for_outcome(job_id, deadline - time.monotonic(), expected_keys(render),
                                                announce=True)
        except redis.RedisError as exc:
            log.warning("render %s: waiting on job %s failed: %r; answering with the render as it is",
                        render.public_id, job_id, exc)
            _quietly(dispatch.stop_waiting, job_id)
            return render
        if outcome is None:
            # Giving up: from now on a settle job must not stand aside for us.
            _quietly(dispatch.stop_waiting, job_id)
            return refresh(render, actor=actor)
        # The mark is left to expire: once this settles, a settle job finds the render
        # terminal anyway, and if this process dies first, GET or the sweeper settles.
        render = settle(render.pk, outcome, actor=actor)
    return render


def open_renders() -> Any:
    return Render.objects.filter(status__in=OPEN_STATUSES)
