"""Loading the configured scene model: local model directory first, then the Hugging Face cache.

Weights live at ``MODEL_DIR/<owner>/<name>/<revision>/`` (what :func:`fetch_scene_models`
writes), so a change of pinned revision can never load stale files. A snapshot already
in the Hugging Face cache at the pinned revision works too. Nothing is downloaded at
worker start unless ``SCENE_DOWNLOAD=1``: a GPU worker that pulls 7 GB on boot surprises
whoever runs it, and ``python -m gpu_worker fetch-models`` is the explicit way.

The scene stage is always the routed pair (``gpu_worker.scene.routing``): the studio
engine, which needs no weights, and the configured diffusion model. Missing diffusion
weights are not a crash and not an error: :func:`load_scene_generator` logs at WARNING
which are missing, studio prompts render at once, and scene prompts fail with
``model_unavailable`` and a message that says what to install.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gpu_worker.scene.config import SceneConfig, scene_config_from_env
from gpu_worker.scene.expansion import MatteFn
from gpu_worker.scene.routing import STUDIO_EXAMPLES, RoutedSceneGenerator
from gpu_worker.scene.studio import StudioSceneGenerator
from gpu_worker.stages import SceneGenerator

log = logging.getLogger(__name__)

# What an SDXL / SD 1.5 inpainting snapshot needs; the SDXL list takes only the fp16
# variant files (7 GB instead of 14). The SD 1.5 revision has no safetensors for unet
# and vae, so its patterns take whatever weight file each folder has.
_SDXL_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "tokenizer_2/*",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "unet/config.json",
    "vae/config.json",
]
_SD15_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/*",
    "unet/*",
    "vae/*",
]
_VAE_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]


@dataclass(frozen=True)
class WeightsSource:
    """Where one set of weights was found: a local folder, or a repo id in the HF cache."""

    repo_id: str
    revision: str
    path: Path | None  # set when found under MODEL_DIR
    in_hf_cache: bool

    @property
    def found(self) -> bool:
        return self.path is not None or self.in_hf_cache

    def describe(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def weights_dir(model_dir: Path, repo_id: str, revision: str) -> Path:
    return Path(model_dir) / repo_id / revision


def _pipeline_patterns(config: SceneConfig) -> list[str]:
    if config.family == "sd15":
        return list(_SD15_PATTERNS)
    suffix = f".{config.variant}" if config.variant else ""
    return _SDXL_PATTERNS + [
        f"text_encoder/model{suffix}.safetensors",
        f"text_encoder_2/model{suffix}.safetensors",
        f"unet/diffusion_pytorch_model{suffix}.safetensors",
        f"vae/diffusion_pytorch_model{suffix}.safetensors",
    ]


def scene_model_downloads(config: Any = None) -> list[tuple[str, str, list[str]]]:
    """(repo_id, revision, allow_patterns) for everything the configured scene model needs.

    For ``python -m gpu_worker fetch-models``; empty for the tiny demo and for
    ``SCENE_MODEL=studio``, which need nothing.
    ``config``: a SceneConfig, the worker's config, or None for the environment.
    """
    config = as_scene_config(config)
    if config.is_demo or config.studio_only:
        return []
    downloads = [(config.model_id, config.model_revision, _pipeline_patterns(config))]
    if config.lora != "none":
        downloads.append((config.lora_id, config.lora_revision, [config.lora_weight_name]))
    if config.vae_id:
        downloads.append((config.vae_id, config.vae_revision, list(_VAE_PATTERNS)))
    return downloads


def fetch_scene_models(config: Any = None) -> list[Path]:
    """Downloads :func:`scene_model_downloads` into ``MODEL_DIR`` at the pinned revisions."""
    from huggingface_hub import snapshot_download

    config = as_scene_config(config)
    paths = []
    for repo_id, revision, patterns in scene_model_downloads(config):
        target = weights_dir(config.model_dir, repo_id, revision)
        log.info("fetching %s@%s into %s", repo_id, revision, target)
        snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_dir=str(target))
        paths.append(target)
    return paths


def locate(model_dir: Path, repo_id: str, revision: str, marker: str) -> WeightsSource:
    """Finds ``marker`` (a file every complete snapshot has) locally or in the HF cache."""
    local = weights_dir(model_dir, repo_id, revision)
    if (local / marker).is_file():
        return WeightsSource(repo_id, revision, local, False)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, marker, revision=revision)
    return WeightsSource(repo_id, revision, None, isinstance(cached, str))


def required_weights(config: SceneConfig) -> list[WeightsSource]:
    sources = [locate(config.model_dir, config.model_id, config.model_revision, "model_index.json")]
    if config.lora != "none":
        sources.append(locate(config.model_dir, config.lora_id, config.lora_revision, config.lora_weight_name))
    if config.vae_id:
        sources.append(locate(config.model_dir, config.vae_id, config.vae_revision, "config.json"))
    return sources


def as_scene_config(config: Any = None) -> SceneConfig:
    """A SceneConfig from itself, from the environment (None), or from the worker's config.

    The worker's config (gpu_worker.config.WorkerConfig) carries the raw environment for
    stages configured elsewhere; its model directory and device are the worker's, shared
    by every stage. SCENE_DEVICE, when set, still wins for the scene model.
    """
    if config is None:
        return scene_config_from_env()
    if isinstance(config, SceneConfig):
        return config
    env = dict(getattr(config, "env", None) or {})
    scene = scene_config_from_env(env)
    changes: dict[str, Any] = {}
    if getattr(config, "model_dir", None) is not None:
        changes["model_dir"] = Path(config.model_dir)
    if not env.get("SCENE_DEVICE") and getattr(config, "device", None):
        changes["device"] = str(config.device)
    return replace(scene, **changes)


def missing_scene_weights(config: Any = None) -> list[str]:
    """``repo@revision`` of each scene weight set not installed; empty for the tiny demo
    and for ``SCENE_MODEL=studio``."""
    config = as_scene_config(config)
    if config.is_demo or config.studio_only:
        return []
    return [s.describe() for s in required_weights(config) if not s.found]


def select_device(config: SceneConfig) -> tuple[torch.device, torch.dtype]:
    """CUDA when present (or asked for), else CPU; SCENE_DTYPE, or fp16 on CUDA and fp32 on CPU."""
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if config.dtype != "auto":
        return device, getattr(torch, config.dtype)
    return device, (torch.float16 if device.type == "cuda" else torch.float32)


def apply_inference_options(pipe: Any, config: SceneConfig, device: torch.device) -> Any:
    """The attention kernel, memory layout, VAE tiling and compilation SCENE_* ask for.

    One function for the worker and for ``bench/gpu_cost.py``, so the bench measures the
    options exactly as the worker applies them. Compilation is CUDA-only: on a CPU it
    would cost minutes per canvas shape for no gain worth having.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0() if config.attention == "sdpa" else AttnProcessor())
    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if config.vae_tiling:
        pipe.vae.enable_tiling()
    if config.compile_unet and device.type == "cuda":
        pipe.unet = torch.compile(pipe.unet, mode=config.compile_mode, fullgraph=True)
    return pipe


