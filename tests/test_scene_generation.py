"""Scene generation around a fixed subject, with tiny random SD 1.5 and SDXL inpainting pipelines.

The tiny pipelines have the real architectures (9-channel UNet, 8x VAE, CLIP encoders) and
run the real diffusers code at a 256 px canvas in a fraction of a second; their output
is noise, which is all these tests need: sizes, determinism, what the pipeline is asked
for, and that the subject survives composition bit for bit. Scripted stand-ins play the
model where a behaviour must be provoked on purpose (painting into the subject's ring).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from gpu_worker.composite import compose
from gpu_worker.errors import RenderError
from gpu_worker.scene import canvas
from gpu_worker.scene.config import SceneConfig, SceneConfigError, scene_config_from_env
from gpu_worker.scene.expansion import retry_seed
from gpu_worker.scene.generator import DiffusionSceneGenerator, inference_steps_for
from gpu_worker.scene.loading import load_scene_generator, scene_model_downloads, weights_dir
from gpu_worker.scene.tiny import tiny_inpaint_pipeline
from gpu_worker.stages import SceneRequest

# diffusers' Euler scheduler builds its sigmas from a tensor in a way numpy 2 deprecates;
# harmless, and not ours to change.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

WORKING_PIXELS = 256 * 256  # 32x32 latents
SUBJECT_RGB = np.array([0.8, 0.1, 0.1], np.float32)
BACKDROP_RGB = np.array([0.95, 0.95, 0.95], np.float32)


def tiny_config(family: str, **changes) -> SceneConfig:
    base = SceneConfig(
        model="tiny-demo",
        family=family,
        steps=2,
        guidance=7.5,
        working_pixels=WORKING_PIXELS,
        mask_dilate_px=4,
    )
    return replace(base, **changes)


def ellipse_request(height: int = 157, width: int = 203, seed: int = 7, **changes) -> SceneRequest:
    """A red ellipse with a 2 px soft edge on a white backdrop, textured so exactness is tested."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx, ry, rx = height * 0.5, width * 0.5, height * 0.3, width * 0.25
    radius = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
    alpha = np.clip((1.0 - radius) * min(ry, rx) / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)
    texture = np.random.default_rng(seed).uniform(-0.08, 0.08, (height, width, 1)).astype(np.float32)
    foreground = np.clip(SUBJECT_RGB + texture, 0, 1)
    mixed = alpha[..., None] * foreground + (1 - alpha[..., None]) * BACKDROP_RGB
    image = np.round(mixed * 255).astype(np.uint8)
    fields = dict(
        image=image,
        alpha=alpha,
        foreground=foreground,
        prompt="modern kitchen counter",
        seed=seed,
        preserve_shadow=False,
    )
    fields.update(changes)
    return SceneRequest(**fields)


