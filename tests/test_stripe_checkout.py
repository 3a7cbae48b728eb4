"""Starting a Stripe Checkout for a credit pack, against a fake Stripe HTTP transport."""

from __future__ import annotations

import json
from itertools import count
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import ledger, stripe_gateway
from billing.models import CreditPack, Purchase, PurchaseStatus

pytestmark = pytest.mark.django_db

_emails = count()


class FakeStripeHTTP(stripe.HTTPClient):
    """Answers every request with canned JSON and remembers what was asked."""

    name = "fake"

    def __init__(self, status: int = 200, body: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.requests: list[dict[str, Any]] = []

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        form = {k: v[0] for k, v in parse_qs(post_data or "").items()}
        self.requests.append({"method": method, "url": url, "headers": dict(headers or {}), "form": form})
        body = self.body or {
            "id": "cs_test_fake123",
            "object": "checkout.session",
            "mode": "payment",
            "url": "https://checkout.stripe.com/c/pay/cs_test_fake123",
            "client_reference_id": form.get("client_reference_id"),
        }
        return json.dumps(body), self.status, {"Request-Id": "req_fake"}

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        raise AssertionError("checkout never streams")

    def close(self) -> None:
        pass


def make_user():
    from accounts.models import User

    return User.objects.create_user(email=f"buyer{next(_emails)}@example.com", password="pw-123456789",
                                    email_verified_at=timezone.now())


@pytest.fixture
def stripe_keys(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_fake"
    settings.SITE_URL = "https://pixel.example"


@pytest.fixture
def fake_stripe(monkeypatch) -> FakeStripeHTTP:
    fake = FakeStripeHTTP()
    monkeypatch.setattr(stripe_gateway, "HTTP_CLIENT", fake)
    return fake


@pytest.fixture
def pack() -> CreditPack:
    return CreditPack.objects.create(name="Test pack", credits=1100, price=1000, currency="USD")


@pytest.fixture
def buyer(client):
    user = make_user()
    client.force_login(user)
    return user


def test_buying_a_pack_creates_a_purchase_and_redirects_to_stripe_checkout(stripe_keys, fake_stripe, pack, buyer, client):
    response = client.post(reverse("billing:checkout"), {"pack": pack.pk})

    assert response.status_code == 303
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_test_fake123"
    purchase = Purchase.objects.get(user=buyer)
    assert (purchase.status, purchase.stripe_checkout_session_id) == (PurchaseStatus.OPEN, "cs_test_fake123")
    assert (purchase.credits, purchase.amount, purchase.currency) == (1100, 1000, "usd")
    assert ledger.balances(buyer).balance == 220, "nothing is credited before Stripe says paid"


def test_the_checkout_session_is_a_payment_linked_to_the_local_purchase(stripe_keys, fake_stripe, pack, buyer, client, settings):
    client.post(reverse("billing:checkout"), {"pack": pack.pk})
    purchase = Purchase.objects.get(user=buyer)

    [sent] = fake_stripe.requests
    form = sent["form"]
    assert (sent["method"], sent["url"]) == ("post", "https://api.stripe.com/v1/checkout/sessions")
    assert form["mode"] == "payment"
    assert form["client_reference_id"] == purchase.client_reference_id
    assert form["success_url"] == (
        f"https://pixel.example/dashboard/billing/purchases/{purchase.client_reference_id}/"
        "?session_id={CHECKOUT_SESSION_ID}"
    )
    assert form["cancel_url"] == "https://pixel.example/dashboard/billing/?checkout=canceled"
    assert form["line_items[0][price_data][unit_amount]"] == "1000"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][quantity]"] == "1"
    assert form["customer_email"] == buyer.email
    assert sent["headers"]["Stripe-Version"] == settings.STRIPE_API_VERSION
    assert sent["headers"]["Authorization"] == "Bearer sk_test_fake"
    assert sent["headers"]["Idempotency-Key"] == f"checkout-{purchase.client_reference_id}"


def test_a_pack_linked_to_a_stripe_price_uses_that_price(stripe_keys, fake_stripe, buyer, client):
    linked = CreditPack.objects.create(name="Linked", credits=220, price=300, stripe_price_id="price_123")
    client.post(reverse("billing:checkout"), {"pack": linked.pk})
    form = fake_stripe.requests[0]["form"]
    assert form["line_items[0][price]"] == "price_123"
    assert "line_items[0][price_data][unit_amount]" not in form


def test_without_stripe_keys_checkout_is_unavailable_and_nothing_is_created(fake_stripe, pack, buyer, client, settings):
    settings.STRIPE_SECRET_KEY = ""
    response = client.post(reverse("billing:checkout"), {"pack": pack.pk})
    assert response.status_code == 302
    assert response["Location"].endswith("?checkout=unavailable")
    assert not Purchase.objects.exists()
    assert fake_stripe.requests == []


def test_a_secret_key_without_a_webhook_secret_is_not_enough_to_sell(settings, fake_stripe, pack, buyer, client):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = client.post(reverse("billing:checkout"), {"pack": pack.pk})
    assert response["Location"].endswith("?checkout=unavailable")
    assert fake_stripe.requests == []


def test_a_stripe_error_marks_the_purchase_failed_and_says_so(stripe_keys, monkeypatch, pack, buyer, client):
    failing = FakeStripeHTTP(
        status=400,
        body={"error": {"type": "invalid_request_error", "message": "No such price"}},
    )
    monkeypatch.setattr(stripe_gateway, "HTTP_CLIENT", failing)
    response = client.post(reverse("billing:checkout"), {"pack": pack.pk})
    assert response.status_code == 302 and response["Location"].endswith("?checkout=failed")
    assert Purchase.objects.get(user=buyer).status == PurchaseStatus.FAILED
    page = client.get(response["Location"])
    assert "could not start the checkout" in page.content.decode()


def test_an_inactive_or_unknown_pack_cannot_be_bought(stripe_keys, fake_stripe, pack, buyer, client):
    pack.active = False
    pack.save()
    assert client.post(reverse("billing:checkout"), {"pack": pack.pk}).status_code == 404
    assert client.post(reverse("billing:checkout"), {"pack": "nope"}).status_code == 400
    assert client.post(reverse("billing:checkout"), {}).status_code == 400
    assert not Purchase.objects.exists() and fake_stripe.requests == []


def test_checkout_only_accepts_post(stripe_keys, fake_stripe, buyer, client):
    assert client.get(reverse("billing:checkout")).status_code == 405


def test_checkout_needs_a_signed_in_user(stripe_keys, fake_stripe, pack):
    response = Client().post(reverse("billing:checkout"), {"pack": pack.pk})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert not Purchase.objects.exists()


def test_checkout_needs_a_csrf_token(stripe_keys, fake_stripe, pack):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user())
    assert browser.post(reverse("billing:checkout"), {"pack": pack.pk}).status_code == 403
    assert not Purchase.objects.exists()


