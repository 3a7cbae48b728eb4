"""The Stripe webhook: signed deliveries credit exactly once; anything else credits nothing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from itertools import count
from typing import Any

import pytest
import stripe
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import CreditPack, EntryKind, LedgerEntry, Purchase, PurchaseStatus, StripeEvent
from tests.concurrency import race

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_secret"
URL = "/billing/stripe/webhook/"

_ids = count()


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = SECRET


def make_purchase(credits: int = 1100, amount: int = 1000) -> Purchase:
    from accounts.models import User

    n = next(_ids)
    user = User.objects.create_user(email=f"payer{n}@example.com", password="pw-123456789", email_verified_at=timezone.now())
    pack = CreditPack.objects.create(name=f"Pack {n}", credits=credits, price=amount, currency="usd")
    return Purchase.objects.create(
        user=user, pack=pack, credits=credits, amount=amount, currency="usd",
        stripe_checkout_session_id=f"cs_test_{n}", status=PurchaseStatus.OPEN,
    )


def checkout_event(
    purchase: Purchase,
    *,
    type: str = "checkout.session.completed",
    event_id: str | None = None,
    payment_status: str = "paid",
    api_version: str | None = None,
) -> dict[str, Any]:
    from django.conf import settings

    return {
        "id": event_id or f"evt_{next(_ids)}",
        "object": "event",
        "api_version": api_version or settings.STRIPE_API_VERSION,
        "created": int(time.time()),
        "livemode": False,
        "type": type,
        "data": {
            "object": {
                "id": purchase.stripe_checkout_session_id,
                "object": "checkout.session",
                "client_reference_id": purchase.client_reference_id,
                "mode": "payment",
                "status": "complete",
                "payment_status": payment_status,
                "amount_total": purchase.amount,
                "currency": purchase.currency,
            }
        },
    }


def deliver(
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    tamper: Callable[[str], str] | None = None,
    client: Client | None = None,
):
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    body = tamper(payload) if tamper else payload
    client = client or Client(enforce_csrf_checks=True)
    return client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


def credited(purchase: Purchase) -> int:
    return ledger.balances(purchase.user).balance - 220


def test_the_webhook_url_is_named():
    assert reverse("billing:stripe_webhook") == URL


def test_a_paid_checkout_credits_the_pack_and_records_the_event():
    purchase = make_purchase()
    event = checkout_event(purchase)

    response = deliver(event)

    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "credited"}
    assert credited(purchase) == 1100
    entry = LedgerEntry.objects.get(kind=EntryKind.PURCHASE)
    assert (entry.reference, entry.amount, entry.actor) == (purchase.stripe_checkout_session_id, 1100, f"stripe:{event['id']}")
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID and purchase.paid_at is not None
    recorded = StripeEvent.objects.get(event_id=event["id"])
    assert (recorded.type, recorded.outcome, recorded.purchase_id) == (event["type"], "credited", purchase.pk)


def test_the_same_event_delivered_five_times_credits_once():
    purchase = make_purchase()
    event = checkout_event(purchase)

    outcomes = [deliver(event) for _ in range(5)]

    assert [r.status_code for r in outcomes] == [200] * 5
    assert [r.json()["outcome"] for r in outcomes] == ["credited"] + ["duplicate_event"] * 4
    assert credited(purchase) == 1100
    assert StripeEvent.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.PURCHASE).count() == 1


def test_two_different_events_for_one_session_credit_once():
    purchase = make_purchase()
    first = deliver(checkout_event(purchase))
    second = deliver(checkout_event(purchase, type="checkout.session.async_payment_succeeded"))
    assert (first.json()["outcome"], second.json()["outcome"]) == ("credited", "already_paid")
    assert credited(purchase) == 1100
    assert StripeEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_five_times_at_once_credits_once():
    purchase = make_purchase()
    event = checkout_event(purchase)

    responses = race(5, lambda i: deliver(event))

    assert [r.status_code for r in responses] == [200] * 5
    assert sorted(r.json()["outcome"] for r in responses) == ["credited"] + ["duplicate_event"] * 4
    assert credited(purchase) == 1100
    assert StripeEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_different_events_for_one_session_at_once_credit_once():
    purchase = make_purchase()
    events = [checkout_event(purchase)] + [
        checkout_event(purchase, type="checkout.session.async_payment_succeeded") for _ in range(3)
    ]

    responses = race(len(events), lambda i: deliver(events[i]))

    assert [r.status_code for r in responses] == [200] * 4
    assert sorted(r.json()["outcome"] for r in responses) == ["already_paid"] * 3 + ["credited"]
    assert credited(purchase) == 1100


def test_a_completed_checkout_still_unpaid_waits_for_the_async_payment():
    purchase = make_purchase()
    assert deliver(checkout_event(purchase, payment_status="unpaid")).json()["outcome"] == "marked_processing"
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PROCESSING and credited(purchase) == 0

    succeeded = deliver(checkout_event(purchase, type="checkout.session.async_payment_succeeded"))
    assert succeeded.json()["outcome"] == "credited"
    assert credited(purchase) == 1100


def test_a_failed_async_payment_marks_the_purchase_failed_and_credits_nothing():
    purchase = make_purchase()
    deliver(checkout_event(purchase, payment_status="unpaid"))
    response = deliver(checkout_event(purchase, type="checkout.session.async_payment_failed"))
    assert response.status_code == 200 and response.json()["outcome"] == "marked_failed"
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.FAILED and credited(purchase) == 0


def test_a_late_failure_cannot_unpay_a_paid_purchase():
    purchase = make_purchase()
    deliver(checkout_event(purchase))
    response = deliver(checkout_event(purchase, type="checkout.session.async_payment_failed"))
    assert response.json()["outcome"] == "already_paid"
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID and credited(purchase) == 1100


def test_a_completed_checkout_with_no_payment_required_credits_nothing():
    purchase = make_purchase()
    response = deliver(checkout_event(purchase, payment_status="no_payment_required"))
    assert response.status_code == 200 and credited(purchase) == 0


def assert_rejected(response, purchase: Purchase) -> None:
    assert response.status_code == 400
    assert credited(purchase) == 0
    assert not StripeEvent.objects.exists()
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.OPEN


def test_a_signature_made_with_another_secret_is_rejected():
    purchase = make_purchase()
    assert_rejected(deliver(checkout_event(purchase), secret="whsec_attacker"), purchase)


def test_a_body_changed_after_signing_is_rejected():
    purchase = make_purchase()
    other = make_purchase()
    event = checkout_event(purchase)
    # Same event, redirected to someone else's purchase after Stripe signed it.
    tamper = lambda body: body.replace(purchase.client_reference_id, other.client_reference_id)  # noqa: E731
    assert_rejected(deliver(event, tamper=tamper), purchase)
    assert credited(other) == 0


def test_a_stale_timestamp_is_rejected():
    purchase = make_purchase()
    assert_rejected(deliver(checkout_event(purchase), timestamp=int(time.time()) - 301), purchase)


def test_a_timestamp_within_the_tolerance_is_accepted():
    purchase = make_purchase()
    assert deliver(checkout_event(purchase), timestamp=int(time.time()) - 240).status_code == 200
    assert credited(purchase) == 1100


def test_a_delivery_without_a_signature_is_rejected():
    purchase = make_purchase()
    response = Client().post(URL, data=json.dumps(checkout_event(purchase)), content_type="application/json")
    assert_rejected(response, purchase)


def test_a_signed_body_that_is_not_a_checkout_session_is_rejected():
    purchase = make_purchase()
    event = checkout_event(purchase)
    event["data"]["object"] = {"object": "charge", "id": "ch_1"}
    assert_rejected(deliver(event), purchase)


def test_an_event_type_we_do_not_handle_gets_200_and_changes_nothing():
    purchase = make_purchase()
    event = checkout_event(purchase, type="customer.created")
    response = deliver(event)
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert credited(purchase) == 0 and not StripeEvent.objects.exists()


def test_an_event_from_another_api_version_is_processed_and_logged(caplog):
    purchase = make_purchase()
    with caplog.at_level(logging.WARNING, logger="billing.webhooks"):
        response = deliver(checkout_event(purchase, api_version="2020-08-27"))
    assert response.status_code == 200 and credited(purchase) == 1100
    assert "2020-08-27" in caplog.text
    assert StripeEvent.objects.get().api_version == "2020-08-27"


def test_an_event_for_a_purchase_we_never_made_is_recorded_and_credits_nothing():
    purchase = make_purchase()
    event = checkout_event(purchase)
    event["data"]["object"]["client_reference_id"] = "pur_unknown"
    event["data"]["object"]["id"] = "cs_test_unknown"
    response = deliver(event)
    assert response.status_code == 200 and response.json()["outcome"] == "unknown_purchase"
    assert credited(purchase) == 0
    assert StripeEvent.objects.get().outcome == "unknown_purchase"


def test_an_event_whose_session_belongs_to_another_purchase_credits_nothing():
    purchase = make_purchase()
    event = checkout_event(purchase)
    event["data"]["object"]["id"] = "cs_test_someone_else"
    response = deliver(event)
    assert response.json()["outcome"] == "rejected" and credited(purchase) == 0


def test_a_purchase_whose_session_id_was_never_saved_is_still_credited():
    purchase = make_purchase()
    event = checkout_event(purchase)
    Purchase.objects.filter(pk=purchase.pk).update(stripe_checkout_session_id=None)
    assert deliver(event).json()["outcome"] == "credited"
    purchase.refresh_from_db()
    assert purchase.stripe_checkout_session_id == event["data"]["object"]["id"]


def test_without_a_webhook_secret_deliveries_are_refused_until_configured(settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    purchase = make_purchase()
    response = deliver(checkout_event(purchase))
    assert response.status_code == 503 and credited(purchase) == 0


def test_the_webhook_only_accepts_post():
    assert Client().get(URL).status_code == 405
