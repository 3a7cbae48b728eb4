"""Opening the credit account, and the sign-up grant once the address is verified.

They live here, not in accounts, because accounts must not import billing (or move
credits); accounts only saves ``email_verified_at``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from billing import ledger, signup_grants


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing_signup_grant")
def grant_signup_credits(sender: Any, instance: Any, created: bool, raw: bool = False,
                         update_fields: Any = None, **kwargs: Any) -> None:
    """Opens the account of a new user; grants the sign-up credits when its address is verified.

    Runs inside the transaction that saves the user, so the verification and the grant
    commit together. A user created unverified (every sign-up) gets no credits until
    ``accounts.verification`` saves ``email_verified_at``; one created verified (the
    demo account, staff setting the date in the admin) gets them at once. Saves that
    name other fields (sign-in updating ``last_login``) cost nothing here. Fixture
    loading (``raw``) is left alone.
    """
    if raw:
        return
    if created:
        ledger.ensure_account(instance)
    if instance.email_verified_at is None:
        return
    if not created and update_fields is not None and "email_verified_at" not in update_fields:
        return
    signup_grants.grant_once(instance)
