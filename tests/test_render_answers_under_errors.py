"""What a client is told when something breaks: before a render exists, a clear error that
costs nothing; once it exists, always its id; never internal text.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.db import OperationalError

from imaging import lifecycle
from imaging.dispatch import Outcome
from imaging.models import Render
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    allow_loopback_fetches,
    api_client,
    fake_gpu,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
    serving,
    usage_entries,
)

pytestmark = pytest.mark.usefixtures("fake_gpu")


def test_a_key_without_credit_for_a_render_gets_402_before_its_image_is_fetched(settings):
    client = api_client(make_user("broke@example.com", credits=CREDITS - 1))
    fetched: list[str] = []
    with serving(product_png(16), requests=fetched) as url:
        allow_loopback_fetches(settings, url)
        response = client.post("/v1/image/replace-background", {"image_url": url, "scene_prompt": "a beach"},
                               content_type="application/json")

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert "21 are available" in response.json()["error"]["message"]
    assert fetched == []  # refused on a cheap read, nothing downloaded or decoded
    assert not Render.objects.exists()


def test_a_database_error_while_the_render_is_waited_on_answers_202_with_its_id(monkeypatch):
    user = make_user("db-error@example.com")

    def database_goes_away(render, timeout, *, actor):
        raise OperationalError("database is locked")

    monkeypatch.setattr(lifecycle, "wait_and_settle", database_goes_away)
    response = post_render(api_client(user), image=product_png(16))

    assert response.status_code == 202, response.content
    body = response.json()
    render = Render.objects.get(public_id=body["id"])
    assert response["Location"] == body["status_url"] and response["Retry-After"]
    assert render.status == "queued" and account(user).held == CREDITS
    # It settles later like any render nobody waited for.
    monkeypatch.undo()
    run_gpu_jobs_in_process()
    assert api_client(user).get(f"/v1/renders/{render.public_id}").json()["status"] == "succeeded"
    assert usage_entries(user) == 1


def test_an_unexpected_error_before_any_render_answers_the_json_error_shape_without_internals(monkeypatch):
    def bug(**kwargs):
        raise RuntimeError("secret internal detail /var/lib/storage")

    monkeypatch.setattr("imaging.api.load_input_image", bug)
    response = post_render(api_client(make_user("bug@example.com")), image=product_png(16))

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and error["request_id"] == response["X-Request-Id"]
    assert "secret" not in response.content.decode() and "RuntimeError" not in response.content.decode()


def test_a_black_holed_redis_answers_503_queue_unavailable_in_seconds_with_nothing_held(settings):
    # A server that accepts connections and never answers: what a hung Redis looks like.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    user = make_user("hung@example.com")
    client = api_client(user)
    settings.REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
    try:
        started = time.monotonic()
        response = post_render(client, image=product_png(16))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert elapsed < 10  # the socket timeout bounded it, not the client library's defaults
    assert not Render.objects.exists() and account(user).held == 0


def test_an_outcome_of_a_superseded_attempt_changes_nothing(settings):
    settings.RENDER_REQUEUE_AFTER_SECONDS = 0
    user = make_user("stray@example.com")
    response = post_render(api_client(user), image=product_png(16))
    render = Render.objects.get(public_id=response.json()["id"])
    first_job, first_keys = render.job_id, lifecycle.expected_keys(render)
    assert lifecycle.requeue_missing(render, actor="sweeper")

    # The first attempt, still running somewhere, reports success after all.
    stray = Outcome(True, {**first_keys, "width": 16, "height": 16}, job_id=first_job)
    after = lifecycle.settle(render.pk, stray, actor="settle_job")

    assert after.status == "queued" and after.attempt == 2 and after.output_key != first_keys["output_key"]
    assert account(user).held == CREDITS and usage_entries(user) == 0
