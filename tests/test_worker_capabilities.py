"""The web side learns from the live GPU workers whether scene prompts can be painted.

Real worker processes announce what they loaded in rq's worker registry; the playground
suggests studio prompts (and says what to install) when none has a diffusion model.
"""

from __future__ import annotations

import pytest
from django.test import Client

from imaging import worker_capabilities
from tests.helpers_render import gpu_worker, make_user, render_env  # noqa: F401


@pytest.fixture(autouse=True)
def fresh_answer():
    worker_capabilities.forget()
    yield
    worker_capabilities.forget()


@pytest.mark.usefixtures("render_env")
def test_with_no_gpu_worker_running_nobody_knows():
    assert worker_capabilities.diffusion_installed() is None


@pytest.mark.usefixtures("render_env")
def test_a_worker_without_diffusion_weights_says_only_studio_prompts_work(tmp_path):
    with gpu_worker(None, SCENE_MODEL="sdxl-inpainting", MODEL_DIR=str(tmp_path), HF_HUB_OFFLINE="1"):
        assert worker_capabilities.live_capabilities() == {"studio": True, "diffusion": False}
        assert worker_capabilities.diffusion_installed() is False


@pytest.mark.usefixtures("render_env")
def test_a_worker_with_a_scene_model_says_scene_prompts_work():
    with gpu_worker(None, SCENE_MODEL="tiny-demo"):
        assert worker_capabilities.diffusion_installed() is True


@pytest.mark.usefixtures("render_env")
def test_the_playground_suggests_studio_prompts_when_no_worker_can_paint_scenes(tmp_path):
    user = make_user("caps@example.com")
    client = Client()
    client.force_login(user)
    with gpu_worker(None, SCENE_MODEL="sdxl-inpainting", MODEL_DIR=str(tmp_path), HF_HUB_OFFLINE="1"):
        page = client.get("/dashboard/playground/").content.decode()
    assert "studio prompts work now" in page.lower()
    assert "pure white background" in page
