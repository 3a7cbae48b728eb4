"""Per-key limits: a request rate and a cap on renders in flight, both 429 rate_limited."""

from __future__ import annotations

import pytest

from imaging import ratelimit
from imaging.models import Render
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


@pytest.mark.usefixtures("render_env")
def test_a_key_over_its_request_rate_gets_429_with_retry_after(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    user = make_user("fast@example.com")
    client = api_client(user)
    statuses = [client.get("/v1/renders/rnd_nope").status_code for _ in range(4)]

    assert statuses == [404, 404, 404, 429]
    refused = client.get("/v1/renders/rnd_nope")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 20  # one request every 20 s at 3 per minute


@pytest.mark.usefixtures("render_env")
def test_the_rate_is_counted_per_key(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    user = make_user("two@example.com")
    first, second = api_client(user, "one"), api_client(user, "two")
    assert [first.get("/v1/renders/rnd_nope").status_code for _ in range(3)] == [404, 404, 429]
    assert second.get("/v1/renders/rnd_nope").status_code == 404


@pytest.mark.usefixtures("render_env")
def test_a_render_refused_by_the_rate_limit_reserves_nothing(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    user = make_user("none@example.com")
    client = api_client(user)
    client.get("/v1/renders/rnd_nope")
    response = post_render(client, image=product_png(16))
    assert response.status_code == 429
    assert account(user).held == 0 and Render.objects.count() == 0


@pytest.mark.usefixtures("fake_gpu")
def test_a_key_at_its_in_flight_cap_gets_429_until_a_render_ends(settings):
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY = 2
    user = make_user("busy@example.com")
    client = api_client(user)
    assert [post_render(client, image=product_png(16)).status_code for _ in range(2)] == [202, 202]

    refused = post_render(client, image=product_png(16))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused["Retry-After"] == "1"
    assert account(user).held == 2 * CREDITS and Render.objects.count() == 2

    other_key = api_client(user, "other")
    assert post_render(other_key, image=product_png(16)).status_code == 202

    run_gpu_jobs_in_process()
    for render in Render.objects.all():
        client.get(f"/v1/renders/{render.public_id}")  # observing the end frees the slot
    assert post_render(client, image=product_png(16)).status_code == 202


@pytest.mark.usefixtures("render_env")
def test_a_refused_reserve_gives_its_in_flight_slot_back(settings):
    settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY = 1
    user = make_user("empty@example.com", credits=0)
    client = api_client(user)
    assert post_render(client, image=product_png(16)).status_code == 402
    assert ratelimit.renders_in_flight(user.api_keys.get().pk) == 0
