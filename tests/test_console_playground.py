"""The playground: a real render from the browser, charged exactly like an API call.

The form posts through imaging.renders.submit_render (spied on, never replaced), the
render runs on rq's real worker and real Redis, and the money is checked in the
ledger. Without JavaScript the POST redirects to the render's page; with it (an
``Accept: application/json`` POST) it answers 202 and the page polls the status.
"""

from __future__ import annotations

import io
import re

import pytest
from django.test import Client
from PIL import Image

from billing.models import Hold, HoldStatus
from imaging import renders
from imaging.models import Render, RenderEvent
from tests.helpers_render import (  # noqa: F401  (fixtures)
    CREDITS,
    account,
    allow_loopback_fetches,
    fake_gpu,
    make_user,
    pending_holds,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
    serving,
    usage_entries,
)


JSON = {"Accept": "application/json"}


def signed_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def upload(data: bytes | None = None, name: str = "product.png") -> io.BytesIO:
    handle = io.BytesIO(product_png(16) if data is None else data)
    handle.name = name
    return handle


def form(**fields) -> dict:
    data = {"source": "upload", "image_file": upload(), "scene_prompt": "a sunny beach",
            "preserve_shadow": "true", "output_format": "png"}
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def submissions(monkeypatch):
    """Records every call of the API's submit_render, letting each one run for real."""
    calls = []
    real = renders.submit_render

    def spy(user, api_key, params, image, **kwargs):
        render = real(user, api_key, params, image, **kwargs)
        calls.append((user, api_key, params, render))
        return render

    monkeypatch.setattr(renders, "submit_render", spy)
    return calls


def test_the_playground_needs_a_signed_in_user(client, db):
    assert client.get("/dashboard/playground/")["Location"].startswith("/login/")
    assert client.post("/dashboard/playground/", form())["Location"].startswith("/login/")
    assert not Render.objects.exists()


def test_the_playground_form_is_labelled_and_shows_the_price_and_credits(db):
    user = make_user("dev@example.com", credits=100)

    page = signed_in(user).get("/dashboard/playground/").content.decode()

    for field in ("id_image_file", "id_image_url", "id_scene_prompt", "id_output_format", "id_seed"):
        assert f'<label for="{field}">' in page
    assert 'name="preserve_shadow" value="true" checked' in page
    assert "Render for 22 credits" in page
    assert 'data-testid="credits-available">100<' in page


def test_without_javascript_a_render_goes_through_submit_render_and_redirects_to_its_page(
        fake_gpu, submissions):
    user = make_user("dev@example.com")
    client = signed_in(user)

    response = client.post("/dashboard/playground/", form(scene_prompt="a red barn"))

    render = Render.objects.get()
    assert response.status_code == 303
    assert response["Location"] == f"/dashboard/renders/{render.public_id}/"
    [(called_user, api_key, params, returned)] = submissions
    assert called_user == user and api_key is None and returned == render
    assert params.scene_prompt == "a red barn" and params.preserve_shadow is True
    assert render.api_key is None and render.status == "queued"
    assert account(user).held == CREDITS and pending_holds(user) == 1
    assert RenderEvent.objects.get(render=render).actor == "playground"


def test_a_playground_render_is_charged_22_credits_when_it_succeeds(fake_gpu):
    user = make_user("dev@example.com")
    client = signed_in(user)
    started = client.post("/dashboard/playground/", form(), headers=JSON)
    assert started.status_code == 202
    body = started.json()
    assert body["status_url"] == f"/dashboard/renders/{body['id']}/status"

    run_gpu_jobs_in_process()
    done = client.get(body["status_url"]).json()

    assert done["status"] == "succeeded" and done["credits_charged"] == CREDITS
    assert account(user).balance == 9 * CREDITS and account(user).held == 0
    assert usage_entries(user) == 1
    render = Render.objects.get(public_id=body["id"])
    assert Hold.objects.get(pk=render.hold_id).status == HoldStatus.CAPTURED


