"""Prometheus metrics: the web's /metrics (token-protected) and the GPU worker's own port.

Counters are process-wide, so the web test compares a scrape before with one after.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    api_client,
    fake_gpu,
    make_user,
    post_render,
    product_png,
    render_env,
    run_gpu_jobs_in_process,
)
from tests.worker_runs import enqueue, free_port, running_worker, store_input, wait_until_finished

TOKEN = "metrics-test-token"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.content
    return samples(response.content.decode())


def test_metrics_is_not_served_while_no_token_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


def test_metrics_refuses_a_missing_or_wrong_token(client, settings):
    settings.METRICS_TOKEN = TOKEN
    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "authentication_failed"
    assert "gpu_queue_depth" not in wrong.content.decode()


@pytest.mark.usefixtures("fake_gpu")
def test_a_success_and_a_failure_show_up_in_the_web_metrics(client, render_env):
    render_env.METRICS_TOKEN = TOKEN
    before = scrape(client)
    customer = api_client(make_user("metrics@example.com"))
    accepted = [post_render(customer, image=product_png(16)),
                post_render(customer, image=product_png(16), scene_prompt="fail:model_unavailable")]
    assert [response.status_code for response in accepted] == [202, 202]
    run_gpu_jobs_in_process()
    for response in accepted:  # observing the outcome settles the render
        assert customer.get(f"/v1/renders/{response.json()['id']}").status_code == 200
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("renders_accepted_total") == 2
    assert grew("renders_succeeded_total") == 1
    assert grew("renders_failed_total", code="model_unavailable") == 1
    assert grew("credits_charged_total") == 22
    route = "v1/image/replace-background"
    assert grew("web_request_seconds_count", route=route, method="POST", status="202") == 2
    assert grew("web_request_seconds_bucket", route=route, method="POST", status="202", le="+Inf") == 2
    assert ("gpu_queue_depth", ()) in after and ("gpu_workers_alive", ()) in after
    # Raw paths (with render ids) never become label values.
    assert not any("rnd_" in value for _, labels in after for _, value in labels)


def test_the_worker_serves_stage_times_and_outcomes_on_its_own_port(tmp_path):
    port, queue = free_port(), f"gpu-metrics-{uuid.uuid4().hex[:8]}"
    with running_worker(queue, tmp_path / "worker.log", WORKER_METRICS_PORT=str(port)):
        good = enqueue(queue, store_input())
        missing = enqueue(queue, "inputs/never-stored.png")
        wait_until_finished(good, missing)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            found = samples(answer.read().decode())
    assert found[("gpu_renders_total", (("engine", "echo"), ("outcome", "succeeded")))] == 1
    assert found[("gpu_render_failures_total", (("code", "invalid_image"),))] == 1
    for stage in ("decode", "encode", "total"):
        assert found[("gpu_render_stage_seconds_count", (("stage", stage),))] == 1
        assert found[("gpu_render_stage_seconds_bucket", (("le", "+Inf"), ("stage", stage)))] == 1
    assert found[("gpu_model_load_seconds", ())] > 0
    assert found[("gpu_worker_busy", ())] == 0
