"""Prompt routing: plain backdrops to the studio engine, everything else to diffusion.

The no-weights tests go through the worker's real load path (`load_models`) with an
empty MODEL_DIR, an empty Hugging Face cache and the Hub forced offline: what a fresh
machine gets before anyone ran `python -m gpu_worker fetch-models`. Studio prompts must
render there; scene prompts must fail with `model_unavailable` and say what to install.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gpu_worker import studio_truth
from gpu_worker.config import WorkerConfig
from gpu_worker.errors import RenderError
from gpu_worker.models import load_models, missing_weights
from gpu_worker.scene import missing_scene_weights, scene_model_downloads
from gpu_worker.scene.config import SceneConfigError, scene_config_from_env
from gpu_worker.scene.routing import STUDIO_EXAMPLES, RoutedSceneGenerator, route
from gpu_worker.stages import Scene, SceneRequest

STUDIO_PROMPTS = [
    "pure white background",
    "white",
    "White.",
    "#ff8800 backdrop",
    "#FFF",
    "soft grey paper sweep",
    "pastel pink studio background",
    "gradient from navy to teal",
    "charcoal seamless",
    "off-white background with soft shadow",
    "light grey sweep, soft light from the left",
    "plain studio",
    "solid sky blue background for an Amazon main image",
    "coral backdrop",
    "navy and teal background",
]

DIFFUSION_PROMPTS = [
    "on a marble kitchen counter, morning light",
    "beach at sunset",
    "white marble table in a bright kitchen",
    "a sunny beach",
    "a red barn",
    "pure white background with a marble floor",
    "studio with plants and a window",
    "grey concrete wall",
    "transparent background",
]

AMBIGUOUS_PROMPTS = ["snow", "coral", "gold", "soft light", "lavender", ""]


@pytest.mark.parametrize("prompt", STUDIO_PROMPTS)
def test_it_sends_plain_backdrop_prompts_to_the_studio_engine(prompt):
    decision = route(prompt)
    assert decision.engine == "studio", decision.reason
    assert decision.reason.startswith("a plain backdrop")


@pytest.mark.parametrize("prompt", DIFFUSION_PROMPTS)
def test_it_sends_prompts_that_describe_a_place_or_an_object_to_diffusion(prompt):
    decision = route(prompt)
    assert decision.engine == "diffusion", decision.reason
    assert decision.reason.startswith("describes a scene")


@pytest.mark.parametrize("prompt", AMBIGUOUS_PROMPTS)
def test_it_sends_ambiguous_prompts_to_diffusion(prompt):
    assert route(prompt).engine == "diffusion"


def test_a_colour_word_does_not_make_a_studio_prompt_when_a_place_is_described():
    decision = route("white marble table in a bright kitchen")
    assert decision.engine == "diffusion"
    for word in ("marble", "table", "kitchen"):
        assert f"'{word}'" in decision.reason
    assert "'white'" not in decision.reason


def test_the_examples_the_messages_quote_really_are_studio_prompts():
    assert len(STUDIO_EXAMPLES) >= 2
    assert all(route(example).engine == "studio" for example in STUDIO_EXAMPLES)


class RecordingEngine:
    """A scene generator that records what it was asked and says who painted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prompts: list[str] = []

    def __call__(self, request: SceneRequest) -> Scene:
        self.prompts.append(request.prompt)
        background = np.zeros((*request.alpha.shape, 3), np.float32)
        return Scene(background, None, {"scene_generated": True, "scene_model": self.name})


def a_request(prompt: str) -> SceneRequest:
    image = np.full((8, 8, 3), 200, np.uint8)
    return SceneRequest(image, np.zeros((8, 8), np.float32), image / 255.0, prompt, 1, False)


def test_the_routed_generator_asks_one_engine_and_records_the_route_in_the_facts():
    studio, diffusion = RecordingEngine("studio"), RecordingEngine("diffusion-model")
    routed = RoutedSceneGenerator(studio, diffusion, name="auto (test)")
    plain = routed(a_request("charcoal seamless"))
    scene = routed(a_request("beach at sunset"))
    assert studio.prompts == ["charcoal seamless"] and diffusion.prompts == ["beach at sunset"]
    assert plain.facts["scene_model"] == "studio"
    assert plain.facts["route"] == route("charcoal seamless").as_facts()
    assert plain.facts["route"]["engine"] == "studio"
    assert scene.facts["scene_model"] == "diffusion-model"
    assert scene.facts["route"]["engine"] == "diffusion"
    assert routed.name == "auto (test)"


