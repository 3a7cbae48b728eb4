"""The playground: a real render from the browser, charged exactly like an API call.

The form posts through imaging.renders.submit_render (spied on, never replaced), the
render runs on rq's real worker and real Redis, and the money is checked in the
ledger. Without JavaScript the POST redirects to the render's page; with it (an
``Accept: application/json`` POST) it answers 202 and the page polls the status.
"""

from __future__ import annotations

import html
import io
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image
from rq.job import Job
from rq.serializers import JSONSerializer

from billing.models import Hold, HoldStatus
from imaging import renders, worker_capabilities
from imaging.dashboard import progress
from imaging.dispatch import redis_connection
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


# --- prompt suggestions and the diffusion notice -------------------------------------


def test_the_playground_suggests_studio_prompts_that_fill_the_prompt_field(db):
    page = signed_in(make_user("dev@example.com")).get("/dashboard/playground/").content.decode()

    suggested = [html.unescape(p) for p in re.findall(r'data-prompt-suggestion="([^"]+)"', page)]
    assert suggested == ["pure white background", "soft grey paper sweep", "pastel pink studio backdrop",
                         "gradient from navy to teal"]
    # Buttons that do not submit the form; hidden until console.js can make them work.
    assert page.count('type="button" class="chip"') == 4
    assert "data-prompt-suggestions hidden" in page


@pytest.mark.parametrize(("installed", "notice_shown"), [(False, True), (True, False), (None, False)])
def test_the_playground_says_so_when_no_render_worker_has_a_diffusion_model(
        db, monkeypatch, installed, notice_shown):
    monkeypatch.setattr(worker_capabilities, "diffusion_installed", lambda: installed)

    page = signed_in(make_user("dev@example.com")).get("/dashboard/playground/").content.decode()

    notice = ("No diffusion model is installed on the render workers: studio prompts work now; "
              "scene prompts need the diffusion weights (see README)")
    assert (notice in page) is notice_shown
    assert ('data-testid="no-diffusion-notice"' in page) is notice_shown


# --- where a failed render stopped ---------------------------------------------------


def worker_reached(render: Render, stage: str) -> None:
    """What the GPU worker records before it runs a stage (job.meta["stage"])."""
    job = Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer)
    job.meta.update({"stage": stage, "stage_started_at": timezone.now().isoformat()})
    job.save_meta()


def failed_render(user, error_code: str, **fields) -> Render:
    created = timezone.now() - timedelta(seconds=30)
    return Render.objects.create(user=user, status="failed", scene_prompt="a beach", error_code=error_code,
                                 created_at=created, deadline_at=created + timedelta(minutes=10),
                                 finished_at=created + timedelta(seconds=5), **fields)


def test_a_render_that_failed_while_generating_shows_matting_done_and_composing_not_reached(fake_gpu):
    user = make_user("dev@example.com")
    client = signed_in(user)
    body = client.post("/dashboard/playground/", form(scene_prompt="fail:model_unavailable"), headers=JSON).json()
    worker_reached(Render.objects.get(public_id=body["id"]), "generating")
    run_gpu_jobs_in_process()

    done = client.get(body["status_url"]).json()

    assert done["status"] == "failed" and done["error"]["code"] == "model_unavailable"
    assert done["progress"]["failed_at"] == "generating"
    assert done["progress"]["states"] == {"queued": "done", "matting": "done", "generating": "failed",
                                          "composing": "not-reached", "done": "not-reached"}
    assert done["progress"]["label"] == "Failed while generating the scene"
    page = client.get(done["detail_url"]).content.decode()
    assert '<li data-step="matting" data-state="done">' in page
    assert '<li data-step="generating" data-state="failed">' in page
    assert '<li data-step="composing" data-state="not-reached">' in page
    assert "Failed while generating the scene" in page and 'data-status-url=""' in page


def test_a_matting_refusal_is_shown_as_failed_at_matting_even_after_redis_forgot_the_job(db):
    render = failed_render(make_user("dev@example.com"), "no_subject_found", job_id="long-gone")

    states = progress.progress_of(render).states()

    assert states == {"queued": "done", "matting": "failed", "generating": "not-reached",
                      "composing": "not-reached", "done": "not-reached"}


def test_a_render_that_was_never_queued_failed_at_the_queue(db):
    render = failed_render(make_user("dev@example.com"), "queue_unavailable")

    assert progress.progress_of(render).states()["queued"] == "failed"
    assert progress.progress_of(render).label == "Failed before a GPU worker took it"


def test_a_render_that_timed_out_while_its_job_waited_failed_in_the_queue(fake_gpu):
    user = make_user("dev@example.com")
    client = signed_in(user)
    body = client.post("/dashboard/playground/", form(), headers=JSON).json()
    render = Render.objects.get(public_id=body["id"])
    Render.objects.filter(pk=render.pk).update(status="failed", error_code="render_timeout",
                                               finished_at=timezone.now())
    render.refresh_from_db()

    shown = progress.progress_of(render)

    assert shown.failed_at == "queued" and shown.label == "Failed before a GPU worker took it"
    assert shown.states()["matting"] == "not-reached"


def test_a_timeout_never_seen_running_failed_in_the_queue_even_after_redis_forgot_it(db):
    render = failed_render(make_user("dev@example.com"), "render_timeout", job_id="long-gone")

    assert progress.progress_of(render).failed_at == "queued"
    render.started_at = render.created_at
    assert progress.progress_of(render).failed_at is None


def test_when_nothing_says_where_a_render_failed_no_step_is_ticked(db):
    render = failed_render(make_user("dev@example.com"), "worker_lost", job_id="long-gone")

    shown = progress.progress_of(render)

    assert shown.failed_at is None and shown.label == "Failed"
    assert shown.states() == {"queued": "", "matting": "", "generating": "", "composing": "", "done": "failed"}


def test_a_worker_error_before_its_first_stage_is_shown_as_failed_at_matting(fake_gpu):
    user = make_user("dev@example.com")
    client = signed_in(user)
    body = client.post("/dashboard/playground/", form(scene_prompt="fail:invalid_image"), headers=JSON).json()
    run_gpu_jobs_in_process()

    done = client.get(body["status_url"]).json()

    assert done["progress"]["failed_at"] == "matting"
    assert done["progress"]["states"]["matting"] == "failed"


def test_a_stage_stored_on_the_render_wins_over_what_redis_says(db):
    render = failed_render(make_user("dev@example.com"), "render_failed", job_id="long-gone")
    render.failed_stage = "composing"  # Render.failed_stage, where the model has the field

    assert progress.progress_of(render).states()["composing"] == "failed"
    assert progress.progress_of(render).states()["generating"] == "done"


def test_a_succeeded_render_ticks_every_step():
    now = timezone.now()
    render = Render(status="succeeded", created_at=now - timedelta(seconds=4), finished_at=now)

    assert set(progress.progress_of(render).states().values()) == {"done"}


def test_a_failed_renders_page_shows_its_whole_message_with_commands_as_code(db):
    user = make_user("dev@example.com")
    render = failed_render(user, "model_unavailable", error_message=(
        "Scene prompts need the diffusion model; install it with `python -m gpu_worker fetch-models` <now>."))

    page = signed_in(user).get(f"/dashboard/renders/{render.public_id}/").content.decode()

    message = re.search(r'data-testid="error-message">(.*?)</p>', page, re.S).group(1)
    assert message == ("Scene prompts need the diffusion model; install it with "
                       "<code>python -m gpu_worker fetch-models</code> &lt;now&gt;.")
