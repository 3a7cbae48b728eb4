"""The whole path through real parts: the API, real Redis, and `python -m gpu_worker`.

The main success case runs the worker's default engine (classical matting, no
weights needed) on a dark product on a white backdrop; the timing cases use its
``echo`` engine with a configured delay.
"""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command
from django.utils import timezone
from PIL import Image

from billing.models import Hold, HoldStatus
from gpu_worker import studio_truth
from imaging.models import Render, RenderEvent
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    allow_loopback_fetches,
    api_client,
    fetch_url,
    make_user,
    noise_png,
    post_render,
    product_png,
    render_env,
    serving,
    usage_entries,
    wait_until,
    WorkerSlot,
)


SUBJECT = (30, 40, 60)  # product_png's square


@pytest.fixture(scope="module")
def workers():
    slot = WorkerSlot()
    yield slot
    slot.stop()


@pytest.fixture
def default_engine_worker(workers):
    return workers.use(None)


def image_of(response) -> Image.Image:
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


@pytest.mark.usefixtures("render_env")
def test_a_render_answers_200_and_its_output_downloads_with_the_subject_exact(default_engine_worker, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    user = make_user("e2e@example.com")
    client = api_client(user)

    response = post_render(client, image=product_png(64), scene_prompt="a sunny beach", seed=7)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    assert (body["width"], body["height"], body["format"]) == (64, 64, "png")
    assert body["credits_charged"] == CREDITS and body["credits_remaining"] == 9 * CREDITS
    assert response["X-Credits-Charged"] == str(CREDITS)
    assert response["X-Credits-Remaining"] == str(9 * CREDITS)
    assert response["X-Request-Id"].startswith("req_")
    assert body["timings_ms"] and body["error"] is None

    output = fetch_url(client, body["output_url"])
    assert output.status_code == 200 and output["Content-Type"] == "image/png"
    assert output["X-Content-Type-Options"] == "nosniff"
    picture = image_of(output).convert("RGB")
    assert picture.size == (64, 64)
    assert picture.getpixel((32, 32)) == SUBJECT  # inside the subject: the source pixel, exactly
    matte = image_of(fetch_url(client, body["matte_url"]))
    assert matte.getpixel((32, 32)) == 255 and matte.getpixel((1, 1)) == 0

    assert usage_entries(user) == 1 and account(user).held == 0
    render = Render.objects.get(public_id=body["id"])
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.CAPTURED
    assert list(RenderEvent.objects.filter(render=render).values_list("to_status", flat=True))[-1] == "succeeded"
    assert body["shadow"] == {"state": "none_found", "strength": 0.0}


@pytest.mark.usefixtures("render_env")
def test_the_response_says_what_was_done_with_the_photos_shadow(default_engine_worker, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    client = api_client(make_user("shadow@example.com"))
    case = studio_truth.make_case("bottle/white_soft", 288, 216, seed=1)
    photo = io.BytesIO()
    Image.fromarray(case.image).save(photo, "PNG")

    kept = post_render(client, image=photo.getvalue(), scene_prompt="a plain studio", seed=3)
    assert kept.status_code == 200, kept.content
    shadow = kept.json()["shadow"]
    assert shadow["state"] == "kept"
    assert abs(shadow["strength"] - float(1 - case.shadow[case.alpha < 0.01].min())) < 0.1

    dropped = post_render(client, image=photo.getvalue(), scene_prompt="a plain studio", seed=3,
                          preserve_shadow=False)
    assert dropped.status_code == 200, dropped.content
    assert dropped.json()["shadow"]["state"] == "not_requested"


@pytest.mark.usefixtures("render_env")
def test_a_render_from_an_image_url_fetched_on_loopback_succeeds(default_engine_worker, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    client = api_client(make_user("url@example.com"))
    with serving(product_png(48)) as url:
        allow_loopback_fetches(settings, url)
        response = client.post("/v1/image/replace-background",
                               {"image_url": url, "scene_prompt": "a wooden table"},
                               content_type="application/json")
    assert response.status_code == 200, response.content
    assert (response.json()["width"], response.json()["height"]) == (48, 48)


@pytest.mark.usefixtures("render_env")
def test_a_render_the_worker_fails_charges_nothing(default_engine_worker, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    user = make_user("noise@example.com")
    client = api_client(user)

    response = post_render(client, image=noise_png(64))

    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"]["code"] in {"no_subject_found", "backdrop_not_plain"}
    assert body["render"]["status"] == "failed" and body["render"]["credits_charged"] == 0
    assert body["render"]["error"]["code"] == body["error"]["code"]
    assert response["X-Credits-Charged"] == "0"
    assert account(user).balance == 10 * CREDITS and account(user).held == 0
    assert usage_entries(user) == 0
    again = client.get(f"/v1/renders/{body['render']['id']}")
    assert again.status_code == 200 and again.json()["status"] == "failed"


@pytest.mark.usefixtures("render_env")
def test_without_scene_weights_the_worker_starts_and_renders_fail_model_unavailable_for_free(
        workers, settings, tmp_path):
    settings.RENDER_SYNC_WINDOW_SECONDS = 55
    # The production default model, with an empty model directory: what `make run`
    # gets on a machine where nobody ran `python -m gpu_worker fetch-models`.
    workers.use(None, SCENE_MODEL="sdxl-inpainting", MODEL_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    user = make_user("noweights@example.com")
    client = api_client(user)

    response = post_render(client, image=product_png(64))

    assert response.status_code == 503, response.content
    body = response.json()
    assert body["error"]["code"] == "model_unavailable"
    assert body["render"]["status"] == "failed" and body["render"]["credits_charged"] == 0
    assert account(user).balance == 10 * CREDITS and account(user).held == 0
    assert usage_entries(user) == 0


@pytest.mark.usefixtures("render_env")
def test_a_render_longer_than_the_sync_window_answers_202_and_later_succeeds(workers, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 0.3
    workers.use("echo", WORKER_ECHO_DELAY_MS="1500")
    user = make_user("slow@example.com")
    client = api_client(user)

    response = post_render(client, image=product_png(32))

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] in {"queued", "running"} and body["output_url"] is None
    assert response["Location"] == body["status_url"]
    assert int(response["Retry-After"]) >= 1
    assert account(user).held == CREDITS
    wait_until(lambda: client.get(f"/v1/renders/{body['id']}").json()["status"] == "succeeded",
               timeout=20, what="the render to finish")
    final = client.get(f"/v1/renders/{body['id']}")
    assert final.json()["credits_charged"] == CREDITS
    assert fetch_url(client, final.json()["output_url"]).status_code == 200
    assert usage_entries(user) == 1 and account(user).balance == 9 * CREDITS


@pytest.mark.usefixtures("render_env")
def test_killing_the_worker_mid_render_ends_in_a_failed_render_with_the_hold_released(workers, settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 0.3
    settings.RENDER_DEADLINE_SECONDS = 3
    worker = workers.use("echo", WORKER_ECHO_DELAY_MS="30000")
    user = make_user("killed@example.com")
    client = api_client(user)

    response = post_render(client, image=product_png(32))
    assert response.status_code == 202
    render_id = response.json()["id"]
    wait_until(lambda: client.get(f"/v1/renders/{render_id}").json()["status"] == "running",
               timeout=20, what="the worker to pick the render up")
    worker.kill()
    assert account(user).held == CREDITS

    render = Render.objects.get(public_id=render_id)
    call_command("sweep_renders")  # before the deadline a running render is left alone
    assert Render.objects.get(pk=render.pk).status == "running"
    time.sleep(max(0.0, (render.deadline_at - timezone.now()).total_seconds()) + 0.1)
    call_command("sweep_renders")

    body = client.get(f"/v1/renders/{render_id}").json()
    assert body["status"] == "failed"
    assert body["error"]["code"] in {"render_timeout", "worker_lost"}
    assert body["credits_charged"] == 0
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.RELEASED
    assert account(user).balance == 10 * CREDITS and account(user).held == 0