def test_a_failed_playground_render_costs_nothing(fake_gpu):
    user = make_user("dev@example.com")
    client = signed_in(user)
    body = client.post("/dashboard/playground/", form(scene_prompt="fail:no_subject_found"), headers=JSON).json()

    run_gpu_jobs_in_process()
    done = client.get(body["status_url"]).json()

    assert done["status"] == "failed" and done["error"]["code"] == "no_subject_found"
    assert account(user).balance == 10 * CREDITS and account(user).held == 0 and usage_entries(user) == 0


def test_the_shadow_toggle_off_is_sent_as_false(fake_gpu):
    user = make_user("dev@example.com")
    signed_in(user).post("/dashboard/playground/", form(preserve_shadow=None, seed="99", output_format="webp"))

    render = Render.objects.get()
    assert render.preserve_shadow is False and render.requested_seed == 99 and render.output_format == "webp"


def test_a_pasted_url_is_fetched_and_rendered(fake_gpu, settings):
    user = make_user("dev@example.com")
    with serving(product_png(16)) as url:
        allow_loopback_fetches(settings, url)
        response = signed_in(user).post("/dashboard/playground/", form(source="url", image_url=url), headers=JSON)

    assert response.status_code == 202, response.content
    render = Render.objects.get()
    assert render.image_url == url and render.input_width == 16


def test_a_forbidden_url_is_refused_on_its_field_with_nothing_reserved(fake_gpu):
    user = make_user("dev@example.com")

    response = signed_in(user).post("/dashboard/playground/",
                                    form(source="url", image_url="http://127.0.0.1/x.png"), headers=JSON)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "image_url_forbidden"
    assert list(response.json()["errors"]) == ["image_url"]
    assert not Render.objects.exists() and account(user).held == 0


def test_a_missing_prompt_is_shown_next_to_its_field_and_keeps_what_was_typed(fake_gpu):
    user = make_user("dev@example.com")

    response = signed_in(user).post("/dashboard/playground/", form(scene_prompt="", seed="12"))

    page = response.content.decode()
    assert response.status_code == 400
    assert re.search(r'id="scene_prompt-error" data-error-for="scene_prompt">[^<]+<', page)
    assert 'aria-invalid="true"' in page and 'name="seed" min="0" max="4294967295" value="12"' in page
    assert not Render.objects.exists()


def test_choosing_upload_without_a_file_points_at_the_file_field(fake_gpu):
    user = make_user("dev@example.com")

    response = signed_in(user).post("/dashboard/playground/", form(image_file=None), headers=JSON)

    assert response.status_code == 400 and list(response.json()["errors"]) == ["image_file"]


def test_an_unsupported_image_is_refused_before_any_credit_is_held(fake_gpu):
    user = make_user("dev@example.com")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")

    response = signed_in(user).post("/dashboard/playground/", form(image_file=upload(gif.getvalue(), "x.gif")),
                                    headers=JSON)

    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_image"
    assert account(user).held == 0 and not Render.objects.exists()


def test_too_few_credits_is_refused_with_the_402_message(fake_gpu):
    user = make_user("poor@example.com", credits=10)

    response = signed_in(user).post("/dashboard/playground/", form())

    assert response.status_code == 402
    assert "This render needs 22 credits; 10 are available." in response.content.decode()
    assert not Render.objects.exists() and account(user).held == 0


def test_at_most_three_playground_renders_run_at_once(fake_gpu):
    user = make_user("dev@example.com")
    client = signed_in(user)
    for _ in range(3):
        assert client.post("/dashboard/playground/", form(), headers=JSON).status_code == 202

    fourth = client.post("/dashboard/playground/", form(), headers=JSON)

    assert fourth.status_code == 429 and Render.objects.count() == 3
    assert account(user).held == 3 * CREDITS


def test_the_playground_form_is_csrf_protected(fake_gpu):
    user = make_user("dev@example.com")

    response = signed_in(user, enforce_csrf_checks=True).post("/dashboard/playground/", form())

    assert response.status_code == 403 and not Render.objects.exists()
