"""Webhook endpoints, the events they receive, and one delivery row per (event, endpoint).

Imported at the end of ``imaging.models`` so the models belong to the imaging app.

Signing secrets are stored as they are (not hashed): an HMAC can only be computed with
the secret itself. A rolled secret keeps the previous one valid until
``previous_secret_expires_at``; while it is valid, deliveries carry a signature made
with each (see ``imaging.webhooks.signing``).
"""

from __future__ import annotations

import secrets
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

SECRET_PREFIX = "whsec_"
EVENT_ID_PREFIX = "evt_"
ENDPOINT_ID_PREFIX = "we_"


class EventType(models.TextChoices):
    RENDER_SUCCEEDED = "render.succeeded"
    RENDER_FAILED = "render.failed"
    # Sent only by "Send test event" on the dashboard, to that one endpoint.
    PING = "ping"


SUBSCRIBABLE_EVENTS = (EventType.RENDER_SUCCEEDED, EventType.RENDER_FAILED)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_event_id() -> str:
    return EVENT_ID_PREFIX + secrets.token_hex(12)


def new_endpoint_id() -> str:
    return ENDPOINT_ID_PREFIX + secrets.token_hex(8)


class WebhookEndpoint(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_endpoint_id)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="webhook_endpoints")
    url = models.URLField(max_length=2048)
    description = models.CharField(max_length=200, blank=True, default="")
    # A list of EventType values ("render.succeeded", "render.failed").
    events = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, default=new_secret)
    previous_secret = models.CharField(max_length=100, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "enabled"], name="webhook_endpoint_user")]

    def __str__(self) -> str:
        return f"{self.public_id} {self.url}"

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets deliveries are signed with now: the current one, then the
        previous one while its grace period lasts."""
        now = now or timezone.now()
        valid = [self.secret]
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            valid.append(self.previous_secret)
        return valid

    def subscribes_to(self, event_type: str) -> bool:
        return event_type in (self.events or [])


class WebhookEvent(models.Model):
    """One thing that happened, with the exact payload every endpoint receives for it."""

    public_id = models.CharField(max_length=32, unique=True, default=new_event_id)
    type = models.CharField(max_length=32, choices=EventType.choices)
    # Null for ping events.
    render = models.ForeignKey("imaging.Render", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="webhook_events")
    # {"id", "type", "created", "data": {"object": ...}}: what is POSTed, byte for byte
    # re-serialised (sorted keys, compact) on every attempt.
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["created_at"], name="webhook_event_by_age")]

    def __str__(self) -> str:
        return f"{self.public_id} {self.type}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    # Gave up: no 2xx within WEBHOOK_RETRY_HOURS, or the endpoint was disabled/refused.
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """Getting one event to one endpoint: every attempt, until a 2xx or giving up."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the next attempt is due; while an attempt runs, the end of its lease.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The sweeper's "what is due" query looks at pending rows only.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"),
                         name="webhook_delivery_due"),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_log"),
            models.Index(fields=["created_at"], name="webhook_delivery_by_age"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["pending", "succeeded", "failed"]),
                                   name="webhook_delivery_status_valid"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} to {self.endpoint_id} ({self.status})"
