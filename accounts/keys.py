"""API keys: the one place that issues, checks and revokes them.

A key looks like ``pxl_live_`` + 32 random base62 characters + a 6-character base62
CRC32 of everything before it, e.g. ``pxl_live_3kT9…Qx81Zb``:

- the fixed prefix lets secret scanners (and people) recognise a leaked key;
- 32 base62 characters carry about 190 bits from ``secrets``, so guessing is hopeless
  and a fast hash is enough: the key is stored only as its SHA-256 hex digest, which
  makes the lookup one indexed equality query, with no per-key salt to iterate over;
- the checksum rejects typos and truncated copy/pastes without touching the database,
  so garbage in an ``Authorization`` header costs no query at all.

The plaintext exists only in the return value of ``issue_key``; it is never stored,
logged, or put in an exception message.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, User

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits
# Longer random parts are accepted so the length can grow later without breaking old
# keys; the upper bound keeps absurd headers from being hashed.
MAX_RANDOM_LENGTH = 64
DISPLAY_RANDOM_CHARS = 4
NAME_MAX_LENGTH = ApiKey._meta.get_field("name").max_length


class ApiKeyLimitReached(Exception):
    """The user already holds MAX_ACTIVE_API_KEYS active keys; revoke one first."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} active API keys, the most allowed. "
            "Revoke one you no longer use, then create a new one."
        )
        self.limit = limit


def _prefix() -> str:
    return settings.API_KEY_PREFIX


def _key_pattern() -> re.Pattern[str]:
    return re.compile(
        re.escape(_prefix())
        + f"(?P<body>[0-9A-Za-z]{{{RANDOM_LENGTH},{MAX_RANDOM_LENGTH}}})"
        + f"(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
    )


def _base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    return "".join(reversed(chars)).rjust(width, BASE62[0])


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode("ascii")), CHECKSUM_LENGTH)


def hash_key(raw: str) -> str:
    """SHA-256 hex of the full key: what the database stores and looks up."""
    return hashlib.sha256(raw.encode("ascii")).hexdigest()


def is_well_formed(raw: str) -> bool:
    """True when ``raw`` has the key shape and a matching checksum. Never queries."""
    match = _key_pattern().fullmatch(raw)
    if match is None:
        return False
    head = raw[: -CHECKSUM_LENGTH]
    return secrets.compare_digest(_checksum(head), match.group("checksum"))


def generate_key() -> str:
    """A fresh plaintext key; ``issue_key`` is what stores one."""
    head = _prefix() + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return head + _checksum(head)


def issue_key(user: User, name: str) -> tuple[ApiKey, str]:
    """Creates a key for ``user`` and returns (row, plaintext); show the plaintext once.

    Raises ``ApiKeyLimitReached`` when the user already holds MAX_ACTIVE_API_KEYS
    active keys, and ValueError for an empty or over-long name. The user's row is
    locked while counting so two simultaneous requests cannot both slip under the
    limit (a no-op on SQLite, which serialises writers anyway).
    """
    name = name.strip()
    if not name:
        raise ValueError("A key needs a name.")
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"A key name has at most {NAME_MAX_LENGTH} characters.")
    limit = settings.MAX_ACTIVE_API_KEYS
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).values_list("pk").get()
        active = ApiKey.objects.filter(user=user, revoked_at__isnull=True).count()
        if active >= limit:
            raise ApiKeyLimitReached(limit)
        raw = generate_key()
        key = ApiKey.objects.create(
            user=user,
            name=name,
            hashed_key=hash_key(raw),
            display_prefix=raw[: len(_prefix()) + DISPLAY_RANDOM_CHARS],
            last_four=raw[-4:],
        )
    return key, raw


def revoke_key(key: ApiKey) -> None:
    """Revokes ``key`` for good; revoking an already revoked key keeps its first date.

    The next request made with the key fails: authentication reads ``revoked_at``
    from the database on every request, nothing is cached.
    """
    now = timezone.now()
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    key.revoked_at = ApiKey.objects.values_list("revoked_at", flat=True).get(pk=key.pk)


def authenticate_key(raw: str) -> ApiKey | None:
    """The active key (with its user loaded) that ``raw`` is, or None.

    Malformed and checksum-broken input returns None without any query. Otherwise
    one indexed lookup by SHA-256 decides: unknown keys, revoked keys and keys of
    deactivated users all return None.
    """
    if not is_well_formed(raw):
        return None
    try:
        return ApiKey.objects.select_related("user").get(
            hashed_key=hash_key(raw), revoked_at__isnull=True, user__is_active=True
        )
    except ApiKey.DoesNotExist:
        return None


def record_use(key: ApiKey, now: datetime | None = None) -> bool:
    """Moves ``last_used_at`` forward at most once per API_KEY_LAST_USED_RESOLUTION_SECONDS.

    Busy keys must not serialise on their row, so there is no lock and no
    read-modify-write: the in-memory value (fresh from authentication) skips the write
    inside the window, and otherwise a single conditional UPDATE lets exactly one of
    several concurrent requests win. Returns True when this call wrote.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if key.last_used_at is not None and key.last_used_at > cutoff:
        return False
    written = (
        ApiKey.objects.filter(pk=key.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=cutoff))
        .update(last_used_at=now)
    )
    if written:
        key.last_used_at = now
    return bool(written)
