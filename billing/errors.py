"""Billing's API error codes, registered in the project-wide registry at import time."""

from __future__ import annotations

from platform_site.api_errors import ApiError, register

from billing.ledger import CreditsOwed, InsufficientCredits

INSUFFICIENT_CREDITS = register(
    "insufficient_credits", 402, "payment_error",
    "Not enough available credits for this render; buy a credit pack on the Billing page. "
    "Nothing was reserved or charged.",
)
CREDITS_OWED = register(
    "credits_owed", 402, "payment_error",
    "This account owes credits: a payment for credits was refunded or disputed after some of "
    "them were spent. Renders are paused until the owed credits are settled, by buying a credit "
    "pack (the owed credits are taken from it first) or by our support. Nothing was reserved "
    "or charged.",
)


def insufficient_credits_error(exc: InsufficientCredits) -> ApiError:
    """The API's 402 for a failed reserve, with the numbers a client needs to act on it."""
    if isinstance(exc, CreditsOwed):
        return credits_owed_error(exc.owed)
    return ApiError(
        "insufficient_credits",
        f"This render needs {exc.required} credits; {exc.available} are available.",
    )


def credits_owed_error(owed: int) -> ApiError:
    return ApiError(
        "credits_owed",
        f"This account owes {owed} credits after a refunded or disputed payment, so renders are "
        "paused. Buy a credit pack on the Billing page (the owed credits are settled from it "
        "first, the rest is yours to spend) or contact support. Nothing was reserved or charged.",
    )
