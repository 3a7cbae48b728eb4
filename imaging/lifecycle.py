"""The render state machine. Every state change is one function here.

    queued ──▶ running ──▶ succeeded   (hold captured: 22 credits charged)
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

Lock order is render row, then (inside ``billing.ledger``) the credit account row.
Nothing takes them in the other order, so settlement cannot deadlock against
submission.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import ledger
from imaging import dispatch, ratelimit
from imaging.dispatch import Outcome
from imaging.models import OPEN_STATUSES, Render, RenderEvent, RenderStatus

log = logging.getLogger(__name__)


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
    render.seed = seed if seed is not None else render.requested_seed
    generated = result.get("scene_generated")
    render.scene_generated = generated if isinstance(generated, bool) else None
    for name in ("timings_ms", "subject", "engine"):
        value = result.get(name)
        setattr(render, name, value if isinstance(value, dict) else {})


_SETTLED_FIELDS = [
    "status", "started_at", "finished_at", "credits_charged", "error_code", "error_message",
    "output_key", "matte_key", "width", "height", "seed", "scene_generated", "timings_ms",
    "subject", "engine",
]


def settle(render_id: int, outcome: Outcome, *, actor: str) -> Render:
    """Ends an open render with ``outcome`` and resolves its hold; a no-op once ended.

    Success captures the hold, anything else releases it. Returns the render as it
    is after the call (already-terminal renders come back unchanged).
    """
    with transaction.atomic():
        render = Render.objects.select_for_update().get(pk=render_id)
        if render.is_terminal:
            return render
        before = render.status
        now = timezone.now()
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
            render.status = RenderStatus.FAILED
            render.error_code = outcome.error_code
            render.error_message = outcome.error_message
            render.credits_charged = 0
            released = render.hold_id is not None and ledger.release(
                render.hold_id, actor=f"imaging:{actor}")
            note = f"{outcome.error_code}; hold {render.hold_id} " + (
                "released" if released else "was already resolved")
        render.save(update_fields=_SETTLED_FIELDS)
        _event(render, before, actor, note)
    # Outside the transaction: Redis is not rolled back with the database, and a
    # slot returned a moment late costs nothing.
    ratelimit.give_back_render_slot(render.api_key_id, render.public_id)
    return render


def fail(render_id: int, code: str, message: str, *, actor: str) -> Render:
    """Fails an open render (timeouts, lost workers, dispatch errors) and releases its hold."""
    return settle(render_id, Outcome.failure(code, message), actor=actor)


def mark_running(render_id: int, *, started_at: datetime | None, actor: str) -> bool:
    """queued → running, when an observer sees the worker has picked the job up.

    A conditional UPDATE rather than a row lock: losing the race to another observer,
    or to settlement, is fine and must not block anyone.
    """
    with transaction.atomic():
        moved = Render.objects.filter(pk=render_id, status=RenderStatus.QUEUED).update(
            status=RenderStatus.RUNNING, started_at=started_at or timezone.now()
        )
        if moved:
            RenderEvent.objects.create(render_id=render_id, from_status=RenderStatus.QUEUED,
                                       to_status=RenderStatus.RUNNING, actor=actor)
    return bool(moved)


def expected_keys(render: Render) -> dict[str, str]:
    return {"output_key": render.output_key, "matte_key": render.matte_key}


def refresh(render: Render, *, actor: str) -> Render:
    """Looks at the render's job once and records whatever has changed."""
    if render.is_terminal:
        return render
    state = dispatch.observe(render.job_id, expected_keys(render))
    if state.outcome is not None:
        return settle(render.pk, state.outcome, actor=actor)
    if state.state == "running" and render.status == RenderStatus.QUEUED:
        if mark_running(render.pk, started_at=state.started_at, actor=actor):
            render.refresh_from_db()
    return render


def wait_and_settle(render: Render, timeout: float, *, actor: str) -> Render:
    """Waits up to ``timeout`` seconds for the job to end, then settles what it saw.

    Must not be called inside a transaction: the wait would hold it (and its locks)
    open for up to the whole sync window.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("wait_and_settle must not run inside a database transaction")
    if render.is_terminal:
        return render
    try:
        outcome = dispatch.wait_for_outcome(render.job_id, timeout, expected_keys(render), announce=True)
    except BaseException:
        dispatch.stop_waiting(render.job_id)
        raise
    if outcome is not None:
        # The mark is left to expire: once this settles, a settle job finds the render
        # terminal anyway, and if this process dies first, GET or the sweeper settles.
        return settle(render.pk, outcome, actor=actor)
    # Giving up: from now on a settle job must not stand aside for us.
    dispatch.stop_waiting(render.job_id)
    return refresh(render, actor=actor)


def open_renders() -> Any:
    return Render.objects.filter(status__in=OPEN_STATUSES)
