"""Faults with real processes: the platform recovers, every render ends once, and money stays exact.

Each scenario (``tests.fault_scenarios``) runs real gunicorn, a real Redis, real rq
workers and sweepers against the test database, with renders that take seconds, and
kills something mid-render. After each: the audit is clean, no render is left open
and no hold is left pending. ``bench/faults.py`` prints the same scenarios as a table.
"""

from __future__ import annotations

import pytest
from django.db import connection

from tests import fault_scenarios as scenarios
from tests.live_platform import database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def run(tmp_path):
    def run_scenario(scenario):
        report = scenario(tmp_path, database_url(connection.settings_dict))
        assert report.audit_clean, report.audit
        assert report.open_renders == 0 and report.pending_holds == 0, report
        return report

    return run_scenario


def test_a_gpu_worker_killed_mid_render_is_retried_on_the_other_worker_and_charged_once(run):
    report = run(scenarios.gpu_worker_killed_mid_render)

    first = report.facts["first"]
    # The request was still waiting when the retry finished: one call, one answer.
    assert first.status == 200, report.clients
    assert first.body["status"] == "succeeded" and first.body["credits_charged"] == scenarios.CREDITS
    assert report.final_states == ["succeeded (attempt 2)"]
    assert report.usage_entries == 1 and report.credits_charged == scenarios.CREDITS


def test_redis_killed_and_restarted_mid_render_answers_with_the_render_id_never_a_5xx(run):
    report = run(scenarios.redis_restarted_mid_render)

    first = report.facts["first"]
    assert first.status in (200, 202), report.clients
    assert first.render_id is not None
    assert report.facts["last"].body["status"] in ("succeeded", "failed")
    assert report.renders == 1 and report.usage_entries <= 1
    assert report.credits_charged == scenarios.CREDITS * report.usage_entries


def test_a_gunicorn_worker_killed_mid_wait_leaves_a_render_that_still_settles(run):
    report = run(scenarios.gunicorn_worker_killed_mid_wait)

    assert report.facts["first"].status is None  # the connection died with the worker
    assert report.final_states == ["succeeded"]
    assert report.usage_entries == 1


def test_two_sweepers_that_find_the_same_lost_job_make_the_render_run_once(run):
    report = run(scenarios.two_sweepers_and_a_lost_job)

    assert report.facts["first"].status == 202
    assert report.facts["queued_jobs"] == 1  # one new attempt, however many passes saw the loss
    assert report.facts["runs"] == 1
    assert report.final_states == ["succeeded (attempt 2)"]
    assert report.usage_entries == 1


def test_a_request_killed_after_its_reserve_is_answered_from_its_render_on_retry(run):
    report = run(scenarios.request_killed_after_the_reserve)

    assert report.facts["killed_exit"] == 137
    assert report.facts["renders_after_kill"] == 1
    retry, again = report.facts["retry"], report.facts["again"]
    assert retry.status in (200, 202), report.clients
    assert retry.headers.get("idempotent-replayed") == "true"
    assert again.status == 200 and again.render_id == retry.render_id
    assert report.renders == 1 and report.final_states == ["succeeded (attempt 2)"]
    assert report.usage_entries == 1
