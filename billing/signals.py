"""The signup grant. It lives here, not in accounts, because accounts must not import billing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from billing import ledger


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing_signup_grant")
def grant_signup_credits(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """Opens the account and grants SIGNUP_GRANT_CREDITS in the user's own transaction.

    Running inside the transaction that creates the user means a user never exists
    without the grant; the reference ``signup:<pk>`` makes a second call a no-op.
    Fixture loading (``raw``) is left alone.
    """
    if not created or raw:
        return
    amount = settings.SIGNUP_GRANT_CREDITS
    if amount > 0:
        ledger.grant(instance, amount, reference=f"signup:{instance.pk}", note="signup grant")
    else:
        ledger.ensure_account(instance)