# --- Settings --------------------------------------------------------------------------


def test_auto_is_the_default_and_routes_scene_prompts_to_sdxl_inpainting():
    config = scene_config_from_env({})
    assert config.model == "auto" and config.diffusion_preset == "sdxl-inpainting"
    assert scene_model_downloads(config)[0][0] == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"


def test_studio_only_needs_no_weights_and_takes_no_lora():
    config = scene_config_from_env({"SCENE_MODEL": "studio"})
    assert config.studio_only
    assert scene_model_downloads(config) == [] and missing_scene_weights(config) == []
    with pytest.raises(SceneConfigError, match="studio"):
        scene_config_from_env({"SCENE_MODEL": "studio", "SCENE_LORA": "lcm"})


def test_an_unknown_scene_model_is_refused_and_the_message_lists_the_new_values():
    with pytest.raises(SceneConfigError) as refused:
        scene_config_from_env({"SCENE_MODEL": "dall-e"})
    for value in ("auto", "studio", "sdxl-inpainting", "sd15-inpainting", "tiny-demo"):
        assert value in str(refused.value)


# --- A machine without diffusion weights ----------------------------------------------------


@pytest.fixture()
def offline_empty_machine(monkeypatch, tmp_path):
    """An empty MODEL_DIR, an empty Hugging Face cache, and the Hub offline."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    models = tmp_path / "models"
    models.mkdir()
    return models


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return studio_truth.make_case("bottle/white_soft", 192, 144, seed=5).image


NO_WEIGHTS_NAMES = {
    "auto": "auto (studio + sdxl-inpainting: missing weights)",
    "sdxl-inpainting": "auto (studio + sdxl-inpainting: missing weights)",
    "sd15-inpainting": "auto (studio + sd15-inpainting: missing weights)",
    "studio": "studio (diffusion off)",
}


@pytest.mark.parametrize("scene_model", list(NO_WEIGHTS_NAMES))
def test_without_diffusion_weights_studio_prompts_render_and_scene_prompts_say_what_to_install(
        scene_model, offline_empty_machine, photo, caplog):
    config = WorkerConfig.from_env({"MODEL_DIR": str(offline_empty_machine), "WORKER_DEVICE": "cpu",
                                    "MATTING_ENGINE": "classical", "SCENE_MODEL": scene_model})
    with caplog.at_level(logging.INFO):
        loaded = load_models(config)
    assert loaded.report["scene"]["engine"] == NO_WEIGHTS_NAMES[scene_model]
    # Not a broken worker: nothing about the scene model is logged as an error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    if scene_model != "studio":
        assert "studio prompts work now" in caplog.text.lower()
        assert any("studio prompts work now" in line for line in missing_weights(config))

    output = loaded.renderer(photo, "pure white background", 3, True)
    assert output.image.shape == photo.shape
    assert output.engine["scene"] == "studio"
    assert output.diagnostics["scene"]["route"]["engine"] == "studio"
    assert (output.image[output.alpha == 0].max(axis=1) == 255).mean() > 0.5

    with pytest.raises(RenderError) as refused:
        loaded.renderer(photo, "on a marble kitchen counter, morning light", 3, True)
    assert refused.value.code == "model_unavailable"
    message = refused.value.message
    assert "python -m gpu_worker fetch-models" in message and "MODEL_DIR" in message
    assert "SCENE_MODEL=tiny-demo" in message
    assert "Studio prompts work now" in message
    assert all(f'"{example}"' in message for example in STUDIO_EXAMPLES)
    assert "'marble'" in message  # why this prompt needed the scene model
    if scene_model == "studio":
        assert "SCENE_MODEL=studio" in message and "SCENE_MODEL=auto" in message
    else:
        assert "weights are not installed" in message