def _from_pretrained_args(source: WeightsSource, download: bool) -> tuple[str, dict[str, Any]]:
    if source.path is not None:
        return str(source.path), {}
    return source.repo_id, {"revision": source.revision, "local_files_only": not download}


def make_scheduler(name: str, current: Any) -> Any:
    """The scheduler called ``name``, built from the model's own scheduler config."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        LCMScheduler,
        TCDScheduler,
    )

    classes = {
        "euler": EulerDiscreteScheduler,
        "euler_a": EulerAncestralDiscreteScheduler,
        "dpmpp_2m": DPMSolverMultistepScheduler,
        "ddim": DDIMScheduler,
        "lcm": LCMScheduler,
        "tcd": TCDScheduler,
    }
    if name == "default":
        return current
    return classes[name].from_config(current.config)


def load_inpainting_pipeline(
    config: SceneConfig, device: torch.device, dtype: torch.dtype, download: bool = False
) -> Any:
    """The configured real pipeline, LoRA fused, scheduler set, on ``device``."""
    from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    sources = required_weights(config)
    if not download:
        missing = [s.describe() for s in sources if not s.found]
        if missing:
            raise FileNotFoundError("missing weights: " + ", ".join(missing))
    model, *rest = sources
    target, extra = _from_pretrained_args(model, download)
    kwargs: dict[str, Any] = {"dtype": dtype, **extra}
    if config.variant:
        kwargs["variant"] = config.variant
    if config.vae_id:
        vae_source = next(s for s in rest if s.repo_id == config.vae_id)
        vae_target, vae_extra = _from_pretrained_args(vae_source, download)
        kwargs["vae"] = AutoencoderKL.from_pretrained(vae_target, dtype=dtype, **vae_extra)
    if config.family == "sdxl":
        pipe = StableDiffusionXLInpaintPipeline.from_pretrained(target, **kwargs)
    else:
        # Backgrounds for a paid API: moderation belongs in front of the prompt, not in a
        # classifier that blacks out finished images after the GPU time is spent.
        pipe = StableDiffusionInpaintPipeline.from_pretrained(
            target, safety_checker=None, requires_safety_checker=False, feature_extractor=None, **kwargs
        )
    if config.lora != "none":
        lora_source = next(s for s in rest if s.repo_id == config.lora_id)
        lora_target, lora_extra = _from_pretrained_args(lora_source, download)
        pipe.load_lora_weights(
            lora_target, weight_name=config.lora_weight_name, adapter_name="few_step", **lora_extra
        )
        # Fused into the UNet's weights, then the adapter layers dropped: no per-step LoRA cost.
        pipe.fuse_lora(lora_scale=1.0)
        pipe.unload_lora_weights()
    pipe.scheduler = make_scheduler(config.scheduler, pipe.scheduler)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return apply_inference_options(pipe, config, device)


def _studio_examples() -> str:
    return " or ".join(f'"{example}"' for example in STUDIO_EXAMPLES)


def diffusion_unavailable_reason(config: SceneConfig, problem: str) -> str:
    """What a scene prompt's ``model_unavailable`` says: the problem, then the way out."""
    return (
        f"{problem}. Install the {config.diffusion_label} weights into MODEL_DIR with "
        "`python -m gpu_worker fetch-models`, or set SCENE_MODEL=tiny-demo for noise scenes. "
        f"Studio prompts work now, e.g. {_studio_examples()}."
    )


