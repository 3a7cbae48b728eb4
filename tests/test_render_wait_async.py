"""The synchronous render's wait on the ASGI server: no thread, no database connection.

Everything here is real: gunicorn with uvicorn workers (what ``make run`` starts), the
Django-side rq worker, Redis, and the database the suite runs on. The GPU side is
``bench/fake_gpu_worker.py``, which ends every job a fixed delay after taking it, all
in parallel, so that many renders can be in flight at once and the web tier is what is
tested. The 8-second-render and past-the-window cases run on this server too, in
``tests/test_render_path_live.py``.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
import time

import pytest
from django.db import connection

from imaging.dispatch import WAITER_KEY_PREFIX
from tests.fault_scenarios import BASE_ENV, books, customer, product_png, Report
from tests.live_platform import Platform, database_url, multipart, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CREDITS = 22


def platform_for(tmp_path, **env: str) -> Platform:
    platform = Platform(tmp_path, database_url(connection.settings_dict), **{**BASE_ENV, **env})
    platform.start_redis()
    return platform


def start_rest(platform: Platform, *, delay: float, workers: int = 1, **web_env: str) -> None:
    """The ASGI web, the Django-side worker, and a fake GPU worker taking ``delay`` s a render."""
    platform.start_web(workers=workers, **web_env)
    platform.start_django_worker()
    platform.start_fake_gpu_worker(delay=delay)


def waiting_requests(platform: Platform) -> int:
    return sum(1 for _ in platform.connection().scan_iter(f"{WAITER_KEY_PREFIX}*", count=1000))


def fan_out(platform: Platform, keys: list[str], each: int) -> concurrent.futures.Future:
    """``each`` concurrent renders per key, sent from threads; a future of all answers."""
    image = product_png()

    def all_answers() -> list:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(keys) * each) as pool:
            futures = [pool.submit(platform.post_render, key, image, timeout=120)
                       for key in keys for _ in range(each)]
            return [f.result() for f in futures]

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(all_answers)
    pool.shutdown(wait=False)
    return future


def test_one_asgi_worker_with_fifty_renders_waiting_answers_the_account_endpoint_at_once(tmp_path):
    """Under the threaded server one worker with 8 threads would have none left."""
    platform = platform_for(tmp_path)
    try:
        start_rest(platform, delay=8)
        user, key = customer("fifty@example.com", renders=50)
        pending = fan_out(platform, [key], 50)
        wait_for(lambda: waiting_requests(platform) == 50, 40, "all 50 renders to be waiting")
        (web_worker,) = platform.web_proc.children()
        threads_while_waiting = len(os.listdir(f"/proc/{web_worker}/task"))
        side = [platform.request("GET", "/v1/account", headers={"Authorization": f"Bearer {key}"}, timeout=10)
                for _ in range(10)]
        assert waiting_requests(platform) == 50, "the renders were still waiting during the side requests"
        answers = pending.result(timeout=120)
        marks_left = waiting_requests(platform)  # each wait removes its mark when it ends
    finally:
        platform.stop()
    assert marks_left == 0
    assert threads_while_waiting < 25, threads_while_waiting  # not one per waiting render
    assert all(a.status == 200 for a in side), [a.describe() for a in side]
    assert max(a.seconds for a in side) < 1.0, [round(a.seconds, 3) for a in side]
    assert [a.status for a in answers] == [200] * 50, [a.describe() for a in answers if a.status != 200]
    assert min(a.seconds for a in answers) >= 8  # each waited out its render on its request
    report = books(Report("fifty waiting"), user)
    assert report.usage_entries == 50 and report.credits_charged == 50 * CREDITS
    assert report.open_renders == 0 and report.pending_holds == 0 and report.audit_clean, report


def test_a_client_that_disconnects_mid_wait_leaves_its_render_to_settle_and_be_charged_once(tmp_path):
    platform = platform_for(tmp_path)
    try:
        start_rest(platform, delay=4)
        user, key = customer("leaves@example.com")
        body, content_type = multipart({"scene_prompt": "pure white background"}, "image_file", product_png())
        client = socket.create_connection(("127.0.0.1", platform.web_port), timeout=10)
        client.sendall((f"POST /v1/image/replace-background HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Bearer {key}\r\nContent-Type: {content_type}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        wait_for(lambda: waiting_requests(platform) == 1, 20, "the request to be waiting")
        client.close()
        left_at = time.monotonic()
        # The request's task is cancelled: its waiter mark goes at once, not when it expires.
        wait_for(lambda: waiting_requests(platform) == 0, 3, "the waiter mark to be removed")
        mark_gone_after = time.monotonic() - left_at

        def settled() -> bool:
            return books(Report("left"), user).open_renders == 0

        wait_for(settled, 30, "the render to settle with nobody asking")  # no GET: the settle job does it
        report = books(Report("left mid-wait"), user)
    finally:
        platform.stop()
    assert mark_gone_after < 3
    assert report.final_states == ["succeeded"], report
    assert report.usage_entries == 1 and report.credits_charged == CREDITS and report.audit_clean, report


@pytest.mark.skipif(connection.vendor != "postgresql", reason="counts PostgreSQL's connections")
def test_two_hundred_waiting_renders_hold_no_more_than_a_handful_of_database_connections(tmp_path):
    url = database_url(connection.settings_dict)
    web_url = url + ("&" if "?" in url else "?") + "application_name=pixelapi-web-under-test"
    platform = platform_for(tmp_path, DB_POOL_MAX_SIZE="4")
    samples: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        with connection.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("select count(*), count(*) filter (where state <> 'idle') from pg_stat_activity "
                               "where application_name = 'pixelapi-web-under-test'")
                total, busy = cursor.fetchone()
                samples.append((waiting_requests(platform), total, busy))
                time.sleep(0.2)
        connection.close()

    try:
        start_rest(platform, delay=15, workers=2, DATABASE_URL=web_url)
        customers = [customer(f"many{i}@example.com", renders=50) for i in range(4)]
        pending = fan_out(platform, [key for _, key in customers], 50)
        wait_for(lambda: waiting_requests(platform) == 200, 60, "all 200 renders to be waiting")
        sampler = threading.Thread(target=sample)
        sampler.start()
        time.sleep(2)
        stop.set()
        sampler.join()
        answers = pending.result(timeout=120)
    finally:
        stop.set()
        platform.stop()
    during = [s for s in samples if s[0] == 200]
    assert during, samples
    assert max(total for _, total, _ in during) <= 8, during  # 2 processes x a pool of 4, never one per wait
    assert max(busy for _, _, busy in during) <= 2, during
    assert [a.status for a in answers] == [200] * 200, [a.describe() for a in answers if a.status != 200]
    for user, _ in customers:
        report = books(Report("many"), user)
        assert report.usage_entries == 50 and report.audit_clean, report


def test_prefer_respond_async_answers_202_at_once_and_the_render_then_succeeds(tmp_path):
    platform = platform_for(tmp_path)
    try:
        start_rest(platform, delay=4)
        user, key = customer("pipeline@example.com")
        answer = platform.post_render(key, product_png(), headers={"Prefer": "respond-async, wait=100"})
        assert answer.status == 202, answer.describe()
        assert answer.seconds < 2  # not the 4 s render
        assert answer.headers["preference-applied"] == "respond-async"
        assert answer.headers["location"] == answer.body["status_url"]
        assert waiting_requests(platform) == 0  # nobody waits: the settle job ends it
        final = platform.wait_until_terminal(key, answer.body["id"], timeout=30)
        report = books(Report("respond-async"), user)
    finally:
        platform.stop()
    assert final.body["status"] == "succeeded"
    assert report.usage_entries == 1 and report.audit_clean, report


@pytest.mark.parametrize("header, wanted", [
    ("respond-async", True), ("Respond-Async; wait=5", True), ("handling=lenient, respond-async", True),
    ("", False), ("wait=10", False), ("respond-asynchronously", False), ("return=minimal", False),
])
def test_only_the_respond_async_preference_asks_for_202(header, wanted, rf):
    from rest_framework.request import Request

    from imaging.api import prefers_async

    assert prefers_async(Request(rf.post("/", HTTP_PREFER=header))) is wanted
