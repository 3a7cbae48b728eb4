"""DRF authentication by API key: ``Authorization: Bearer <key>``.

Guessing keys is throttled per client address before the database is asked: a
well-formed key (right shape and checksum) costs one indexed lookup, so unknown ones
are counted per address (API_UNKNOWN_KEYS_PER_MINUTE_PER_IP, a window of a minute
from the first), and once an address reaches the limit its requests are answered 429
``rate_limited`` with ``Retry-After`` from Redis alone, with no query, until the window
ends. Malformed keys never reach the database and are not counted. A Redis outage
skips the limit (logged) rather than refusing every client.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from accounts import keys
from accounts.models import ApiKey, User
from platform_site.client_ip import client_ip
from platform_site.limits import Lockout, retry_after
from platform_site.middleware import log_staff_user

log = logging.getLogger(__name__)

MALFORMED = (
    "The API key is malformed: check that it was copied whole, "
    "as `Authorization: Bearer pxl_live_…`."
)
REJECTED = "The API key is unknown or has been revoked."


class ApiKeyAuthentication(BaseAuthentication):
    """Sets ``request.user`` to the key's owner and ``request.auth`` to the ApiKey.

    No header (or another scheme) means "not authenticated", which the project's
    exception handler turns into 401 ``missing_api_key``; a Bearer header with a bad
    key raises AuthenticationFailed, 401 ``invalid_api_key``. Both carry a
    ``WWW-Authenticate`` challenge, and because ``authenticate_header`` returns one,
    DRF answers 401 rather than 403.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed(MALFORMED)
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed(MALFORMED) from None
        if not keys.is_well_formed(raw):
            raise AuthenticationFailed(MALFORMED)
        guard = unknown_keys_guard(request)
        _refuse_if_guessing(guard)
        key = keys.authenticate_key(raw)
        if key is None:
            try:
                guard.fail()
            except redis.RedisError as exc:
                log.warning("unknown API key not counted, Redis unreachable: %r", exc)
            raise AuthenticationFailed(REJECTED)
        keys.record_use(key)
        log_staff_user(key.user)  # a staff member's API calls are attributable in the logs too
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class UnknownKeysThrottled(Throttled):
    """429 ``rate_limited`` for an address that sent too many unknown keys."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait=wait)
        self.public_message = (
            "Too many requests with unknown API keys from your address; "
            f"retry after {retry_after(wait)} seconds with a valid key."
        )


def unknown_keys_guard(request: Request) -> Lockout:
    return Lockout(f"throttle:api-unknown-keys:{client_ip(request)}",
                   int(settings.API_UNKNOWN_KEYS_PER_MINUTE_PER_IP), 60.0)


def _refuse_if_guessing(guard: Lockout) -> None:
    try:
        wait = guard.peek()
    except redis.RedisError as exc:
        log.warning("unknown-key limit not checked, Redis unreachable: %r", exc)
        return
    if wait > 0:
        raise UnknownKeysThrottled(wait)
