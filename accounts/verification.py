"""E-mail verification: a signed, expiring link, and the one function that marks an address verified.

The link carries ``signing.dumps({"u": user id, "e": address})`` under its own salt, so
it is valid only for that user *and* that address (an address changed since makes it
invalid) and only for EMAIL_VERIFICATION_MAX_AGE_SECONDS. Nothing is stored: a link
cannot be looked up or leaked from the database, and replaying it is harmless because
verifying is a one-way step made under the user's row lock.

Marking the address verified saves ``email_verified_at`` with ``update_fields``, inside
one transaction; billing's ``post_save`` receiver grants the sign-up credits in that
same transaction (accounts never moves credits itself).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import User

log = logging.getLogger(__name__)

SALT = "accounts.verify-email"


class Outcome(StrEnum):
    VERIFIED = "verified"
    ALREADY_VERIFIED = "already_verified"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    user_id: int | None = None


def make_token(user: User) -> str:
    return signing.dumps({"u": user.pk, "e": user.email}, salt=SALT, compress=False)


def verification_url(user: User) -> str:
    return settings.SITE_URL + reverse("verify-email", args=[make_token(user)])


def send_verification_email(user: User) -> None:
    """Mails the link to the user's address (the console backend prints it in development)."""
    context = {
        "email": user.email,
        "url": verification_url(user),
        "hours": settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS // 3600,
        "grant": getattr(settings, "SIGNUP_GRANT_CREDITS", 0),
    }
    send_mail(
        "Verify your PixelAPI e-mail address",
        render_to_string("accounts/verify_email.txt", context),
        None,
        [user.email],
    )


def verify(token: str) -> Result:
    """Verifies the address the token names; a replayed, expired or forged token changes nothing."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        return Result(Outcome.EXPIRED, _user_id_of_expired(token))
    except signing.BadSignature:
        return Result(Outcome.INVALID)
    if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("e"), str):
        return Result(Outcome.INVALID)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=data["u"], is_active=True).first()
        if user is None or user.email != data["e"]:
            return Result(Outcome.INVALID)
        if user.email_verified_at is not None:
            return Result(Outcome.ALREADY_VERIFIED, user.pk)
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])
    log.info("user %s verified %s", user.pk, user.email)
    return Result(Outcome.VERIFIED, user.pk)


def _user_id_of_expired(token: str) -> int | None:
    # The signature was good, only old: who it was for is safe to know (to offer a new one).
    try:
        data = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    return data.get("u") if isinstance(data, dict) and isinstance(data.get("u"), int) else None
