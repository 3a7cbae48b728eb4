"""The sweeper: renders nobody is watching still end, and their holds are released."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from billing import ledger
from billing.models import Hold, HoldStatus
from imaging import dispatch, lifecycle
from imaging.dispatch import GPU_QUEUE, redis_connection
from imaging.models import IdempotencyRecord, Render, RenderEvent
from imaging.sweeper import sweep
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    api_client,
    fake_gpu,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
    usage_entries,
)

pytestmark = pytest.mark.usefixtures("fake_gpu")


def gpu_queue() -> Queue:
    return Queue(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer)


def start_render(user) -> Render:
    response = post_render(api_client(user), image=product_png(16))
    assert response.status_code == 202, response.content
    return Render.objects.get(public_id=response.json()["id"])


def test_a_render_past_its_deadline_is_failed_its_hold_released_and_its_job_cancelled(settings):
    settings.RENDER_DEADLINE_SECONDS = 1
    user = make_user("late@example.com")
    render = start_render(user)
    assert gpu_queue().count == 1
    time.sleep(1.1)

    call_command("sweep_renders")

    render.refresh_from_db()
    assert (render.status, render.error_code, render.credits_charged) == ("failed", "render_timeout", 0)
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.RELEASED
    assert account(user).held == 0 and account(user).balance == 10 * CREDITS
    assert gpu_queue().count == 0  # no GPU time spent on a render nobody will pay for
    assert RenderEvent.objects.filter(render=render, to_status="failed", actor="sweeper").exists()


def test_a_render_before_its_deadline_is_left_running():
    render = start_render(make_user("patient@example.com"))
    sweep()
    render.refresh_from_db()
    assert render.status == "queued"
    assert gpu_queue().count == 1


def test_a_render_that_redis_lost_is_enqueued_again_and_then_finishes(settings):
    settings.RENDER_REQUEUE_AFTER_SECONDS = 0
    user = make_user("lost@example.com")
    render = start_render(user)
    Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer).delete()
    assert gpu_queue().count == 0

    report = sweep()
    assert report.requeued == 1
    render.refresh_from_db()
    # A new attempt: its own job and its own output keys, the same seed.
    assert render.attempt == 2 and gpu_queue().job_ids == [render.job_id]
    assert render.output_key.endswith("-2.png") and render.matte_key.endswith("-2.png")
    [payload] = Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer).args
    assert payload["seed"] == render.seed and payload["output_key"] == render.output_key
    assert RenderEvent.objects.filter(render=render, note__contains="re-enqueued").exists()

    run_gpu_jobs_in_process()
    sweep()
    render.refresh_from_db()
    assert render.status == "succeeded" and render.credits_charged == CREDITS
    assert account(user).balance == 9 * CREDITS


def test_two_sweepers_that_see_the_same_missing_job_queue_one_new_attempt(settings):
    settings.RENDER_REQUEUE_AFTER_SECONDS = 0
    render = start_render(make_user("twice@example.com"))
    Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer).delete()
    seen_by_both = Render.objects.get(pk=render.pk)

    assert lifecycle.requeue_missing(seen_by_both, actor="sweeper") is True
    assert lifecycle.requeue_missing(seen_by_both, actor="sweeper") is False

    assert gpu_queue().count == 1
    assert Render.objects.get(pk=render.pk).attempt == 2


def test_enqueueing_the_same_attempt_twice_queues_it_once():
    render = start_render(make_user("unique@example.com"))
    assert dispatch.enqueue_render(render) is False
    assert gpu_queue().job_ids == [render.job_id]


def test_a_young_render_missing_from_redis_is_not_enqueued_twice(settings):
    # Between its commit and its enqueue a render is briefly missing from Redis.
    settings.RENDER_REQUEUE_AFTER_SECONDS = 60
    render = start_render(make_user("young@example.com"))
    Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer).delete()
    assert sweep().requeued == 0
    assert gpu_queue().count == 0


def test_the_sweeper_settles_a_finished_render_nobody_asked_about():
    user = make_user("quiet@example.com")
    render = start_render(user)
    run_gpu_jobs_in_process()

    assert sweep().settled == 1
    render.refresh_from_db()
    assert render.status == "succeeded"
    assert RenderEvent.objects.filter(render=render, to_status="succeeded", actor="sweeper").exists()
    assert account(user).balance == 9 * CREDITS


def test_the_sweeper_records_that_a_worker_picked_a_render_up():
    render = start_render(make_user("busy@example.com"))
    job = Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer)
    job.set_status(JobStatus.STARTED)

    assert sweep().marked_running == 1
    render.refresh_from_db()
    assert render.status == "running" and render.started_at is not None


def die_mid_job(job_id: str) -> None:
    """What a worker that died mid-job leaves behind: an execution whose heartbeat expired."""
    connection = redis_connection()
    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    gpu_queue().remove(job_id)
    job.set_status(JobStatus.STARTED)
    registry = StartedJobRegistry(GPU_QUEUE, connection=connection, serializer=JSONSerializer)
    connection.zadd(registry.key, {f"{job.id}:dead-execution": 1})


def test_a_job_whose_worker_died_is_retried_once_with_the_same_seed_and_the_hold_kept():
    user = make_user("crashed@example.com")
    render = start_render(user)
    first_job, seed = render.job_id, render.seed
    die_mid_job(first_job)

    sweep()
    render.refresh_from_db()
    assert (render.status, render.attempt, render.workers_lost) == ("queued", 2, 1)
    assert render.job_id != first_job and gpu_queue().job_ids == [render.job_id]
    [payload] = Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer).args
    assert payload["seed"] == seed
    assert account(user).held == CREDITS  # still reserved: the customer is not billed for our loss

    run_gpu_jobs_in_process()
    sweep()
    render.refresh_from_db()
    assert render.status == "succeeded" and render.credits_charged == CREDITS
    assert usage_entries(user) == 1 and account(user).held == 0


def test_a_second_lost_worker_ends_the_render_worker_lost_and_charges_nothing():
    user = make_user("crashed-twice@example.com")
    render = start_render(user)
    die_mid_job(render.job_id)
    sweep()
    render.refresh_from_db()
    die_mid_job(render.job_id)
    sweep()

    render.refresh_from_db()
    assert (render.status, render.error_code, render.workers_lost) == ("failed", "worker_lost", 2)
    assert account(user).held == 0 and account(user).balance == 10 * CREDITS


def test_a_failing_step_fails_only_that_render_and_hold_expiry_still_runs(monkeypatch):
    user = make_user("robust@example.com")
    broken, fine = start_render(user), start_render(user)
    run_gpu_jobs_in_process()
    orphan = ledger.reserve(user, CREDITS, reference="orphan", expires_at=timezone.now() - timedelta(seconds=1))
    real_observe = dispatch.observe

    def observe(job_id, expected=None):
        if job_id == broken.job_id:
            raise RuntimeError("a bug in one render's step")
        return real_observe(job_id, expected)

    monkeypatch.setattr(dispatch, "observe", observe)
    report = sweep()

    assert report.errors == 1 and report.settled == 1 and report.holds_expired == 1
    assert Render.objects.get(pk=fine.pk).status == "succeeded"
    assert Render.objects.get(pk=broken.pk).status == "queued"
    assert Hold.objects.get(pk=orphan.pk).status == HoldStatus.EXPIRED


def test_with_redis_down_deadlines_and_hold_expiry_still_apply(monkeypatch, settings):
    import redis

    settings.RENDER_DEADLINE_SECONDS = 1
    user = make_user("outage@example.com")
    late = start_render(user)
    time.sleep(1.1)
    orphan = ledger.reserve(user, CREDITS, reference="orphan-2", expires_at=timezone.now() - timedelta(seconds=1))

    def down(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    for name in ("observe", "reap_abandoned_jobs", "cancel_job", "mark_settled"):
        monkeypatch.setattr(dispatch, name, down)
    monkeypatch.setattr("imaging.ratelimit.give_back_render_slot", down)
    report = sweep()

    assert report.timed_out == 1 and report.holds_expired == 1
    assert Render.objects.get(pk=late.pk).error_code == "render_timeout"
    assert Hold.objects.get(pk=orphan.pk).status == HoldStatus.EXPIRED
    assert account(user).held == 0


def test_the_sweeper_expires_orphaned_holds_and_forgets_old_idempotency_keys():
    user = make_user("orphan@example.com")
    hold = ledger.reserve(user, CREDITS, reference="orphan-hold",
                          expires_at=timezone.now() - timedelta(seconds=1))
    IdempotencyRecord.objects.create(user=user, key="old", fingerprint="x",
                                     created_at=timezone.now() - timedelta(hours=25))
    IdempotencyRecord.objects.create(user=user, key="new", fingerprint="x")

    report = sweep()

    assert report.holds_expired == 1
    assert Hold.objects.get(pk=hold.pk).status == HoldStatus.EXPIRED
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_sweep_renders_every_keeps_sweeping_until_sigterm(settings):
    settings.RENDER_DEADLINE_SECONDS = 1
    render = start_render(make_user("loop@example.com"))
    stopper = threading.Timer(1.6, lambda: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    stopper.start()
    try:
        started = time.monotonic()
        call_command("sweep_renders", every=0.2)
        elapsed = time.monotonic() - started
    finally:
        stopper.cancel()
        signal.signal(signal.SIGTERM, previous)
    render.refresh_from_db()
    assert 1.4 < elapsed < 5
    assert render.status == "failed"  # swept on a pass after its deadline, not the first one
