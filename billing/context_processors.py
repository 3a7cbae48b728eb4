"""The e-mail verification banner: why a new account has no credits yet.

A query only for signed-in users whose address is unverified; everyone else costs none.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from billing.models import SignupGrant


def verification_notice(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or getattr(user, "email_verified_at", True) is not None:
        return {}
    grant = int(settings.SIGNUP_GRANT_CREDITS)
    # Accounts older than verification already hold their grant: nothing to explain.
    if grant > 0 and SignupGrant.objects.filter(user_id=user.pk).exists():
        return {}
    return {"verify_email_notice": {"grant": grant, "renders": grant // settings.CREDITS_PER_RENDER}}