class Recorder:
    """Wraps a pipeline and keeps each call's arguments and raw output."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.calls: list[dict] = []
        self.outputs: list[np.ndarray] = []

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        result = self.pipeline(**kwargs)
        self.outputs.append(np.array(result.images[0]))
        return result


class RingPainter:
    """A scripted model: paints a flat scene, and for chosen seeds grows the subject.

    It reads the mask it is given (white = repaint) and, for a seed in ``grow_seeds``,
    paints the subject's colour in a band just outside the kept region, which is what a
    real model does when it extends a product beyond its outline.
    """

    def __init__(self, grow_seeds: set[int], band_px: int = 10) -> None:
        self.grow_seeds = grow_seeds
        self.band_px = band_px
        self.seeds: list[int] = []
        self.device = torch.device("cpu")

    def __call__(self, *, mask_image, height, width, generator, **_):
        seed = generator.initial_seed()
        self.seeds.append(seed)
        repaint = np.asarray(mask_image) > 127
        out = np.empty((height, width, 3), np.float32)
        out[:] = (0.2, 0.5, 0.8)  # a blue scene
        out[~repaint] = 0.5  # where it was told to keep, a model returns its grey canvas
        if seed in self.grow_seeds:
            kernel = np.ones((2 * self.band_px + 1, 2 * self.band_px + 1), np.uint8)
            grown = cv2.dilate((~repaint).astype(np.uint8), kernel).astype(bool) & repaint
            out[grown] = SUBJECT_RGB
        return SimpleNamespace(images=[out])


def red_matte(image: np.ndarray) -> np.ndarray:
    """A stand-in matting engine: whatever is close to the subject's red is subject."""
    rgb = image.astype(np.float32) / 255.0
    distance = np.linalg.norm(rgb - SUBJECT_RGB, axis=-1)
    return np.clip((0.45 - distance) / 0.2, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tiny_pipeline(family):
    return tiny_inpaint_pipeline(family)


@pytest.mark.parametrize("size", [(157, 203), (211, 97)])
def test_the_background_comes_back_at_the_source_resolution_for_odd_sizes(tiny_pipeline, family, size):
    generator = DiffusionSceneGenerator(tiny_pipeline, tiny_config(family))
    scene = generator(ellipse_request(*size))
    assert scene.background.shape == (*size, 3)
    assert scene.background.dtype == np.float32
    assert 0.0 <= scene.background.min() and scene.background.max() <= 1.0
    assert scene.shadow is None
    w, h = scene.facts["scene_canvas"]
    assert h % 8 == 0 and w % 8 == 0


def test_the_same_seed_and_input_give_the_same_scene_and_another_seed_another(tiny_pipeline, family):
    generator = DiffusionSceneGenerator(tiny_pipeline, tiny_config(family))
    first = generator(ellipse_request(seed=11))
    again = generator(ellipse_request(seed=11))
    other = generator(ellipse_request(seed=12))
    assert np.array_equal(first.background, again.background)
    assert first.facts["scene_seed"] == again.facts["scene_seed"] == 11
    assert np.abs(first.background - other.background).mean() > 0.01
    assert other.facts["scene_seed"] == 12


def test_the_pipeline_is_asked_for_the_working_size_with_white_outside_the_subject(tiny_pipeline, family):
    recorder = Recorder(tiny_pipeline)
    config = tiny_config(family)
    request = ellipse_request(157, 203)
    DiffusionSceneGenerator(recorder, config)(request)
    (call,) = recorder.calls
    height, width = call["height"], call["width"]
    assert height % 8 == 0 and width % 8 == 0
    assert abs(height * width - WORKING_PIXELS) < 0.1 * WORKING_PIXELS
    assert abs(width / height - 203 / 157) < 0.05
    assert call["mask_image"].size == (width, height) and call["mask_image"].mode == "L"
    assert call["image"].size == (width, height)
    assert 0.9 <= call["strength"] < 1.0
    assert int(call["num_inference_steps"] * call["strength"]) == config.steps

    mask = np.asarray(call["mask_image"])
    alpha_w = canvas.resize_alpha(request.alpha, (height, width))
    assert set(np.unique(mask)) == {0, 255}
    assert (mask[alpha_w > 0.02] == 0).all(), "the subject, fringe included, must not be repainted"
    outside = cv2.distanceTransform((alpha_w <= 0.02).astype(np.uint8), cv2.DIST_L2, 5)
    assert (mask[(outside > 0) & (outside <= config.mask_dilate_px - 1)] == 0).all(), "a dilated margin is kept"
    assert (mask[outside > config.mask_dilate_px + 1.5] == 255).all(), "everything else is repainted"
    # No subject colour reaches the model: the canvas is one neutral grey.
    pixels = np.asarray(call["image"])
    assert (pixels == pixels[0, 0]).all() and tuple(pixels[0, 0]) == (128, 128, 128)


def test_subject_pixels_are_exact_after_composition_though_the_raw_output_is_not(tiny_pipeline, family):
    recorder = Recorder(tiny_pipeline)
    request = ellipse_request(157, 203)
    scene = DiffusionSceneGenerator(recorder, tiny_config(family))(request)
    solid = request.alpha >= 1.0
    assert solid.sum() > 1000
    raw = canvas.to_source_size(recorder.outputs[0], 157, 203)
    raw_8bit = np.round(raw * 255).astype(np.uint8)
    assert not np.array_equal(raw_8bit[solid], request.image[solid]), "the model's pixels differ"
    out = compose(request.image, request.alpha, request.foreground, scene.background, scene.shadow)
    out = np.asarray(out)
    assert out.shape == request.image.shape
    assert np.array_equal(out[solid], request.image[solid])


def test_the_expansion_check_retries_with_another_seed_when_the_model_grows_the_subject():
    painter = RingPainter(grow_seeds={5})
    generator = DiffusionSceneGenerator(painter, tiny_config("sdxl"), red_matte)
    scene = generator(ellipse_request(seed=5))
    facts = scene.facts
    assert painter.seeds == [5, retry_seed(5, 1)]
    assert facts["attempts"] == 2
    assert facts["requested_seed"] == 5 and facts["scene_seed"] == retry_seed(5, 1)
    first, second = facts["expansion_by_attempt"]
    assert first > facts["expansion_threshold"] >= second
    assert facts["expansion"] == second and not facts["expansion_exceeded"]
    assert facts["expansion_check"] == "measured"


def test_the_fringe_is_backed_by_the_scene_not_by_the_models_grey_canvas():
    request = ellipse_request(157, 203)
    scene = DiffusionSceneGenerator(RingPainter(grow_seeds=set()), tiny_config("sdxl"))(request)
    fringe = (request.alpha > 0.0) & (request.alpha < 1.0)
    assert fringe.sum() > 100
    assert np.abs(scene.background[fringe] - np.array([0.2, 0.5, 0.8])).max() < 0.02


def test_a_scene_model_that_returns_nan_fails_the_render_instead_of_painting_it_black():
    class NanPainter(RingPainter):
        def __call__(self, **kwargs):
            result = super().__call__(**kwargs)
            result.images[0][::7] = np.nan  # what fp16 overflow in the VAE looks like
            return result

    with pytest.raises(RenderError) as failure:
        DiffusionSceneGenerator(NanPainter(grow_seeds=set()), tiny_config("sdxl"))(ellipse_request())
    assert failure.value.code == "render_failed" and "non-finite" in failure.value.message


def test_a_clean_first_attempt_is_not_retried():
    painter = RingPainter(grow_seeds=set())
    scene = DiffusionSceneGenerator(painter, tiny_config("sdxl"), red_matte)(ellipse_request(seed=5))
    assert painter.seeds == [5]
    assert scene.facts["attempts"] == 1 and scene.facts["expansion"] < 0.02


def test_when_every_attempt_grows_the_subject_the_smaller_growth_is_kept_and_flagged():
    wide, narrow = 5, retry_seed(5, 1)
    painter = RingPainter(grow_seeds={wide, narrow})
    painter_band = {wide: 14, narrow: 6}
    original = painter.__call__

    def by_seed(**kwargs):
        painter.band_px = painter_band[kwargs["generator"].initial_seed()]
        return original(**kwargs)

    generator = DiffusionSceneGenerator(by_seed, tiny_config("sdxl"), red_matte)
    scene = generator(ellipse_request(seed=5))
    assert scene.facts["attempts"] == 2
    assert scene.facts["scene_seed"] == narrow
    assert scene.facts["expansion_exceeded"]
    assert scene.facts["expansion"] == min(scene.facts["expansion_by_attempt"])


def test_a_matting_engine_that_refuses_the_scene_skips_the_check_without_failing_the_render():
    def refusing_matte(image: np.ndarray) -> np.ndarray:
        raise RenderError("backdrop_not_plain", "busy backdrop")

    painter = RingPainter(grow_seeds={5})
    scene = DiffusionSceneGenerator(painter, tiny_config("sdxl"), refusing_matte)(ellipse_request(seed=5))
    assert scene.facts["expansion"] is None
    assert scene.facts["expansion_check"] == "skipped: backdrop_not_plain"
    assert scene.facts["attempts"] == 1


def test_the_subjects_light_direction_reaches_the_prompt_when_the_user_named_none():
    size = 160
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    nx, ny = (xs - 80) / 50, (80 - ys) / 50
    inside = nx**2 + ny**2 < 1
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    light = np.array([-0.9, 0.1, 0.4]) / np.linalg.norm([-0.9, 0.1, 0.4])
    shade = 0.05 + np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, None)
    linear = np.where(inside[..., None], shade[..., None] * np.array([0.3, 0.6, 0.4]), 0.9)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    image = np.round(np.clip(srgb, 0, 1) * 255).astype(np.uint8)
    alpha = inside.astype(np.float32)
    request = SceneRequest(image, alpha, image / 255.0, "beach at golden hour", 3, False)
    painter = RingPainter(grow_seeds=set())
    calls: list[dict] = []

    def spy(**kwargs):
        calls.append(kwargs)
        return painter(**kwargs)

    scene = DiffusionSceneGenerator(spy, tiny_config("sdxl"))(request)
    assert scene.facts["light_direction"] == scene.facts["light"]["direction"] == "left"
    assert calls[0]["prompt"] == "beach at golden hour. Soft light coming from the left."
    assert "watermark" in calls[0]["negative_prompt"]
    named = DiffusionSceneGenerator(spy, tiny_config("sdxl"))(replace(request, prompt="beach, sun from the right"))
    assert calls[1]["prompt"] == "beach, sun from the right"
    assert named.facts["light_hint_added"] is False


