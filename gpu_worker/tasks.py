"""The render task: ``gpu_worker.tasks.replace_background(payload) -> result``.

The web side enqueues it on the "gpu" queue by dotted path with RQ's JSON serializer,
so both the payload and the result are plain JSON dicts:

payload: render_id, attempt, input_key (an 8-bit sRGB RGB PNG in storage), output_key,
         matte_key (both per attempt), output_format ("png" | "jpeg" | "webp"),
         scene_prompt, preserve_shadow, seed (the web side picks one when the client
         sent none, so a retried attempt paints the same scene)
result:  output_key, matte_key, width, height, format, seed, scene_generated,
         timings_ms {stage: int ms, ..., "total"} (the public stages, PUBLIC_TIMINGS),
         subject {bbox, coverage}, scene {engine, prompt, seed},
         exactness {opaque_pixels, exact_pixels, share} (measured on the encoded file),
         shadow {state, strength}, light {direction, confidence} or null,
         engine {matting, scene}, diagnostics {every other fact; staff and logs only}

While it runs the task keeps ``job.meta["stage"]`` ("matting", "generating",
"composing") and ``job.meta["stage_started_at"]`` (ISO 8601, UTC) current for the
dashboard. On failure it stores ``job.meta["error"] = {"code", "message"}`` (and
``job.meta["failed_stage"]``, the stage it was in) BEFORE raising, with a code from `gpu_worker.errors`, so the web side can read the code from
the failed job. Settlement on the Django side is requested by the worker process once
the job's final state is saved (see `gpu_worker.worker`). A job of a render the web
side has already ended (``imaging:render-job:<render id>`` is ``settled``) is skipped.

The models are loaded once per process: the worker builds a `Runtime` at start and
installs it here (`install`). Called in a process that has none (an ordinary RQ worker,
a shell), the task loads one from the environment on first use.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from gpu_worker import logs, telemetry
from gpu_worker.composite import CONTENT_TYPES, decode_input, encode_image, encode_matte
from gpu_worker.config import WorkerConfig
from gpu_worker.errors import RenderError
from gpu_worker.exactness import measure_exactness
from gpu_worker.pipeline import Renderer
from gpu_worker.storage import InvalidKey, MissingKey, Storage, open_storage

log = logging.getLogger("gpu_worker.tasks")

STAGES = ("matting", "generating", "composing")
# The stage timings the public result carries; finer ones (a matting engine's own
# steps) go to the diagnostics. "verify" is the exactness check of the encoded file.
PUBLIC_TIMINGS = ("read", "decode", "matting", "scene", "compose", "encode", "verify",
                  "write", "total")


@dataclass(frozen=True)
class RenderRequest:
    render_id: str
    input_key: str
    output_key: str
    matte_key: str
    output_format: str
    scene_prompt: str
    preserve_shadow: bool
    seed: int

    @classmethod
    def from_payload(cls, payload: Any) -> RenderRequest:
        if not isinstance(payload, dict):
            raise RenderError("render_failed", "malformed payload: not an object")
        problems = []
        for name in ("render_id", "input_key", "output_key", "matte_key", "scene_prompt"):
            if not isinstance(payload.get(name), str):
                problems.append(f"{name} must be a string")
        output_format = payload.get("output_format", "png")
        if output_format not in CONTENT_TYPES:
            problems.append(f"output_format must be one of {', '.join(CONTENT_TYPES)}")
        preserve_shadow = payload.get("preserve_shadow", True)
        if not isinstance(preserve_shadow, bool):
            problems.append("preserve_shadow must be a boolean")
        seed = payload.get("seed")
        if seed is None:
            # The result reports the seed used, so an unseeded render is reproducible too.
            seed = random.SystemRandom().randrange(2**31)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            problems.append("seed must be an integer")
        if problems:
            raise RenderError("render_failed", "malformed payload: " + "; ".join(problems))
        return cls(payload["render_id"], payload["input_key"], payload["output_key"],
                   payload["matte_key"], output_format, payload["scene_prompt"],
                   preserve_shadow, int(seed))


@dataclass
class Runtime:
    """What a worker process loads once: storage and the renderer (with its models)."""

    storage: Storage
    renderer: Renderer
    report: dict[str, Any] = field(default_factory=dict)


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Makes `runtime` the one this process renders with (None forgets it)."""
    global _runtime
    _runtime = runtime


def build_runtime(config: WorkerConfig) -> Runtime:
    from gpu_worker.models import load_models

    loaded = load_models(config)
    return Runtime(storage=open_storage(config.env), renderer=loaded.renderer,
                   report=loaded.report)


def current_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        log.info("no runtime installed in this process; loading one from the environment")
        _runtime = build_runtime(WorkerConfig.from_env())
    return _runtime


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _save_meta(job: Job | None, **values: Any) -> None:
    if job is None:
        return
    job.meta.update(values)
    try:
        job.save_meta()
    except Exception:  # progress is best effort; it must never fail a render
        log.warning("could not save job meta for %s", job.id, exc_info=True)


# Shared by name with imaging.dispatch: the key says SETTLED once the render has ended.
RENDER_JOB_KEY_PREFIX = "imaging:render-job:"
SETTLED = b"settled"


