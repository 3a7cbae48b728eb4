"""Stripe webhook handling: verify, parse, hand the ledger what it needs.

The events and what they do (``billing.ledger`` has the money side):

* ``checkout.session.completed`` (paid), ``checkout.session.async_payment_succeeded``:
  credit the pack once; ``completed`` while unpaid marks the purchase processing;
  ``checkout.session.async_payment_failed`` marks it failed; ``checkout.session.expired``
  closes an abandoned purchase. The session's ``payment_intent`` is stored: refunds
  and disputes name the payment by it.
* ``charge.refunded``: the charge's cumulative ``amount_refunded`` (and its refunds,
  when the payload includes them); ``refund.created``, ``refund.updated``,
  ``refund.failed`` and the older ``charge.refund.updated``: one refund's state. The
  purchase's credits are taken back in proportion; a refund that fails gives them back.
* ``charge.dispute.created``, ``.updated``, ``.funds_withdrawn``, ``.funds_reinstated``,
  ``.closed``: the dispute's state. Open: its share of the credits is taken back; won
  (or an inquiry closed): given back; lost: stays taken.

Anything else is answered 200 "ignored" and recorded nowhere.

API version policy. Stripe renders each event in the API version of the webhook
endpoint, which is set in Stripe's dashboard and can differ from
``settings.STRIPE_API_VERSION``. We read only long-stable fields: of a Checkout Session
``id``, ``client_reference_id``, ``payment_status``, ``amount_total``, ``currency``,
``payment_intent``; of a Charge ``id``, ``amount_refunded``, ``payment_intent``,
``currency`` (and ``refunds.data`` when present); of a Refund or Dispute ``id``,
``amount``, ``status``, ``charge``, ``payment_intent``, ``currency`` (and a dispute's
``reason``). So a mismatch is logged as a warning and the event is still processed:
rejecting it would leave customers who paid without credits while Stripe retried for
days. What we do reject (400) is an event in which those fields are missing or of the
wrong type, whatever its version. The event's version is stored on its StripeEvent row
so staff can see which endpoint sent it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import stripe
from django.conf import settings

from billing import ledger
from billing.ledger import CheckoutEvent, PurchaseOutcome, ReversalEvent
from billing.models import ReversalKind
from billing.reversals import ReversalState

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
        payment_intent=_id_of(obj.get("payment_intent"), "payment_intent") or None,
    )


def _id_of(value: Any, name: str) -> str:
    """An id field that may be a string, an expanded object with an id, or absent."""
    if value is None:
        return ""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str):
        raise InvalidWebhook(f"{name} is not an id")
    return value


def _object_of(event: dict[str, Any], kind: str) -> dict[str, Any]:
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict) or obj.get("object") != kind:
        raise InvalidWebhook(f"event does not carry a {kind}")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise InvalidWebhook(f"{kind} has no id")
    return obj


def _amount(obj: dict[str, Any], field: str) -> int:
    value = obj.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidWebhook(f"{obj.get('object')}.{field} is not a non-negative integer")
    return value


def _text(obj: dict[str, Any], field: str, *, required: bool = False) -> str:
    value = obj.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidWebhook(f"{obj.get('object')}.{field} is not a string")
    return value


def _purchase_reference(obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get("purchase") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else None


def _refund_state(obj: dict[str, Any]) -> ReversalState:
    if obj.get("object") != "refund" or not isinstance(obj.get("id"), str) or not obj["id"]:
        raise InvalidWebhook("refund has no id")
    return ReversalState(
        kind=ReversalKind.REFUND, stripe_id=obj["id"], amount=_amount(obj, "amount"),
        status=_text(obj, "status", required=True), payment_intent=_id_of(obj.get("payment_intent"), "payment_intent"),
        charge=_id_of(obj.get("charge"), "charge"), currency=_text(obj, "currency").lower(),
    )


def _reversal_event(event: dict[str, Any], states: list[ReversalState], intent: str,
                    reference: str | None) -> ReversalEvent:
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise InvalidWebhook("event has no created time")
    return ReversalEvent(
        event_id=event["id"], type=event["type"], created=created, payment_intent=intent,
        states=tuple(states), purchase_reference=reference,
        api_version=str(event.get("api_version") or ""), livemode=bool(event.get("livemode")),
    )


def _charge_refunded(event: dict[str, Any]) -> PurchaseOutcome:
    charge = _object_of(event, "charge")
    intent = _id_of(charge.get("payment_intent"), "payment_intent")
    states = [ReversalState(
        kind=ReversalKind.CHARGE_REFUNDS, stripe_id=charge["id"], amount=_amount(charge, "amount_refunded"),
        status="refunded" if charge.get("refunded") is True else "partially_refunded",
        payment_intent=intent, charge=charge["id"], currency=_text(charge, "currency").lower(),
    )]
    refunds = charge.get("refunds")
    if isinstance(refunds, dict) and isinstance(refunds.get("data"), list):
        # Included when the endpoint's API version (or an expand) sends them.
        for refund in refunds["data"]:
            if not isinstance(refund, dict):
                raise InvalidWebhook("charge.refunds holds something other than refunds")
            states.append(_refund_state({**refund, "charge": refund.get("charge") or charge["id"]}))
    return ledger.record_reversal(_reversal_event(event, states, intent, _purchase_reference(charge)))


def _refund(event: dict[str, Any]) -> PurchaseOutcome:
    state = _refund_state(_object_of(event, "refund"))
    return ledger.record_reversal(_reversal_event(event, [state], state.payment_intent, None))


def _dispute(event: dict[str, Any]) -> PurchaseOutcome:
    dispute = _object_of(event, "dispute")
    state = ReversalState(
        kind=ReversalKind.DISPUTE, stripe_id=dispute["id"], amount=_amount(dispute, "amount"),
        status=_text(dispute, "status", required=True),
        payment_intent=_id_of(dispute.get("payment_intent"), "payment_intent"),
        charge=_id_of(dispute.get("charge"), "charge"), currency=_text(dispute, "currency").lower(),
        reason=_text(dispute, "reason")[:64],
    )
    return ledger.record_reversal(_reversal_event(event, [state], state.payment_intent, None))


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
    "checkout.session.expired": lambda e: ledger.record_checkout_expired(_checkout_event(e)),
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund,
    "refund.created": _refund,
    "refund.updated": _refund,
    "refund.failed": _refund,
    "charge.dispute.created": _dispute,
    "charge.dispute.updated": _dispute,
    "charge.dispute.funds_withdrawn": _dispute,
    "charge.dispute.funds_reinstated": _dispute,
    "charge.dispute.closed": _dispute,
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
