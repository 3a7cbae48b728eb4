"""Worker configuration, read once from the environment.

The GPU worker never imports Django, so it reads the same environment variables the web
side's settings read (REDIS_URL, STORAGE_DIR, S3_*) plus its own:

==========================  ==========================================================
REDIS_URL                   redis://127.0.0.1:6379/0
REDIS_CONNECT_TIMEOUT_SECONDS  2: connect timeout of every Redis client (as the web's)
REDIS_SOCKET_TIMEOUT_SECONDS   5: socket timeout of ordinary commands (rq raises it above
                            its dequeue block for the worker's own connection)
GPU_QUEUE                   gpu (the queue the web enqueues renders on)
WORKER_HEARTBEAT_TTL_SECONDS  30: a render whose worker has not heartbeated for this long
                            is reaped as lost (and retried once) by the web side
STORAGE_FILE_MODE           0644: mode of the files the worker writes (the web serves them)
MODEL_DIR                   <repo>/var/models: where `fetch-models` puts weights
WORKER_ENGINE               full (real pipeline) | echo (no models; see gpu_worker.echo)
WORKER_ECHO_DELAY_MS        0: how long an echo render takes
WORKER_DEVICE               auto (CUDA with fp16 when present, else CPU) | cpu | cuda
MATTING_ENGINE              auto (learned weights when installed, else classical) |
                            learned | classical
MATTING_REFINE              cf (closed-form re-solve of the edge band; for the learned
                            engine the band is a trimap around the network's mask) | snap
MATTING_WORKING_PIXELS      1048576: resolution bound for everything but band work
MATTING_MODEL_REPO          onnx-community/BiRefNet-ONNX
MATTING_MODEL_REVISION      pinned commit of that repository
MATTING_MODEL_FILE          onnx/model.onnx (fp32); MATTING_MODEL_FILE_FP16 for CUDA
MATTING_MODEL_PATH          a local .onnx file instead of the Hub (overrides the three)
MATTING_INPUT_SIZE          1024: the network's native input (2048 for HR variants)
MATTING_MODEL_FAMILY        auto (the model's config.json, else birefnet) | birefnet |
                            isnet (alias dis): the preset for normalisation and for the
                            output order (BiRefNet's prediction is last, ISNet's first)
MATTING_OUTPUT              auto (a single-channel output at the input's full size, the
                            family's order breaking ties) | first | last | an output name
MATTING_MEAN, MATTING_STD   per-channel normalisation of RGB in 0..1, "0.5" or
                            "0.485,0.456,0.406" (default: the model's config, else the
                            family's: ImageNet for birefnet, 0.5 and 1.0 for isnet)
MATTING_ACTIVATION          auto (sigmoid when the output leaves 0..1) | sigmoid | none
ONNX_THREADS                0 (onnxruntime's default) or a thread count
==========================  ==========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class WeightSpec:
    """One set of weights on the Hugging Face Hub, pinned to a commit."""

    key: str  # short name used in logs and as the folder under MODEL_DIR
    repo_id: str
    revision: str
    filename: str
    licence: str

    def local_path(self, model_dir: Path) -> Path:
        return model_dir / self.key / self.filename


@dataclass(frozen=True)
class WorkerConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_connect_timeout: float = 2.0
    redis_socket_timeout: float = 5.0
    queue: str = "gpu"
    heartbeat_ttl: int = 30
    model_dir: Path = REPO_ROOT / "var" / "models"
    worker_engine: str = "full"
    echo_delay_ms: int = 0
    device: str = "auto"
    matting_engine: str = "auto"
    matting_refine: str = "cf"
    matting_working_pixels: int = 1_048_576
    # BiRefNet (MIT licence), the ONNX export published by the onnx-community org.
    # The revision pins the commit shown on the Hub as 534d3c8; fetch-models records the
    # full commit id it resolved next to the file.
    matting_weights: WeightSpec = WeightSpec(
        key="birefnet", repo_id="onnx-community/BiRefNet-ONNX", revision="534d3c8",
        filename="onnx/model.onnx", licence="MIT")
    matting_weights_fp16: str = "onnx/model_fp16.onnx"
    matting_model_path: Path | None = None
    matting_input_size: int = 1024
    # How to read the learned engine's network; "auto" and None defer to the model's
    # config.json, then the family preset (gpu_worker.matting.learned.NetworkSpec).
    matting_model_family: str = "auto"
    matting_output: str = "auto"
    matting_mean: tuple[float, float, float] | None = None
    matting_std: tuple[float, float, float] | None = None
    matting_activation: str = "auto"
    onnx_threads: int = 0
    # The raw environment, for stages configured elsewhere (the scene generator's
    # model ids and steps live with the scene code).
    env: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerConfig:
        env = dict(os.environ if environ is None else environ)
        default = cls()

        def get(name: str, fallback: str) -> str:
            value = env.get(name, "").strip()
            return value or fallback

        def choice(name: str, fallback: str, allowed: tuple[str, ...]) -> str:
            value = get(name, fallback).lower()
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
            return value

        weights = WeightSpec(
            key=default.matting_weights.key,
            repo_id=get("MATTING_MODEL_REPO", default.matting_weights.repo_id),
            revision=get("MATTING_MODEL_REVISION", default.matting_weights.revision),
            filename=get("MATTING_MODEL_FILE", default.matting_weights.filename),
            licence=default.matting_weights.licence,
        )
        model_path = get("MATTING_MODEL_PATH", "")
        output = get("MATTING_OUTPUT", "auto")
        if output.lower() in ("auto", "first", "last"):
            output = output.lower()  # keywords; anything else is an output's exact name
        return cls(
            redis_url=get("REDIS_URL", default.redis_url),
            redis_connect_timeout=float(get("REDIS_CONNECT_TIMEOUT_SECONDS", str(default.redis_connect_timeout))),
            redis_socket_timeout=float(get("REDIS_SOCKET_TIMEOUT_SECONDS", str(default.redis_socket_timeout))),
            queue=get("GPU_QUEUE", default.queue),
            heartbeat_ttl=max(3, int(get("WORKER_HEARTBEAT_TTL_SECONDS", str(default.heartbeat_ttl)))),
            model_dir=Path(get("MODEL_DIR", str(default.model_dir))),
            worker_engine=choice("WORKER_ENGINE", "full", ("full", "echo")),
            echo_delay_ms=int(get("WORKER_ECHO_DELAY_MS", "0")),
            device=choice("WORKER_DEVICE", "auto", ("auto", "cpu", "cuda")),
            matting_engine=choice("MATTING_ENGINE", "auto", ("auto", "learned", "classical")),
            matting_refine=choice("MATTING_REFINE", "cf", ("cf", "snap")),
            matting_working_pixels=int(get("MATTING_WORKING_PIXELS",
                                           str(default.matting_working_pixels))),
            matting_weights=weights,
            matting_weights_fp16=get("MATTING_MODEL_FILE_FP16", default.matting_weights_fp16),
            matting_model_path=Path(model_path) if model_path else None,
            matting_input_size=int(get("MATTING_INPUT_SIZE", str(default.matting_input_size))),
            matting_model_family=choice("MATTING_MODEL_FAMILY", "auto",
                                        ("auto", "birefnet", "isnet", "dis")),
            matting_output=output,
            matting_mean=_channels("MATTING_MEAN", get("MATTING_MEAN", "")),
            matting_std=_channels("MATTING_STD", get("MATTING_STD", ""), positive=True),
            matting_activation=choice("MATTING_ACTIVATION", "auto", ("auto", "sigmoid", "none")),
            onnx_threads=int(get("ONNX_THREADS", "0")),
            env=env,
        )


def _channels(name: str, value: str, positive: bool = False
              ) -> tuple[float, float, float] | None:
    """ "0.5" or "0.485,0.456,0.406" as three floats; None when unset."""
    if not value:
        return None
    try:
        values = [float(part) for part in value.replace(" ", ",").split(",") if part]
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected 1 or 3 numbers") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"{name}={value!r}: expected 1 or 3 numbers")
    if positive and min(values) <= 0:
        raise ValueError(f"{name}={value!r}: every value must be positive")
    return (values[0], values[1], values[2])
