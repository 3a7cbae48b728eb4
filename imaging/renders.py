"""Creating a render: the one code path behind the API and the dashboard playground.

    refuse_if_short()   402 from a cheap read when the owner cannot pay           (nothing fetched)
    load_input_image()  fetch image_url safely or read the upload, check it   (4xx, nothing reserved)
    submit_render()     in-flight slot → store input → key + reserve + create row, commit → enqueue
    wait_and_settle()   (imaging.lifecycle) wait for the outcome up to the sync window

``submit_render`` stores the normalised input *before* reserving credits: storing is
free and undone on failure, and doing it first keeps the account row locked only for
the Idempotency-Key record, the reserve and the render's INSERT, which share one
transaction, so a crash can never leave a hold without its render, a render without
its hold, or a key without the render it stands for.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import ledger
from billing.errors import credits_owed_error, insufficient_credits_error
from imaging import dispatch, idempotency, ratelimit, storage_keys
from imaging.fetch import fetch_image
from gpu_worker import logs
from platform_site import metrics
from imaging.image_input import InputImage, encode_png, load_image
from imaging.models import Render, RenderEvent, new_public_id
from imaging.serializers import MAX_SEED
from platform_site.api_errors import ApiError

log = logging.getLogger(__name__)

# Holds outlive the render's deadline, so the sweeper (which fails the render and
# releases the hold with a reason) always acts before billing's blind expiry.
HOLD_GRACE_SECONDS = 300


@dataclass(frozen=True)
class RenderParams:
    """What a render was asked to do, already validated."""

    scene_prompt: str
    preserve_shadow: bool = True
    output_format: str = "png"
    seed: int | None = None
    image_url: str = ""

    @classmethod
    def from_validated(cls, data: dict[str, Any]) -> RenderParams:
        return cls(
            scene_prompt=data["scene_prompt"],
            preserve_shadow=data.get("preserve_shadow", True),
            output_format=data.get("output_format") or "png",
            seed=data.get("seed"),
            image_url=data.get("image_url") or "",
        )


def read_upload(upload: Any, *, param: str = "image_file") -> bytes:
    """The uploaded file's bytes, refusing more than FETCH_MAX_BYTES without reading them all."""
    limit = int(settings.FETCH_MAX_BYTES)
    if upload.size is not None and upload.size > limit:
        raise ApiError("image_too_large", f"The upload is larger than {limit} bytes.", param=param)
    upload.seek(0)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError("image_too_large", f"The upload is larger than {limit} bytes.", param=param)
    return data


def load_input_image(*, image_url: str = "", upload: Any = None) -> InputImage:
    """Fetches or reads the input and checks it; raises ApiError (4xx) before any money moves."""
    if image_url:
        return load_image(fetch_image(image_url), param="image_url")
    return load_image(read_upload(upload), param="image_file")


def refuse_if_short(user: Any) -> None:
    """402 before any fetching or decoding when the owner cannot pay for a render
    (``insufficient_credits``) or owes credits after a refund or dispute (``credits_owed``).

    A cheap read outside any transaction, so a key with no credits costs one query per
    request, not a download and a decode. The reserve stays the authority: a request
    that passes here can still be refused there.
    """
    required = int(settings.CREDITS_PER_RENDER)
    money = ledger.balances(user)
    if money.owed > 0:
        raise credits_owed_error(money.owed)
    if money.available < required:
        raise insufficient_credits_error(ledger.InsufficientCredits(money.available, required))


