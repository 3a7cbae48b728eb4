"""Renders as long as real ones, through real gunicorn, Redis and rq workers, and every
blocking Redis read proven to outlast its client's socket timeout.

redis-py 8 gives every client a 5 s socket timeout; the sync wait's ``XREAD BLOCK``
used to be read through such a client, so every render longer than 5 s answered 500.
The blocking reads in the codebase are:

* the request's wait for its render (``imaging.dispatch.wait_for_outcome``, up to the
  sync window), also used by the settle job (up to RENDER_SETTLE_WAIT_SECONDS);
* rq's dequeue in the GPU worker (``python -m gpu_worker``);
* rq's dequeue in the Django-side worker (``manage.py rqworker default``).

Each has a test here whose wait is longer than the socket timeout in force.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from rq import Queue
from rq.serializers import JSONSerializer

from imaging import dispatch, redis_clients, tasks
from imaging.models import Render
from tests import fault_scenarios as scenarios
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    api_client,
    fake_gpu,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
)
from tests.live_platform import Platform, database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_an_8_second_render_in_a_30_second_window_answers_200_with_its_output_charged_once(tmp_path):
    report = scenarios.long_render_inside_the_window(tmp_path, database_url(connection.settings_dict))

    answer = report.facts["answer"]
    assert answer.status == 200, answer.body
    assert answer.seconds >= 8  # it really waited out the whole render on one request
    assert answer.body["status"] == "succeeded" and answer.body["credits_charged"] == CREDITS
    assert answer.headers["x-credits-charged"] == str(CREDITS)
    assert report.facts["output_status"] == 200
    assert report.usage_entries == 1 and report.audit_clean
    assert report.open_renders == 0 and report.pending_holds == 0


@pytest.mark.slow
def test_a_render_longer_than_the_window_answers_202_and_get_later_finds_it_succeeded(tmp_path):
    report = scenarios.render_longer_than_the_window(tmp_path, database_url(connection.settings_dict))

    first, last = report.facts["first"], report.facts["last"]
    assert first.status == 202 and first.headers["location"].endswith(f"/v1/renders/{first.render_id}")
    assert int(first.headers["retry-after"]) >= 1
    assert last.body["status"] == "succeeded" and last.body["credits_charged"] == CREDITS
    assert report.usage_entries == 1 and report.audit_clean and report.pending_holds == 0


@pytest.mark.slow
@pytest.mark.parametrize("which", ["gpu", "default"])
def test_an_rq_worker_idle_for_longer_than_its_socket_timeout_still_takes_the_next_job(tmp_path, which):
    platform = Platform(tmp_path, database_url(connection.settings_dict), REDIS_SOCKET_TIMEOUT_SECONDS="1")
    try:
        platform.start_redis()
        worker = platform.start_gpu_worker() if which == "gpu" else platform.start_django_worker()
        time.sleep(3.5)  # three socket timeouts of blocking dequeue, no job
        assert worker.alive(), worker.log()
        # Any job will do to show the dequeue still works: a settle job for no render
        # returns "unknown"; a render job for a render never stored fails invalid_image.
        queue = Queue(which, connection=platform.connection(), serializer=JSONSerializer)
        if which == "gpu":
            job = queue.enqueue(dispatch.GPU_TASK, {"render_id": "rnd_idle", "input_key": "inputs/none.png",
                                                    "output_key": "outputs/rnd_idle-1.png",
                                                    "matte_key": "mattes/rnd_idle-1.png", "scene_prompt": "x"})
        else:
            job = queue.enqueue("imaging.tasks.settle_render", "rnd_idle")
        wait_for(lambda: job.get_status(refresh=True) in ("finished", "failed"), 30, "the worker to take the job")
        assert worker.alive()
        assert "Timeout reading from socket" not in worker.log(20000)
    finally:
        platform.stop()


@pytest.mark.usefixtures("fake_gpu")
def test_the_wait_outlasts_the_socket_timeout_across_several_blocking_slices(settings, monkeypatch):
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.3
    monkeypatch.setattr(redis_clients, "BLOCK_SLICE_SECONDS", 0.4)
    # (Clients are cached per timeout, so these settings get clients of their own.)
    response = post_render(api_client(make_user("slices@example.com")), image=product_png(16),
                           scene_prompt="slow:2")
    render = Render.objects.get(public_id=response.json()["id"])
    seen: dict = {}

    def wait() -> None:
        started = time.monotonic()
        seen["outcome"] = dispatch.wait_for_outcome(render.job_id, 10.0)
        seen["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    run_gpu_jobs_in_process()  # rq's worker needs the main thread (signals)
    waiter.join(timeout=15)
    outcome, waited = seen["outcome"], seen["waited"]
    assert outcome is not None and outcome.succeeded and outcome.job_id == render.job_id
    assert 1.5 < waited < 5  # about the 2 s render: five slices, each longer than the socket timeout


@pytest.mark.usefixtures("fake_gpu")
def test_the_settle_job_waits_longer_than_the_socket_timeout_for_its_outcome(settings):
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
    settings.RENDER_SETTLE_WAIT_SECONDS = 10
    user = make_user("settle-wait@example.com")
    response = post_render(api_client(user), image=product_png(16), scene_prompt="slow:3")
    render = Render.objects.get(public_id=response.json()["id"])
    seen: dict = {}

    def settle() -> None:
        seen["status"] = tasks.settle_render(render.public_id, render.job_id)
        connections.close_all()

    settler = threading.Thread(target=settle)
    settler.start()
    run_gpu_jobs_in_process()
    settler.join(timeout=15)
    status = seen["status"]
    assert status == "succeeded"
    assert account(user).held == 0 and account(user).balance == 9 * CREDITS
