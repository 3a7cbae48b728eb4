"""The web side's Redis clients, every timeout explicit.

redis-py's defaults are not a contract: version 8 gives every client a 5 s socket
timeout and ten retries, so a blocking read longer than 5 s fails (and is retried,
and fails again), and a black-holed Redis holds a request thread for a minute. Here
each client states what it needs:

* ``commands()``: ordinary commands. Connect timeout REDIS_CONNECT_TIMEOUT_SECONDS,
  socket timeout REDIS_SOCKET_TIMEOUT_SECONDS, two quick retries of a dropped
  connection and none of a timeout, so an outage costs a call one timeout and the
  caller can answer with what it has.
* ``blocking()``: blocking reads (``XREAD BLOCK``). Its socket timeout is
  ``BLOCK_SLICE_SECONDS`` plus the ordinary socket timeout, so a read always outlasts
  the block it asked Redis for; a longer wait is made of several slices (see
  ``imaging.dispatch.wait_for_outcome``).

The Django-side rq worker gets the same connect and socket timeouts through the
queue URLs in ``settings.RQ_QUEUES``; rq itself raises a worker's socket timeout above its
dequeue block (``BaseWorker._set_connection``). The GPU worker, which cannot import
Django, builds its clients from the same environment variables (``gpu_worker.worker``).
"""

from __future__ import annotations

import functools

import redis
from django.conf import settings
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

# One blocking read asks Redis for at most this long; waits are built from slices.
BLOCK_SLICE_SECONDS = 10.0


def connect_timeout() -> float:
    return float(settings.REDIS_CONNECT_TIMEOUT_SECONDS)


def socket_timeout() -> float:
    return float(settings.REDIS_SOCKET_TIMEOUT_SECONDS)


def blocking_read_timeout() -> float:
    """The socket timeout of blocking reads: longer than any block they send."""
    return BLOCK_SLICE_SECONDS + socket_timeout()


def retry_policy(retries: int) -> Retry:
    """Retries a dropped connection (a Redis restart), never a timeout.

    redis-py's default also retries timeouts, at the connect handshake and the command
    both: against a Redis that accepts but does not answer, one GET with a 0.5 s socket
    timeout took 5 s. A timeout is not helped by asking again; the caller answers.
    """
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries,
                 supported_errors=(redis.ConnectionError,))


@functools.lru_cache(maxsize=8)
def _client(url: str, read_timeout: float, connect: float, retries: int) -> redis.Redis:
    # One pool per process, URL and kind; redis-py pools are thread-safe and fork-aware.
    return redis.Redis.from_url(
        url,
        socket_timeout=read_timeout,
        socket_connect_timeout=connect,
        retry=retry_policy(retries),
        health_check_interval=30,
    )


def commands() -> redis.Redis:
    return _client(settings.REDIS_URL, socket_timeout(), connect_timeout(), 2)


def blocking() -> redis.Redis:
    # One retry: a pooled connection Redis dropped (a restart) is replaced once; a
    # read that timed out is not sent again, the caller's wait decides.
    return _client(settings.REDIS_URL, blocking_read_timeout(), connect_timeout(), 1)

