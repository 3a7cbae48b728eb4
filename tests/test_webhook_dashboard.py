"""The console's Webhooks pages: add an endpoint (secret shown once), roll its secret,
send a test event, send a delivery again, and nobody else sees any of it.

Names are resolved by an injected resolver (never real DNS) and nothing is delivered
here: on_commit callbacks of the test transaction do not run, so no job is queued.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from imaging.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from imaging.webhooks import delivery
from tests.helpers_render import make_user
from tests.loopback_http import FakeDns

pytestmark = pytest.mark.django_db

PUBLIC = "https://hooks.example.com/pixelapi"


@pytest.fixture(autouse=True)
def dns(monkeypatch, settings):
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    fake = FakeDns({"hooks.example.com": ["93.184.216.34"], "hooks.internal.example": ["10.0.0.5"],
                    "rebind.example.com": ["93.184.216.34", "127.0.0.1"]})
    monkeypatch.setattr(delivery, "RESOLVER", fake)
    return fake


def signed_in(email: str) -> Client:
    user = make_user(email, credits=0)
    client = Client()
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


def add(client: Client, url: str = PUBLIC, events=("render.succeeded", "render.failed")):
    return client.post("/dashboard/webhooks/", {"url": url, "description": "orders", "events": list(events)})


def test_adding_an_endpoint_shows_its_signing_secret_once():
    client = signed_in("me@example.com")
    response = add(client, events=["render.succeeded"])
    endpoint = WebhookEndpoint.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/dashboard/webhooks/{endpoint.public_id}/"
    assert endpoint.user == client.user and endpoint.events == ["render.succeeded"]
    assert endpoint.secret.startswith("whsec_")

    first = client.get(response["Location"])
    assert first.status_code == 200 and endpoint.secret in first.content.decode()
    assert "the only time it is shown" in first.content.decode()
    assert first["Cache-Control"] == "no-store"
    again = client.get(response["Location"])
    assert endpoint.secret not in again.content.decode()
    assert PUBLIC in client.get("/dashboard/webhooks/").content.decode()


@pytest.mark.parametrize(("url", "why"), [
    ("https://169.254.169.254/latest/meta-data/", "link-local address"),
    ("https://hooks.internal.example/", "private address"),
    ("https://rebind.example.com/", "loopback address"),
    ("https://localhost/", "local machine"),
    ("https://127.0.0.1/", "loopback address"),
    ("http://hooks.example.com/", "must start with https://"),
    ("https://hooks.example.com:22/", "port 22"),
    ("https://user@hooks.example.com/", "user name or password"),
    ("ftp://hooks.example.com/", "http or https"),
    ("https://nowhere.example.com/", "could not be resolved"),
])
def test_a_hostile_or_unusable_url_is_refused_when_saved(url, why):
    client = signed_in("careful@example.com")
    response = add(client, url)
    assert response.status_code == 200
    assert why in response.content.decode()
    assert WebhookEndpoint.objects.count() == 0


def test_at_least_one_event_must_be_chosen():
    client = signed_in("events@example.com")
    response = add(client, events=[])
    assert "Choose at least one event." in response.content.decode()
    assert WebhookEndpoint.objects.count() == 0


def test_rolling_the_secret_shows_the_new_one_once_and_keeps_the_old_one_valid_for_a_while(settings):
    settings.WEBHOOK_PREVIOUS_SECRET_HOURS = 24
    client = signed_in("roll@example.com")
    add(client)
    endpoint = WebhookEndpoint.objects.get()
    old = endpoint.secret

    response = client.post(f"/dashboard/webhooks/{endpoint.public_id}/roll-secret")
    endpoint.refresh_from_db()
    assert response.status_code == 302
    assert endpoint.secret != old and endpoint.previous_secret == old
    assert endpoint.previous_secret_expires_at - timezone.now() > timedelta(hours=23)
    assert endpoint.signing_secrets() == [endpoint.secret, old]
    page = client.get(response["Location"]).content.decode()
    assert endpoint.secret in page and old not in page
    assert 'data-testid="previous-secret"' in page


def test_a_test_event_is_a_ping_to_that_endpoint_only():
    client = signed_in("ping@example.com")
    add(client, "https://hooks.example.com/one")
    add(client, "https://hooks.example.com/two")
    one = WebhookEndpoint.objects.get(url="https://hooks.example.com/one")

    response = client.post(f"/dashboard/webhooks/{one.public_id}/test")
    assert response.status_code == 302
    (row,) = WebhookDelivery.objects.all()
    assert row.endpoint == one and row.status == "pending" and row.next_attempt_at <= timezone.now()
    assert row.event.type == "ping" and row.event.render is None
    assert row.event.payload["id"] == row.event.public_id
    assert row.event.payload["data"]["object"]["endpoint"] == one.public_id
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="delivery-row"' in page and "ping" in page


def test_send_again_makes_a_new_delivery_of_the_same_event():
    client = signed_in("again@example.com")
    add(client)
    endpoint = WebhookEndpoint.objects.get()
    client.post(f"/dashboard/webhooks/{endpoint.public_id}/test")
    first = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=first.pk).update(status="failed", attempts=7, last_status_code=500)

    response = client.post(f"/dashboard/webhooks/{endpoint.public_id}/deliveries/{first.pk}/send-again")
    assert response.status_code == 302
    again = WebhookDelivery.objects.exclude(pk=first.pk).get()
    assert again.event_id == first.event_id and again.status == "pending" and again.attempts == 0
    assert WebhookEvent.objects.count() == 1


def test_the_delivery_log_shows_status_attempts_response_code_and_next_retry():
    client = signed_in("log@example.com")
    add(client)
    endpoint = WebhookEndpoint.objects.get()
    client.post(f"/dashboard/webhooks/{endpoint.public_id}/test")
    retry_at = timezone.now() + timedelta(minutes=10)
    WebhookDelivery.objects.update(attempts=2, last_status_code=503, next_attempt_at=retry_at,
                                   last_error="The endpoint answered HTTP 503.")
    page = client.get(f"/dashboard/webhooks/{endpoint.public_id}/").content.decode()
    assert "503" in page and "pending" in page and retry_at.strftime("%Y-%m-%d %H:%M:%S") in page
    assert '<td data-label="Attempts" class="num">2</td>' in page


def test_the_delivery_log_is_paginated():
    client = signed_in("many@example.com")
    add(client)
    endpoint = WebhookEndpoint.objects.get()
    for _ in range(26):
        client.post(f"/dashboard/webhooks/{endpoint.public_id}/test")
    first = client.get(f"/dashboard/webhooks/{endpoint.public_id}/").content.decode()
    second = client.get(f"/dashboard/webhooks/{endpoint.public_id}/?page=2").content.decode()
    assert first.count('data-testid="delivery-row"') == 25
    assert second.count('data-testid="delivery-row"') == 1
    assert "Page 1 of 2" in first


def test_disabling_and_deleting_an_endpoint():
    client = signed_in("toggle@example.com")
    add(client)
    endpoint = WebhookEndpoint.objects.get()
    client.post(f"/dashboard/webhooks/{endpoint.public_id}/toggle")
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    client.post(f"/dashboard/webhooks/{endpoint.public_id}/toggle")
    endpoint.refresh_from_db()
    assert endpoint.enabled is True
    response = client.post(f"/dashboard/webhooks/{endpoint.public_id}/delete")
    assert response.status_code == 302 and response["Location"] == "/dashboard/webhooks/"
    assert WebhookEndpoint.objects.count() == 0


def test_other_users_cannot_see_or_touch_my_endpoints():
    mine = signed_in("mine@example.com")
    add(mine)
    endpoint = WebhookEndpoint.objects.get()
    mine.post(f"/dashboard/webhooks/{endpoint.public_id}/test")
    row = WebhookDelivery.objects.get()

    stranger = signed_in("stranger@example.com")
    assert PUBLIC not in stranger.get("/dashboard/webhooks/").content.decode()
    base = f"/dashboard/webhooks/{endpoint.public_id}"
    assert stranger.get(f"{base}/").status_code == 404
    for action in ("roll-secret", "toggle", "test", f"deliveries/{row.pk}/send-again", "delete"):
        assert stranger.post(f"{base}/{action}").status_code == 404, action
    endpoint.refresh_from_db()
    assert endpoint.enabled and not endpoint.previous_secret
    assert WebhookDelivery.objects.count() == 1

    # Nor can I send again a delivery of another endpoint through mine.
    add(stranger)
    theirs = WebhookEndpoint.objects.get(user=stranger.user)
    assert stranger.post(f"/dashboard/webhooks/{theirs.public_id}/deliveries/{row.pk}/send-again").status_code == 404


def test_the_pages_need_a_sign_in_and_changes_need_a_csrf_token():
    assert Client().get("/dashboard/webhooks/").status_code == 302
    client = signed_in("csrf@example.com")
    add(client)
    endpoint = WebhookEndpoint.objects.get()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(client.user)
    assert strict.post(f"/dashboard/webhooks/{endpoint.public_id}/roll-secret").status_code == 403
    assert strict.post("/dashboard/webhooks/", {"url": PUBLIC, "events": ["render.failed"]}).status_code == 403
    assert Client().post(f"/dashboard/webhooks/{endpoint.public_id}/test").status_code == 302
    assert WebhookDelivery.objects.count() == 0


def test_the_console_navigation_links_to_webhooks():
    page = signed_in("nav@example.com").get("/dashboard/").content.decode()
    assert 'href="/dashboard/webhooks/"' in page
