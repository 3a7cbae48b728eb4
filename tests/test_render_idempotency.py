"""Idempotency-Key: a retried request never renders or charges twice."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from imaging import lifecycle
from imaging.models import IdempotencyRecord, Render
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    api_client,
    fake_gpu,
    in_thread,
    make_user,
    post_render,
    product_png,
    queued_gpu_jobs,
    render_env,
    run_gpu_jobs_in_process,
    usage_entries,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("fake_gpu")


def with_key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def render_to_completion(client, key: str, image: bytes, **fields):
    """POSTs in a thread while this thread runs the GPU job: the request answers 200."""
    future = in_thread(post_render, client, image=image, headers=with_key(key), **fields)
    wait_until(lambda: queued_gpu_jobs() == 1, what="the render's job")
    run_gpu_jobs_in_process()
    return future.result(timeout=20)


def test_the_same_key_and_body_get_the_first_response_again_without_a_second_charge(settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 15
    user = make_user("same@example.com")
    client = api_client(user)
    image = product_png(16)

    first = render_to_completion(client, "order-1", image)
    again = post_render(client, image=image, headers=with_key("order-1"))

    assert first.status_code == 200, first.content
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert again["X-Credits-Charged"] == first["X-Credits-Charged"] == str(CREDITS)
    assert again["X-Request-Id"] != first["X-Request-Id"]
    assert Render.objects.count() == 1
    assert usage_entries(user) == 1 and account(user).balance == 9 * CREDITS
    assert queued_gpu_jobs() == 0


def test_a_202_is_replayed_as_the_same_202():
    client = api_client(make_user("slow@example.com"))
    first = post_render(client, image=product_png(16), headers=with_key("k"))
    again = post_render(client, image=product_png(16), headers=with_key("k"))
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Location"] == first["Location"]
    assert Render.objects.count() == 1


def test_the_same_key_with_a_different_body_is_422_idempotency_key_reused():
    user = make_user("reuse@example.com")
    client = api_client(user)
    post_render(client, image=product_png(16), headers=with_key("k"))

    other_prompt = post_render(client, image=product_png(16), scene_prompt="a forest", headers=with_key("k"))
    other_file = post_render(client, image=product_png(18), headers=with_key("k"))

    for response in (other_prompt, other_file):
        assert response.status_code == 422
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert Render.objects.count() == 1 and account(user).held == CREDITS


def test_a_twin_of_a_request_still_running_is_409_idempotency_key_in_use(settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 15
    user = make_user("twin@example.com")
    client = api_client(user)
    image = product_png(16)
    first = in_thread(post_render, client, image=image, headers=with_key("k"))
    wait_until(lambda: queued_gpu_jobs() == 1, what="the first request's job")

    twin = post_render(client, image=image, headers=with_key("k"))
    assert twin.status_code == 409
    assert twin.json()["error"]["code"] == "idempotency_key_in_use"
    assert twin["Retry-After"] == "1"

    run_gpu_jobs_in_process()
    assert first.result(timeout=20).status_code == 200
    assert post_render(client, image=image, headers=with_key("k")).status_code == 200
    assert usage_entries(user) == 1


def test_concurrent_duplicates_make_one_render_and_one_charge(settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 15
    user = make_user("burst@example.com")
    client = api_client(user)
    image = product_png(16)
    barrier = threading.Barrier(6)

    def send():
        barrier.wait()
        return post_render(client, image=image, headers=with_key("dup"))

    futures = [in_thread(send) for _ in range(6)]
    wait_until(lambda: queued_gpu_jobs() == 1, what="the winner's job")
    run_gpu_jobs_in_process()
    responses = [future.result(timeout=20) for future in futures]

    statuses = sorted(r.status_code for r in responses)
    # 409 while the first request waits; a twin that came before its wait began is
    # told the render's state (202) instead: every answer that names a render names
    # the same one.
    assert set(statuses) <= {200, 202, 409} and statuses.count(200) >= 1, statuses
    assert len({r.json()["id"] for r in responses if r.status_code in (200, 202)}) == 1
    assert Render.objects.count() == 1
    assert usage_entries(user) == 1 and account(user).balance == 9 * CREDITS


def test_a_twin_sent_before_the_first_request_waits_learns_the_same_render(settings, monkeypatch):
    """Between the commit of the key, hold and render and the first request's wait,
    nobody is marked as waiting yet: a twin in that gap is answered from the render
    (202 with its id, replayed), as after a first request that died, never with a
    second render. Marking the wait before the commit instead would leave a request
    killed in the gap blocking its own retries with 409 until the mark expired."""
    settings.RENDER_SYNC_WINDOW_SECONDS = 15
    user = make_user("gap@example.com")
    client = api_client(user)
    image = product_png(16)
    committed, go_on = threading.Event(), threading.Event()
    real_wait = lifecycle.wait_and_settle

    def wait_later(render, timeout, *, actor):
        committed.set()
        go_on.wait(10)
        return real_wait(render, timeout, actor=actor)

    monkeypatch.setattr(lifecycle, "wait_and_settle", wait_later)
    first = in_thread(post_render, client, image=image, headers=with_key("gap"))
    assert committed.wait(10)
    twin = post_render(client, image=image, headers=with_key("gap"))
    go_on.set()
    run_gpu_jobs_in_process()
    answered = first.result(timeout=20)

    assert twin.status_code == 202, twin.content
    assert twin["Idempotent-Replayed"] == "true"
    assert answered.status_code == 200
    assert twin.json()["id"] == answered.json()["id"]
    assert Render.objects.count() == 1 and usage_entries(user) == 1


def test_keys_are_scoped_to_their_owner():
    alice = api_client(make_user("alice@example.com"))
    bob = api_client(make_user("bob@example.com"))
    first = post_render(alice, image=product_png(16), headers=with_key("shared"))
    second = post_render(bob, image=product_png(16), headers=with_key("shared"))
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert not second.has_header("Idempotent-Replayed")


def test_a_request_refused_before_any_render_frees_its_key():
    from billing import ledger

    user = make_user("broke@example.com", credits=0)
    client = api_client(user)
    refused = post_render(client, image=product_png(16), headers=with_key("k"))
    assert refused.status_code == 402
    assert not IdempotencyRecord.objects.exists()

    ledger.grant(user, CREDITS, reference="topup")
    accepted = post_render(client, image=product_png(16), headers=with_key("k"))
    assert accepted.status_code == 202


def test_a_key_older_than_24_hours_starts_a_new_render():
    client = api_client(make_user("old@example.com"))
    first = post_render(client, image=product_png(16), headers=with_key("k"))
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    second = post_render(client, image=product_png(16), headers=with_key("k"))
    assert second.status_code == 202 and second.json()["id"] != first.json()["id"]


def test_a_claim_left_by_a_crashed_request_is_answered_from_its_render():
    user = make_user("crash@example.com")
    client = api_client(user)
    first = post_render(client, image=product_png(16), headers=with_key("k"))
    # The process died after creating the render, before remembering its answer.
    IdempotencyRecord.objects.update(state="in_progress", response_status=None, response_body=None,
                                     created_at=timezone.now() - timedelta(minutes=5))
    run_gpu_jobs_in_process()

    retry = post_render(client, image=product_png(16), headers=with_key("k"))
    assert retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"] and retry.json()["status"] == "succeeded"
    assert Render.objects.count() == 1 and usage_entries(user) == 1
