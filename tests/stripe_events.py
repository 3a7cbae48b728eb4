"""Stripe events as Stripe sends them, signed with the test's own webhook secret.

Only Stripe's servers are faked: the payloads go through the real webhook view, the
real signature check (``stripe.WebhookSignature``) and the real ledger.
"""

from __future__ import annotations

import json
import time
from itertools import count
from typing import Any

import stripe
from django.conf import settings
from django.test import Client

SECRET = "whsec_test_refunds_secret"
URL = "/billing/stripe/webhook/"
T0 = int(time.time()) - 3600  # event times: T0 + offsets, so order can be chosen

_ids = count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


def deliver(event: dict[str, Any], *, secret: str = SECRET) -> Any:
    """POSTs the event to the webhook with a valid Stripe-Signature; returns the response."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    return Client(enforce_csrf_checks=True).post(URL, data=payload, content_type="application/json",
                                                 HTTP_STRIPE_SIGNATURE=header)


def envelope(type: str, obj: dict[str, Any], *, created: int, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or next_id("evt"),
        "object": "event",
        "api_version": settings.STRIPE_API_VERSION,
        "created": created,
        "livemode": False,
        "type": type,
        "data": {"object": obj},
    }


def checkout_completed(purchase: Any, *, payment_intent: str, created: int = T0,
                       type: str = "checkout.session.completed", payment_status: str = "paid") -> dict[str, Any]:
    return envelope(type, {
        "id": purchase.stripe_checkout_session_id,
        "object": "checkout.session",
        "client_reference_id": purchase.client_reference_id,
        "mode": "payment",
        "status": "complete",
        "payment_status": payment_status,
        "payment_intent": payment_intent,
        "amount_total": purchase.amount,
        "currency": purchase.currency,
    }, created=created)


def checkout_expired(purchase: Any, *, created: int = T0) -> dict[str, Any]:
    return envelope("checkout.session.expired", {
        "id": purchase.stripe_checkout_session_id,
        "object": "checkout.session",
        "client_reference_id": purchase.client_reference_id,
        "mode": "payment",
        "status": "expired",
        "payment_status": "unpaid",
        "payment_intent": None,
        "amount_total": purchase.amount,
        "currency": purchase.currency,
    }, created=created)


def charge_refunded(*, payment_intent: str, charge: str, amount: int, amount_refunded: int, created: int,
                    refunds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": charge,
        "object": "charge",
        "amount": amount,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= amount,
        "currency": "usd",
        "payment_intent": payment_intent,
        "metadata": {},
    }
    if refunds is not None:
        obj["refunds"] = {"object": "list", "data": refunds}
    return envelope("charge.refunded", obj, created=created)


def refund_object(*, refund: str, payment_intent: str, charge: str, amount: int, status: str) -> dict[str, Any]:
    return {"id": refund, "object": "refund", "amount": amount, "charge": charge, "currency": "usd",
            "payment_intent": payment_intent, "status": status}


def refund_event(type: str, *, created: int, **fields: Any) -> dict[str, Any]:
    return envelope(type, refund_object(**fields), created=created)


def dispute_event(type: str, *, dispute: str, payment_intent: str, charge: str, amount: int, status: str,
                  created: int, reason: str = "fraudulent") -> dict[str, Any]:
    return envelope(type, {
        "id": dispute, "object": "dispute", "amount": amount, "charge": charge, "currency": "usd",
        "payment_intent": payment_intent, "status": status, "reason": reason,
    }, created=created)
