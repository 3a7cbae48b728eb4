"""The GPU worker asks the Django side to settle a render unless a request is waiting for it."""

from __future__ import annotations

import os

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from gpu_worker.worker import request_settlement


@pytest.fixture
def redis() -> Redis:
    connection = Redis.from_url(os.environ["REDIS_URL"])
    connection.flushdb()
    return connection


def render_job(redis: Redis, render_id: str) -> Job:
    return Job.create("gpu_worker.tasks.replace_background", args=[{"render_id": render_id}],
                      connection=redis, serializer=JSONSerializer)


def settle_jobs(redis: Redis) -> list[Job]:
    return Queue("default", connection=redis, serializer=JSONSerializer).get_jobs()


def test_it_enqueues_settlement_when_nobody_waits(redis):
    render_job_ = render_job(redis, "rnd_nobody_waits")
    request_settlement(redis, render_job_)

    [job] = settle_jobs(redis)
    assert job.func_name == "imaging.tasks.settle_render"
    # The job id lets the settle job ignore a signal from a superseded attempt.
    assert job.args == ["rnd_nobody_waits", render_job_.id]


def test_it_leaves_settlement_to_a_waiting_request(redis):
    job = render_job(redis, "rnd_someone_waits")
    # The mark imaging.dispatch sets while a request blocks on this job.
    from imaging.dispatch import waiter_key

    redis.set(waiter_key(job.id), 1, px=5000)

    request_settlement(redis, job)

    assert settle_jobs(redis) == []