def test_the_success_page_only_shows_the_purchase_status(stripe_keys, fake_stripe, pack, buyer, client):
    client.post(reverse("billing:checkout"), {"pack": pack.pk})
    purchase = Purchase.objects.get(user=buyer)
    url = reverse("billing:purchase", args=[purchase.client_reference_id]) + "?session_id=cs_test_fake123"

    page = client.get(url).content.decode()
    assert "Waiting for checkout" in page
    assert ledger.balances(buyer).balance == 220, "returning from Stripe credits nothing by itself"

    ledger.record_purchase_paid(ledger.CheckoutEvent(
        event_id="evt_paid", type="checkout.session.completed", session_id="cs_test_fake123",
        client_reference_id=purchase.client_reference_id, amount_total=1000, currency="usd",
    ))
    page = client.get(url).content.decode()
    assert ">Paid<" in page and "The credits are in your account" in page


def test_nobody_else_can_see_a_purchase(stripe_keys, fake_stripe, pack, buyer, client):
    client.post(reverse("billing:checkout"), {"pack": pack.pk})
    purchase = Purchase.objects.get(user=buyer)
    stranger = Client()
    stranger.force_login(make_user())
    assert stranger.get(reverse("billing:purchase", args=[purchase.client_reference_id])).status_code == 404


def test_a_pinned_api_version_other_than_the_sdks_is_flagged_by_a_system_check(settings):
    from billing.checks import check_stripe_api_version

    settings.STRIPE_API_VERSION = "2020-08-27"
    [warning] = check_stripe_api_version()
    assert warning.id == "billing.W001" and stripe.api_version in warning.hint
    settings.STRIPE_API_VERSION = stripe.api_version
    assert check_stripe_api_version() == []
