"""Recording webhook events: the outbox rows written where something happens.

``render_settled`` runs inside the transaction that moves a render to its final state
(``imaging.lifecycle``), so the event and its deliveries exist exactly when the final
state does; the jobs are queued only after that transaction commits.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imaging.webhooks import delivery
from imaging.webhooks.models import (
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    new_event_id,
)

log = logging.getLogger(__name__)

_EVENT_FOR_STATUS = {"succeeded": EventType.RENDER_SUCCEEDED, "failed": EventType.RENDER_FAILED}


def _payload(event_id: str, event_type: str, created: Any, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "created": int(created.timestamp()), "data": {"object": obj}}


def render_object(render: Any) -> dict[str, Any]:
    """The public render object, as GET /v1/renders/{id} shows it (links signed now;
    ``credits_remaining`` is null: the event is not an answer to the owner's request)."""
    from imaging.serializers import RenderSerializer

    data = RenderSerializer(render, context={"base_url": settings.SITE_URL}).data
    return json.loads(json.dumps(data))


def _create(event_type: str, obj: dict[str, Any], endpoints: list[WebhookEndpoint],
            render: Any = None) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    now = timezone.now()
    event_id = new_event_id()
    event = WebhookEvent.objects.create(public_id=event_id, type=event_type, render=render,
                                        payload=_payload(event_id, event_type, now, obj), created_at=now)
    deliveries = [WebhookDelivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=now,
                                                 created_at=now) for endpoint in endpoints]
    return event, deliveries


def _queue_after_commit(deliveries: list[WebhookDelivery]) -> None:
    pending = [(d.pk, d.attempts) for d in deliveries]
    if pending:
        # robust: whatever goes wrong here, the commit stands and later callbacks run.
        transaction.on_commit(lambda: delivery.enqueue_quietly(pending), robust=True)


def render_settled(render: Any) -> WebhookEvent | None:
    """Writes render.succeeded / render.failed for a render that just ended, with one
    delivery per enabled endpoint of its owner subscribed to that type.

    Call inside the settling transaction. Never raises: a webhook problem must not undo
    a settlement (money has moved); it is logged, in a savepoint of its own.
    """
    event_type = _EVENT_FOR_STATUS.get(str(render.status))
    if event_type is None:
        return None
    try:
        with transaction.atomic():
            endpoints = [e for e in WebhookEndpoint.objects.filter(user_id=render.user_id, enabled=True)
                         if e.subscribes_to(event_type)]
            if not endpoints:
                return None
            event, deliveries = _create(event_type, render_object(render), endpoints, render=render)
    except Exception:
        log.exception("render %s: could not record its %s webhook event", render.public_id, event_type)
        return None
    _queue_after_commit(deliveries)
    return event


def send_test_event(endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A ``ping`` event to this one endpoint (whatever it subscribes to), queued now."""
    obj = {"object": "ping", "endpoint": endpoint.public_id,
           "message": "A test event from the PixelAPI dashboard."}
    with transaction.atomic():
        _event, deliveries = _create(EventType.PING, obj, [endpoint])
        _queue_after_commit(deliveries)
    return deliveries[0]


def send_again(previous: WebhookDelivery) -> WebhookDelivery:
    """A new delivery of the same event (same id, same payload) to the same endpoint, due now."""
    now = timezone.now()
    with transaction.atomic():
        again = WebhookDelivery.objects.create(event_id=previous.event_id, endpoint_id=previous.endpoint_id,
                                               next_attempt_at=now, created_at=now)
        _queue_after_commit([again])
    return again
