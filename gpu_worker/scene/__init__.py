"""Scene generation: a new background painted around a fixed subject (part 2 of the pipeline).

Two engines behind one interface: the studio engine (``studio``: sweeps, solid colours
and gradients, CPU, deterministic) and the diffusion model (``generator``: GPU, weights),
chosen per prompt by ``routing.route``.

Public entry points for the worker:

- ``load_scene_generator(config, matte_fn)``: the configured scene stage, built once
  (the routed pair; ``SCENE_MODEL=studio`` for the studio engine alone).
- ``route(prompt)``: which engine a prompt goes to, and why.
- ``scene_model_downloads(config)``: (repo_id, revision, allow_patterns) for fetch-models.
- ``fetch_scene_models(config)``: downloads them into ``MODEL_DIR`` where the loader looks.
- ``missing_scene_weights(config)``: ``repo@revision`` of each set not installed.

``config`` is a SceneConfig, the worker's WorkerConfig (its ``env``, ``model_dir`` and
``device`` are used), or None to read the environment.
- ``scene_config_from_env()``: the settings, from ``SCENE_*`` and ``MODEL_DIR``.

Imports are deferred so that reading the config or the prompting rules does not pull
torch and diffusers into a process that only needs those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu_worker.scene.config import SceneConfig
    from gpu_worker.scene.expansion import MatteFn


def load_scene_generator(config: Any = None, matte_fn: MatteFn | None = None) -> Any:
    from gpu_worker.scene.loading import load_scene_generator as load

    return load(config, matte_fn)


def route(prompt: str) -> Any:
    from gpu_worker.scene.routing import route as decide

    return decide(prompt)


def scene_model_downloads(config: Any = None) -> list[tuple[str, str, list[str]]]:
    from gpu_worker.scene.loading import scene_model_downloads as downloads

    return downloads(config)


def fetch_scene_models(config: Any = None) -> list:
    from gpu_worker.scene.loading import fetch_scene_models as fetch

    return fetch(config)


def missing_scene_weights(config: Any = None) -> list[str]:
    from gpu_worker.scene.loading import missing_scene_weights as missing

    return missing(config)


def scene_config_from_env(env: Any = None) -> SceneConfig:
    from gpu_worker.scene.config import scene_config_from_env as from_env

    return from_env(env)


__all__ = [
    "load_scene_generator",
    "route",
    "scene_model_downloads",
    "fetch_scene_models",
    "missing_scene_weights",
    "scene_config_from_env",
]
