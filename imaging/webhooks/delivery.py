"""Delivering webhook events: the address guard, one signed POST per attempt, retries.

The endpoint URL is a stranger's choice, exactly like ``image_url``, so it goes through
the image fetcher's guard (``imaging.fetch``): the URL is parsed and checked without the
network, the host is resolved once and every answer must be a public unicast address
(unless FETCH_ALLOW_PRIVATE_ADDRESSES, for development), and we connect to the address
that was checked. The same checks run when an endpoint is saved and again on every
attempt. Only https is delivered to (http too when FETCH_ALLOW_PRIVATE_ADDRESSES is on),
only to FETCH_ALLOWED_PORTS (and FETCH_ALLOWED_HOSTS when set: a deployment that
restricts where it fetches from restricts where it posts to). Redirects are not
followed: a 3xx is a failed attempt, like any other non-2xx.

One deadline (WEBHOOK_TIMEOUT_SECONDS) covers DNS, connect, TLS, sending and the
response's status line. A 2xx delivers; anything else is retried on the schedule
WEBHOOK_RETRY_SCHEDULE (seconds, with ±10 % jitter, the last step repeating) until
WEBHOOK_RETRY_HOURS after the delivery was created, and then the delivery has failed.
A URL the guard refuses fails the delivery at once: retrying a forbidden address would
only knock on it again.

Attempts are claimed with a conditional UPDATE (the attempt count the runner read, and
the delivery being due), which moves ``next_attempt_at`` to the end of a lease, so two
workers (or a worker and a sweeper's re-queue) never run the same attempt at the same
time; a runner that dies mid-attempt is retried once its lease is over. That is
at-least-once delivery: a receiver can see an event twice and dedupes by its id.

Retries are driven by the sweeper (``enqueue_due``, every pass): a short back-off step
is therefore rounded up to the sweeper's period (30 s by default).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import random
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from imaging import dispatch, fetch
from imaging.webhooks import signing
from imaging.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from platform_site.api_errors import ApiError

log = logging.getLogger(__name__)

QUEUE = "default"
TASK = "imaging.webhooks.delivery.run_delivery"
USER_AGENT = "PixelAPI-Webhooks/1.0"
# How long past its timeout an attempt may run before it is presumed dead and retried.
LEASE_MARGIN_SECONDS = 30
_ERROR_LENGTH = 500

# Seams for tests (and nothing else): None means imaging.fetch's defaults, looked up
# at call time. Tests inject a FakeDns / Dialer from tests.loopback_http.
RESOLVER: fetch.Resolver | None = None
CONNECTOR: fetch.Connector | None = None


class UrlRefused(ValueError):
    """The guard will not deliver to this URL; the message says why, for the customer."""


@dataclasses.dataclass(frozen=True)
class Attempt:
    status_code: int | None = None
    error: str = ""
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# --- the guard -------------------------------------------------------------------------


def policy() -> fetch.FetchPolicy:
    """The image fetcher's policy with the webhook timeout and no redirects."""
    base = fetch.FetchPolicy.from_settings()
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    return dataclasses.replace(base, timeout=timeout, connect_timeout=min(base.connect_timeout, timeout),
                               max_redirects=0)


def _customer_text(error: ApiError) -> str:
    """The fetcher's messages speak of image_url; endpoints are "the URL"."""
    text = str(error).replace("image_url", "the URL").replace("be fetched", "be reached")
    return text[:1].upper() + text[1:]


def _target(url: str, current: fetch.FetchPolicy) -> fetch.Target:
    try:
        target = fetch.parse_target(url, current)
    except ApiError as error:
        raise UrlRefused(_customer_text(error)) from None
    if target.scheme != "https" and not current.allow_private:
        raise UrlRefused("The URL must start with https://.")
    return target


def check_url(url: str) -> None:
    """Raises UrlRefused unless ``url`` is one we would deliver to (resolves it once)."""
    current = policy()
    target = _target(url, current)
    deadline = time.monotonic() + current.timeout
    try:
        fetch.checked_addresses(target, current, RESOLVER or fetch.resolve_host, deadline)
    except ApiError as error:
        raise UrlRefused(_customer_text(error)) from None


# --- one attempt -----------------------------------------------------------------------


