"""Structured logs: LOG_FORMAT=json gives one JSON object per line, carrying the ids.

The worker is a real ``python -m gpu_worker`` process (echo engine) writing to a file;
the web side is a request through Django with the settings' own formatter and filter.
An expected failure (an input that is not in storage: ``invalid_image``) is one
WARNING line with its code and no traceback; only real bugs keep theirs.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import redis

from gpu_worker import logs
from imaging import lifecycle
from tests.helpers_render import api_client, make_user, post_render, product_png, render_env  # noqa: F401
from tests.worker_runs import enqueue, running_worker, store_input, wait_until_finished


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_with_log_format_json_every_worker_line_is_json_and_an_expected_failure_has_no_traceback(tmp_path):
    queue = f"gpu-logs-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / "worker.log"
    with running_worker(queue, log_path, LOG_FORMAT="json"):
        good = enqueue(queue, store_input())
        missing = enqueue(queue, "inputs/never-stored.png")
        wait_until_finished(good, missing)
    entries = json_lines(log_path.read_text())  # raises on any line that is not JSON
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)

    good_id, missing_id = good.args[0]["render_id"], missing.args[0]["render_id"]
    about_good = [e for e in entries if e.get("render_id") == good_id]
    assert any("in" in e["message"] and e["level"] == "INFO" for e in about_good), about_good
    failure = [e for e in entries if e.get("render_id") == missing_id or missing.id in e["message"]]
    assert failure, "the failed render's lines carry its id"
    assert {e["level"] for e in failure} <= {"INFO", "WARNING"}
    assert any(e.get("code") == "invalid_image" for e in failure)
    assert not any("traceback" in e or "Traceback" in e["message"] for e in failure)


def test_with_the_json_formatter_a_web_request_logs_its_request_id(render_env):  # noqa: F811
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("django.request")  # logs each 4xx answer
    logger.addHandler(handler)
    try:
        client = api_client(make_user("logs@example.com"))
        response = client.post("/v1/image/replace-background",
                               {"image_url": "http://127.0.0.1:9/x.png", "scene_prompt": "white sweep"})
    finally:
        logger.removeHandler(handler)
    request_id = response["X-Request-Id"]
    entries = json_lines(stream.getvalue())
    assert entries, "the refused request is logged"
    assert all(e.get("request_id") == request_id for e in entries)
    assert not any("traceback" in e for e in entries)


def capture(logger_name: str) -> tuple[logging.Logger, logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    return logger, handler, stream


def refused_request_lines(user) -> tuple[str, list[dict]]:
    logger, handler, stream = capture("django.request")
    try:
        response = api_client(user).post("/v1/image/replace-background",
                                         {"image_url": "http://127.0.0.1:9/x.png", "scene_prompt": "white sweep"})
    finally:
        logger.removeHandler(handler)
    return response["X-Request-Id"], json_lines(stream.getvalue())


def test_a_staff_members_api_key_request_logs_their_user_id_and_a_customers_does_not(render_env):  # noqa: F811
    staff = make_user("staff-logs@example.com")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    customer = make_user("customer-logs@example.com")

    _, staff_lines = refused_request_lines(staff)
    _, customer_lines = refused_request_lines(customer)
    assert staff_lines and all(e.get("user_id") == staff.pk for e in staff_lines)
    assert customer_lines and not any("user_id" in e for e in customer_lines)


def test_a_redis_outage_while_waiting_is_one_warning_without_a_traceback_and_the_client_gets_202(
        render_env, monkeypatch):  # noqa: F811
    def redis_gone(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(lifecycle, "wait_and_settle", redis_gone)
    logger, handler, stream = capture("imaging.api")
    try:
        client = api_client(make_user("outage-logs@example.com"))
        response = post_render(client, image=product_png(), scene_prompt="white sweep")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 202, response.content
    render_id = response.json()["id"]
    entries = [e for e in json_lines(stream.getvalue()) if "waiting failed" in e["message"]]
    assert len(entries) == 1, entries
    assert entries[0]["level"] == "WARNING" and render_id in entries[0]["message"]
    assert "traceback" not in entries[0]
