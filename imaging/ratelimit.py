"""API limits, kept in Redis so every web process shares them: per key and per customer.

All answered with 429 ``rate_limited`` and a ``Retry-After``:

* A request rate per API key (API_RATE_LIMIT_PER_MINUTE) and per customer across all
  of their keys (API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER), as GCRA
  (``platform_site.limits``): both buckets in one script call per request, and a
  request counts against either only if both allow it.
* Renders in flight per API key (API_MAX_RENDERS_IN_FLIGHT_PER_KEY) and per customer
  (API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER, which the playground's renders count against
  too): one sorted set of render ids per key and per customer, scored by the render's
  deadline. Both slots are taken in one script (all or nothing) before credits are
  reserved, and given back when the render settles; a slot whose render was never
  settled (a crashed process) frees itself at the render's deadline, so counts cannot
  drift.

Requests with unknown API keys are limited per client address before their database
lookup (``accounts.authentication``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from imaging.dispatch import redis_connection
from platform_site import metrics
from platform_site.api_errors import ApiError
from platform_site.limits import Bucket, rate_wait, registered_script

log = logging.getLogger(__name__)

_TAKE_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {i, tostring(first[2] - now)}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(ttl) + 60)
end
return {0, '0'}
"""

# A render that is still in flight usually finishes within seconds; this is only
# the hint for clients that hit the cap, not a promise.
IN_FLIGHT_RETRY_AFTER_SECONDS = 1


def _slots_script() -> Any:
    return registered_script(redis_connection(), _TAKE_SLOTS)


def _rate_key(api_key_id: int) -> str:
    return f"imaging:rate:{api_key_id}"


def _customer_rate_key(user_id: int) -> str:
    return f"imaging:rate:customer:{user_id}"


def _slots_key(api_key_id: int) -> str:
    return f"imaging:inflight:{api_key_id}"


def _customer_slots_key(user_id: int) -> str:
    return f"imaging:inflight:customer:{user_id}"


def request_wait_seconds(api_key_id: int, user_id: int | None = None) -> float:
    """Counts one request for the key and its owner; 0 when allowed, else seconds to wait."""
    buckets = [Bucket(_rate_key(api_key_id), int(settings.API_RATE_LIMIT_PER_MINUTE))]
    if user_id is not None:
        buckets.append(Bucket(_customer_rate_key(user_id), int(settings.API_RATE_LIMIT_PER_MINUTE_PER_CUSTOMER)))
    return rate_wait(*buckets)


class ApiKeyRateThrottle(BaseThrottle):
    """DRF throttle: the request rate per key and per customer. Requests without an API key pass."""

    def __init__(self) -> None:
        self._wait = 0.0

    def allow_request(self, request: Any, view: Any) -> bool:
        api_key_id = getattr(getattr(request, "auth", None), "pk", None)
        if api_key_id is None:
            return True
        try:
            self._wait = request_wait_seconds(api_key_id, getattr(request.user, "pk", None))
        except redis.RedisError as exc:
            # Fails open: without Redis a render is refused anyway (queue_unavailable, with
            # nothing reserved), and reads such as /v1/account should keep working.
            log.warning("rate limit not checked, Redis unreachable: %r", exc)
            return True
        if self._wait > 0:
            metrics.RATE_LIMITED.labels("requests_per_minute").inc()
        return self._wait <= 0

    def wait(self) -> float | None:
        return self._wait


def take_render_slot(api_key_id: int | None, render_id: str, user_id: int | None = None) -> None:
    """Takes one in-flight slot for the key and one for its owner, or raises 429 rate_limited."""
    keys: list[str] = []
    caps: list[int] = []
    key_cap = int(settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY)
    customer_cap = int(settings.API_MAX_RENDERS_IN_FLIGHT_PER_CUSTOMER)
    if api_key_id is not None and key_cap > 0:
        keys.append(_slots_key(api_key_id))
        caps.append(key_cap)
    if user_id is not None and customer_cap > 0:
        keys.append(_customer_slots_key(user_id))
        caps.append(customer_cap)
    if not keys:
        return
    refused, _ = _slots_script()(keys=keys, args=[render_id, float(settings.RENDER_DEADLINE_SECONDS), *caps])
    refused = int(refused)
    if refused:
        cap = caps[refused - 1]
        customer = keys[refused - 1].startswith("imaging:inflight:customer:")
        metrics.RATE_LIMITED.labels("in_flight_per_customer" if customer else "in_flight_per_key").inc()
        if customer:
            message = (f"Your account already has {cap} renders in flight across all its keys "
                       "and the playground; wait for one to finish.")
        else:
            message = f"This key already has {cap} renders in flight; wait for one to finish."
        raise ApiError("rate_limited", message, headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)})


def give_back_render_slot(api_key_id: int | None, render_id: str, user_id: int | None = None) -> None:
    keys = []
    if api_key_id is not None:
        keys.append(_slots_key(api_key_id))
    if user_id is not None:
        keys.append(_customer_slots_key(user_id))
    if not keys:
        return
    pipe = redis_connection().pipeline(transaction=False)
    for key in keys:
        pipe.zrem(key, render_id)
    pipe.execute()


def renders_in_flight(api_key_id: int) -> int:
    return int(redis_connection().zcard(_slots_key(api_key_id)))


def customer_renders_in_flight(user_id: int) -> int:
    return int(redis_connection().zcard(_customer_slots_key(user_id)))
