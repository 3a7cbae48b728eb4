"""The render gallery, a render's page (before/after, matte, parameters, curl) and its status JSON.

Renders are made the way customers make them: through the API, run by rq's real
worker on the real Redis (with the fake pipeline from tests.helpers_render), so the
pages read real files through real signed links.
"""

from __future__ import annotations

import html
import re
import time
from datetime import datetime, timedelta, timezone as dt_timezone

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from accounts.models import ApiKey
from imaging.dashboard import progress
from imaging.dispatch import redis_connection
from imaging.models import Render
from platform_site.api_errors import REGISTRY
from tests.helpers_render import (  # noqa: F401  (fixtures)
    api_client,
    fake_gpu,
    fetch_url,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
)



def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_render(client: Client, prompt: str = "a sunny beach", **fields) -> Render:
    response = post_render(client, image=product_png(16), scene_prompt=prompt, **fields)
    assert response.status_code in (202, 200), response.content
    return Render.objects.get(public_id=response.json()["id"])


def image_sources(page: str) -> list[str]:
    return [html.unescape(src) for src in re.findall(r'<img[^>]+src="([^"]+)"', page)]


def add_render(user, status: str, *, minutes_ago: int = 0, **fields) -> Render:
    created = timezone.now() - timedelta(minutes=minutes_ago)
    return Render.objects.create(user=user, status=status, scene_prompt=fields.pop("prompt", "a beach"),
                                 created_at=created, deadline_at=created + timedelta(minutes=10), **fields)


# --- gallery ----------------------------------------------------------------------------


def test_the_gallery_needs_a_signed_in_user(client, db):
    response = client.get("/dashboard/renders/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_gallery_shows_thumbnails_through_working_signed_links(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user), "on a marble counter")
    run_gpu_jobs_in_process()
    client = signed_in(user)
    client.get(f"/dashboard/renders/{render.public_id}/")  # observes the end and settles it

    page = client.get("/dashboard/renders/").content.decode()

    sources = image_sources(page)
    output = next(src for src in sources if "/v1/files/outputs/" in src)
    assert "signature=" in output and "expires=" in output
    assert fetch_url(client, output).status_code == 200
    input_src = next(src for src in sources if src.endswith("/input.png"))
    served = client.get(input_src)
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert "on a marble counter" in page
    assert ">succeeded<" in page and "<dd>22</dd>" in page
    assert re.search(r"<dt>Duration</dt><dd>\d+\.\d s</dd>", page)


def test_the_gallery_shows_a_failed_renders_error_code_and_no_charge(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user), "fail:no_subject_found")
    run_gpu_jobs_in_process()
    signed_in(user).get(f"/dashboard/renders/{render.public_id}/status")

    page = signed_in(user).get("/dashboard/renders/").content.decode()

    assert "<code>no_subject_found</code>" in page
    assert "<dd>0</dd>" in page
    assert not any("/v1/files/outputs/" in src for src in image_sources(page))


def test_the_gallery_is_paginated_newest_first(db):
    user = make_user("dev@example.com")
    renders = [add_render(user, "queued", minutes_ago=100 - i, prompt=f"scene {i}") for i in range(30)]
    client = signed_in(user)

    first = client.get("/dashboard/renders/").content.decode()
    second = client.get("/dashboard/renders/?page=2").content.decode()

    ids = lambda page: re.findall(r'data-render-id="(rnd_[0-9a-f]+)"', page)  # noqa: E731
    newest_first = [r.public_id for r in reversed(renders)]
    assert ids(first) == newest_first[:24]
    assert ids(second) == newest_first[24:]
    assert "Page 1 of 2" in first and 'rel="next"' in first


def test_the_next_page_link_keeps_the_status_filter(db):
    user = make_user("dev@example.com")
    for i in range(30):
        add_render(user, "queued", minutes_ago=100 - i, prompt=f"scene {i}")

    page = signed_in(user).get("/dashboard/renders/?status=queued").content.decode()

    assert 'href="?status=queued&amp;page=2" rel="next"' in page


def test_the_gallery_filters_by_status(db):
    user = make_user("dev@example.com")
    failed = add_render(user, "failed", error_code="render_failed", finished_at=timezone.now())
    add_render(user, "queued")

    page = signed_in(user).get("/dashboard/renders/?status=failed").content.decode()

    assert re.findall(r'data-render-id="(rnd_[0-9a-f]+)"', page) == [failed.public_id]


# --- detail -----------------------------------------------------------------------------


def test_the_detail_page_shows_before_after_the_matte_and_the_parameters(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user), "a quiet forest", preserve_shadow=False, output_format="png", seed=42)
    run_gpu_jobs_in_process()
    client = signed_in(user)

    page = client.get(f"/dashboard/renders/{render.public_id}/").content.decode()

    assert "data-compare" in page and 'class="compare-before"' in page and 'class="compare-after"' in page
    assert 'type="range"' in page
    matte = re.search(r'<img[^>]+src="([^"]+)"[^>]*data-testid="matte"', page).group(1)
    assert "/v1/files/mattes/" in matte and fetch_url(client, html.unescape(matte)).status_code == 200
    assert 'data-testid="prompt">a quiet forest<' in page
    assert "<dt>Preserve shadow</dt><dd>false</dd>" in page
    assert "<dt>Seed</dt><dd>42" in page
    assert "22 credits charged." in page