def load_scene_generator(config: Any = None, matte_fn: MatteFn | None = None) -> SceneGenerator:
    """The worker's scene stage, built once at start; never raises for missing weights.

    The studio engine for plain-backdrop prompts and the diffusion model for the rest,
    routed per prompt. The diffusion side is the real model when its weights are
    installed, the tiny untrained models with ``SCENE_MODEL=tiny-demo`` (noise), and
    otherwise a stand-in that fails each scene prompt with ``model_unavailable``.
    ``SCENE_MODEL=studio`` loads no diffusion model at all. The name says which, for the
    logs: "auto (studio + sdxl-inpainting: missing weights)".
    ``config``: a SceneConfig, the worker's config, or None for the environment.
    """
    from gpu_worker.scene.generator import UnavailableSceneGenerator

    config = as_scene_config(config)
    studio = StudioSceneGenerator()
    if config.studio_only:
        log.info("SCENE_MODEL=studio: studio backdrops only; prompts that describe a scene "
                 "fail with model_unavailable")
        reason = (
            "this worker runs SCENE_MODEL=studio (studio backdrops only). For scene prompts set "
            f"SCENE_MODEL=auto and install the {config.diffusion_preset} weights into MODEL_DIR "
            "with `python -m gpu_worker fetch-models`, or set SCENE_MODEL=tiny-demo for noise "
            f"scenes. Studio prompts work now, e.g. {_studio_examples()}."
        )
        return RoutedSceneGenerator(studio, UnavailableSceneGenerator("diffusion", reason),
                                    name="studio (diffusion off)")
    diffusion, problem = load_diffusion_generator(config, matte_fn)
    status = f": {problem}" if problem else ""
    return RoutedSceneGenerator(studio, diffusion,
                                name=f"auto (studio + {config.diffusion_label}{status})")


