"""The landing page's before/after is what the engine does today, not an old picture.

scripts/landing_sample.py renders the built-in sample photo through the real pipeline
(classical matting, studio engine) and writes the JPEGs the landing page shows; this
re-renders it and compares with the checked-in files, within what JPEG changes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "landing_sample.py"
LANDING = ROOT / "platform_site" / "static" / "landing"
# Mean absolute difference, in 8-bit levels, that JPEG at quality 88 stays within on
# these smooth images (measured about 1); a changed backdrop or matte moves far more.
JPEG_TOLERANCE = 3.0
MAX_BYTES = 150 * 1024


def load_script():
    spec = importlib.util.spec_from_file_location("landing_sample", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the script is executed.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.float64)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def sample(script):
    return script.render_sample()


def test_the_checked_in_after_image_is_what_the_engine_renders_now(sample):
    after = decoded(LANDING / "after.jpg")
    assert after.shape == sample.after.shape
    assert mean_abs_diff(after, sample.after) < JPEG_TOLERANCE


def test_the_checked_in_before_image_is_the_built_in_sample_photo(sample):
    before = decoded(LANDING / "before.jpg")
    assert before.shape == sample.before.shape
    assert mean_abs_diff(before, sample.before) < JPEG_TOLERANCE


def test_the_comparison_would_catch_a_different_render(script, sample):
    # The tolerance is tight enough that another backdrop, or the photo itself, fails it.
    after = decoded(LANDING / "after.jpg")
    other = script.render_sample(prompt="pastel blue paper sweep")
    assert mean_abs_diff(after, other.after) > JPEG_TOLERANCE
    assert mean_abs_diff(after, sample.before) > JPEG_TOLERANCE


def test_the_sample_json_says_how_it_was_made(script):
    facts = json.loads((LANDING / "sample.json").read_text(encoding="utf-8"))
    assert facts["prompt"] == script.PROMPT and facts["seed"] == script.SEED
    assert facts["engine"]["scene"] == "studio"
    assert facts["shadow"]["state"] == "kept"
    assert facts["timings_ms"]["total"] > 0


def test_the_landing_images_are_small_jpegs(script):
    for name in ("before.jpg", "after.jpg"):
        path = LANDING / name
        assert path.stat().st_size < MAX_BYTES, name
        with Image.open(path) as picture:
            assert picture.format == "JPEG"
            assert picture.size == (script.WIDTH, script.HEIGHT)


def test_the_after_image_can_be_rewritten_identically_by_the_script(script, sample, tmp_path):
    paths = script.write(sample, tmp_path)
    assert [p.name for p in paths] == ["before.jpg", "after.jpg", "sample.json"]
    rewritten = decoded(tmp_path / "after.jpg")
    assert mean_abs_diff(rewritten, decoded(LANDING / "after.jpg")) < 0.5
    assert (tmp_path / "after.jpg").stat().st_size < MAX_BYTES
