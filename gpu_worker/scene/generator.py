"""DiffusionSceneGenerator: a new scene painted around a fixed subject by an inpainting model.

Components in, arrays out. The pipeline is any diffusers inpainting pipeline (SD 1.5 or
SDXL, real or tiny) or anything called the same way; the matte function re-mattes the
finished composite for the expansion check. The generator never composes the final image
and never returns the model's pixels inside the subject: part 1's exact composite does
that, with the subject's own pixels.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from gpu_worker.errors import MODEL_UNAVAILABLE, RENDER_FAILED, RenderError
from gpu_worker.light import LightEstimate, estimate_light_direction
from gpu_worker.scene import canvas
from gpu_worker.scene.config import SceneConfig
from gpu_worker.scene.expansion import ExpansionCheck, MatteFn, compose_for_check, measure_expansion, retry_seed
from gpu_worker.scene.prompting import ScenePrompt, build_scene_prompt
from gpu_worker.shadow import ShadowEstimate, estimate_contact_shadow
from gpu_worker.stages import Scene, SceneRequest

log = logging.getLogger(__name__)

ShadowEstimator = Callable[[np.ndarray, np.ndarray], ShadowEstimate]
LightEstimator = Callable[[np.ndarray, np.ndarray], LightEstimate]


def inference_steps_for(steps: int, strength: float) -> int:
    """``num_inference_steps`` such that ``steps`` denoising steps actually run.

    img2img and inpainting pipelines run ``int(num_inference_steps * strength)`` steps, so
    20 steps at strength 0.99 would silently run 19.
    """
    n = max(steps, math.ceil(steps / strength))
    while int(n * strength) < steps:
        n += 1
    return n


@dataclass(frozen=True)
class Attempt:
    seed: int
    background: np.ndarray  # working size, the keep region filled from the scene
    check: ExpansionCheck | None  # None: no matte function, no check

    @property
    def growth(self) -> float | None:
        return None if self.check is None else self.check.growth

    @property
    def check_state(self) -> str:
        if self.check is None:
            return "off"
        return f"skipped: {self.check.skipped}" if self.check.skipped else "measured"


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _generator_device(pipeline: Any) -> torch.device:
    device = getattr(pipeline, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


class DiffusionSceneGenerator:
    """Paints the scene around ``request.alpha`` and carries the contact shadow.

    ``pipeline``: a diffusers inpainting pipeline (or a stand-in with the same call).
    ``config``: steps, guidance, strength, sizes, thresholds (see SceneConfig).
    ``matte_fn``: re-mattes a composite for the expansion check; None turns the check off.
    """

    def __init__(
        self,
        pipeline: Any,
        config: SceneConfig,
        matte_fn: MatteFn | None = None,
        *,
        name: str | None = None,
        shadow_estimator: ShadowEstimator = estimate_contact_shadow,
        light_estimator: LightEstimator = estimate_light_direction,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.matte_fn = matte_fn
        self.name = name or config.name
        self.shadow_estimator = shadow_estimator
        self.light_estimator = light_estimator

    def _paint(self, prompt: ScenePrompt, init: Image.Image, mask: Image.Image, size, seed: int) -> np.ndarray:
        cfg = self.config
        h, w = size
        kwargs: dict[str, Any] = dict(
            prompt=prompt.prompt,
            negative_prompt=prompt.negative_prompt or None,
            image=init,
            mask_image=mask,
            height=h,
            width=w,
            strength=cfg.strength,
            num_inference_steps=inference_steps_for(cfg.steps, cfg.strength),
            guidance_scale=cfg.guidance,
            generator=torch.Generator(device=_generator_device(self.pipeline)).manual_seed(seed),
            output_type="np",
        )
        if cfg.scheduler == "tcd":
            kwargs["eta"] = cfg.tcd_eta  # TCD's gamma: how much fresh noise each step adds
        with torch.inference_mode():
            result = self.pipeline(**kwargs)
        painted = np.asarray(result.images[0], dtype=np.float32)
        if painted.shape != (h, w, 3):
            raise RuntimeError(f"scene pipeline returned {painted.shape}, asked for {(h, w, 3)}")
        if not np.isfinite(painted).all():
            # fp16 overflow (SDXL's VAE is the known case) gives NaN: cast to 8 bits it
            # would be a black or garbage scene, delivered and charged as a success.
            raise RenderError(RENDER_FAILED, "the scene model produced non-finite pixels (NaN or inf); "
                              "SCENE_DTYPE=bfloat16 or an fp16-safe VAE (SCENE_VAE_ID) avoids fp16 overflow")
        return painted

    def _attempts(self, prompt: ScenePrompt, seed: int, alpha_w, foreground_w, timings) -> list[Attempt]:
        """Paints with the requested seed, and again with derived seeds while it expands."""
        cfg = self.config
        size = alpha_w.shape
        keep = canvas.keep_region(alpha_w, cfg.mask_dilate_px)
        mask = Image.fromarray(canvas.repaint_mask(keep), mode="L")
        init = Image.fromarray(np.round(canvas.neutral_canvas(size) * 255).astype(np.uint8), mode="RGB")
        attempts: list[Attempt] = []
        for number in range(cfg.max_attempts):
            attempt_seed = retry_seed(seed, number)
            with _timed(timings, "generate_s"):
                painted = self._paint(prompt, init, mask, size, attempt_seed)
            with _timed(timings, "fill_s"):
                # Behind the fringe goes the scene extended inwards, not the model's grey.
                background_w = canvas.fill_from_known(painted, ~keep)
            if self.matte_fn is None:
                return [Attempt(attempt_seed, background_w, None)]
            with _timed(timings, "expansion_s"):
                composite = compose_for_check(alpha_w, foreground_w, background_w)
                check = measure_expansion(composite, alpha_w, self.matte_fn)
            attempts.append(Attempt(attempt_seed, background_w, check))
            if check.growth is None or check.growth <= cfg.expansion_threshold:
                break
            log.info("scene expansion %.3f over %.3f with seed %d", check.growth, cfg.expansion_threshold,
                     attempt_seed)
        return attempts

    def __call__(self, request: SceneRequest) -> Scene:
        cfg = self.config
        timings: dict[str, float] = {}
        height, width = request.alpha.shape
        seed = int(request.seed) if request.seed is not None else secrets.randbelow(1 << 31)

        with _timed(timings, "light_s"):
            light = self.light_estimator(request.image, request.alpha)
            prompt = build_scene_prompt(request.prompt, light.direction, cfg.negative_prompt)

        size = canvas.working_size(height, width, cfg.working_pixels)
        alpha_w = canvas.resize_alpha(request.alpha, size)
        foreground_w = canvas.resize_image(request.foreground, size)
        attempts = self._attempts(prompt, seed, alpha_w, foreground_w, timings)
        # Attempts stop at the first within the threshold, so the least grown is that one,
        # or the best of a bad lot (flagged in the facts). Unmeasured means a single attempt.
        used = min(attempts, key=lambda a: a.growth if a.growth is not None else 0.0)

        with _timed(timings, "upscale_s"):
            background = canvas.to_source_size(used.background, height, width)

        shadow = None
        shadow_facts: dict = {"carried": False, "reason": "not_requested"}
        if request.preserve_shadow:
            with _timed(timings, "shadow_s"):
                estimate = self.shadow_estimator(request.image, request.alpha)
            shadow_facts = estimate.facts
            shadow = estimate.multiplier if estimate.carried else None

        measured = [a.growth for a in attempts if a.growth is not None]
        facts = {
            "scene_generated": True,
            "scene_model": self.name,
            # The requested seed reproduces the render (retries are derived from it);
            # scene_seed says which attempt's noise painted this scene.
            "requested_seed": seed,
            "scene_seed": used.seed,
            "attempts": len(attempts),
            "expansion": _rounded(used.growth),
            "expansion_threshold": cfg.expansion_threshold,
            "expansion_by_attempt": [_rounded(a.growth) for a in attempts],
            "expansion_exceeded": bool(measured) and min(measured) > cfg.expansion_threshold,
            "expansion_check": used.check_state,
            "light_direction": light.direction,
            "light": light.as_facts(),
            "prompt": prompt.prompt,
            "negative_prompt": prompt.negative_prompt,
            "light_hint_added": prompt.light_hint is not None,
            "scene_canvas": [size[1], size[0]],
            "steps": cfg.steps,
            "guidance_scale": cfg.guidance,
            "strength": cfg.strength,
            "scheduler": cfg.scheduler,
            "shadow": shadow_facts,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
        }
        return Scene(background=background, shadow=shadow, facts=facts)


class UnavailableSceneGenerator:
    """Stands in when the scene model's weights are missing: the worker still starts, and
    each render fails with ``model_unavailable`` (no charge) instead of a crash at boot."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def __call__(self, request: SceneRequest) -> Scene:
        raise RenderError(MODEL_UNAVAILABLE, f"scene model {self.name} is not available: {self.reason}")
