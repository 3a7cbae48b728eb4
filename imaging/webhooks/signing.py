"""The ``PixelAPI-Signature`` header, Stripe-style.

    PixelAPI-Signature: t=1767225600,v1=5257a869...,v1=9f2c...

``t`` is the Unix time the attempt was signed; each ``v1`` is the hex HMAC-SHA256 of
``f"{t}.{body}"`` under one of the endpoint's valid secrets (the current one first,
then, during a rotation, the previous one). A receiver accepts the request when any
``v1`` matches its secret and ``t`` is recent, which is what the snippet on the docs
page does (``verify`` here is the same check, for our own tests and tools).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "PixelAPI-Signature"
EVENT_ID_HEADER = "PixelAPI-Event-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with the whole secret string."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], body: bytes, timestamp: int | None = None) -> str:
    """The header value: one ``v1`` per valid secret, all over the same timestamp."""
    if not secrets:
        raise ValueError("an endpoint always has at least one secret")
    t = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={t}", *(f"{SCHEME}={signature(s, t, body)}" for s in secrets)])


def parse_header(value: str) -> tuple[int | None, list[str]]:
    """(timestamp, v1 signatures) from a header; unknown schemes are ignored."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, _, val = item.strip().partition("=")
        if key == "t" and val.isascii() and val.isdigit():
            timestamp = int(val)
        elif key == SCHEME and val:
            signatures.append(val)
    return timestamp, signatures


def verify(secret: str, body: bytes, header: str, *, tolerance: int = DEFAULT_TOLERANCE_SECONDS,
           now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    timestamp, signatures = parse_header(header)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
