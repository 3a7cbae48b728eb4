"""Billing's API error codes, registered in the project-wide registry at import time."""

from __future__ import annotations

from platform_site.api_errors import ApiError, register

from billing.ledger import InsufficientCredits

INSUFFICIENT_CREDITS = register(
    "insufficient_credits", 402, "payment_error",
    "Not enough available credits for this render; buy a credit pack on the Billing page. "
    "Nothing was reserved or charged.",
)


def insufficient_credits_error(exc: InsufficientCredits) -> ApiError:
    """The API's 402 for a failed reserve, with the numbers a client needs to act on it."""
    return ApiError(
        "insufficient_credits",
        f"This render needs {exc.required} credits; {exc.available} are available.",
    )
