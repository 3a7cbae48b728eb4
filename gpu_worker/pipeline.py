"""The replace-background pipeline: matting, then the scene, then the exact composite.

Arrays in, arrays out: storage, encoding and job bookkeeping live in `tasks`. The two
components are explicit so that each can be swapped (the scene stage is a plain
background until scene generation is configured; see `models.build_scene_generator`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from gpu_worker.composite import compose
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.shadow_policy import ShadowDecision, decide
from gpu_worker.stages import Scene, SceneGenerator, SceneRequest

StageCallback = Callable[[str], None]


@dataclass
class RenderOutput:
    """One render's pixels and what the customer is told about them.

    ``subject``, ``scene``, ``shadow`` and ``light`` are the public result's parts
    (small and stable, documented in the OpenAPI schema); ``diagnostics`` holds every
    other fact the stages reported, for logs and staff pages only.
    """

    image: np.ndarray  # HxWx3 uint8 final composite
    alpha: np.ndarray  # HxW uint8 matte, exactly what the composite used
    seed: int
    scene_generated: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    subject: dict[str, Any] = field(default_factory=dict)  # bbox, coverage
    engine: dict[str, str] = field(default_factory=dict)
    scene: dict[str, Any] = field(default_factory=dict)  # engine, prompt, seed
    shadow: dict[str, Any] | None = None  # state, strength
    light: dict[str, Any] | None = None  # direction, confidence
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Renderer(Protocol):
    """Anything that turns a source image and a prompt into a `RenderOutput`."""

    def __call__(self, image: np.ndarray, prompt: str, seed: int, preserve_shadow: bool,
                 on_stage: StageCallback | None = None) -> RenderOutput: ...


def subject_facts(alpha: np.ndarray) -> dict[str, Any]:
    """The public facts about the subject: its pixel bbox and its share of the image."""
    solid = alpha >= 0.5
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    bbox = ([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
            if rows.size else None)
    return {
        "bbox": bbox,  # [x0, y0, x1, y1], x1/y1 exclusive
        "coverage": round(float(alpha.mean()), 4),
    }


def matte_diagnostics(alpha: np.ndarray) -> dict[str, Any]:
    """How much of the image is fully opaque and how much is edge (for staff)."""
    return {
        "opaque_share": round(float(np.mean(alpha >= 1.0)), 4),
        "edge_share": round(float(np.mean((alpha > 0) & (alpha < 1))), 4),
    }


def public_light(facts: dict[str, Any]) -> dict[str, Any] | None:
    """The light direction a scene was painted with, and how sure its estimate was."""
    light = facts.get("light")
    if not isinstance(light, dict) or "direction" not in light:
        return None
    confidence = light.get("confidence")
    return {"direction": light["direction"],
            "confidence": round(float(confidence), 3) if isinstance(confidence, (int, float)) else None}


class ReplaceBackgroundPipeline:
    """matting -> scene -> compose, at the source's full resolution.

    The matting stage separates the subject from its shadow; `shadow_policy` decides
    what of the shadow goes onto the new scene (kept, dropped_hard, none_found,
    not_requested), and the result says so under ``subject.shadow``. A scene generator
    may carry a shadow of its own (the diffusion generator's contact-shadow estimate);
    it is used only when the matting engine modelled none, so a learned engine on a
    plain backdrop still keeps its contact shadow.
    """

    def __init__(self, matting: MattingPipeline, scene: SceneGenerator) -> None:
        self.matting = matting
        self.scene = scene

    def __call__(self, image: np.ndarray, prompt: str, seed: int, preserve_shadow: bool,
                 on_stage: StageCallback | None = None) -> RenderOutput:
        report = on_stage or (lambda stage: None)
        timings: dict[str, float] = {}

        report("matting")
        started = time.perf_counter()
        matte = self.matting(image)
        timings.update(matte.timings_ms)
        timings["matting"] = _ms(started)

        report("generating")
        started = time.perf_counter()
        # The generator's own shadow estimate is only the fallback (see the class
        # docstring): it is not asked for when the matting stage separated one.
        own_shadow = preserve_shadow and matte.shadow is None
        scene = self.scene(SceneRequest(image=image, alpha=matte.alpha,
                                        foreground=matte.foreground, prompt=prompt,
                                        seed=seed, preserve_shadow=own_shadow))
        _check_scene(scene, image.shape[:2])
        timings["scene"] = _ms(started)

        report("composing")
        started = time.perf_counter()
        decision = _shadow_decision(matte, scene, preserve_shadow)
        out = compose(image, matte.alpha, matte.foreground, scene.background,
                      decision.multiplier)
        timings["compose"] = _ms(started)

        facts = dict(scene.facts)
        scene_generated = bool(facts.pop("scene_generated", False))
        engine = str(facts.get("scene_model") or self.scene.name)
        return RenderOutput(
            image=out, alpha=matte.alpha_u8, seed=seed, scene_generated=scene_generated,
            timings_ms=timings, subject=subject_facts(matte.alpha),
            engine={"matting": self.matting.name, "scene": engine},
            scene={"engine": engine, "prompt": str(facts.get("prompt") or prompt.strip()),
                   "seed": seed},
            shadow=decision.as_facts(), light=public_light(facts),
            diagnostics={"matting": {**matte_diagnostics(matte.alpha), **matte.facts},
                         "scene": facts})


def _shadow_decision(matte, scene: Scene, preserve_shadow: bool) -> ShadowDecision:
    decision = decide(matte, preserve_shadow)
    if decision.state == "none_found" and matte.shadow is None and scene.shadow is not None:
        strength = float(1.0 - scene.shadow.min())
        return ShadowDecision("kept", strength, scene.shadow)
    return decision


def _check_scene(scene: Scene, size: tuple[int, int]) -> None:
    # A generator returning the wrong size would otherwise fail deep inside compose.
    if scene.background.shape != (*size, 3):
        raise ValueError(f"scene background is {scene.background.shape}, expected {(*size, 3)}")
    if scene.shadow is not None and scene.shadow.shape != size:
        raise ValueError(f"scene shadow is {scene.shadow.shape}, expected {size}")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
