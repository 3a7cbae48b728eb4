"""Idempotency-Key, with Stripe's semantics, scoped to the key's owner.

* The first request with a key claims it: an INSERT under a unique constraint on
  (user, key), so of several concurrent duplicates exactly one proceeds.
* Same key, same request, within IDEMPOTENCY_TTL_SECONDS (24 h): the first response
  again, byte for byte the same body and status, plus ``Idempotent-Replayed: true``;
  no second render, no second charge.
* Same key, different request: 422 ``idempotency_key_reused``.
* Same key while the first request is still running: 409 ``idempotency_key_in_use``.

"Same request" is a fingerprint of the endpoint, the parsed fields (so JSON key order
and multipart boundaries do not matter) and the uploaded file's SHA-256.

Which outcomes are remembered: every response once a render exists (200, 202, or a
failed render). A request refused before any render was created (validation, an
unfetchable image, 402, 429) remembers nothing and frees the key, because nothing
happened that a retry could duplicate, and a client retrying after buying credits or
fixing its URL should not be told the old answer for a day. (Stripe likewise does not
save validation failures.)

A claim whose request died mid-way (a crashed process) would block its key for 24
hours; once it is older than the sync window plus a margin, it is resolved from its
render's state, or freed if it never got as far as a render.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response

from imaging.models import IdempotencyRecord, Render
from platform_site.api_errors import ApiError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers worth replaying (X-Request-Id stays fresh: it names this request).
REMEMBERED_HEADERS = ("Retry-After", "Location", "X-Credits-Charged", "X-Credits-Remaining")
STALE_MARGIN_SECONDS = 60


def key_from_request(request: Any) -> str | None:
    """The header's value, or None; 400 for an empty, over-long or non-printable key."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not raw or len(raw) > MAX_KEY_LENGTH or not raw.isprintable() or not raw.isascii():
        raise ApiError("invalid_request",
                       f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                       param=HEADER)
    return raw


def fingerprint(path: str, fields: Any, file_digest: str | None) -> str:
    """A stable digest of what was asked, independent of encoding details."""
    if hasattr(fields, "lists"):  # a QueryDict from a form: keep repeated values
        normalised: Any = {k: v for k, v in fields.lists()}
    else:
        normalised = fields
    canonical = json.dumps({"path": path, "fields": normalised, "file": file_digest},
                           sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_digest(upload: Any) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _ttl() -> timedelta:
    return timedelta(seconds=int(settings.IDEMPOTENCY_TTL_SECONDS))


def _stale_after() -> timedelta:
    return timedelta(seconds=float(settings.RENDER_SYNC_WINDOW_SECONDS) + STALE_MARGIN_SECONDS)


def replay(record: IdempotencyRecord) -> Response:
    response = Response(record.response_body, status=record.response_status)
    for name, value in (record.response_headers or {}).items():
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


class Claim:
    """The outcome of claiming a key: either ours to fill, or an answer to replay."""

    def __init__(self, record: IdempotencyRecord | None, replay_response: Response | None = None):
        self.record = record
        self.replay_response = replay_response


def claim(user: Any, key: str, print_: str, *, resolve_stale: Any) -> Claim:
    """Claims ``key`` for this request, or returns the remembered response.

    ``resolve_stale(render) -> Response`` answers for a stale claim that has a render.
    Raises 422 idempotency_key_reused or 409 idempotency_key_in_use.
    """
    for _ in range(5):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(user=user, key=key, fingerprint=print_)
            return Claim(record)
        except IntegrityError:
            pass
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if existing is None:
            continue  # freed between our INSERT and this read: try again
        now = timezone.now()
        if existing.created_at < now - _ttl():
            IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if existing.fingerprint != print_:
            raise ApiError("idempotency_key_reused",
                           f"This {HEADER} was already used with a different request.", param=HEADER)
        if existing.state == IdempotencyRecord.State.DONE:
            return Claim(None, replay(existing))
        if existing.created_at >= now - _stale_after():
            raise ApiError("idempotency_key_in_use",
                           f"A request with this {HEADER} is still running; retry when it has finished.",
                           param=HEADER, headers={"Retry-After": "1"})
        if existing.render_id is None:
            IdempotencyRecord.objects.filter(pk=existing.pk, state=IdempotencyRecord.State.IN_PROGRESS,
                                             render__isnull=True).delete()
            continue
        response = resolve_stale(Render.objects.get(pk=existing.render_id))
        finish(existing, response)
        return Claim(None, replay(existing))
    raise ApiError("idempotency_key_in_use",
                   f"A request with this {HEADER} is still running; retry when it has finished.",
                   param=HEADER, headers={"Retry-After": "1"})


def attach_render(record: IdempotencyRecord | None, render: Render) -> None:
    if record is not None:
        IdempotencyRecord.objects.filter(pk=record.pk).update(render=render)
        record.render = render


def finish(record: IdempotencyRecord | None, response: Response) -> None:
    """Remembers the response the client got, for replays within the next 24 hours."""
    if record is None:
        return
    record.state = IdempotencyRecord.State.DONE
    record.response_status = response.status_code
    record.response_body = response.data
    record.response_headers = {h: response[h] for h in REMEMBERED_HEADERS if response.has_header(h)}
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state=record.state, response_status=record.response_status,
        response_body=record.response_body, response_headers=record.response_headers,
    )


def release(record: IdempotencyRecord | None) -> None:
    """Frees the key after a request that created nothing (see the module docstring)."""
    if record is not None:
        IdempotencyRecord.objects.filter(pk=record.pk, render__isnull=True).delete()
