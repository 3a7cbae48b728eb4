"""Renders the landing page's before/after through the real pipeline.

    .venv/bin/python scripts/landing_sample.py

The "before" is a built-in sample product photo (gpu_worker.studio_truth: a bottle on
light grey seamless paper in its soft contact shadow, with sensor noise and JPEG, as an
upload would be); the "after" is that photo through classical matting and the studio
engine, with the shadow kept. Writes ``platform_site/static/landing/before.jpg``,
``after.jpg`` and ``sample.json`` (the prompt, the seed and the timings). The picture on
the landing page is therefore what the engine does, and tests/test_landing_sample.py
re-renders it to check it has not drifted; run this script again after changing the
engine, then commit the three files.
"""

from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

OUTPUT_DIR = ROOT / "platform_site" / "static" / "landing"
CASE = "bottle/white_soft"
WIDTH, HEIGHT = 800, 600
PHOTO_SEED = 3
# A colour shows what the engine does better than white on near-white would, and a
# sweep shows the kept contact shadow on the new floor.
PROMPT = "pastel pink paper sweep"
SEED = 7
JPEG_QUALITY = 88


@dataclass
class Sample:
    before: np.ndarray  # HxWx3 uint8, the photo as uploaded
    after: np.ndarray  # HxWx3 uint8, the render
    facts: dict[str, Any] = field(default_factory=dict)


def sample_photo() -> np.ndarray:
    from gpu_worker import studio_truth

    return studio_truth.make_case(CASE, WIDTH, HEIGHT, seed=PHOTO_SEED).image


def render_sample(prompt: str = PROMPT, seed: int = SEED) -> Sample:
    """The sample photo, and the render the real pipeline makes of it."""
    from gpu_worker.matting.classical import ClassicalAlphaEstimator
    from gpu_worker.matting.engine import MattingPipeline
    from gpu_worker.pipeline import ReplaceBackgroundPipeline
    from gpu_worker.scene.studio import StudioSceneGenerator

    photo = sample_photo()
    pipeline = ReplaceBackgroundPipeline(MattingPipeline(ClassicalAlphaEstimator()),
                                         StudioSceneGenerator())
    started = time.perf_counter()
    output = pipeline(photo, prompt, seed, True)
    total_ms = (time.perf_counter() - started) * 1000
    shadow = getattr(output, "shadow", None)
    facts = {
        "prompt": prompt,
        "seed": seed,
        "engine": dict(output.engine),
        "shadow": shadow,
        "size": [WIDTH, HEIGHT],
        "source": f"gpu_worker.studio_truth {CASE!r}, seed {PHOTO_SEED}",
        "timings_ms": {**{k: round(v) for k, v in output.timings_ms.items()},
                       "total": round(total_ms)},
        "script": "scripts/landing_sample.py",
    }
    return Sample(before=photo, after=output.image, facts=facts)


def encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True,
                                progressive=True)
    return buffer.getvalue()


def write(sample: Sample, directory: Path = OUTPUT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "before.jpg", directory / "after.jpg", directory / "sample.json"]
    paths[0].write_bytes(encode_jpeg(sample.before))
    paths[1].write_bytes(encode_jpeg(sample.after))
    paths[2].write_text(json.dumps(sample.facts, indent=2) + "\n", encoding="utf-8")
    return paths


def main() -> int:
    sample = render_sample()
    for path in write(sample):
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")
    print(f"prompt {PROMPT!r}, seed {SEED}, render {sample.facts['timings_ms']['total']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
