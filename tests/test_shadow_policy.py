"""The brief's shadow policy, end to end through the worker's render task.

Each test stores a studio photo (known alpha and shadow) in real local storage, runs
`gpu_worker.tasks.replace_background` with the classical engine and a plain new scene
(one flat colour, so any darkening in the output is the carried shadow and nothing
else), then reads the output PNG and the matte back and checks the pixels:

* kept: a soft contact shadow darkens the new scene under and beside the subject, by
  about the photo's own depth, and the subject's pixels are the source's, bit for bit;
* dropped_hard: a hard cast shadow leaves no darkening anywhere outside the subject;
* not_requested: with ``preserve_shadow`` false no darkening remains at all;
* none_found: a photo without a shadow gets none.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gpu_worker import studio_truth, tasks
from gpu_worker.composite import encode_image
from gpu_worker.matting.base import dilate
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.pipeline import ReplaceBackgroundPipeline
from gpu_worker.stages import PlainSceneGenerator
from gpu_worker.storage import open_storage

WIDTH, HEIGHT = 576, 432
SCENE = PlainSceneGenerator()
SCENE_LEVEL = int(round(SCENE.colour[0] * 255))


@pytest.fixture()
def storage(tmp_path):
    storage = open_storage({"STORAGE_DIR": str(tmp_path)})
    renderer = ReplaceBackgroundPipeline(MattingPipeline(ClassicalAlphaEstimator()), SCENE)
    tasks.install(tasks.Runtime(storage=storage, renderer=renderer))
    yield storage
    tasks.install(None)


def render(storage, case, preserve_shadow: bool):
    storage.write("in/photo.png", encode_image(case.image, "png")[0], "image/png")
    result = tasks.replace_background({
        "render_id": "rnd_policy", "input_key": "in/photo.png",
        "output_key": "out/photo.png", "matte_key": "out/photo-matte.png",
        "output_format": "png", "scene_prompt": "plain studio", "seed": 5,
        "preserve_shadow": preserve_shadow})
    output = np.asarray(Image.open(io.BytesIO(storage.read(result["output_key"]))).convert("RGB"))
    matte = np.asarray(Image.open(io.BytesIO(storage.read(result["matte_key"]))))
    return result, output, matte


def away_from_subject(case) -> np.ndarray:
    """Pixels more than 4 px from any of the subject (its edge is allowed its blur: a
    JPEG's rounded corner leaves alpha of a few levels there)."""
    return ~dilate(case.alpha > 0, 4)


def darkening_outside_subject(output, matte) -> np.ndarray:
    """Per pixel where the matte is 0: how much darker than the plain scene (0..1)."""
    outside = matte == 0
    return np.where(outside, (SCENE_LEVEL - output.mean(axis=2)) / SCENE_LEVEL, 0.0)


def test_a_soft_contact_shadow_is_kept_on_the_new_scene_and_the_subject_stays_exact(storage):
    case = studio_truth.make_case("bottle/cream_deep", WIDTH, HEIGHT, seed=2)
    result, output, matte = render(storage, case, preserve_shadow=True)
    shadow = result["shadow"]
    assert shadow["state"] == "kept"
    depth = float(1.0 - case.shadow[case.alpha < 0.01].min())
    assert abs(shadow["strength"] - depth) < 0.08
    darker = darkening_outside_subject(output, matte)
    # Where the photo's shadow is deep, the new floor is darkened by about as much...
    deep = (case.alpha == 0) & (matte == 0) & (case.shadow < 1.0 - 0.6 * depth)
    assert deep.sum() > 500
    assert abs(float(np.median(darker[deep])) - float(np.median(1 - case.shadow[deep]))) < 0.05
    # ...and far from it the new scene is untouched.
    clear = (matte == 0) & (case.shadow > 0.999)
    assert np.abs(darker[clear]).max() < 0.01
    opaque = matte == 255
    assert np.array_equal(output[opaque], case.image[opaque])


def test_a_hard_cast_shadow_is_dropped_without_a_trace(storage):
    case = studio_truth.make_case("bottle/hard_cast", WIDTH, HEIGHT, seed=2)
    result, output, matte = render(storage, case, preserve_shadow=True)
    assert result["shadow"]["state"] == "dropped_hard"
    assert result["shadow"]["strength"] > 0.3
    assert np.abs(darkening_outside_subject(output, matte)).max() < 0.01
    # The old shadow is not in the matte either: where it lay, the output is the scene.
    where_it_was = away_from_subject(case) & (case.shadow < 0.7)
    assert float(np.mean(matte[where_it_was] == 0)) > 0.99


def test_with_preserve_shadow_false_no_darkening_remains_anywhere(storage):
    case = studio_truth.make_case("bottle/white_soft", WIDTH, HEIGHT, seed=2)
    result, output, matte = render(storage, case, preserve_shadow=False)
    assert result["shadow"]["state"] == "not_requested"
    assert np.abs(darkening_outside_subject(output, matte)).max() < 0.01
    where_it_was = away_from_subject(case) & (case.shadow < 0.8)
    assert float(np.mean(matte[where_it_was] == 0)) > 0.99


def test_a_photo_without_a_shadow_reports_none_found(storage):
    case = studio_truth.make_case("motion/gradient", WIDTH, HEIGHT, seed=2)
    result, output, matte = render(storage, case, preserve_shadow=True)
    assert result["shadow"] == {"state": "none_found", "strength": 0.0}
    assert np.abs(darkening_outside_subject(output, matte)).max() < 0.01
