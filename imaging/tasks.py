"""Jobs run by the Django-side RQ worker (queue "default", JSON serializer)."""

from __future__ import annotations

from django.conf import settings

from imaging import dispatch, lifecycle
from imaging.models import Render


def settle_render(render_id: str, job_id: str | None = None) -> str:
    """Settles a render whose GPU job just ended; enqueued by the GPU worker.

    The worker enqueues this from inside its task, so rq may not have recorded the
    job's outcome yet when it runs: it waits (blocking on the outcome stream, not
    polling) up to RENDER_SETTLE_WAIT_SECONDS. Whoever settled first wins; this is a
    no-op for a render the waiting request already settled, and it stands aside for a
    request that is still waiting on the render, and for a job (``job_id``) that is no
    longer the render's current attempt. Returns what it did.
    """
    render = Render.objects.filter(public_id=render_id).first()
    if render is None:
        return "unknown"
    if render.is_terminal:
        return render.status
    if job_id is not None and job_id != render.job_id:
        return "superseded"
    outcome = dispatch.wait_for_outcome(
        render.job_id, float(settings.RENDER_SETTLE_WAIT_SECONDS), lifecycle.expected_keys(render)
    )
    if outcome is not None:
        if dispatch.has_waiter(render.job_id):
            # The request waiting on this render saw the same outcome and settles it;
            # if it dies first, a GET or the sweeper does.
            return "left to the waiting request"
        render = lifecycle.settle(render.pk, outcome, actor="settle_job")
    else:
        render = lifecycle.refresh(render, actor="settle_job")
    return str(render.status)
