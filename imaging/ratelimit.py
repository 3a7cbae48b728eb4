"""Per-key limits, kept in Redis so every web process shares them.

Two limits, both answered with 429 ``rate_limited`` and a ``Retry-After``:

* A request rate per API key (API_RATE_LIMIT_PER_MINUTE), as GCRA (the "generic
  cell rate algorithm"): one Redis key per API key holding a theoretical arrival
  time. A key may burst up to a minute's allowance, then is paced evenly; unlike a
  fixed window there is no double burst at a window boundary. One script call per
  request, using Redis's clock so web hosts need not agree on time.
* Renders in flight per API key (API_MAX_RENDERS_IN_FLIGHT_PER_KEY): a sorted set of
  render ids scored by their deadline. A slot is taken before credits are reserved
  and given back when the render settles; a slot whose render was never settled (a
  crashed process) frees itself at the render's deadline, so the count cannot drift.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from imaging.dispatch import redis_connection
from platform_site.api_errors import ApiError

log = logging.getLogger(__name__)

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at > now then
  return allow_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""

_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tostring(first[2] - now)}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return {1, '0'}
"""

# A render that is still in flight usually finishes within seconds; this is only
# the hint for clients that hit the cap, not a promise.
IN_FLIGHT_RETRY_AFTER_SECONDS = 1


def _script(source: str) -> Any:
    return _registered(redis_connection(), source)


@functools.lru_cache(maxsize=16)
def _registered(client: Any, source: str) -> Any:
    # Registered once per client: later calls send EVALSHA, not the whole source.
    return client.register_script(source)


def _rate_key(api_key_id: int) -> str:
    return f"imaging:rate:{api_key_id}"


def _slots_key(api_key_id: int) -> str:
    return f"imaging:inflight:{api_key_id}"


def request_wait_seconds(api_key_id: int) -> float:
    """Counts one request; 0 when allowed, else how long until the next one would be."""
    limit = int(settings.API_RATE_LIMIT_PER_MINUTE)
    if limit <= 0:
        return 0.0
    interval_ms = 60_000 / limit
    script = _script(_GCRA)
    wait_ms = float(script(keys=[_rate_key(api_key_id)], args=[interval_ms, 60_000]))
    return wait_ms / 1000.0


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class ApiKeyRateThrottle(BaseThrottle):
    """DRF throttle: the per-key request rate. Requests without an API key pass."""

    def __init__(self) -> None:
        self._wait = 0.0

    def allow_request(self, request: Any, view: Any) -> bool:
        api_key_id = getattr(getattr(request, "auth", None), "pk", None)
        if api_key_id is None:
            return True
        try:
            self._wait = request_wait_seconds(api_key_id)
        except redis.RedisError as exc:
            # Fails open: without Redis a render is refused anyway (queue_unavailable, with
            # nothing reserved), and reads such as /v1/account should keep working.
            log.warning("rate limit not checked, Redis unreachable: %r", exc)
            return True
        return self._wait <= 0

    def wait(self) -> float | None:
        return self._wait


def take_render_slot(api_key_id: int | None, render_id: str) -> None:
    """Takes one in-flight slot for this key, or raises 429 rate_limited."""
    cap = int(settings.API_MAX_RENDERS_IN_FLIGHT_PER_KEY)
    if api_key_id is None or cap <= 0:
        return
    script = _script(_TAKE_SLOT)
    ttl = float(settings.RENDER_DEADLINE_SECONDS)
    taken, _ = script(keys=[_slots_key(api_key_id)], args=[cap, render_id, ttl])
    if not int(taken):
        raise ApiError(
            "rate_limited",
            f"This key already has {cap} renders in flight; wait for one to finish.",
            headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)},
        )


def give_back_render_slot(api_key_id: int | None, render_id: str) -> None:
    if api_key_id is None:
        return
    redis_connection().zrem(_slots_key(api_key_id), render_id)


def renders_in_flight(api_key_id: int) -> int:
    return int(redis_connection().zcard(_slots_key(api_key_id)))
