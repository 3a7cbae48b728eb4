"""The classical engine beats both baselines on generated plain-backdrop cases.

A smaller, faster cousin of bench/matting_quality.py (which prints the full table at
1 MP). Measured on these cases when this was written, the engine's SAD was 3.2x lower
than the ideal feathered binary mask on hair (14x on blur, 25x on the product), MSE 4.6x
lower or better, and the halo 3.8x lower or better than without foreground estimation.
On the translucent drape over grey paper (the hardest backdrop for it: the least
texture contrast) the see-through panel made SAD 3.3x lower, MSE 4.1x and halo 4.0x;
before the panel was solved along its colour line it was taken as opaque and SAD was
0.6x of the binary mask's. The thresholds below leave a margin under those figures; a
regression that costs the edge its detail, makes the drape opaque again or brings the
old backdrop back into the fringe fails them.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker import metrics, synthetic
from gpu_worker.composite import compose
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.engine import MattingPipeline

WIDTH, HEIGHT = 576, 432

# case -> minimum (SAD ratio, MSE ratio, halo ratio)
CASES = {
    "hair/gradient": (2.4, 3.0, 2.5),
    "motion_blur/grey": (8.0, 20.0, 5.0),
    "product/coloured": (8.0, 20.0, 2.5),
    "translucent/grey": (2.6, 3.2, 3.0),
}


@pytest.fixture(scope="module")
def engine() -> MattingPipeline:
    return MattingPipeline(ClassicalAlphaEstimator())


@pytest.mark.parametrize("name", list(CASES))
def test_the_classical_engine_beats_the_baselines_with_a_margin(engine, name):
    subject, backdrop = name.split("/")
    case = synthetic.make_case(subject, backdrop, WIDTH, HEIGHT, seed=1, supersample=4)
    new_background = synthetic.new_background(HEIGHT, WIDTH)
    trimap = metrics.evaluation_trimap(case.alpha)
    source_colour = case.image.astype(np.float32) / 255.0

    def scores(alpha: np.ndarray, foreground: np.ndarray) -> metrics.MatteScores:
        out = compose(case.image, alpha, foreground, new_background)
        return metrics.score_matte(alpha, case.alpha, composite=out, source=case.image,
                                   foreground_true=case.foreground,
                                   new_background=new_background, trimap=trimap)

    matte = engine(case.image)
    ours = scores(matte.alpha, matte.foreground)
    no_foreground = scores(matte.alpha, source_colour)
    binary = scores(metrics.feathered_binary_matte(case.alpha), source_colour)

    sad_ratio, mse_ratio, halo_ratio = CASES[name]
    assert binary.sad >= sad_ratio * ours.sad, (binary.sad, ours.sad)
    assert binary.mse >= mse_ratio * ours.mse, (binary.mse, ours.mse)
    assert no_foreground.halo >= halo_ratio * ours.halo, (no_foreground.halo, ours.halo)
    assert ours.exactness == 1.0
    # Errors stay at the edge: no holes in the subject, no specks in the backdrop.
    assert ours.sad_full < 1.3 * ours.sad + 0.05
