"""Stripe webhook handling: verify, parse, hand the ledger what it needs.

API version policy. Stripe renders each event in the API version of the webhook
endpoint, which is set in Stripe's dashboard and can differ from
``settings.STRIPE_API_VERSION``. We read only long-stable fields of a Checkout Session
(``id``, ``client_reference_id``, ``payment_status``, ``amount_total``, ``currency``),
so a mismatch is logged as a warning and the event is still processed: rejecting it
would leave customers who paid without credits while Stripe retried for days. What we
do reject (400) is an event in which those fields are missing or of the wrong type,
whatever its version. The event's version is stored on its StripeEvent row so staff
can see which endpoint sent it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import stripe
from django.conf import settings

from billing import ledger
from billing.ledger import CheckoutEvent, PurchaseOutcome

log = logging.getLogger(__name__)

# Stripe's default: a signature older than this is a replay.
TOLERANCE_SECONDS = 300


class InvalidWebhook(Exception):
    """The request is not a genuine, well-formed Stripe event; answer 400."""


def verify(payload: bytes, signature_header: str | None, secret: str) -> dict[str, Any]:
    """Checks Stripe-Signature over the raw body and returns the parsed event.

    Raises InvalidWebhook on a missing or wrong signature, a body changed after signing,
    a timestamp outside the tolerance, or a body that is not a JSON event.
    """
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature_header, secret, tolerance=TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise InvalidWebhook("body is not UTF-8") from exc
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise InvalidWebhook("body is not JSON") from exc
    if not isinstance(event, dict) or event.get("object") != "event":
        raise InvalidWebhook("body is not a Stripe event")
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise InvalidWebhook("event has no id or type")
    return event


def _checkout_event(event: dict[str, Any]) -> CheckoutEvent:
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict) or obj.get("object") != "checkout.session":
        raise InvalidWebhook("event does not carry a checkout.session")
    session_id = obj.get("id")
    reference = obj.get("client_reference_id")
    amount_total = obj.get("amount_total")
    currency = obj.get("currency")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidWebhook("checkout.session has no id")
    if reference is not None and not isinstance(reference, str):
        raise InvalidWebhook("client_reference_id is not a string")
    if amount_total is not None and (not isinstance(amount_total, int) or isinstance(amount_total, bool)):
        raise InvalidWebhook("amount_total is not an integer")
    if currency is not None and not isinstance(currency, str):
        raise InvalidWebhook("currency is not a string")
    return CheckoutEvent(
        event_id=event["id"],
        type=event["type"],
        session_id=session_id,
        client_reference_id=reference,
        api_version=str(event.get("api_version") or ""),
        livemode=bool(event.get("livemode")),
        amount_total=amount_total,
        currency=currency,
    )


def _completed(event: dict[str, Any]) -> PurchaseOutcome:
    checkout = _checkout_event(event)
    status = event["data"]["object"].get("payment_status")
    if status == "paid":
        return ledger.record_purchase_paid(checkout)
    if status == "unpaid":
        # Delayed payment methods: async_payment_succeeded/failed follows.
        return ledger.record_purchase_processing(checkout)
    # no_payment_required cannot happen for our packs (no coupons): nothing to credit.
    log.warning("checkout.session.completed %s with payment_status %r ignored", checkout.event_id, status)
    return PurchaseOutcome.NO_CHANGE


HANDLERS: dict[str, Callable[[dict[str, Any]], PurchaseOutcome]] = {
    "checkout.session.completed": _completed,
    "checkout.session.async_payment_succeeded": lambda e: ledger.record_purchase_paid(_checkout_event(e)),
    "checkout.session.async_payment_failed": lambda e: ledger.record_purchase_failed(_checkout_event(e)),
}


def handle(event: dict[str, Any]) -> str:
    """Applies a verified event; returns what happened ("ignored" for types we don't handle)."""
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return "ignored"
    version = event.get("api_version")
    if version != settings.STRIPE_API_VERSION:
        log.warning("stripe event %s has api_version %r, we pin %r; processing anyway",
                    event["id"], version, settings.STRIPE_API_VERSION)
    return str(handler(event))
