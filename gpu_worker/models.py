"""Loading every model once, at worker start, and fetching weights ahead of time.

`load_models(config)` is called once per worker process before it takes a job. It picks
the device, builds the matting pipeline and the scene generator, logs what it loaded
(device, dtype, model ids, load times) and says clearly which weights are missing. A
worker whose weights are missing still starts: its renders fail with
``model_unavailable`` (the web side then charges nothing) until the weights are fetched
with ``python -m gpu_worker fetch-models``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpu_worker.config import WeightSpec, WorkerConfig
from gpu_worker.echo import EchoRenderer
from gpu_worker.errors import RenderError
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.matting.learned import NetworkSpec, load_onnx_estimator
from gpu_worker.matting.learned_refine import TrimapRefiner
from gpu_worker.matting.refine import BandRefiner
from gpu_worker.pipeline import Renderer, RenderOutput, ReplaceBackgroundPipeline, StageCallback
from gpu_worker.stages import SceneGenerator

log = logging.getLogger("gpu_worker.models")

MatteFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class UnavailableRenderer:
    """Stands in for the pipeline when weights are missing: every render fails cleanly."""

    error: RenderError

    def __call__(self, image: np.ndarray, prompt: str, seed: int, preserve_shadow: bool,
                 on_stage: StageCallback | None = None) -> RenderOutput:
        raise RenderError(self.error.code, self.error.message)


@dataclass
class LoadedModels:
    renderer: Renderer
    device: str
    dtype: str
    report: dict[str, Any] = field(default_factory=dict)


def resolve_device(requested: str) -> tuple[str, str]:
    """(device, dtype): CUDA with fp16 when asked for or present, else CPU with fp32."""
    if requested == "cpu":
        return "cpu", "float32"
    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    if requested == "cuda" and not has_cuda:
        raise RenderError("model_unavailable", "WORKER_DEVICE=cuda but no CUDA device is visible")
    return ("cuda", "float16") if has_cuda else ("cpu", "float32")


def matting_weights_path(config: WorkerConfig, dtype: str) -> Path:
    if config.matting_model_path is not None:
        return config.matting_model_path
    spec = config.matting_weights
    if dtype == "float16" and config.matting_weights_fp16:
        fp16 = WeightSpec(spec.key, spec.repo_id, spec.revision, config.matting_weights_fp16,
                          spec.licence)
        if fp16.local_path(config.model_dir).is_file():
            return fp16.local_path(config.model_dir)
    return spec.local_path(config.model_dir)


def missing_weights(config: WorkerConfig, dtype: str = "float32") -> list[str]:
    """Human-readable list of the configured weights that are not on disk."""
    from gpu_worker.scene import missing_scene_weights

    # The studio engine needs no weights, so a missing diffusion model limits the worker
    # to studio prompts rather than breaking it; the line says so.
    scene = [f"scene: {line} (studio prompts work now; scene prompts need these weights)"
             for line in missing_scene_weights(config)]
    if config.matting_engine == "classical":
        return scene
    path = matting_weights_path(config, dtype)
    if path.is_file():
        return scene
    spec = config.matting_weights
    source = ("MATTING_MODEL_PATH" if config.matting_model_path is not None
              else f"{spec.repo_id}@{spec.revision}:{spec.filename}")
    return [f"matting: {source} (expected at {path})", *scene]


def network_spec(config: WorkerConfig) -> NetworkSpec:
    """The learned engine's explicit settings; what they leave at auto comes from the model."""
    return NetworkSpec(family=config.matting_model_family, output=config.matting_output,
                       mean=config.matting_mean, std=config.matting_std,
                       activation=config.matting_activation)


def load_matting(config: WorkerConfig, device: str, dtype: str) -> MattingPipeline:
    """The configured matting pipeline; RenderError("model_unavailable") if it cannot load.

    The learned engine gets the trimap refiner (`learned_refine.TrimapRefiner`) for
    MATTING_REFINE=cf: a network's mask may be hard, and the band refiner only re-solves
    pixels an estimate is unsure of.
    """
    path = matting_weights_path(config, dtype)
    use_learned = config.matting_engine == "learned" or (
        config.matting_engine == "auto" and path.is_file())
    if not use_learned:
        return MattingPipeline(ClassicalAlphaEstimator(),
                               refiner=BandRefiner(mode=config.matting_refine),
                               working_pixels=config.matting_working_pixels)
    spec = config.matting_weights
    model_id = (str(path) if config.matting_model_path is not None
                else f"{spec.repo_id}@{spec.revision}")
    estimator = load_onnx_estimator(path, device=device, input_size=config.matting_input_size,
                                    threads=config.onnx_threads,
                                    facts={"matting_model": model_id},
                                    spec=network_spec(config))
    refiner = TrimapRefiner() if config.matting_refine == "cf" else BandRefiner(mode="snap")
    return MattingPipeline(estimator, refiner=refiner,
                           working_pixels=config.matting_working_pixels)


