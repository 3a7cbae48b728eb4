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
    assert gpu_queue().job_ids == [render.job_id]
    assert RenderEvent.objects.filter(render=render, note__contains="re-enqueued").exists()

    run_gpu_jobs_in_process()
    sweep()
    render.refresh_from_db()
    assert render.status == "succeeded" and render.credits_charged == CREDITS
    assert account(user).balance == 9 * CREDITS


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


def test_a_job_whose_worker_died_fails_as_worker_lost():
    user = make_user("crashed@example.com")
    render = start_render(user)
    connection = redis_connection()
    job = Job.fetch(render.job_id, connection=connection, serializer=JSONSerializer)
    job.set_status(JobStatus.STARTED)
    # What a worker that died mid-job leaves behind: an execution whose heartbeat expired.
    registry = StartedJobRegistry(GPU_QUEUE, connection=connection, serializer=JSONSerializer)
    connection.zadd(registry.key, {f"{job.id}:dead-execution": 1})

    sweep()
    render.refresh_from_db()
    assert (render.status, render.error_code) == ("failed", "worker_lost")
    assert account(user).held == 0 and account(user).balance == 10 * CREDITS


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
