"""System checks: configuration mistakes that would only show up when money moves."""

from __future__ import annotations

from typing import Any

import stripe
from django.conf import settings
from django.core.checks import Warning, register


@register()
def check_stripe_api_version(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """The pinned API version must be the one the installed stripe package was generated for.

    Requests are sent with STRIPE_API_VERSION and webhook events are compared with it; a
    different version than the SDK's means the SDK's types describe other shapes.
    """
    pinned = getattr(settings, "STRIPE_API_VERSION", "")
    if pinned != stripe.api_version:
        return [
            Warning(
                f"STRIPE_API_VERSION is {pinned!r} but stripe {stripe.VERSION} is pinned to "
                f"{stripe.api_version!r}.",
                hint=f"Set STRIPE_API_VERSION = {stripe.api_version!r}.",
                id="billing.W001",
            )
        ]
    return []
