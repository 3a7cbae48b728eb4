"""Expiring links to a render's output and matte.

Local storage: a path served by ``imaging.views.signed_file`` carrying the expiry and
an HMAC of (key, expiry) made with SECRET_KEY, so a link cannot be forged, extended
or pointed at another file. S3: the bucket's own presigned URL with the same
lifetime. Either way the render object says when its links stop working
(``expires_at``), and ``GET /v1/renders/{id}`` hands out fresh ones.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from urllib.parse import urlencode

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.urls import reverse
from django.utils.crypto import salted_hmac

_SALT = "imaging.signed_urls.v1"


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime


class SignatureError(Exception):
    """A signed link was refused; ``code`` is a registered error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _signature(key: str, expires: int) -> str:
    return salted_hmac(_SALT, f"{key}\n{expires}", algorithm="sha256").hexdigest()


def serves_locally() -> bool:
    """True when files are on this machine's disk and Django must serve them itself."""
    return isinstance(default_storage, FileSystemStorage)


def signed_url(key: str, *, base_url: str | None = None, ttl: int | None = None,
               now: float | None = None) -> SignedUrl:
    """A link to a stored key that works for ``ttl`` seconds (OUTPUT_URL_TTL_SECONDS)."""
    ttl = settings.OUTPUT_URL_TTL_SECONDS if ttl is None else ttl
    issued = time.time() if now is None else now
    expires = int(issued + ttl)
    expires_at = datetime.fromtimestamp(expires, tz=dt_timezone.utc)
    if not serves_locally():
        return SignedUrl(default_storage.url(key, expire=ttl), expires_at)
    query = urlencode({"expires": expires, "signature": _signature(key, expires)})
    folder, _, name = key.partition("/")
    path = reverse("imaging:signed-file", kwargs={"folder": folder, "name": name}) + "?" + query
    base = (base_url or settings.SITE_URL).rstrip("/")
    return SignedUrl(base + path, expires_at)


# A Unix time in seconds has 10 digits until the year 2286; anything longer is forged.
MAX_EXPIRES_DIGITS = 12
_SIGNATURE_LENGTH = 64  # SHA-256, hex


def _is_ascii_digits(value: str | None, max_length: int) -> bool:
    # str.isdigit() alone accepts "²" and other Unicode digits that int() refuses.
    return bool(value) and len(value) <= max_length and value.isascii() and value.isdigit()


def _is_hex_signature(value: str | None) -> bool:
    return (value is not None and len(value) == _SIGNATURE_LENGTH and value.isascii()
            and all(c in "0123456789abcdef" for c in value))


def verify(key: str, expires: str | None, signature: str | None, *, now: float | None = None) -> None:
    """Raises SignatureError unless (key, expires) was signed by us and has not expired.

    The signature is checked before the expiry so that an attacker learns nothing
    about which expiry values would be accepted.
    """
    if not _is_ascii_digits(expires, MAX_EXPIRES_DIGITS) or not _is_hex_signature(signature):
        raise SignatureError("url_signature_invalid", "This link is missing its signature.")
    assert expires is not None and signature is not None
    if not hmac.compare_digest(_signature(key, int(expires)), signature):
        raise SignatureError("url_signature_invalid", "This link's signature does not match.")
    if int(expires) <= (time.time() if now is None else now):
        raise SignatureError("url_expired", "This link has expired; GET the render for a fresh one.")
