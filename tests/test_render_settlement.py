"""Settlement: a render ends once, whoever sees the end first, and only success costs credits.

Outcomes come from rq's real worker (in this process, running a fake pipeline) on
the real Redis, so the web side reads them exactly as it reads the GPU worker's.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from rq import Queue
from rq.serializers import JSONSerializer

from billing.models import Hold, HoldStatus
from imaging import lifecycle, tasks
from imaging.dispatch import redis_connection
from imaging.models import Render, RenderEvent
from imaging.sweeper import sweep
from platform_site.api_errors import REGISTRY
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    api_client,
    fake_gpu,
    make_user,
    pending_holds,
    post_render,
    product_png,
    render_env,
    run_default_jobs_in_process,
    run_gpu_jobs_in_process,
    usage_entries,
)

pytestmark = pytest.mark.usefixtures("fake_gpu")


def start_render(client, prompt: str = "a sunny beach") -> Render:
    response = post_render(client, image=product_png(16), scene_prompt=prompt)
    assert response.status_code == 202, response.content
    return Render.objects.get(public_id=response.json()["id"])


def transitions(render: Render) -> list[tuple[str, str, str]]:
    return list(RenderEvent.objects.filter(render=render).values_list("from_status", "to_status", "actor"))


def test_a_success_is_charged_once_however_many_observers_see_it():
    user = make_user("a@example.com")
    client = api_client(user)
    render = start_render(client)
    assert account(user).held == CREDITS

    run_gpu_jobs_in_process()
    first = client.get(f"/v1/renders/{render.public_id}")
    second = client.get(f"/v1/renders/{render.public_id}")
    assert tasks.settle_render(render.public_id) == "succeeded"
    sweep()

    assert first.status_code == 200 and first.json()["status"] == "succeeded"
    assert first.json()["credits_charged"] == CREDITS
    assert second.json()["credits_charged"] == CREDITS
    assert first["X-Credits-Charged"] == str(CREDITS)
    assert first["X-Credits-Remaining"] == str(9 * CREDITS)
    assert usage_entries(user) == 1
    assert account(user).balance == 9 * CREDITS and account(user).held == 0
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.CAPTURED
    assert [t for t in transitions(render) if t[1] == "succeeded"] == [("queued", "succeeded", "status_poll")]


def test_a_worker_failure_charges_nothing_and_keeps_the_workers_code():
    user = make_user("b@example.com")
    client = api_client(user)
    render = start_render(client, "fail:model_unavailable")

    run_gpu_jobs_in_process()
    body = client.get(f"/v1/renders/{render.public_id}").json()

    assert body["status"] == "failed"
    assert body["error"] == {"code": "model_unavailable", "message": REGISTRY["model_unavailable"].description}
    # What the worker said stays inside: for staff and the log.
    assert Render.objects.get(pk=render.pk).error_detail.endswith("fake failure model_unavailable")
    assert body["credits_charged"] == 0 and body["output_url"] is None
    assert account(user).balance == 10 * CREDITS and account(user).held == 0
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.RELEASED
    assert usage_entries(user) == 0


def test_a_code_the_api_does_not_know_is_stored_as_render_failed():
    client = api_client(make_user("c@example.com"))
    render = start_render(client, "fail:gpu_on_fire")
    run_gpu_jobs_in_process()
    body = client.get(f"/v1/renders/{render.public_id}").json()
    assert body["error"] == {"code": "render_failed", "message": REGISTRY["render_failed"].description}


def test_a_crash_without_a_code_is_render_failed_and_hides_the_traceback():
    client = api_client(make_user("d@example.com"))
    render = start_render(client, "crash")
    run_gpu_jobs_in_process()
    body = client.get(f"/v1/renders/{render.public_id}").json()
    assert body["error"]["code"] == "render_failed"
    assert "unexpected crash" not in body["error"]["message"]


def test_a_job_past_its_time_limit_is_render_timeout(settings):
    settings.RQ_JOB_TIMEOUT = 1
    user = make_user("e@example.com")
    client = api_client(user)
    render = start_render(client, "slow:3")
    run_gpu_jobs_in_process()
    body = client.get(f"/v1/renders/{render.public_id}").json()
    assert body["error"]["code"] == "render_timeout"
    assert account(user).held == 0 and account(user).balance == 10 * CREDITS


def test_a_success_arriving_after_the_render_was_expired_charges_nothing():
    user = make_user("f@example.com")
    client = api_client(user)
    render = start_render(client)
    # What the sweeper does at the deadline, while the job is still on the queue.
    lifecycle.fail(render.pk, "render_timeout", "too slow", actor="sweeper")

    run_gpu_jobs_in_process()  # ...and then the worker succeeds after all
    assert tasks.settle_render(render.public_id) == "failed"
    body = client.get(f"/v1/renders/{render.public_id}").json()

    assert body["status"] == "failed" and body["error"]["code"] == "render_timeout"
    assert body["credits_charged"] == 0
    assert account(user).balance == 10 * CREDITS and account(user).held == 0
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.RELEASED
    assert usage_entries(user) == 0


def test_the_settle_job_a_worker_enqueues_settles_the_render_on_the_django_side():
    user = make_user("g@example.com")
    render = start_render(api_client(user))
    run_gpu_jobs_in_process()
    # Exactly what the GPU worker enqueues when its task ends.
    Queue("default", connection=redis_connection(), serializer=JSONSerializer).enqueue(
        "imaging.tasks.settle_render", render.public_id)
    run_default_jobs_in_process()

    render.refresh_from_db()
    assert render.status == "succeeded" and render.credits_charged == CREDITS
    assert transitions(render)[-1] == ("queued", "succeeded", "settle_job")
    assert usage_entries(user) == 1


def test_the_settle_job_waits_for_an_outcome_rq_has_not_recorded_yet(settings):
    settings.RENDER_SETTLE_WAIT_SECONDS = 20
    render = start_render(api_client(make_user("h@example.com")))
    seen: dict[str, object] = {}

    def settle_in_background() -> None:
        started = time.monotonic()
        seen["status"] = tasks.settle_render(render.public_id)
        seen["seconds"] = time.monotonic() - started
        connection.close()

    thread = threading.Thread(target=settle_in_background)
    thread.start()
    time.sleep(0.3)
    run_gpu_jobs_in_process()
    thread.join(timeout=30)

    assert seen["status"] == "succeeded"
    assert seen["seconds"] < 10  # woken by the outcome, not by its own time limit


def test_concurrent_observers_capture_the_hold_exactly_once():
    user = make_user("i@example.com")
    render = start_render(api_client(user))
    run_gpu_jobs_in_process()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def observe() -> None:
        try:
            barrier.wait()
            lifecycle.refresh(Render.objects.get(pk=render.pk), actor="status_poll")
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=observe) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert usage_entries(user) == 1
    assert account(user).balance == 9 * CREDITS and account(user).held == 0
    assert pending_holds(user) == 0
    assert RenderEvent.objects.filter(render=render, to_status="succeeded").count() == 1


def test_the_settle_job_stands_aside_while_a_request_is_waiting_on_the_render():
    from imaging import dispatch

    user = make_user("j@example.com")
    render = start_render(api_client(user))
    run_gpu_jobs_in_process()
    # A request blocked on this render's outcome has announced itself.
    assert dispatch.wait_for_outcome(render.job_id, 0.05, announce=True).succeeded

    assert tasks.settle_render(render.public_id) == "left to the waiting request"
    assert Render.objects.get(pk=render.pk).status == "queued"

    dispatch.stop_waiting(render.job_id)  # the request gave up (or died before settling)
    assert tasks.settle_render(render.public_id) == "succeeded"
    assert usage_entries(user) == 1


def test_a_render_created_while_the_queue_refuses_its_job_answers_202_and_is_queued_later(
        monkeypatch, settings):
    import redis

    from imaging import dispatch

    real_enqueue = dispatch.enqueue_render

    def redis_is_down(render):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(dispatch, "enqueue_render", redis_is_down)
    user = make_user("k@example.com")
    response = post_render(api_client(user), image=product_png(16))

    # The render exists and holds its credits: the client learns its id.
    assert response.status_code == 202, response.content
    render = Render.objects.get(public_id=response.json()["id"])
    assert render.status == "queued" and account(user).held == CREDITS

    monkeypatch.setattr(dispatch, "enqueue_render", real_enqueue)
    settings.RENDER_REQUEUE_AFTER_SECONDS = 0
    assert sweep().requeued == 1
    run_gpu_jobs_in_process()
    sweep()
    render.refresh_from_db()
    assert (render.status, render.attempt, render.credits_charged) == ("succeeded", 2, CREDITS)
    assert usage_entries(user) == 1 and account(user).held == 0


def test_a_queue_that_cannot_be_reached_before_the_reserve_answers_503_with_nothing_held(monkeypatch):
    import redis

    from imaging import ratelimit

    def redis_is_down(*args):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(ratelimit, "take_render_slot", redis_is_down)
    user = make_user("l@example.com")
    response = post_render(api_client(user), image=product_png(16))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert "render" not in response.json()
    assert not Render.objects.exists()
    assert account(user).held == 0 and account(user).balance == 10 * CREDITS
