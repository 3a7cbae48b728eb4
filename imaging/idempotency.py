"""Idempotency-Key, with Stripe's semantics, scoped to the key's owner.

* A key's record is created in the same transaction as the hold and the render it
  stands for (``imaging.renders.submit_render``), under a unique constraint on
  (user, key). So a key has a record exactly when it has a render: a process that
  dies anywhere leaves either nothing (a retry starts afresh) or all three (a retry
  finds the render), never a render without its key or a key without its render.
  Of several concurrent duplicates exactly one INSERT wins; the others roll back
  their hold and render and answer from the winner's record.
* Same key, same request, within IDEMPOTENCY_TTL_SECONDS (24 h): the first response
  again, byte for byte the same body and status, plus ``Idempotent-Replayed: true``;
  no second render, no second charge.
* Same key, different request: 422 ``idempotency_key_reused``.
* Same key while the first request is still waiting on its render: 409
  ``idempotency_key_in_use``. "Still waiting" is the waiter mark the request keeps on
  the render's job in Redis (``imaging.dispatch.has_waiter``). When nobody waits (the
  first request died, or answered but could not record its answer, or has not begun
  its wait yet: the moment between its commit and its wait), a retry is told the
  render's current state instead, so the client learns the render it paid for. Marking
  the wait before the commit would close that moment, but a request killed inside it
  would then block its own retries with 409 until the mark expired.

"Same request" is a fingerprint of the endpoint, the parsed fields (so JSON key order
and multipart boundaries do not matter) and the uploaded file's SHA-256.

Which outcomes are remembered: every response once a render exists (200, 202, or a
failed render). A request refused before any render was created (validation, an
unfetchable image, 402, 429) leaves no record, because nothing happened that a retry
could duplicate, and a client retrying after buying credits or fixing its URL should
not be told the old answer for a day. (Stripe likewise does not save validation
failures.)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import redis
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from rest_framework.response import Response

from imaging import dispatch
from imaging.models import IdempotencyRecord, Render
from platform_site import metrics
from platform_site.api_errors import ApiError

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers worth replaying (X-Request-Id stays fresh: it names this request).
REMEMBERED_HEADERS = ("Retry-After", "Location", "X-Credits-Charged", "X-Credits-Remaining")
# Records written before keys and renders were created together may lack a render; one
# that old is a request that died before creating anything.
STALE_MARGIN_SECONDS = 60


class KeyTaken(Exception):
    """A concurrent request with the same key created its render first."""


@dataclass(frozen=True)
class Claim:
    """This request's key and fingerprint, before anything is created."""

    user: Any
    key: str
    fingerprint: str


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


def replay(record: IdempotencyRecord) -> Response:
    response = Response(record.response_body, status=record.response_status)
    for name, value in (record.response_headers or {}).items():
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    metrics.IDEMPOTENT_REPLAYS.inc()
    return response


def in_use_error() -> ApiError:
    return ApiError("idempotency_key_in_use",
                    f"A request with this {HEADER} is still running; retry when it has finished.",
                    param=HEADER, headers={"Retry-After": "1"})


def _first_request_waits(render: Render) -> bool:
    try:
        return dispatch.has_waiter(render.job_id)
    except redis.RedisError:
        return False  # cannot tell: answering from the render is safe either way


def lookup(claim: Claim, *, answer: Callable[[Render], Response]) -> Response | None:
    """The answer for a key that was used before, or None when this request may proceed.

    ``answer(render) -> Response`` builds the response for a render whose first
    request is no longer waiting on it. Raises 422 idempotency_key_reused or 409
    idempotency_key_in_use.
    """
    existing = IdempotencyRecord.objects.filter(user=claim.user, key=claim.key).select_related("render").first()
    if existing is None:
        return None
    now = timezone.now()
    if existing.created_at < now - _ttl():
        IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
        return None
    if existing.fingerprint != claim.fingerprint:
        raise ApiError("idempotency_key_reused",
                       f"This {HEADER} was already used with a different request.", param=HEADER)
    if existing.state == IdempotencyRecord.State.DONE:
        return replay(existing)
    render = existing.render
    if render is None:
        stale = now - timedelta(seconds=float(settings.RENDER_SYNC_WINDOW_SECONDS) + STALE_MARGIN_SECONDS)
        if existing.created_at < stale:
            IdempotencyRecord.objects.filter(pk=existing.pk, render__isnull=True).delete()
            return None
        raise in_use_error()
    if _first_request_waits(render):
        raise in_use_error()
    response = answer(render)
    if Render.objects.filter(pk=render.pk, status__in=("succeeded", "failed")).exists():
        remember(claim, render, response)
    response[REPLAYED_HEADER] = "true"
    metrics.IDEMPOTENT_REPLAYS.inc()
    return response


def create_record(claim: Claim | None) -> IdempotencyRecord | None:
    """Inserts the key's record; call inside the transaction that creates its render.

    Raises IntegrityError when a concurrent twin inserted first (the caller rolls
    back and raises KeyTaken).
    """
    if claim is None:
        return None
    return IdempotencyRecord.objects.create(user=claim.user, key=claim.key, fingerprint=claim.fingerprint)


def link(record: IdempotencyRecord | None, render: Render) -> None:
    """Points the key's record at its render, in the transaction that created both."""
    if record is not None:
        IdempotencyRecord.objects.filter(pk=record.pk).update(render=render)


def taken(claim: Claim | None) -> bool:
    """True when the key has a record: after an IntegrityError, a twin won the race."""
    return claim is not None and IdempotencyRecord.objects.filter(user=claim.user, key=claim.key).exists()


def remember(claim: Claim | None, render: Render, response: Response) -> None:
    """Remembers the response the client got, for replays within the next 24 hours.

    Best effort: if the database refuses now, a retry is answered from the render.
    """
    if claim is None:
        return
    headers = {h: response[h] for h in REMEMBERED_HEADERS if response.has_header(h)}
    try:
        IdempotencyRecord.objects.filter(
            user=claim.user, key=claim.key, render=render, state=IdempotencyRecord.State.IN_PROGRESS,
        ).update(state=IdempotencyRecord.State.DONE, response_status=response.status_code,
                 response_body=response.data, response_headers=headers)
    except DatabaseError:
        log.warning("render %s: could not remember its response for %s", render.public_id, HEADER,
                    exc_info=True)