def test_the_curl_command_repeats_the_render_with_the_key_prefix_but_never_the_secret(fake_gpu):
    user = make_user("dev@example.com")
    client = api_client(user, name="ci server")
    render = api_render(client, "it's a \"quoted\" $(prompt)", seed=7)
    key = ApiKey.objects.get(user=user)

    curl = html.unescape(re.search(r'data-testid="curl"><code>(.*?)</code>', signed_in(user).get(
        f"/dashboard/renders/{render.public_id}/").content.decode(), re.S).group(1))

    assert client.raw_key not in curl and client.raw_key[len(key.display_prefix):] not in curl
    assert f"starts with {key.display_prefix}…" in curl and "“ci server”" in curl
    assert '-H "Authorization: Bearer $PIXELAPI_KEY"' in curl
    assert "/v1/image/replace-background" in curl
    assert "--form-string 'scene_prompt=it'\"'\"'s a \"quoted\" $(prompt)'" in curl
    assert "-F seed=7" in curl and "-F image_file=@input.png" in curl


def test_the_detail_page_of_an_open_render_shows_progress_and_polls_its_status(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user))

    page = signed_in(user).get(f"/dashboard/renders/{render.public_id}/").content.decode()

    assert f'data-status-url="/dashboard/renders/{render.public_id}/status"' in page
    assert 'data-step="queued" data-state="current"' in page
    assert "Queued, waiting for a GPU" in page


def test_the_detail_page_of_a_failed_render_shows_its_code_and_message(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user), "fail:backdrop_not_plain")
    run_gpu_jobs_in_process()

    page = signed_in(user).get(f"/dashboard/renders/{render.public_id}/").content.decode()

    assert 'data-testid="error-code">backdrop_not_plain<' in page
    assert "needs a plain studio backdrop" in page and "Nothing was charged." in page
    assert "fake failure" not in page  # the worker's own words stay inside


def test_an_unknown_render_is_404(db):
    client = signed_in(make_user("dev@example.com"))
    assert client.get("/dashboard/renders/rnd_000000000000000000000000/").status_code == 404
    assert client.get("/dashboard/renders/rnd_000000000000000000000000/status").status_code == 404


# --- status JSON --------------------------------------------------------------------


def test_the_status_follows_the_workers_stage_and_ends_with_the_result(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user))
    client = signed_in(user)
    url = f"/dashboard/renders/{render.public_id}/status"

    queued = client.get(url).json()
    assert queued["status"] == "queued" and queued["progress"]["phase"] == "queued"
    assert queued["output_url"] is None

    # What the GPU worker does when it picks the job up and reaches a stage.
    job = Job.fetch(render.job_id, connection=redis_connection(), serializer=JSONSerializer)
    job.set_status(JobStatus.STARTED)
    job.meta.update({"stage": "generating", "stage_started_at": time.time() - 2})
    job.save_meta()
    running = client.get(url).json()
    assert running["status"] == "running"
    assert running["progress"]["phase"] == "generating"
    assert running["progress"]["step"] == progress.STEPS.index("generating")
    assert running["progress"]["stage_elapsed_seconds"] >= 2

    run_gpu_jobs_in_process()
    done = client.get(url).json()
    assert done["status"] == "succeeded" and done["progress"]["phase"] == "succeeded"
    assert done["credits_charged"] == 22 and done["credits_available"] == 9 * 22
    assert fetch_url(client, done["output_url"]).status_code == 200
    assert client.get(done["input_url"]).status_code == 200
    assert done["detail_url"] == f"/dashboard/renders/{render.public_id}/"
    assert client.get(url)["Cache-Control"] == "no-store"


def test_the_status_of_a_failed_render_carries_its_error(fake_gpu):
    user = make_user("dev@example.com")
    render = api_render(api_client(user), "fail:model_unavailable")
    run_gpu_jobs_in_process()

    body = signed_in(user).get(f"/dashboard/renders/{render.public_id}/status").json()

    assert body["status"] == "failed" and body["progress"]["phase"] == "failed"
    assert body["error"] == {"code": "model_unavailable", "message": REGISTRY["model_unavailable"].description}
    assert body["credits_charged"] == 0 and body["credits_available"] == 10 * 22


def test_the_status_asks_a_stranger_to_sign_in_with_json(client, db):
    response = client.get("/dashboard/renders/rnd_000000000000000000000000/status")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_signed_in"


def test_a_stage_time_may_be_epoch_seconds_or_iso_8601():
    assert progress.parse_stage_time(0) == datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
    assert progress.parse_stage_time("2030-01-02T03:04:05+00:00").year == 2030
    assert progress.parse_stage_time("not a time") is None and progress.parse_stage_time(True) is None


def test_the_gallery_runs_a_fixed_number_of_queries_however_many_renders(db):
    user = make_user("dev@example.com")
    client = signed_in(user)
    api_client(user, "server")
    key = ApiKey.objects.get(user=user)
    add_render(user, "queued", api_key=key)
    client.get("/dashboard/renders/")
    with CaptureQueriesContext(connection) as few:
        client.get("/dashboard/renders/")
    for i in range(20):
        add_render(user, "failed", minutes_ago=i, api_key=key, error_code="render_failed", finished_at=timezone.now())
    with CaptureQueriesContext(connection) as many:
        page = client.get("/dashboard/renders/").content.decode()

    assert page.count("API key “server”") == 21
    assert len(many.captured_queries) == len(few.captured_queries)
