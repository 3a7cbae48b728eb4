"""Limits per customer, across all of a user's keys: requests a minute and renders in flight.

More keys must not mean more capacity. Real Redis, real renders through the API
(queued on the real "gpu" queue; the in-flight test leaves them running on purpose).
The concurrent test runs on both databases; CI runs it on PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from billing.models import Hold, HoldStatus
from imaging import ratelimit
from imaging.dispatch import redis_connection
from imaging.models import Render
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    ROOT,
    account,
    api_client,
    fake_gpu,
    in_thread,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
)


@pytest.mark.usefixtures("render_env")
def test_a_customer_over_the_per_customer_rate_gets_429_on_every_key(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 1000
    settings.API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER = 3
    user = make_user("many-keys@example.com")
    clients = [api_client(user, f"key {i}") for i in range(4)]

    statuses = [c.get("/v1/renders/rnd_nope").status_code for c in clients]
    refused = clients[0].get("/v1/renders/rnd_nope")

    assert statuses == [404, 404, 404, 429]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 20
    other = make_user("someone-else@example.com")
    assert api_client(other).get("/v1/renders/rnd_nope").status_code == 404


@pytest.mark.usefixtures("render_env")
def test_a_request_refused_for_the_customer_does_not_use_up_its_keys_rate(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    settings.API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER = 2
    user = make_user("all-or-nothing@example.com")
    first, second = api_client(user, "first"), api_client(user, "second")
    assert [first.get("/v1/renders/rnd_nope").status_code for _ in range(2)] == [404, 404]
    assert second.get("/v1/renders/rnd_nope").status_code == 429

    redis_connection().delete(f"imaging:rate:customer:{user.pk}")  # a fresh minute for the customer
    # The refused request counted against neither bucket: the second key still has both.
    assert [second.get("/v1/renders/rnd_nope").status_code for _ in range(2)] == [404, 404]


@pytest.mark.usefixtures("render_env")
def test_a_user_with_ten_keys_cannot_exceed_the_per_customer_in_flight_limit(settings):
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY = 64
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER = 3
    user = make_user("fan-out@example.com", credits=40 * CREDITS)
    clients = [api_client(user, f"key {i}") for i in range(10)]
    image = product_png(16)
    barrier = threading.Barrier(20)

    def render(client):
        barrier.wait()
        return post_render(client, image=image)

    # Nothing runs the queued renders: every accepted one stays in flight.
    futures = [in_thread(render, clients[i % 10]) for i in range(20)]
    responses = [future.result(timeout=120) for future in futures]

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * 3 + [429] * 17, statuses
    refusals = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "rate_limited" and r["Retry-After"] == "1" for r in refusals)
    assert "across all its keys" in refusals[0].json()["error"]["message"]
    assert Render.objects.filter(user=user).count() == 3
    assert Hold.objects.filter(account__user=user, status=HoldStatus.PENDING).count() == 3
    assert account(user).held == 3 * CREDITS
    assert ratelimit.customer_renders_in_flight(user.pk) == 3


@pytest.mark.usefixtures("fake_gpu")
def test_finishing_a_render_gives_the_customer_its_slot_back(settings):
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER = 1
    user = make_user("one-at-a-time@example.com")
    first, second = api_client(user, "first"), api_client(user, "second")
    assert post_render(first, image=product_png(16)).status_code == 202
    assert post_render(second, image=product_png(16)).status_code == 429

    run_gpu_jobs_in_process()
    render = Render.objects.get(user=user)
    first.get(f"/v1/renders/{render.public_id}")  # observing the end frees the slots

    assert ratelimit.customer_renders_in_flight(user.pk) == 0
    assert post_render(second, image=product_png(16)).status_code == 202


@pytest.mark.usefixtures("render_env")
def test_playground_renders_count_against_the_customer_too(settings):
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER = 2
    user = make_user("playground@example.com")
    ratelimit.take_render_slot(None, "rnd_playground_1", user.pk)
    ratelimit.take_render_slot(None, "rnd_playground_2", user.pk)

    refused = post_render(api_client(user), image=product_png(16))

    assert refused.status_code == 429 and Render.objects.count() == 0 and account(user).held == 0
    ratelimit.give_back_render_slot(None, "rnd_playground_1", user.pk)
    assert ratelimit.customer_renders_in_flight(user.pk) == 1


@pytest.mark.usefixtures("render_env")
def test_the_playground_answers_the_customer_cap_with_429_and_retry_after(settings):
    import io

    from django.test import Client

    settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER = 1
    user = make_user("playground-cap@example.com")
    assert post_render(api_client(user), image=product_png(16)).status_code == 202
    browser = Client()
    browser.force_login(user)
    image = io.BytesIO(product_png(16))
    image.name = "product.png"

    refused = browser.post("/dashboard/playground/", {"source": "upload", "image_file": image,
                                                      "scene_prompt": "a beach", "output_format": "png"},
                           headers={"Accept": "application/json"})

    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert Render.objects.filter(user=user).count() == 1


@pytest.mark.usefixtures("render_env")
def test_a_key_refused_for_its_own_cap_takes_no_customer_slot(settings):
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY = 1
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER = 5
    user = make_user("key-cap@example.com")
    client = api_client(user)
    assert post_render(client, image=product_png(16)).status_code == 202
    refused = post_render(client, image=product_png(16))
    assert refused.status_code == 429 and "This key already has 1" in refused.json()["error"]["message"]
    assert ratelimit.customer_renders_in_flight(user.pk) == 1


def test_by_default_a_customer_gets_what_one_key_gets_however_the_key_limits_are_set():
    env = {**os.environ, "API_RATE_LIMIT_PER_MINUTE": "123", "API_MAX_RENDERS_IN_FLIGHT_PER_KEY": "7"}
    for name in ("API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER", "API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER", "DEBUG"):
        env.pop(name, None)
    shown = subprocess.run(
        [sys.executable, "-c", "import platform_site.settings as s; "
         "print(s.API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER, s.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert shown == ["123", "7"]