def body_of(event: WebhookEvent) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, keys sorted, so every attempt
    of an event sends the same body whatever order the database keeps JSON keys in."""
    return json.dumps(event.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    """One POST through the guard; never raises for network trouble (it is the Attempt)."""
    current = policy()
    try:
        target = _target(url, current)
    except UrlRefused as refused:
        return Attempt(error=str(refused), refused=True)
    deadline = time.monotonic() + current.timeout
    try:
        dial = fetch.checked_addresses(target, current, RESOLVER or fetch.resolve_host, deadline)
    except ApiError as error:
        return Attempt(error=_customer_text(error), refused=error.code == "image_url_forbidden")
    connector = CONNECTOR or fetch.open_connection
    try:
        return Attempt(status_code=_post_once(target, dial, current, connector, deadline, body, headers))
    except ApiError as error:  # the connect itself timed out
        return Attempt(error=_customer_text(error))
    except (OSError, http.client.HTTPException) as exc:
        return Attempt(error=fetch.describe_failure(exc, target, current))


def _post_once(target: fetch.Target, dial: list[str], current: fetch.FetchPolicy, connector: fetch.Connector,
               deadline: float, body: bytes, headers: dict[str, str]) -> int:
    with fetch.guarded_connection(target, dial, current, connector, deadline) as connection:
        connection.putrequest("POST", target.request_target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", target.host_header)
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Connection", "close")
        connection.endheaders(body)
        # Only the status line matters; the body (if any) is not read.
        return connection.getresponse().status


def attempt(endpoint: WebhookEndpoint, event: WebhookEvent) -> Attempt:
    """Signs and POSTs ``event`` to ``endpoint`` once."""
    body = body_of(event)
    headers = {
        signing.HEADER: signing.signature_header(endpoint.signing_secrets(), body),
        signing.EVENT_ID_HEADER: event.public_id,
    }
    return post(endpoint.url, body, headers)


# --- the schedule ----------------------------------------------------------------------


def retry_delay(attempts: int) -> float:
    """Seconds before the attempt after the ``attempts``-th failed one, jittered ±10 %."""
    schedule = [float(step) for step in settings.WEBHOOK_RETRY_SCHEDULE] or [3600.0]
    step = schedule[min(attempts, len(schedule)) - 1] if attempts > 0 else schedule[0]
    return step * random.uniform(0.9, 1.1)


def _gives_up_at(delivery: WebhookDelivery) -> datetime:
    return delivery.created_at + timedelta(hours=float(settings.WEBHOOK_RETRY_HOURS))


def lease_seconds() -> float:
    return float(settings.WEBHOOK_TIMEOUT_SECONDS) + LEASE_MARGIN_SECONDS


# --- the job ---------------------------------------------------------------------------


def run_delivery(delivery_id: int) -> str:
    """The rq job (queue "default"): makes the delivery's due attempt, records it.

    Returns what happened: succeeded, retrying, failed, or why nothing was done.
    """
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        return "unknown"
    if delivery.status != DeliveryStatus.PENDING:
        return str(delivery.status)
    now = timezone.now()
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return "not due"
    seen = WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING,
                                          attempts=delivery.attempts, next_attempt_at__lte=now)
    if not delivery.endpoint.enabled:
        seen.update(status=DeliveryStatus.FAILED, last_error="The endpoint is disabled.", next_attempt_at=None)
        return "endpoint disabled"
    claimed = seen.update(attempts=F("attempts") + 1, last_attempt_at=now,
                          next_attempt_at=now + timedelta(seconds=lease_seconds()))
    if not claimed:
        return "claimed elsewhere"
    number = delivery.attempts + 1
    result = attempt(delivery.endpoint, delivery.event)
    return _record(delivery, number, result)


def _record(delivery: WebhookDelivery, number: int, result: Attempt) -> str:
    now = timezone.now()
    fields: dict[str, object] = {"last_status_code": result.status_code, "last_error": result.error[:_ERROR_LENGTH]}
    if result.delivered:
        fields.update(status=DeliveryStatus.SUCCEEDED, delivered_at=now, next_attempt_at=None)
        outcome = "succeeded"
    else:
        if not result.error:
            fields["last_error"] = f"The endpoint answered HTTP {result.status_code}."
        upcoming = now + timedelta(seconds=retry_delay(number))
        if result.refused or upcoming > _gives_up_at(delivery):
            fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
            outcome = "failed"
        else:
            fields.update(next_attempt_at=upcoming)
            outcome = "retrying"
    # Only the attempt this runner claimed is recorded: if its lease ran out and a later
    # attempt started meanwhile, that one's outcome is the one that counts.
    WebhookDelivery.objects.filter(pk=delivery.pk, attempts=number, status=DeliveryStatus.PENDING).update(**fields)
    log.info("webhook delivery %s (%s to %s) attempt %s: %s %s", delivery.pk, delivery.event.public_id,
             delivery.endpoint.public_id, number, outcome, result.status_code or result.error)
    return outcome


# --- queueing --------------------------------------------------------------------------


def _queue() -> Queue:
    return Queue(QUEUE, connection=dispatch.redis_connection(), serializer=JSONSerializer)


def enqueue(deliveries: Iterable[tuple[int, int]]) -> int:
    """Queues a job per (delivery id, attempts so far); returns how many were queued.

    The job id names the attempt, and rq's ``unique`` refuses a second copy of a job
    still in Redis, so sweeps that see the same due delivery queue it once.
    """
    queue = _queue()
    queued = 0
    for delivery_id, attempts in deliveries:
        try:
            queue.enqueue_call(
                TASK, args=(delivery_id,), job_id=f"webhook-delivery-{delivery_id}-{attempts}",
                timeout=int(lease_seconds()), result_ttl=0, failure_ttl=3600,
                description=f"webhook delivery {delivery_id} attempt {attempts + 1}", unique=True,
            )
        except DuplicateJobError:
            continue
        queued += 1
    return queued


def enqueue_quietly(deliveries: list[tuple[int, int]]) -> None:
    """After commit: a Redis failure is logged, and the sweeper queues them later."""
    try:
        enqueue(deliveries)
    except redis.RedisError as exc:
        log.warning("webhook deliveries %s could not be queued yet: %r; the sweeper will queue them",
                    [d for d, _ in deliveries], exc)
    except Exception:
        # Runs after a settlement committed: nothing here may turn that into an error.
        log.exception("webhook deliveries %s could not be queued; the sweeper will queue them",
                      [d for d, _ in deliveries])


def enqueue_due(now: datetime | None = None, *, batch: int = 500) -> int:
    """The sweeper's step: queues every pending delivery whose next attempt is due."""
    now = now or timezone.now()
    due = list(WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at").values_list("pk", "attempts")[:batch])
    return enqueue(due) if due else 0
