"""The echo engine (WORKER_ENGINE=echo): a render with no models, for API tests and benches.

The web side's benchmark measures the platform's own overhead (HTTP, auth, ledger,
Redis, storage) and its tests need renders that end at once or after a known time. An
echo render re-encodes the input unchanged in the requested format, writes an all-opaque
matte, and takes WORKER_ECHO_DELAY_MS milliseconds (default 0). It goes through the same
task, storage, job metadata and settlement path as a real render; only the pixels are
fake, and its result says so (engine "echo", scene_generated false).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gpu_worker.pipeline import RenderOutput, StageCallback, subject_facts


@dataclass
class EchoRenderer:
    delay_ms: int = 0
    name: str = "echo"

    def __call__(self, image: np.ndarray, prompt: str, seed: int, preserve_shadow: bool,
                 on_stage: StageCallback | None = None) -> RenderOutput:
        report = on_stage or (lambda stage: None)
        started = time.perf_counter()
        report("matting")
        alpha = np.full(image.shape[:2], 255, np.uint8)
        report("generating")
        if self.delay_ms > 0:
            time.sleep(self.delay_ms / 1000.0)
        report("composing")
        return RenderOutput(image=image, alpha=alpha, seed=seed, scene_generated=False,
                            timings_ms={"echo": (time.perf_counter() - started) * 1000.0},
                            subject=subject_facts(np.ones(image.shape[:2], np.float32)),
                            engine={"matting": "echo", "scene": "echo"},
                            scene={"engine": "echo", "prompt": prompt.strip(), "seed": seed},
                            shadow={"state": "not_requested" if not preserve_shadow
                                    else "none_found", "strength": 0.0})
