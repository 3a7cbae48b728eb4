"""The sign-up credits: once per verified address, never before verification.

Given when the user's ``email_verified_at`` is first saved (``billing.signals``), in
that same transaction, so a verified user never exists without the grant it earned.
"Once per address" means once per *canonical* address (``accounts.email_identity``):
case and, where the provider treats ``+tag`` as an alias, the tag do not make a new
address. The ``SignupGrant`` row's unique address is the guard, inserted under a
savepoint, so two aliases verified at the same instant cannot both be granted; the
ledger entry's reference stays ``signup:<user id>``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.email_identity import canonical_email
from billing import ledger
from billing.models import LedgerEntry, SignupGrant


class GrantStatus(StrEnum):
    GRANTED = "granted"
    AWAITING_VERIFICATION = "awaiting_verification"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    NONE = "none"


def grant_once(user: Any) -> LedgerEntry | None:
    """Grants SIGNUP_GRANT_CREDITS to a verified user whose address has had no grant yet."""
    amount = int(settings.SIGNUP_GRANT_CREDITS)
    if amount <= 0 or user.email_verified_at is None:
        return None
    address = canonical_email(user.email)
    with transaction.atomic():
        if SignupGrant.objects.filter(Q(user_id=user.pk) | Q(address=address)).exists():
            return None
        try:
            with transaction.atomic():
                SignupGrant.objects.create(user_id=user.pk, address=address, credits=amount)
        except IntegrityError:
            return None  # an alias (or this user) was granted a moment ago
        return ledger.grant(user, amount, reference=f"signup:{user.pk}", note="sign-up grant (e-mail verified)")


def status(user: Any) -> GrantStatus:
    """Where the user stands with the sign-up credits, for the dashboard's explanation."""
    if int(settings.SIGNUP_GRANT_CREDITS) <= 0:
        return GrantStatus.NONE
    rows = list(SignupGrant.objects.filter(Q(user_id=user.pk) | Q(address=canonical_email(user.email)))
                .values_list("user_id", flat=True))
    if user.pk in rows:
        return GrantStatus.GRANTED
    if user.email_verified_at is None:
        return GrantStatus.AWAITING_VERIFICATION
    return GrantStatus.CLAIMED_ELSEWHERE if rows else GrantStatus.NONE