def build_scene_generator(config: WorkerConfig, matte_fn: MatteFn) -> SceneGenerator:
    """THE one place the scene stage is chosen: the studio engine and the configured
    diffusion model, routed per prompt (``gpu_worker.scene.routing``).

    Plain-backdrop prompts ("pure white background", "pastel pink paper sweep") always
    render, on the CPU. Missing diffusion weights do not stop the worker: prompts that
    describe a scene fail with ``model_unavailable`` (charged nothing) and say what to
    install. ``SCENE_MODEL=studio`` loads no diffusion model; ``SCENE_MODEL=tiny-demo``
    builds tiny untrained ones so the platform runs offline (those scenes are noise).
    ``PlainSceneGenerator`` stays available for the matting benchmarks.
    """
    from gpu_worker.scene import load_scene_generator

    return load_scene_generator(config, matte_fn)


def scene_capabilities(scene: SceneGenerator) -> dict[str, bool]:
    """Which kinds of prompt this scene stage can paint (announced to the web side)."""
    from gpu_worker.scene.generator import UnavailableSceneGenerator

    studio = getattr(scene, "studio", None)
    diffusion = getattr(scene, "diffusion", scene)
    return {"studio": studio is not None,
            "diffusion": not isinstance(diffusion, UnavailableSceneGenerator)}


def load_models(config: WorkerConfig) -> LoadedModels:
    """Everything a render needs, loaded once; never raises for missing weights."""
    if config.worker_engine == "echo":
        log.info("engine: echo (no models; renders return the input, delay %d ms)",
                 config.echo_delay_ms)
        return LoadedModels(EchoRenderer(config.echo_delay_ms), "none", "none",
                            {"engine": "echo"})
    report: dict[str, Any] = {"engine": "full"}
    try:
        device, dtype = resolve_device(config.device)
    except RenderError as exc:
        log.error("device: %s", exc.message)
        return LoadedModels(UnavailableRenderer(exc), "none", "none", {"error": exc.message})
    report.update(device=device, dtype=dtype)
    log.info("device: %s, dtype: %s", device, dtype)
    missing = missing_weights(config, dtype)
    for line in missing:
        fallback = (" (MATTING_ENGINE=auto: using the classical engine meanwhile)"
                    if config.matting_engine == "auto" else "")
        log.warning("missing weights: %s; run `python -m gpu_worker fetch-models`%s", line,
                    fallback)
    try:
        started = time.perf_counter()
        matting = load_matting(config, device, dtype)
        facts = getattr(matting.estimator, "facts", {})
        report["matting"] = {"engine": matting.name,
                             "model": facts.get("matting_model", matting.name),
                             "refine": config.matting_refine,
                             "load_ms": round((time.perf_counter() - started) * 1000)}
        network = getattr(matting.estimator, "spec", None)
        if isinstance(network, NetworkSpec):
            report["matting"].update(network.describe(),
                                     output=getattr(matting.estimator, "output_name", None))
        log.info("matting: %s loaded in %d ms", report["matting"]["model"],
                 report["matting"]["load_ms"])
        started = time.perf_counter()
        scene = build_scene_generator(config, matting.matte_fn)
        report["scene"] = {"engine": scene.name,
                           "load_ms": round((time.perf_counter() - started) * 1000),
                           **scene_capabilities(scene)}
        log.info("scene: %s loaded in %d ms", scene.name, report["scene"]["load_ms"])
    except RenderError as exc:
        log.error("models unavailable: %s; renders will fail with %s", exc.message, exc.code,
                  extra={"code": exc.code})
        report["error"] = exc.message
        return LoadedModels(UnavailableRenderer(exc), device, dtype, report)
    return LoadedModels(ReplaceBackgroundPipeline(matting, scene), device, dtype, report)


def fetch_models(config: WorkerConfig) -> list[Path]:
    """Downloads the configured weights (pinned revisions) into MODEL_DIR; returns paths.

    Needs internet access (run it once on a machine that has it, or copy MODEL_DIR over).
    """
    from huggingface_hub import hf_hub_download

    spec = config.matting_weights
    fetched: list[Path] = []
    for filename in dict.fromkeys([spec.filename, config.matting_weights_fp16]):
        if not filename:
            continue
        target = config.model_dir / spec.key
        log.info("fetching %s@%s:%s", spec.repo_id, spec.revision, filename)
        path = Path(hf_hub_download(repo_id=spec.repo_id, filename=filename,
                                    revision=spec.revision, local_dir=target))
        fetched.append(path)
    (config.model_dir / spec.key / "SOURCE").write_text(
        f"{spec.repo_id}@{spec.revision} ({spec.licence})\n")
    from gpu_worker.scene import fetch_scene_models

    fetched += fetch_scene_models(config)
    return fetched