def submit_render(user: Any, api_key: Any, params: RenderParams, image: InputImage, *,
                  actor: str = "request", claim: idempotency.Claim | None = None) -> Render:
    """Takes an in-flight slot, stores the input, then in one transaction creates the
    Idempotency-Key record (when ``claim`` is given), reserves the credits and creates
    the render; then queues it.

    ``api_key`` is the ApiKey the request used, or None for the dashboard playground
    (which then has no per-key in-flight cap; the customer's cap still applies). Raises,
    with nothing reserved:
    ApiError ``insufficient_credits`` or ``credits_owed`` (402), ``rate_limited`` (429),
    ``queue_unavailable`` or ``storage_unavailable`` (503); ``idempotency.KeyTaken``
    when a concurrent twin created its render first. Once the render is committed
    nothing here raises: if the queue cannot take the job right then, the render is
    returned queued and the sweeper queues it when Redis is back. Must be called
    outside any transaction: the render has to be committed before its job can be
    picked up.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("submit_render must not run inside a database transaction")
    public_id = new_public_id()
    logs.render_id.set(public_id)  # the next request's middleware clears it
    api_key_id = getattr(api_key, "pk", None)
    try:
        # Both touch Redis: a queue that cannot be reached is refused here, before
        # anything is reserved.
        ratelimit.take_render_slot(api_key_id, public_id, getattr(user, "pk", user))
        if api_key_id is None:
            dispatch.ping()
    except redis.RedisError as exc:
        log.warning("render refused before reserving: Redis unreachable: %r", exc)
        raise ApiError("queue_unavailable") from None
    try:
        render = _store_and_create(user, api_key, params, image, public_id, actor, claim)
    except BaseException:
        try:
            ratelimit.give_back_render_slot(api_key_id, public_id, getattr(user, "pk", user))
        except redis.RedisError:
            pass  # the slot frees itself at the render's deadline
        raise
    metrics.RENDERS_ACCEPTED.inc()
    try:
        dispatch.enqueue_render(render)
    except redis.RedisError as exc:
        log.warning("render %s created but not queued yet: %r; the sweeper will queue it", public_id, exc)
    return render


def _store_input(public_id: str, image: InputImage) -> str:
    try:
        return default_storage.save(storage_keys.input_key(public_id), ContentFile(encode_png(image.image)))
    except storage_keys.STORAGE_ERRORS as exc:
        log.error("render refused before reserving: cannot store its input: %r", exc)
        raise ApiError("storage_unavailable") from None


def _store_and_create(user: Any, api_key: Any, params: RenderParams, image: InputImage,
                      public_id: str, actor: str, claim: idempotency.Claim | None) -> Render:
    input_key = _store_input(public_id, image)
    try:
        now = timezone.now()
        deadline = now + timedelta(seconds=int(settings.RENDER_DEADLINE_SECONDS))
        seed = params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1)
        try:
            with transaction.atomic():
                # The key first: a twin that lost the race fails here, before it has
                # touched the account row.
                record = idempotency.create_record(claim)
                try:
                    hold = ledger.reserve(user, int(settings.CREDITS_PER_RENDER), reference=public_id,
                                          expires_at=deadline + timedelta(seconds=HOLD_GRACE_SECONDS))
                except ledger.InsufficientCredits as exc:
                    raise insufficient_credits_error(exc) from exc
                render = Render.objects.create(
                    public_id=public_id,
                    user=user,
                    api_key=api_key,
                    scene_prompt=params.scene_prompt,
                    preserve_shadow=params.preserve_shadow,
                    output_format=params.output_format,
                    requested_seed=params.seed,
                    seed=seed,
                    image_url=params.image_url,
                    input_width=image.width,
                    input_height=image.height,
                    source_format=str(image.source_format or "")[:16],
                    input_key=input_key,
                    attempt=1,
                    job_id=storage_keys.job_id(public_id, 1),
                    output_key=storage_keys.output_key(public_id, params.output_format, 1),
                    matte_key=storage_keys.matte_key(public_id, 1),
                    hold_id=hold.id,
                    created_at=now,
                    deadline_at=deadline,
                )
                idempotency.link(record, render)
                RenderEvent.objects.create(render=render, to_status=render.status, actor=actor,
                                           note=f"hold {hold.id} reserved")
        except IntegrityError:
            if idempotency.taken(claim):
                raise idempotency.KeyTaken() from None
            raise
    except BaseException:
        default_storage.delete(input_key)
        raise
    return render
