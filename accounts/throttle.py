"""Limits on the account forms: sign-in lockout, and paced sign-up, password reset and verification mail.

Each is counted per client address (``platform_site.client_ip``) and per account, in
Redis (``platform_site.limits``, which says why this is not django-axes):

* sign-in: failed attempts, LOGIN_FAILURES_PER_IP per address and
  LOGIN_FAILURES_PER_ACCOUNT per account name, in a window of LOGIN_LOCKOUT_SECONDS
  that starts with the first failure. Once either is reached, every attempt is refused
  (right password or not) until the window ends. A successful sign-in clears the
  account's count but not the address's, so an attacker cannot reset their own budget
  by signing in to an account of their own in between.
* sign-up: SIGNUPS_PER_IP_PER_HOUR per address, SIGNUPS_PER_ADDRESS_PER_HOUR per
  canonical e-mail address (aliases count together);
* password reset: PASSWORD_RESETS_PER_IP_PER_HOUR per address and
  PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR per address asked for, whether or not an account
  has it (so the answer reveals nothing);
* verification mail: VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR per account.

A refused attempt raises ``Throttled``; views answer 429 with ``Retry-After`` and its
message. The account name is counted as its SHA-256 so addresses are not Redis keys.
Per-account lockout lets a stranger lock someone out of signing in for a window; the
password-reset link still works meanwhile, and the window is short. If Redis cannot be
reached the limits are skipped (logged): signing in keeps working in an outage.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import redis
from django.conf import settings

from accounts.email_identity import canonical_email
from platform_site.client_ip import client_ip
from platform_site.limits import Bucket, Lockout, minutes_text, rate_wait

log = logging.getLogger(__name__)

HOUR = 3600.0


class Throttled(Exception):
    """Too many attempts; ``wait`` seconds until the next one is allowed."""

    def __init__(self, wait: float, message: str) -> None:
        super().__init__(message)
        self.wait = wait
        self.message = message


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


def _account_name(value: str) -> str:
    # How sign-in looks accounts up (UserManager.get_by_natural_key).
    return value.strip().lower()


def _login_locks(request: Any, username: str) -> tuple[Lockout, Lockout]:
    seconds = float(settings.LOGIN_LOCKOUT_SECONDS)
    by_ip = Lockout(f"throttle:login:ip:{client_ip(request)}", int(settings.LOGIN_FAILURES_PER_IP), seconds)
    by_account = Lockout(f"throttle:login:account:{_digest(_account_name(username))}",
                         int(settings.LOGIN_FAILURES_PER_ACCOUNT), seconds)
    return by_ip, by_account


def check_login(request: Any, username: str) -> None:
    """Raises Throttled while the address or the account is locked out."""
    by_ip, by_account = _login_locks(request, username)
    try:
        account_wait = by_account.peek() if username else 0.0
        ip_wait = by_ip.peek()
    except redis.RedisError as exc:
        log.warning("sign-in limits not checked, Redis unreachable: %r", exc)
        return
    if account_wait > 0:
        raise Throttled(account_wait, (
            f"Too many failed sign-in attempts for this account. Try again {minutes_text(account_wait)}, "
            "or reset your password."))
    if ip_wait > 0:
        raise Throttled(ip_wait, (
            f"Too many failed sign-in attempts from your network. Try again {minutes_text(ip_wait)}."))


def login_failed(request: Any, username: str) -> None:
    by_ip, by_account = _login_locks(request, username)
    try:
        by_ip.fail()
        if username:
            by_account.fail()
    except redis.RedisError as exc:
        log.warning("failed sign-in not counted, Redis unreachable: %r", exc)


def login_succeeded(request: Any, username: str) -> None:
    _, by_account = _login_locks(request, username)
    try:
        by_account.clear()
    except redis.RedisError as exc:
        log.warning("sign-in count not cleared, Redis unreachable: %r", exc)


def _paced(buckets: list[Bucket], what: str) -> None:
    try:
        wait = rate_wait(*buckets)
    except redis.RedisError as exc:
        log.warning("%s limits not checked, Redis unreachable: %r", what, exc)
        return
    if wait > 0:
        raise Throttled(wait, f"Too many {what} attempts. Try again {minutes_text(wait)}.")


def check_signup(request: Any, email: str) -> None:
    """Counts one sign-up attempt from this address for this e-mail; raises Throttled when over."""
    buckets = [Bucket(f"throttle:signup:ip:{client_ip(request)}", int(settings.SIGNUPS_PER_IP_PER_HOUR), HOUR)]
    if email:
        buckets.append(Bucket(f"throttle:signup:address:{_digest(canonical_email(email))}",
                              int(settings.SIGNUPS_PER_ADDRESS_PER_HOUR), HOUR))
    _paced(buckets, "sign-up")


def check_password_reset(request: Any, email: str) -> None:
    buckets = [Bucket(f"throttle:reset:ip:{client_ip(request)}", int(settings.PASSWORD_RESETS_PER_IP_PER_HOUR), HOUR)]
    if email:
        buckets.append(Bucket(f"throttle:reset:account:{_digest(_account_name(email))}",
                              int(settings.PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR), HOUR))
    _paced(buckets, "password reset")


def check_verification_email(user: Any) -> None:
    _paced([Bucket(f"throttle:verify-mail:user:{user.pk}",
                   int(settings.VERIFICATION_EMAILS_PER_ACCOUNT_PER_HOUR), HOUR)], "verification e-mail")
