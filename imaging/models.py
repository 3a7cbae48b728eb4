"""Renders, their audit trail, and remembered idempotent responses.

A render moves through ``queued → running → succeeded | failed``; the two last are
terminal. Every change is made by one function in ``imaging.lifecycle`` under a row
lock, and leaves a ``RenderEvent``. The hold that pays for the render is referenced
by its id only (a plain integer, not a foreign key): the ledger owns holds and money,
and the render never changes them except through ``billing.ledger``.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

PUBLIC_ID_PREFIX = "rnd_"
# Every public id new_public_id makes (and the shorter ones of tests): checked before a
# lookup, so no stranger's bytes reach the database, and documented as the path pattern.
PUBLIC_ID_PATTERN = r"rnd_[0-9a-z]{1,28}"


def new_public_id() -> str:
    """An unguessable public id; the database key is never shown to clients."""
    return PUBLIC_ID_PREFIX + secrets.token_hex(12)


class RenderStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OPEN_STATUSES = (RenderStatus.QUEUED, RenderStatus.RUNNING)
TERMINAL_STATUSES = (RenderStatus.SUCCEEDED, RenderStatus.FAILED)


class OutputFormat(models.TextChoices):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


class Render(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="renders")
    # Null for renders started from the dashboard playground (no API key involved).
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="renders"
    )
    status = models.CharField(max_length=16, choices=RenderStatus.choices, default=RenderStatus.QUEUED)

    # What was asked for.
    scene_prompt = models.TextField()
    preserve_shadow = models.BooleanField(default=True)
    output_format = models.CharField(max_length=8, choices=OutputFormat.choices, default=OutputFormat.PNG)
    requested_seed = models.BigIntegerField(null=True, blank=True)
    image_url = models.TextField(blank=True, default="")
    input_width = models.PositiveIntegerField(default=0)
    input_height = models.PositiveIntegerField(default=0)
    source_format = models.CharField(max_length=16, blank=True, default="")

    # Where the files live (keys relative to the storage root, shared with the worker).
    input_key = models.CharField(max_length=255, blank=True, default="")
    output_key = models.CharField(max_length=255, blank=True, default="")
    matte_key = models.CharField(max_length=255, blank=True, default="")
    files_purged_at = models.DateTimeField(null=True, blank=True)

    # Money: the pending hold taken at submission, and what was finally charged.
    hold_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    credits_charged = models.PositiveIntegerField(default=0)

    # Which run is current. Every job that runs the render (the first, a retry after a
    # lost worker, a re-enqueue after Redis lost the queue) is a new attempt with its own
    # job id and its own output keys, so a stray earlier run can never replace what the
    # customer was shown; only the current attempt's outcome settles the render.
    attempt = models.PositiveSmallIntegerField(default=1)
    workers_lost = models.PositiveSmallIntegerField(default=0)

    # What the worker reported.
    job_id = models.CharField(max_length=64, blank=True, default="")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    scene_generated = models.BooleanField(null=True, blank=True)
    timings_ms = models.JSONField(default=dict, blank=True)
    # The public result (see imaging.serializers.RenderSerializer): small, typed, stable.
    subject = models.JSONField(default=dict, blank=True)  # bbox, coverage
    scene = models.JSONField(default=dict, blank=True)  # engine, prompt, seed
    exactness = models.JSONField(default=dict, blank=True)  # opaque_pixels, exact_pixels, share
    shadow = models.JSONField(default=dict, blank=True)  # state, strength
    light = models.JSONField(default=dict, blank=True)  # direction, confidence
    # Everything else the worker reported (thresholds, attempts, sub-stage timings):
    # for staff pages and logs, never for clients.
    diagnostics = models.JSONField(default=dict, blank=True)
    engine = models.JSONField(default=dict, blank=True)
    # The worker stage a failed render was in when it failed ("" when unknown), so the
    # playground's stepper can mark that stage failed rather than done.
    failed_stage = models.CharField(max_length=16, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    # What clients see: always the error registry's text for error_code.
    error_message = models.TextField(blank=True, default="")
    # What happened inside (exception text, worker messages): for staff and logs only.
    error_detail = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="render_user_recent"),
            # The sweeper scans only open renders; a partial index keeps that cheap.
            models.Index(fields=["deadline_at"], condition=Q(status__in=["queued", "running"]),
                         name="render_open_by_deadline"),
            models.Index(fields=["created_at"], condition=Q(files_purged_at__isnull=True),
                         name="render_unpurged_by_age"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed"]),
                name="render_status_valid",
            ),
            # Only a success may carry a charge; a failed render is free by construction.
            models.CheckConstraint(
                condition=Q(status="succeeded") | Q(credits_charged=0),
                name="render_charge_only_on_success",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class RenderEvent(models.Model):
    """Append-only audit trail: one row per state change, naming who observed it."""

    render = models.ForeignKey(Render, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    # request, status_poll, settle_job, sweeper, dispatch, purge
    actor = models.CharField(max_length=32)
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.render_id}: {self.from_status or '∅'} → {self.to_status} by {self.actor}"


class IdempotencyRecord(models.Model):
    """A client's Idempotency-Key, claimed by the first request that carries it.

    The unique constraint on (user, key) is what makes concurrent duplicates safe:
    exactly one INSERT wins; the others read the winner's row and answer from it.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        DONE = "done"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="idempotency_records")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    render = models.ForeignKey(Render, null=True, blank=True, on_delete=models.SET_NULL)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_by_age")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key} ({self.state})"


# Webhook models live in their own module but belong to this app (one migration history).
from imaging.webhooks.models import (  # noqa: E402,F401
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