def test_the_contact_shadow_is_returned_only_when_asked_for():
    request = ellipse_request(157, 203)
    ys, xs = np.mgrid[0:157, 0:203].astype(np.float32)
    base_y = 157 * 0.8
    shadow = 1 - 0.5 * np.exp(-(((xs - 101) / 50) ** 2) - ((ys - base_y) / 8) ** 2)
    floor = BACKDROP_RGB * shadow[..., None]
    a = request.alpha[..., None]
    image = np.round((a * request.foreground + (1 - a) * floor) * 255).astype(np.uint8)
    painter = RingPainter(grow_seeds=set())
    generator = DiffusionSceneGenerator(painter, tiny_config("sdxl"))
    kept = generator(replace(request, image=image, preserve_shadow=True))
    assert kept.shadow is not None and kept.shadow.shape == (157, 203)
    assert kept.shadow.min() < 0.7 and kept.facts["shadow"]["carried"]
    dropped = generator(replace(request, image=image, preserve_shadow=False))
    assert dropped.shadow is None
    assert dropped.facts["shadow"] == {"carried": False, "reason": "not_requested"}


@pytest.mark.parametrize("steps,strength", [(1, 0.99), (2, 0.99), (4, 0.99), (20, 0.99), (30, 0.95), (8, 1.0)])
def test_the_configured_number_of_steps_is_what_actually_runs(steps, strength):
    n = inference_steps_for(steps, strength)
    assert int(n * strength) == steps


