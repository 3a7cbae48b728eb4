"""Redis-backed limits shared by every web process: a paced rate and a failure lockout.

Two primitives, each one script call (one round trip) and timed by Redis's own clock,
so web hosts need not agree on the time:

* ``rate_wait(keys)``: GCRA (the "generic cell rate algorithm") over one or more
  buckets at once. Each bucket is a Redis key holding a theoretical arrival time; a
  bucket allows a burst of its whole period's allowance, then paces evenly, with no
  double burst at a window boundary. A request counts against every bucket only if
  every bucket allows it, so a refusal by the per-customer bucket does not use up the
  per-key one (and the other way round).
* ``Lockout``: a failure counter over a fixed window that starts with the first
  failure. Once ``limit`` failures are counted, every attempt is refused until the
  window ends, whether or not it would have succeeded: that is what stops password
  guessing. ``peek`` costs one read, ``fail`` one write.

Why not django-axes for sign-in: axes guards only ``authenticate()`` (sign-up, password
reset and the verification e-mail need the same treatment), writes a database row per
failed attempt (the very load an attacker generates), and needs its own backend,
middleware and tables; this project already runs a Redis every web process shares, with
clients whose timeouts are explicit (``imaging.redis_clients``). The two scripts below
are the whole mechanism, and every refusal carries the seconds for ``Retry-After``.

A limit of 0 or less switches that bucket off. Callers decide what a Redis outage
means; the account forms and the API fail open (they log and let the request through),
because without Redis no render can start anyway and signing in should keep working.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

_GCRA_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  tats[i] = new_tat
  local allow_at = new_tat - window
  if allow_at - now > wait then wait = allow_at - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', math.ceil(tats[i] - now) + 1000)
end
return 0
"""

_LOCKOUT_PEEK = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then return ttl end
end
return 0
"""

_LOCKOUT_FAIL = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""


def redis_client() -> Any:
    """The web side's ordinary Redis client (explicit timeouts, no retried timeouts)."""
    from imaging import redis_clients

    return redis_clients.commands()


@functools.lru_cache(maxsize=16)
def registered_script(client: Any, source: str) -> Any:
    """A Lua script registered once per client: later calls send EVALSHA, not the source."""
    return client.register_script(source)


def _script(source: str) -> Any:
    return registered_script(redis_client(), source)


@dataclass(frozen=True)
class Bucket:
    """``limit`` events per ``period_seconds`` for the Redis key ``key``."""

    key: str
    limit: int
    period_seconds: float = 60.0

    @property
    def active(self) -> bool:
        return int(self.limit) > 0


def rate_wait(*buckets: Bucket) -> float:
    """Counts one event against every active bucket; 0.0 when allowed, else seconds to wait.

    Nothing is counted when any bucket refuses.
    """
    live = [b for b in buckets if b.active]
    if not live:
        return 0.0
    args: list[float] = []
    for bucket in live:
        window_ms = float(bucket.period_seconds) * 1000.0
        args += [window_ms / int(bucket.limit), window_ms]
    wait_ms = float(_script(_GCRA_MANY)(keys=[b.key for b in live], args=args))
    return wait_ms / 1000.0


@dataclass(frozen=True)
class Lockout:
    """At most ``limit`` failures per window of ``seconds``; then locked until it ends."""

    key: str
    limit: int
    seconds: float

    @property
    def active(self) -> bool:
        return int(self.limit) > 0

    def peek(self) -> float:
        """Seconds until the lock ends; 0.0 when not locked. Counts nothing."""
        if not self.active:
            return 0.0
        return float(_script(_LOCKOUT_PEEK)(keys=[self.key], args=[int(self.limit)])) / 1000.0

    def fail(self) -> int:
        """Counts one failure; returns the count in the current window."""
        if not self.active:
            return 0
        return int(_script(_LOCKOUT_FAIL)(keys=[self.key], args=[int(float(self.seconds) * 1000)]))

    def clear(self) -> None:
        redis_client().delete(self.key)


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def minutes_text(seconds: float) -> str:
    """'in 15 minutes' / 'in 40 seconds', for messages people read."""
    whole = max(1, math.ceil(seconds))
    if whole < 90:
        return f"in {whole} second{'s' if whole != 1 else ''}"
    minutes = math.ceil(whole / 60)
    return f"in {minutes} minutes"
