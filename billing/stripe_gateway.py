"""The one place that talks to Stripe's API.

Requests go through ``stripe.StripeClient`` pinned to ``settings.STRIPE_API_VERSION``.
The HTTP client is injectable: ``HTTP_CLIENT`` (module attribute) or the ``http_client``
argument. Tests put a fake ``stripe.HTTPClient`` there that answers with canned JSON, so
no test reaches the network; a deployment behind an egress proxy can put a configured
client there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from django.conf import settings
from django.urls import reverse

from billing.models import Purchase

# Injection point for the HTTP transport; None means stripe's default client.
HTTP_CLIENT: stripe.HTTPClient | None = None


class CheckoutUnavailable(Exception):
    """Stripe could not be asked for a Checkout Session (not configured, or it failed)."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


def is_configured() -> bool:
    """Purchases need both keys: the secret to create sessions, the webhook secret to credit them.

    Starting a checkout we could never credit would take money without giving credits.
    """
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


class StripeGateway:
    def __init__(self, api_key: str, *, http_client: stripe.HTTPClient | None = None) -> None:
        self.client = stripe.StripeClient(
            api_key,
            stripe_version=settings.STRIPE_API_VERSION,
            http_client=http_client,
            max_network_retries=2,
        )

    def create_checkout_session(self, purchase: Purchase, *, customer_email: str = "") -> CheckoutSession:
        """A payment-mode Checkout Session for one pack, tied to ``purchase`` by client_reference_id.

        The purchase's reference is also the Stripe idempotency key, so a retried request
        cannot open two sessions for one purchase.
        """
        pack = purchase.pack
        if pack.stripe_price_id:
            line_item: dict = {"price": pack.stripe_price_id, "quantity": 1}
        else:
            line_item = {
                "quantity": 1,
                "price_data": {
                    "currency": purchase.currency,
                    "unit_amount": purchase.amount,
                    "product_data": {"name": f"{pack.name}: {purchase.credits} credits"},
                },
            }
        status_path = reverse("billing:purchase", args=[purchase.client_reference_id])
        params: dict = {
            "mode": "payment",
            "line_items": [line_item],
            "client_reference_id": purchase.client_reference_id,
            "metadata": {"purchase": purchase.client_reference_id, "credits": str(purchase.credits)},
            # On the payment too, so its charge names the purchase even if a refund or
            # dispute arrives before the checkout's own event.
            "payment_intent_data": {"metadata": {"purchase": purchase.client_reference_id}},
            "success_url": f"{settings.SITE_URL}{status_path}?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{settings.SITE_URL}{reverse('billing:index')}?checkout=canceled",
        }
        if customer_email:
            params["customer_email"] = customer_email
        try:
            session = self.client.v1.checkout.sessions.create(
                params, {"idempotency_key": f"checkout-{purchase.client_reference_id}"}
            )
        except stripe.StripeError as exc:
            raise CheckoutUnavailable(str(exc)) from exc
        if not session.url:
            raise CheckoutUnavailable("Stripe returned a session without a URL")
        return CheckoutSession(id=session.id, url=session.url)


def gateway(http_client: stripe.HTTPClient | None = None) -> StripeGateway:
    if not is_configured():
        raise CheckoutUnavailable("Stripe keys are not configured")
    return StripeGateway(settings.STRIPE_SECRET_KEY, http_client=http_client or HTTP_CLIENT)
