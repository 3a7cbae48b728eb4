"""Webhook delivery: signed POSTs to a real loopback receiver, retries, dedupe, the guard.

The receiver (tests/webhook_receiver.py) is reached through the development setting
that allows loopback (FETCH_ALLOW_PRIVATE_ADDRESSES) with its port allowed; the guard
tests run with the production policy and an injected resolver and connector, so no
name is looked up and nothing beyond loopback is dialled. Jobs run on rq's real
SimpleWorker against the test Redis, like the Django-side worker.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from imaging import lifecycle, tasks
from imaging.dispatch import Outcome
from imaging.models import Render, WebhookDelivery, WebhookEndpoint, WebhookEvent
from imaging.serializers import RenderSerializer
from imaging.sweeper import sweep
from imaging.webhooks import delivery, events
from imaging.webhooks.delivery import Attempt
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    api_client,
    fake_gpu,
    make_user,
    post_render,
    product_png,
    render_env,
    run_default_jobs_in_process,
    run_gpu_jobs_in_process,
)
from tests.loopback_http import Dialer, FakeDns
from tests.webhook_receiver import Receiver

BOTH = ["render.succeeded", "render.failed"]


# Committed database (jobs and settlement commit), empty queues and limits.
pytestmark = pytest.mark.usefixtures("render_env")


@pytest.fixture
def receiver(settings):
    with Receiver() as server:
        settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
        settings.FETCH_ALLOWED_PORTS = [server.port]
        settings.WEBHOOK_TIMEOUT_SECONDS = 2.0
        settings.WEBHOOK_RETRY_SCHEDULE = [0.05]
        yield server


def endpoint_for(user, url: str, events_wanted: list[str] = BOTH, **fields) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(user=user, url=url, events=events_wanted, **fields)


def open_render(user) -> Render:
    return Render.objects.create(user=user, scene_prompt="a beach", job_id="job-1",
                                 deadline_at=timezone.now() + timedelta(minutes=10))


def succeed(render: Render) -> Render:
    return lifecycle.settle(render.pk, Outcome(True, {"output_key": "outputs/x.png", "matte_key": "mattes/x.png"}),
                            actor="test")


def only_delivery() -> WebhookDelivery:
    (row,) = WebhookDelivery.objects.all()
    return row


def retry_when_due() -> None:
    """What the sweeper and the worker do for a retry: wait until due, queue it, run it."""
    row = only_delivery()
    if row.next_attempt_at:
        time.sleep(max(0.0, (row.next_attempt_at - timezone.now()).total_seconds()) + 0.01)
    sweep()
    run_default_jobs_in_process()


@pytest.mark.usefixtures("fake_gpu")
def test_a_succeeded_render_sends_exactly_one_signed_event_the_receiver_verifies(receiver):
    user = make_user("hooks@example.com")
    endpoint = endpoint_for(user, receiver.url())
    response = post_render(api_client(user), image=product_png(16), scene_prompt="pure white background")
    render = Render.objects.get(public_id=response.json()["id"])
    run_gpu_jobs_in_process()
    assert tasks.settle_render(render.public_id) == "succeeded"

    run_default_jobs_in_process()
    sweep()
    run_default_jobs_in_process()

    assert len(receiver.received) == 1
    (got,) = receiver.received
    assert got.verifies(endpoint.secret)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("PixelAPI-Webhooks/")
    event = WebhookEvent.objects.get()
    assert got.event_id == event.public_id == got.json["id"]
    assert got.json["type"] == "render.succeeded"
    assert set(got.json) == {"id", "type", "created", "data"}
    render.refresh_from_db()
    obj = got.json["data"]["object"]
    assert obj["id"] == render.public_id and obj["status"] == "succeeded"
    assert set(obj) == set(RenderSerializer(render).data)
    row = only_delivery()
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 1, 200)
    assert row.delivered_at is not None and row.next_attempt_at is None


def test_a_failed_render_sends_render_failed_with_its_error(receiver):
    user = make_user("failed@example.com")
    endpoint = endpoint_for(user, receiver.url())
    render = lifecycle.fail(open_render(user).pk, "no_subject_found", "nothing to cut out", actor="test")
    run_default_jobs_in_process()

    (got,) = receiver.received
    assert got.verifies(endpoint.secret)
    assert got.json["type"] == "render.failed"
    assert got.json["data"]["object"]["id"] == render.public_id
    assert got.json["data"]["object"]["error"]["code"] == "no_subject_found"
    assert "nothing to cut out" not in got.body.decode()  # internal detail stays inside


def test_only_the_owners_enabled_endpoints_subscribed_to_the_type_get_the_event(receiver):
    user, other = make_user("owner@example.com"), make_user("other@example.com")
    wanted = endpoint_for(user, receiver.url("/wanted"), ["render.failed"])
    endpoint_for(user, receiver.url("/succeeded-only"), ["render.succeeded"])
    endpoint_for(user, receiver.url("/disabled"), enabled=False)
    endpoint_for(other, receiver.url("/someone-else"))
    lifecycle.fail(open_render(user).pk, "render_timeout", actor="test")
    run_default_jobs_in_process()

    assert [r.path for r in receiver.received] == ["/wanted"]
    assert only_delivery().endpoint == wanted


def test_a_render_of_an_owner_without_endpoints_records_no_event(receiver):
    succeed(open_render(make_user("quiet@example.com")))
    assert WebhookEvent.objects.count() == 0


def test_a_500_is_retried_with_back_off_until_the_receiver_answers_200(receiver):
    receiver.answers = [500, 200]
    user = make_user("retry@example.com")
    endpoint = endpoint_for(user, receiver.url())
    succeed(open_render(user))
    run_default_jobs_in_process()

    row = only_delivery()
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
    assert row.next_attempt_at > row.last_attempt_at

    retry_when_due()
    row = only_delivery()
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 2, 200)
    assert len(receiver.received) == 2 and all(r.verifies(endpoint.secret) for r in receiver.received)
    assert len(receiver.unique_event_ids()) == 1


def test_a_receiver_slower_than_the_timeout_is_retried(receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.answers = [("sleep", 2.0, 200), 200]
    user = make_user("slow@example.com")
    endpoint_for(user, receiver.url())
    succeed(open_render(user))
    started = time.monotonic()
    run_default_jobs_in_process()
    assert time.monotonic() - started < 2.0

    row = only_delivery()
    assert row.status == "pending" and row.attempts == 1 and row.last_status_code is None
    assert "limit" in row.last_error

    retry_when_due()
    row = only_delivery()
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 2, 200)


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(receiver):
    receiver.answers = [302]
    user = make_user("redirect@example.com")
    endpoint_for(user, receiver.url())
    succeed(open_render(user))
    run_default_jobs_in_process()

    assert [r.path for r in receiver.received] == ["/hooks"]
    row = only_delivery()
    assert (row.status, row.last_status_code) == ("pending", 302)


def test_sending_again_repeats_the_same_event_id_so_receivers_can_dedupe(receiver):
    user = make_user("again@example.com")
    endpoint = endpoint_for(user, receiver.url())
    succeed(open_render(user))
    run_default_jobs_in_process()
    first = only_delivery()

    events.send_again(first)
    run_default_jobs_in_process()

    assert WebhookDelivery.objects.filter(status="succeeded").count() == 2
    assert len(receiver.received) == 2
    assert receiver.received[0].json == receiver.received[1].json
    assert receiver.unique_event_ids() == {first.event.public_id}
    assert all(r.verifies(endpoint.secret) for r in receiver.received)


def test_it_gives_up_once_the_retry_window_is_over(receiver):
    receiver.default = 503
    user = make_user("giveup@example.com")
    endpoint_for(user, receiver.url())
    succeed(open_render(user))
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(hours=24))
    run_default_jobs_in_process()

    row = only_delivery()
    assert (row.status, row.attempts, row.last_status_code, row.next_attempt_at) == ("failed", 1, 503, None)
    sweep()
    run_default_jobs_in_process()
    assert len(receiver.received) == 1


def test_during_a_rotation_the_receiver_accepts_either_secret(receiver):
    user = make_user("rotate@example.com")
    endpoint_for(user, receiver.url(), secret="whsec_new", previous_secret="whsec_old",
                 previous_secret_expires_at=timezone.now() + timedelta(hours=1))
    succeed(open_render(user))
    run_default_jobs_in_process()
    (got,) = receiver.received
    assert got.verifies("whsec_new") and got.verifies("whsec_old")


def test_a_lost_enqueue_is_caught_up_by_the_sweeper(receiver, monkeypatch):
    user = make_user("outbox@example.com")
    endpoint_for(user, receiver.url())

    def redis_down():
        raise redis.ConnectionError("Redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(delivery, "_queue", redis_down)
        render = succeed(open_render(user))
    assert render.status == "succeeded"  # a webhook problem never undoes a settlement
    run_default_jobs_in_process()
    assert receiver.received == [] and only_delivery().status == "pending"

    sweep()
    run_default_jobs_in_process()
    assert len(receiver.received) == 1 and only_delivery().status == "succeeded"


def test_an_attempt_in_progress_cannot_be_run_a_second_time(receiver, monkeypatch):
    user = make_user("claim@example.com")
    endpoint_for(user, receiver.url())
    succeed(open_render(user))
    row = only_delivery()
    meanwhile: list[str] = []

    def attempt_while_another_runner_tries(endpoint, event):
        meanwhile.append(delivery.run_delivery(row.pk))
        return Attempt(status_code=200)

    monkeypatch.setattr(delivery, "attempt", attempt_while_another_runner_tries)
    assert delivery.run_delivery(row.pk) == "succeeded"
    assert meanwhile == ["not due"]
    assert delivery.run_delivery(row.pk) == "succeeded"  # already delivered: nothing to do
    assert only_delivery().attempts == 1


def test_disabling_an_endpoint_stops_its_pending_deliveries(receiver):
    user = make_user("disabled@example.com")
    endpoint = endpoint_for(user, receiver.url())
    succeed(open_render(user))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    run_default_jobs_in_process()
    assert receiver.received == []
    assert only_delivery().status == "failed"


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "https://hooks.internal.example/pixelapi",
    "https://[::ffff:10.0.0.5]/",
    "https://localhost/hooks",
])
def test_a_hostile_url_in_the_database_is_refused_at_delivery_without_connecting(settings, monkeypatch, url):
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    dns = FakeDns({"hooks.internal.example": ["10.0.0.5"]})
    dialer = Dialer()
    monkeypatch.setattr(delivery, "RESOLVER", dns)
    monkeypatch.setattr(delivery, "CONNECTOR", dialer)
    user = make_user("hostile@example.com")
    endpoint_for(user, url)  # straight into the database, past the form
    succeed(open_render(user))
    run_default_jobs_in_process()

    row = only_delivery()
    assert row.status == "failed" and row.attempts == 1 and row.last_status_code is None
    assert "only public addresses" in row.last_error or "https" in row.last_error
    assert dialer.calls == []


def test_an_http_url_is_refused_at_delivery_in_production(settings, monkeypatch):
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    dialer = Dialer()
    monkeypatch.setattr(delivery, "RESOLVER", FakeDns({"hooks.example.com": ["93.184.216.34"]}))
    monkeypatch.setattr(delivery, "CONNECTOR", dialer)
    user = make_user("plain-http@example.com")
    endpoint_for(user, "http://hooks.example.com/")
    succeed(open_render(user))
    run_default_jobs_in_process()
    row = only_delivery()
    assert row.status == "failed" and "https://" in row.last_error and dialer.calls == []


def test_a_webhook_that_cannot_be_recorded_never_undoes_a_settlement(receiver, monkeypatch):
    user = make_user("broken@example.com")
    endpoint_for(user, receiver.url())

    def broken(render):
        raise ValueError("cannot serialise")

    monkeypatch.setattr(events, "render_object", broken)
    render = succeed(open_render(user))
    assert Render.objects.get(pk=render.pk).status == "succeeded"
    assert WebhookEvent.objects.count() == 0 and WebhookDelivery.objects.count() == 0


def test_purge_renders_deletes_webhook_events_and_deliveries_after_the_retention_period(receiver, settings):
    from django.core.management import call_command

    settings.WEBHOOK_RETENTION_DAYS = 30
    user = make_user("retention@example.com")
    endpoint_for(user, receiver.url())
    succeed(open_render(user))
    succeed(open_render(user))
    old, recent = WebhookEvent.objects.order_by("id")
    WebhookEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    WebhookDelivery.objects.filter(event=old).update(created_at=timezone.now() - timedelta(days=31))

    call_command("purge_renders")

    assert list(WebhookEvent.objects.all()) == [recent]
    assert list(WebhookDelivery.objects.values_list("event_id", flat=True)) == [recent.pk]
    assert WebhookEndpoint.objects.count() == 1