def _already_settled(job: Job | None, payload: Any) -> bool:
    """True when the web side has ended this render: a GPU run would be wasted."""
    render_id = payload.get("render_id") if isinstance(payload, dict) else None
    if job is None or not isinstance(render_id, str):
        return False
    try:
        return job.connection.get(f"{RENDER_JOB_KEY_PREFIX}{render_id}") == SETTLED
    except Exception:  # cannot tell: rendering is the safe side
        log.warning("could not check whether render %s is settled", render_id, exc_info=True)
        return False


def replace_background(payload: dict[str, Any]) -> dict[str, Any]:
    """Renders one image (see the module docstring for the payload and result).

    Every log line of the job carries its render id (`gpu_worker.logs`), and the
    worker's metrics see which render runs (`gpu_worker.telemetry`).
    """
    job = get_current_job()
    render_id = payload.get("render_id") if isinstance(payload, dict) else None
    token = logs.render_id.set(render_id if isinstance(render_id, str) else None)
    telemetry.job_started(str(render_id or ""), str(getattr(job, "id", "")))
    try:
        return _replace_background(job, payload)
    finally:
        telemetry.job_finished()
        logs.render_id.reset(token)


def _replace_background(job: Job | None, payload: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    if _already_settled(job, payload):
        log.info("job %s: render %s has already ended; skipped", getattr(job, "id", "?"),
                 payload.get("render_id"))
        return {"skipped": "the render has already ended"}
    try:
        request = RenderRequest.from_payload(payload)
        runtime = current_runtime()
        timings: dict[str, float] = {}

        mark = time.perf_counter()
        data = runtime.storage.read(request.input_key)
        timings["read"] = _ms(mark)
        mark = time.perf_counter()
        image = decode_input(data)
        timings["decode"] = _ms(mark)

        def on_stage(stage: str) -> None:
            _save_meta(job, stage=stage, stage_started_at=_now())

        output = runtime.renderer(image, request.scene_prompt, request.seed,
                                  request.preserve_shadow, on_stage=on_stage)
        timings.update(output.timings_ms)

        mark = time.perf_counter()
        encoded, content_type = encode_image(output.image, request.output_format)
        matte = encode_matte(output.alpha)
        timings["encode"] = _ms(mark)
        mark = time.perf_counter()
        exactness = measure_exactness(image, output.alpha, encoded)
        timings["verify"] = _ms(mark)
        mark = time.perf_counter()
        runtime.storage.write(request.output_key, encoded, content_type)
        runtime.storage.write(request.matte_key, matte, "image/png")
        timings["write"] = _ms(mark)
        timings["total"] = _ms(started)
    except RenderError as exc:
        _fail(job, exc)
        raise
    except (MissingKey, InvalidKey) as exc:
        error = RenderError("invalid_image", f"input not readable from storage: {exc}")
        _fail(job, error)
        raise error from exc
    except JobTimeoutException:
        _fail(job, RenderError("render_timeout", "the render ran past its time limit"))
        raise
    except Exception as exc:
        error = RenderError("render_failed", f"{type(exc).__name__}: {exc}")
        _fail(job, error)
        raise error from exc

    height, width = output.image.shape[:2]
    rounded = {stage: int(round(ms)) for stage, ms in timings.items()}
    diagnostics = dict(output.diagnostics)
    diagnostics["timings_ms"] = {k: v for k, v in rounded.items() if k not in PUBLIC_TIMINGS}
    result = {
        "output_key": request.output_key,
        "matte_key": request.matte_key,
        "width": int(width),
        "height": int(height),
        "format": request.output_format,
        "seed": output.seed,
        "scene_generated": output.scene_generated,
        "timings_ms": {k: v for k, v in rounded.items() if k in PUBLIC_TIMINGS},
        "subject": output.subject,
        "scene": output.scene,
        "exactness": exactness,
        "shadow": output.shadow,
        "light": output.light,
        "engine": output.engine,
        "diagnostics": diagnostics,
    }
    log.info("render %s: %dx%d %s in %d ms (%s); scene %s, shadow %s, exact %s", request.render_id,
             width, height, request.output_format, rounded["total"],
             ", ".join(f"{k} {v}" for k, v in result["timings_ms"].items() if k != "total"),
             output.scene.get("engine"), (output.shadow or {}).get("state"), exactness["share"])
    log.info("render %s diagnostics: %s", request.render_id, json.dumps(diagnostics, default=str))
    telemetry.render_succeeded(rounded, str((output.engine or {}).get("scene") or output.scene.get("engine") or "none"))
    return result


def _fail(job: Job | None, error: RenderError) -> None:
    # An expected outcome, with its code: WARNING and no traceback. Real bugs end up
    # as render_failed and keep theirs (the caller's `raise ... from exc`, and rq).
    log.warning("render failed: %s", error, extra={"code": error.code},
                exc_info=error.code == "render_failed")
    telemetry.render_failed(error.code)
    stage = job.meta.get("stage") if job is not None and isinstance(job.meta, dict) else None
    _save_meta(job, error=error.as_dict(), failed_stage=stage if stage in STAGES else "")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