def load_diffusion_generator(
    config: SceneConfig, matte_fn: MatteFn | None = None
) -> tuple[SceneGenerator, str | None]:
    """The configured diffusion generator, and None or what is wrong with it.

    The problem is "missing weights" or "failed to load"; the generator is then a
    stand-in whose renders fail with ``model_unavailable`` and say what to do.
    """
    from gpu_worker.scene.generator import DiffusionSceneGenerator, UnavailableSceneGenerator

    label = config.diffusion_label
    if config.is_demo:
        from gpu_worker.scene.tiny import tiny_inpaint_pipeline

        log.warning(
            "SCENE_MODEL=tiny-demo: the scene model is a tiny UNTRAINED network; every generated "
            "background is noise. Set SCENE_MODEL=auto and fetch weights for real scenes "
            "(studio backdrops are real either way)."
        )
        return DiffusionSceneGenerator(tiny_inpaint_pipeline(config.family), config, matte_fn), None

    missing = [s.describe() for s in required_weights(config) if not s.found]
    if missing and not config.download:
        # A worker without a scene model is a studio-only worker, not a broken one.
        log.warning(
            "diffusion scene model weights missing: %s (looked in %s and the Hugging Face cache). "
            "Studio prompts work now; scene prompts need `python -m gpu_worker fetch-models` "
            "(or SCENE_MODEL=tiny-demo for noise scenes) and fail with model_unavailable until then.",
            ", ".join(missing),
            config.model_dir,
        )
        reason = diffusion_unavailable_reason(
            config, "its weights are not installed (" + ", ".join(missing) + ")")
        return UnavailableSceneGenerator(label, reason), "missing weights"

    device, dtype = select_device(config)
    started = time.perf_counter()
    try:
        pipe = load_inpainting_pipeline(config, device, dtype, download=config.download)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:  # partial snapshots, OOM, no peft
        log.exception("scene model %s failed to load; studio prompts still work", config.name)
        reason = diffusion_unavailable_reason(config, f"it failed to load: {exc}")
        return UnavailableSceneGenerator(label, reason), "failed to load"
    log.info(
        "scene model %s loaded on %s (%s), scheduler %s, %d steps, guidance %.1f in %.1fs",
        config.name,
        device,
        str(dtype).replace("torch.", ""),
        type(pipe.scheduler).__name__,
        config.steps,
        config.guidance,
        time.perf_counter() - started,
    )
    generator = DiffusionSceneGenerator(pipe, config, matte_fn)
    if config.compile_unet and device.type == "cuda":
        _warm_up(generator)
    return generator, None


def _warm_up(generator) -> None:
    """One render at start, so torch.compile's minutes land at boot, not on a customer's call."""
    import numpy as np

    from gpu_worker.stages import SceneRequest

    size = 256
    alpha = np.zeros((size, size), np.float32)
    alpha[64:192, 96:160] = 1.0
    image = np.full((size, size, 3), 200, np.uint8)
    started = time.perf_counter()
    generator(SceneRequest(image, alpha, image / 255.0, "warm-up", 0, False))
    log.info("scene model compiled and warmed up in %.1fs", time.perf_counter() - started)
