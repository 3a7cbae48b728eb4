"""Scene-generation settings, read from the environment (the README's Configuration table).

``SCENE_MODEL`` picks the scene stage:

* ``auto`` (the default): the studio engine for plain-backdrop prompts and the default
  diffusion preset (``sdxl-inpainting``) for the rest, chosen per prompt by
  ``gpu_worker.scene.routing``. Without the diffusion weights the studio prompts still
  render; the others fail with ``model_unavailable`` and say what to install;
* a diffusion preset (``sdxl-inpainting``, ``sd15-inpainting``): the same routing, with
  that model for the scene prompts;
* ``studio``: the studio engine only; scene prompts fail with ``model_unavailable``;
* ``tiny-demo``: routing with tiny untrained networks built in-process for the scene
  prompts, so the whole platform runs offline (those scenes are noise by construction).

A preset per model family pins the repository and the revision, so a deployment that sets
nothing gets SDXL inpainting 0.1 at a known commit. Every field can be overridden one by
one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "var" / "models"

TINY_DEMO = "tiny-demo"
AUTO = "auto"
STUDIO = "studio"
DEFAULT_SCENE_MODEL = AUTO
# The diffusion preset ``auto`` routes scene prompts to.
DEFAULT_DIFFUSION_PRESET = "sdxl-inpainting"

DEFAULT_NEGATIVE_PROMPT = (
    "extra objects, additional products, duplicate product, text, letters, caption, "
    "watermark, logo, signature, border, frame, blurry, low quality, distorted"
)


@dataclass(frozen=True)
class ModelPreset:
    family: str  # "sdxl" or "sd15": picks the pipeline class and the tiny twin
    repo_id: str
    revision: str
    variant: str | None  # weight-file variant to fetch and load ("fp16" halves the download)
    scheduler: str
    steps: int
    guidance: float


@dataclass(frozen=True)
class LoraPreset:
    """A few-step distillation LoRA. ``revision`` empty means: the operator must pin one."""

    repo_id: str
    revision: str
    weight_name: str
    scheduler: str
    steps: int
    guidance: float


MODEL_PRESETS: dict[str, ModelPreset] = {
    # openrail++; the model card recommends 15-30 steps, guidance 8 and strength 0.99.
    "sdxl-inpainting": ModelPreset(
        family="sdxl",
        repo_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        revision="115134f363124c53c7d878647567d04daf26e41e",
        variant="fp16",
        scheduler="default",
        steps=20,
        guidance=8.0,
    ),
    # The lighter option (512 px native, about a third of SDXL's UNet cost per pixel).
    # This revision ships unet and vae as fp32 .bin only, hence no variant.
    "sd15-inpainting": ModelPreset(
        family="sd15",
        repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting",
        revision="8a4288a76071f7280aedbdb3253bdb9e9d5d84bb",
        variant=None,
        scheduler="default",
        steps=20,
        guidance=7.5,
    ),
}

# Guidance 1.0 switches classifier-free guidance off: half the UNet work per step.
LORA_PRESETS: dict[tuple[str, str], LoraPreset] = {
    ("sdxl", "lcm"): LoraPreset(
        "latent-consistency/lcm-lora-sdxl",
        "a18548dd4956b174ec5b0d78d340c8dae0a129cd",
        "pytorch_lora_weights.safetensors",
        "lcm",
        4,
        1.0,
    ),
    ("sd15", "lcm"): LoraPreset(
        "latent-consistency/lcm-lora-sdv1-5", "", "pytorch_lora_weights.safetensors", "lcm", 4, 1.0
    ),
    ("sdxl", "tcd"): LoraPreset(
        "h1t/TCD-SDXL-LoRA", "", "pytorch_lora_weights.safetensors", "tcd", 4, 1.0
    ),
    ("sd15", "tcd"): LoraPreset(
        "h1t/TCD-SD15-LoRA", "", "pytorch_lora_weights.safetensors", "tcd", 4, 1.0
    ),
}

SCHEDULERS = ("default", "euler", "euler_a", "dpmpp_2m", "ddim", "lcm", "tcd")
DTYPES = ("auto", "float16", "bfloat16", "float32")
ATTENTION = ("sdpa", "classic")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class SceneConfigError(ValueError):
    """A setting that cannot work; raised when the config is read, before any model loads."""


@dataclass(frozen=True)
class SceneConfig:
    """Everything the scene stage needs to know; built by :func:`scene_config_from_env`."""

    model: str = DEFAULT_SCENE_MODEL  # AUTO, STUDIO, a preset name or TINY_DEMO
    family: str = "sdxl"
    model_id: str = MODEL_PRESETS["sdxl-inpainting"].repo_id
    model_revision: str = MODEL_PRESETS["sdxl-inpainting"].revision
    variant: str | None = "fp16"
    lora: str = "none"  # "none", "lcm" or "tcd"
    lora_id: str = ""
    lora_revision: str = ""
    lora_weight_name: str = ""
    vae_id: str = ""  # optional replacement VAE, e.g. an fp16-safe SDXL VAE
    vae_revision: str = ""
    scheduler: str = "default"
    steps: int = 20  # denoising steps actually run (strength is accounted for)
    guidance: float = 8.0
    strength: float = 0.99
    tcd_eta: float = 0.3
    working_pixels: int = 1024 * 1024
    mask_dilate_px: int = 6  # at working resolution
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    expansion_threshold: float = 0.05
    max_attempts: int = 2
    model_dir: Path = field(default=DEFAULT_MODEL_DIR)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"...
    download: bool = False  # let from_pretrained reach the Hub at load time
    # torch.compile on the UNet (CUDA only). Each new canvas shape (aspect ratio) compiles
    # once, for minutes; worth it on a worker that serves a few fixed aspect ratios.
    compile_unet: bool = False
    compile_mode: str = "max-autotune"
    # Inference options bench/gpu_cost.py measures on and off (see the README's GPU cost
    # section): the networks' dtype on CUDA, the attention kernel, the UNet's memory
    # layout, and VAE tiling (less peak memory for large canvases, a little slower).
    dtype: str = "auto"  # "auto" (fp16 on CUDA, fp32 on CPU), "float16", "bfloat16", "float32"
    attention: str = "sdpa"  # "sdpa" (torch's fused kernels) or "classic" (diffusers' matmul path)
    channels_last: bool = False
    vae_tiling: bool = False

    @property
    def is_demo(self) -> bool:
        return self.model == TINY_DEMO

    @property
    def studio_only(self) -> bool:
        """No diffusion model at all: nothing to fetch, scene prompts refused."""
        return self.model == STUDIO

    @property
    def diffusion_preset(self) -> str:
        """The preset the scene prompts use (``auto`` means the default preset)."""
        return DEFAULT_DIFFUSION_PRESET if self.model in (AUTO, STUDIO) else self.model

    @property
    def diffusion_label(self) -> str:
        """Short name of the diffusion model for logs: the preset, unless overridden."""
        if self.is_demo:
            return self.name
        preset = MODEL_PRESETS[self.diffusion_preset]
        if (self.model_id, self.model_revision, self.lora) == (preset.repo_id, preset.revision, "none"):
            return self.diffusion_preset
        return self.name

    @property
    def name(self) -> str:
        if self.is_demo:
            return f"{TINY_DEMO}:{self.family}"
        suffix = f"+{self.lora}" if self.lora != "none" else ""
        return f"{self.model_id}@{self.model_revision[:12]}{suffix}"


def _get(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw.strip() if raw is not None and raw.strip() != "" else None


def _bool(raw: str) -> bool:
    return raw.lower() in {"1", "true", "yes", "on"}


def scene_config_from_env(env: Mapping[str, str] | None = None) -> SceneConfig:
    """Reads ``SCENE_*`` and ``MODEL_DIR``; unknown names fail here, not at the first render."""
    env = os.environ if env is None else env
    model = _get(env, "SCENE_MODEL") or DEFAULT_SCENE_MODEL
    demo_family = _get(env, "SCENE_DEMO_FAMILY") or "sdxl"
    if model == TINY_DEMO:
        if demo_family not in ("sdxl", "sd15"):
            raise SceneConfigError("SCENE_DEMO_FAMILY must be 'sdxl' or 'sd15'")
        preset = replace(MODEL_PRESETS["sdxl-inpainting"], family=demo_family, steps=2, guidance=7.5)
    elif model in (AUTO, STUDIO):
        # STUDIO loads no diffusion model; its fields are the default preset's, unused.
        preset = MODEL_PRESETS[DEFAULT_DIFFUSION_PRESET]
    elif model in MODEL_PRESETS:
        preset = MODEL_PRESETS[model]
    else:
        known = ", ".join([AUTO, STUDIO, *MODEL_PRESETS, TINY_DEMO])
        raise SceneConfigError(f"SCENE_MODEL={model!r} is not one of: {known}")

    lora = (_get(env, "SCENE_LORA") or "none").lower()
    if model == STUDIO and lora != "none":
        raise SceneConfigError("SCENE_LORA needs a diffusion model; SCENE_MODEL=studio loads none")
    lora_preset: LoraPreset | None = None
    if lora != "none":
        lora_preset = LORA_PRESETS.get((preset.family, lora))
        if lora_preset is None:
            raise SceneConfigError(f"SCENE_LORA={lora!r}: expected none, lcm or tcd")
    if model == TINY_DEMO and lora_preset is not None:
        raise SceneConfigError("SCENE_LORA needs real weights; the tiny demo has none to distil")

    scheduler = _get(env, "SCENE_SCHEDULER") or (lora_preset.scheduler if lora_preset else preset.scheduler)
    if scheduler not in SCHEDULERS:
        raise SceneConfigError(f"SCENE_SCHEDULER={scheduler!r} is not one of: {', '.join(SCHEDULERS)}")

    def number(name: str, default: float, cast=float):
        raw = _get(env, name)
        try:
            return cast(raw) if raw is not None else default
        except ValueError as exc:
            raise SceneConfigError(f"{name}={raw!r} is not a number") from exc

    steps = number("SCENE_STEPS", lora_preset.steps if lora_preset else preset.steps, int)
    strength = number("SCENE_STRENGTH", 0.99)
    # Each family at its training size: SD 1.5 painted at 1 MP repeats its scene in tiles.
    native_pixels = 512 * 512 if preset.family == "sd15" and model != TINY_DEMO else 1024 * 1024
    working_pixels = number("SCENE_WORKING_PIXELS", native_pixels, int)
    if steps < 1:
        raise SceneConfigError("SCENE_STEPS must be at least 1")
    if not 0.5 <= strength <= 1.0:
        raise SceneConfigError("SCENE_STRENGTH must be within 0.5..1.0 (a new scene, not an edit)")
    if working_pixels < 64 * 64:
        raise SceneConfigError("SCENE_WORKING_PIXELS must be at least 4096")

    variant_raw = _get(env, "SCENE_VARIANT")
    variant = preset.variant if variant_raw is None else (None if variant_raw == "none" else variant_raw)

    lora_revision = _get(env, "SCENE_LORA_REVISION") or (lora_preset.revision if lora_preset else "")
    if lora_preset is not None and not lora_revision:
        raise SceneConfigError(
            f"SCENE_LORA={lora} for {preset.family} has no pinned revision here: set SCENE_LORA_REVISION "
            "to the commit you have checked (weights are always loaded at a pinned revision)"
        )
    vae_id = _get(env, "SCENE_VAE_ID") or ""
    vae_revision = _get(env, "SCENE_VAE_REVISION") or ""
    if vae_id and not vae_revision:
        raise SceneConfigError("SCENE_VAE_ID needs SCENE_VAE_REVISION (a pinned commit)")

    def one_of(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = _get(env, name) or default
        if value not in allowed:
            raise SceneConfigError(f"{name}={value!r} is not one of: {', '.join(allowed)}")
        return value

    return SceneConfig(
        model=model,
        family=preset.family,
        model_id=_get(env, "SCENE_MODEL_ID") or preset.repo_id,
        model_revision=_get(env, "SCENE_MODEL_REVISION") or preset.revision,
        variant=variant,
        lora=lora,
        lora_id=(_get(env, "SCENE_LORA_ID") or (lora_preset.repo_id if lora_preset else "")),
        lora_revision=lora_revision,
        lora_weight_name=(
            _get(env, "SCENE_LORA_WEIGHT_NAME") or (lora_preset.weight_name if lora_preset else "")
        ),
        vae_id=vae_id,
        vae_revision=vae_revision,
        scheduler=scheduler,
        steps=steps,
        guidance=number("SCENE_GUIDANCE", lora_preset.guidance if lora_preset else preset.guidance),
        strength=strength,
        tcd_eta=number("SCENE_TCD_ETA", 0.3),
        working_pixels=working_pixels,
        mask_dilate_px=number("SCENE_MASK_DILATE_PX", 6, int),
        negative_prompt=env.get("SCENE_NEGATIVE_PROMPT", DEFAULT_NEGATIVE_PROMPT),
        expansion_threshold=number("SCENE_EXPANSION_THRESHOLD", 0.05),
        max_attempts=max(1, number("SCENE_MAX_ATTEMPTS", 2, int)),
        model_dir=Path(_get(env, "MODEL_DIR") or DEFAULT_MODEL_DIR),
        device=_get(env, "SCENE_DEVICE") or "auto",
        download=_bool(_get(env, "SCENE_DOWNLOAD") or "0"),
        compile_unet=_bool(_get(env, "SCENE_COMPILE") or "0"),
        compile_mode=one_of("SCENE_COMPILE_MODE", "max-autotune", COMPILE_MODES),
        dtype=one_of("SCENE_DTYPE", "auto", DTYPES),
        attention=one_of("SCENE_ATTENTION", "sdpa", ATTENTION),
        channels_last=_bool(_get(env, "SCENE_CHANNELS_LAST") or "0"),
        vae_tiling=_bool(_get(env, "SCENE_VAE_TILING") or "0"),
    )
