"""Waiting for render outcomes on the event loop: one Redis read for every waiting request.

Under the ASGI server a synchronous render's request waits here, holding no thread and
no database connection (``imaging.api.replace_background``). The wait itself is the
same as the threaded one in ``imaging.dispatch.wait_for_outcome``: rq appends each
job's outcome to the stream ``rq:results:<job id>``, and ``XREAD BLOCK`` returns when
the worker writes it.

What is different is that the waits share their reads. A thousand requests each
blocked in their own ``XREAD`` would hold a thousand Redis connections; instead each
process (each event loop) has one ``OutcomeHub`` whose single listener task reads every
watched stream in one ``XREAD BLOCK`` and hands each entry to the request that waits
for it. A request that starts waiting while the listener is blocked wakes it by
appending to the hub's own wake stream (``imaging:wake:<hub id>``, a few entries long,
expiring with the hub), so the next read includes the new stream at once.

The hub returns raw stream entries; turning one into an ``Outcome`` (rq's result
parsing, the job's failure details) and settling it run in a short synchronous step
in the caller, where the database is.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass, field

import redis.asyncio
from django.conf import settings
from rq.results import Result

from imaging import redis_clients
from imaging.dispatch import waiter_key, waiter_ttl_ms

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict]
# The listener's read never blocks longer than this, so a hub whose streams all ended
# notices it has nothing to watch, and a read always returns within its socket timeout.
LISTEN_SLICE_SECONDS = 5.0
WAKE_KEY_PREFIX = "imaging:wake:"
WAKE_TTL_SECONDS = 3600


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Waiter:
    after: tuple[int, int]
    future: asyncio.Future = field(repr=False)


class OutcomeHub:
    """The process's shared reader of job outcome streams (one per event loop)."""

    def __init__(self) -> None:
        url = settings.REDIS_URL
        timeout = redis_clients.socket_timeout()
        self.commands = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=redis_clients.connect_timeout())
        self._reader = redis.asyncio.Redis.from_url(
            url, socket_timeout=LISTEN_SLICE_SECONDS + timeout,
            socket_connect_timeout=redis_clients.connect_timeout())
        self._waiters: dict[bytes, list[_Waiter]] = {}
        self._wake_key = f"{WAKE_KEY_PREFIX}{uuid.uuid4().hex}".encode()
        self._wake_after = b"0-0"
        self._wake_sent = False
        self._listener: asyncio.Task | None = None

    @property
    def watched(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def next_entry(self, job_id: str, after: bytes, timeout: float) -> Entry | None:
        """The job's first outcome entry after stream id ``after``; None after ``timeout``.

        Raises redis.RedisError when Redis cannot be reached (the caller answers 202).
        """
        stream = Result.get_key(job_id).encode()
        # Already there (a fast render, or a retry's earlier entry): no need to wait.
        entries = await self.commands.xrange(stream, min=b"(" + after, max=b"+", count=1)
        if entries:
            return entries[0]
        if timeout <= 0:
            return None
        loop = asyncio.get_running_loop()
        waiter = _Waiter(_stream_id(after), loop.create_future())
        self._waiters.setdefault(stream, []).append(waiter)
        try:
            self._ensure_listening()
            await self._wake()
            return await asyncio.wait_for(waiter.future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._forget(stream, waiter)

    def _forget(self, stream: bytes, waiter: _Waiter) -> None:
        waiters = self._waiters.get(stream, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(stream, None)

    def _ensure_listening(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="outcome-hub")

    async def _wake(self) -> None:
        """Makes a blocked read return, so that it includes the stream just added."""
        if self._wake_sent:
            return  # one wake-up covers every waiter added before the next read
        self._wake_sent = True
        async with self.commands.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {b"w": b"1"}, maxlen=16, approximate=True)
            pipe.expire(self._wake_key, WAKE_TTL_SECONDS)
            await pipe.execute()

    async def _listen(self) -> None:
        try:
            while self._waiters:
                streams: dict[bytes, bytes] = {}
                for stream, waiters in self._waiters.items():
                    low = min(w.after for w in waiters)
                    streams[stream] = f"{low[0]}-{low[1]}".encode()
                streams[self._wake_key] = self._wake_after
                self._wake_sent = False
                response = await self._reader.xread(streams, block=int(LISTEN_SLICE_SECONDS * 1000))
                for raw_stream, entries in response or []:
                    stream = raw_stream if isinstance(raw_stream, bytes) else raw_stream.encode()
                    if stream == self._wake_key:
                        self._wake_after = entries[-1][0]
                        continue
                    self._deliver(stream, entries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: every current wait ends with the error
            for waiters in list(self._waiters.values()):
                for waiter in waiters:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
            if not isinstance(exc, redis.RedisError):
                log.exception("outcome hub: the listener failed")

    def _deliver(self, stream: bytes, entries: list[Entry]) -> None:
        for waiter in self._waiters.get(stream, []):
            if waiter.future.done():
                continue
            for entry in entries:
                if _stream_id(entry[0]) > waiter.after:
                    waiter.future.set_result(entry)
                    break


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OutcomeHub] = weakref.WeakKeyDictionary()


def hub() -> OutcomeHub:
    """This event loop's hub (the server has one loop per process)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = OutcomeHub()
    return found


async def announce(job_id: str, timeout: float) -> None:
    """Marks the job as watched by a waiting request (``dispatch.has_waiter``)."""
    await hub().commands.set(waiter_key(job_id), 1, px=waiter_ttl_ms(timeout))


async def stop_waiting(job_id: str) -> None:
    await hub().commands.delete(waiter_key(job_id))