# --- Loading ---------------------------------------------------------------------------------


def _isolated_hf_cache(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_missing_weights_fail_each_render_with_model_unavailable_and_say_which(monkeypatch, tmp_path, caplog):
    _isolated_hf_cache(monkeypatch, tmp_path)
    config = scene_config_from_env({"MODEL_DIR": str(tmp_path / "models")})
    # A worker without diffusion weights still paints studio prompts: a warning, not an error.
    with caplog.at_level(logging.WARNING, logger="gpu_worker.scene.loading"):
        generator = load_scene_generator(config, red_matte)
    assert "diffusers/stable-diffusion-xl-1.0-inpainting-0.1@115134f3" in caplog.text
    assert "fetch-models" in caplog.text
    with pytest.raises(RenderError) as failure:
        generator(ellipse_request())
    assert failure.value.code == "model_unavailable"


def _tiny_lora(family: str, directory) -> None:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = tiny_inpaint_pipeline(family)
    torch.manual_seed(1)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=targets, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    type(pipe).save_lora_weights(directory, unet_lora_layers=layers, weight_name="pytorch_lora_weights.safetensors")


def test_the_loader_builds_the_real_pipeline_from_a_local_snapshot_with_a_fused_lora(monkeypatch, tmp_path):
    from diffusers import LCMScheduler, StableDiffusionXLInpaintPipeline

    _isolated_hf_cache(monkeypatch, tmp_path)
    models = tmp_path / "models"
    model_rev, lora_rev = "a" * 40, "b" * 40
    tiny_inpaint_pipeline("sdxl").save_pretrained(weights_dir(models, "tests/tiny-sdxl", model_rev), variant="fp16")
    _tiny_lora("sdxl", weights_dir(models, "tests/tiny-lcm", lora_rev))
    config = scene_config_from_env(
        {
            "MODEL_DIR": str(models),
            "SCENE_MODEL_ID": "tests/tiny-sdxl",
            "SCENE_MODEL_REVISION": model_rev,
            "SCENE_LORA": "lcm",
            "SCENE_LORA_ID": "tests/tiny-lcm",
            "SCENE_LORA_REVISION": lora_rev,
            "SCENE_WORKING_PIXELS": str(WORKING_PIXELS),
            "SCENE_STEPS": "2",
        }
    )
    # The scene stage is the routed pair (tests/test_scene_routing.py); this is its diffusion side.
    generator = load_scene_generator(config, red_matte).diffusion
    assert isinstance(generator, DiffusionSceneGenerator)
    pipe = generator.pipeline
    assert isinstance(pipe, StableDiffusionXLInpaintPipeline)
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32
    base = dict(tiny_inpaint_pipeline("sdxl").unet.named_parameters())
    loaded = dict(pipe.unet.named_parameters())
    assert set(base) == set(loaded), "the LoRA layers were fused and dropped"
    changed = [name for name in base if not torch.equal(base[name], loaded[name])]
    assert changed and all(".attn" in name for name in changed)
    scene = generator(ellipse_request())
    assert scene.background.shape == (157, 203, 3)
    assert scene.facts["scene_model"] == f"tests/tiny-sdxl@{model_rev[:12]}+lcm"
    assert scene.facts["guidance_scale"] == 1.0 and scene.facts["scheduler"] == "lcm"


def test_the_loader_takes_the_sd15_snapshot_without_a_weight_variant(monkeypatch, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline

    _isolated_hf_cache(monkeypatch, tmp_path)
    models = tmp_path / "models"
    tiny_inpaint_pipeline("sd15").save_pretrained(weights_dir(models, "tests/tiny-sd15", "c" * 40))
    config = scene_config_from_env(
        {
            "MODEL_DIR": str(models),
            "SCENE_MODEL": "sd15-inpainting",
            "SCENE_MODEL_ID": "tests/tiny-sd15",
            "SCENE_MODEL_REVISION": "c" * 40,
            "SCENE_SCHEDULER": "ddim",
            "SCENE_WORKING_PIXELS": str(WORKING_PIXELS),
            "SCENE_STEPS": "1",
        }
    )
    generator = load_scene_generator(config).diffusion
    assert isinstance(generator.pipeline, StableDiffusionInpaintPipeline)
    assert type(generator.pipeline.scheduler).__name__ == "DDIMScheduler"
    assert generator(ellipse_request(99, 131)).background.shape == (99, 131, 3)


def test_the_tiny_demo_setting_runs_the_stage_offline_and_warns_that_it_paints_noise(caplog):
    config = scene_config_from_env({"SCENE_MODEL": "tiny-demo", "SCENE_WORKING_PIXELS": "16384"})
    with caplog.at_level(logging.WARNING, logger="gpu_worker.scene.loading"):
        generator = load_scene_generator(config)
    assert "noise" in caplog.text
    assert generator.name == "auto (studio + tiny-demo:sdxl)"
    scene = generator(ellipse_request())
    assert scene.background.shape == (157, 203, 3)
    assert scene.facts["scene_model"] == "tiny-demo:sdxl"


def test_the_worker_config_is_accepted_and_its_model_dir_and_device_are_used(monkeypatch, tmp_path):
    from gpu_worker.config import WorkerConfig
    from gpu_worker.scene import missing_scene_weights
    from gpu_worker.scene.loading import as_scene_config

    _isolated_hf_cache(monkeypatch, tmp_path)
    worker = WorkerConfig(model_dir=tmp_path / "models", device="cpu", env={"SCENE_STEPS": "3"})
    scene_config = as_scene_config(worker)
    assert scene_config.model_dir == tmp_path / "models" and scene_config.device == "cpu"
    # The default routes scene prompts to the sdxl-inpainting preset.
    assert scene_config.steps == 3 and scene_config.model == "auto"
    assert scene_config.diffusion_preset == "sdxl-inpainting"
    assert missing_scene_weights(worker) == [
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1@115134f363124c53c7d878647567d04daf26e41e"
    ]
    demo = WorkerConfig(env={"SCENE_MODEL": "tiny-demo", "SCENE_WORKING_PIXELS": "16384"})
    assert missing_scene_weights(demo) == []
    scene = load_scene_generator(demo, red_matte)(ellipse_request())
    assert scene.facts["scene_generated"] is True


def test_fetch_models_lists_every_download_at_a_pinned_revision():
    default = scene_model_downloads(scene_config_from_env({}))
    ((repo, revision, patterns),) = default
    assert repo == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    assert len(revision) == 40 and int(revision, 16) >= 0
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns
    assert "model_index.json" in patterns
    with_lora = scene_model_downloads(scene_config_from_env({"SCENE_LORA": "lcm"}))
    assert with_lora[1] == (
        "latent-consistency/lcm-lora-sdxl",
        "a18548dd4956b174ec5b0d78d340c8dae0a129cd",
        ["pytorch_lora_weights.safetensors"],
    )
    assert scene_model_downloads(scene_config_from_env({"SCENE_MODEL": "tiny-demo"})) == []


def test_settings_that_cannot_work_are_refused_when_read():
    with pytest.raises(SceneConfigError):
        scene_config_from_env({"SCENE_MODEL": "dall-e"})
    with pytest.raises(SceneConfigError, match="SCENE_LORA_REVISION"):
        scene_config_from_env({"SCENE_LORA": "tcd"})
    with pytest.raises(SceneConfigError):
        scene_config_from_env({"SCENE_STRENGTH": "0.2"})
    with pytest.raises(SceneConfigError):
        scene_config_from_env({"SCENE_VAE_ID": "madebyollin/sdxl-vae-fp16-fix"})
    few_step = scene_config_from_env({"SCENE_LORA": "lcm"})
    assert (few_step.scheduler, few_step.steps, few_step.guidance) == ("lcm", 4, 1.0)
