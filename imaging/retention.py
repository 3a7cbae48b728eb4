"""Deleting stored files after RETENTION_DAYS (``manage.py purge_renders``).

The render rows stay: they are the customer's usage history and the ledger refers
to them. Only the input, output and matte files go; the render object then shows
no URLs, and old signed links answer 404.

Webhook events and their deliveries (payloads, the delivery log) are deleted after
WEBHOOK_RETENTION_DAYS (``purge_webhooks``), in the same command.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from imaging import storage_keys
from imaging.models import TERMINAL_STATUSES, Render, RenderEvent, WebhookDelivery, WebhookEvent


def stored_keys(render: Render) -> set[str]:
    """Every file the render may have: its input, and each attempt's output and matte
    (a stray earlier attempt may have written its own before it was superseded)."""
    keys = {render.input_key, render.output_key, render.matte_key}
    for attempt in range(1, render.attempt + 1):
        keys.add(storage_keys.output_key(render.public_id, render.output_format, attempt))
        keys.add(storage_keys.matte_key(render.public_id, attempt))
    return {key for key in keys if key}


def purge_due(render: Render) -> None:
    for key in stored_keys(render):
        default_storage.delete(key)  # deleting a missing file is not an error
    with transaction.atomic():
        moved = Render.objects.filter(pk=render.pk, files_purged_at__isnull=True).update(
            files_purged_at=timezone.now())
        if moved:
            RenderEvent.objects.create(render=render, from_status=render.status, to_status=render.status,
                                       actor="purge", note="stored files deleted (retention)")


def purge(*, days: int | None = None, now: datetime | None = None, dry_run: bool = False) -> int:
    """Deletes files of ended renders older than ``days``; returns how many renders."""
    days = int(settings.RETENTION_DAYS) if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    due = Render.objects.filter(created_at__lt=cutoff, files_purged_at__isnull=True,
                                status__in=TERMINAL_STATUSES).order_by("created_at")
    count = 0
    for render in due.iterator():
        if not dry_run:
            purge_due(render)
        count += 1
    return count


def purge_webhooks(*, days: int | None = None, now: datetime | None = None, dry_run: bool = False) -> int:
    """Deletes webhook events (with their deliveries) older than ``days``, and deliveries
    older than that of newer events ("send again" of an old event); returns how many events."""
    days = int(settings.WEBHOOK_RETENTION_DAYS) if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    events = WebhookEvent.objects.filter(created_at__lt=cutoff)
    count = events.count()
    if not dry_run:
        WebhookDelivery.objects.filter(created_at__lt=cutoff).delete()
        events.delete()
    return count
