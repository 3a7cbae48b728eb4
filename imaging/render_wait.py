"""The synchronous render's wait on the ASGI stack: ``lifecycle.wait_and_settle``, async.

The request awaits its job's outcome on the event loop (``imaging.outcomes``), so while
it waits it holds no worker thread and no database connection. Everything that touches
the database runs in ``db_unit`` steps: short, committed units of work in the request's
own thread, each of which hands its connections back (to the pool) when it ends, so
a thousand waiting renders need only the connections of the few that are being
settled at that moment.

Semantics are those of the threaded wait: a retry after a lost worker is waited for
within the same window; when the window closes the render is looked at once more
(``lifecycle.refresh``); a Redis failure mid-wait returns the render as it is (the
caller answers 202 with its id). A client that disconnects mid-wait cancels the
request's task; the render is then left to settle normally: the waiter mark is removed
at once (so the GPU worker's settle job no longer stands aside for a request that is
gone) and the render is looked at once, in the background, in case its outcome arrived
while the mark still said someone was waiting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Callable, TypeVar

import redis
from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connections

from imaging import dispatch, lifecycle, outcomes
from imaging.models import Render
from platform_site import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# Background look-ups after a disconnect: kept referenced until done (asyncio keeps
# only weak references to tasks).
_after_disconnect: set[asyncio.Task] = set()


def release_connections() -> None:
    """Hands this thread's database connections back, unless a transaction holds them."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def db_unit(fn: Callable[..., T], *, own_thread: bool = True) -> Callable[..., Any]:
    """``fn`` as an awaitable unit of database work that returns its connections after.

    It runs in the request's own thread (asgiref's thread-sensitive mode), or, for work
    that outlives its request, in the shared pool (``own_thread=False``).
    """

    @functools.wraps(fn)
    def unit(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            release_connections()

    return sync_to_async(unit, thread_sensitive=own_thread)


def _settle_entry(render: Render, job_id: str, entry: outcomes.Entry) -> Render | None:
    outcome = dispatch.restore_outcome(job_id, entry, lifecycle.expected_keys(render))
    if outcome is None:
        return None  # not a valid outcome for this render (a stale or foreign entry)
    return lifecycle.settle(render.pk, outcome, actor="request")


def _refresh(render: Render) -> Render:
    return lifecycle.refresh(render, actor="request")


async def _quietly_stop_waiting(job_id: str) -> None:
    try:
        await outcomes.stop_waiting(job_id)
    except redis.RedisError:
        pass  # the mark expires by itself


def release_request_thread() -> None:
    """Lets the request's own synchronous thread end for the length of the wait.

    Under ASGI Django gives each request a thread for its synchronous code (asgiref's
    ThreadSensitiveContext, created on first use: the middleware's hooks, the DRF view)
    and keeps it, idle, until the request ends; a thousand waiting renders would keep a
    thousand idle threads. Dropping the context's executor here ends that thread now;
    the next synchronous step of the request (settling, the answer) gets a fresh one,
    which the context shuts down as usual at the end. Its database connections were
    already handed back (``db_unit``).
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None or getattr(context, "_executor", None) is not None:
        return  # not Django's per-request context, or an executor someone else owns
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


async def wait_and_settle(render: Render, timeout: float) -> Render:
    """Awaits the render's end for up to ``timeout`` seconds and settles what it saw."""
    release_request_thread()
    with metrics.RENDERS_WAITING.track_inprogress():
        try:
            return await _wait_and_settle(render, timeout)
        except asyncio.CancelledError:
            _look_after_disconnect(render)
            raise


async def _wait_and_settle(render: Render, timeout: float) -> Render:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    hub = outcomes.hub()
    while not render.is_terminal:
        job_id = render.job_id
        after = b"0-0"
        try:
            await outcomes.announce(job_id, max(0.0, deadline - loop.time()))
            while True:
                entry = await hub.next_entry(job_id, after, deadline - loop.time())
                if entry is None:
                    # Giving up: from now on a settle job must not stand aside for us.
                    await _quietly_stop_waiting(job_id)
                    return await db_unit(_refresh)(render)
                after = entry[0]
                settled = await db_unit(_settle_entry)(render, job_id, entry)
                if settled is not None:
                    render = settled
                    await _quietly_stop_waiting(job_id)  # so the mark counts only waits in progress
                    break
        except redis.RedisError as exc:
            log.warning("render %s: waiting on job %s failed: %r; answering with the render as it is",
                        render.public_id, job_id, exc)
            await _quietly_stop_waiting(job_id)
            return render
    return render


def _look_after_disconnect(render: Render) -> None:
    async def look() -> None:
        try:
            await _quietly_stop_waiting(render.job_id)
            await db_unit(_refresh, own_thread=False)(render)
        except Exception:
            log.warning("render %s: could not look at it after its client left; the sweeper will",
                        render.public_id, exc_info=True)

    log.info("render %s: the client disconnected while waiting; the render settles without it",
             render.public_id)
    task = asyncio.get_running_loop().create_task(look())
    _after_disconnect.add(task)
    task.add_done_callback(_after_disconnect.discard)
