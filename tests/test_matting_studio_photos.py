"""The classical engine on studio photos: shadows separated, hair kept, blur solved.

The cases come from `gpu_worker.studio_truth` (paper with fall-off and vignetting,
sensor noise, JPEG 4:2:0, shadows whose ratio S is known). Each test compares the engine
with baselines computed in the same test on the same image: the feathered TRUE mask,
closed form in a keyed trimap (`baselines.keyed_trimap`) and closed form in the TRUE
trimap. bench/matting_quality.py prints the same comparison at 1 MP.

On the engine before the shadow layer and the colour-line projection (main at 9fc93f2),
every test here failed but the two on fine strands and motion blur: it had no shadow
layer at all (the shadow was matted as subject), the grey mug's sides came out
translucent (96% of its interior opaque), and dense curls were washed out.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker import metrics, studio_truth
from gpu_worker.matting import baselines
from gpu_worker.matting.base import dilate, erode
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.shadow_policy import decide

WIDTH, HEIGHT = 576, 432


@pytest.fixture(scope="module")
def engine() -> MattingPipeline:
    return MattingPipeline(ClassicalAlphaEstimator())


_cases: dict[str, studio_truth.StudioCase] = {}


def case_named(name: str) -> studio_truth.StudioCase:
    if name not in _cases:
        _cases[name] = studio_truth.make_case(name, WIDTH, HEIGHT, seed=3)
    return _cases[name]


def band(case) -> np.ndarray:
    return metrics.evaluation_trimap(case.alpha) == 128


def whole_sad(alpha, case) -> float:
    return metrics.sad(alpha, case.alpha, np.ones(alpha.shape, bool))


def keyed(case) -> np.ndarray:
    return baselines.closed_form_from_trimap(case.image, baselines.keyed_trimap(case.image))


def oracle(case) -> np.ndarray:
    return baselines.closed_form_from_trimap(case.image, baselines.oracle_trimap(case.alpha))


def shadow_error(matte, case) -> float:
    support = (case.alpha < 0.01) & (case.shadow < 0.97)
    return float(np.abs(matte.shadow - case.shadow)[support].mean())


@pytest.mark.parametrize("name", ["bottle/white_soft", "bottle/cream_deep", "mug/grey_on_grey"])
def test_a_soft_contact_shadow_is_separated_from_the_subject_and_kept(engine, name):
    case = case_named(name)
    matte = engine(case.image)
    assert matte.shadow is not None and matte.shadow.shape == case.alpha.shape
    # The shadow is not in the matte: over the whole image the error is a small share of
    # the keyed baseline's, which mattes the shadow as subject.
    assert whole_sad(matte.alpha, case) < 0.1 * whole_sad(keyed(case), case)
    assert shadow_error(matte, case) < 0.02
    decision = decide(matte, preserve_shadow=True)
    assert decision.state == "kept"
    true_depth = float(1.0 - case.shadow[case.alpha < 0.01].min())
    assert abs(decision.strength - true_depth) < 0.08


def test_a_grey_product_on_grey_paper_stays_opaque_beside_its_shadow(engine):
    case = case_named("mug/grey_on_grey")
    matte = engine(case.image)
    interior = erode(case.alpha >= 1.0, 3)
    assert float(np.mean(matte.alpha[interior] >= 0.99)) > 0.99
    # ...and the shadow beside it is paper, not subject (the base line where the mug
    # meets a shadow of its own grey has no edge to go by: a few pixels are allowed).
    shadowed = ~dilate(case.alpha > 0, 3) & (case.shadow < 0.9)
    assert float(matte.alpha[shadowed].mean()) < 0.01


def test_a_hard_cast_shadow_is_separated_and_marked_hard(engine):
    case = case_named("bottle/hard_cast")
    matte = engine(case.image)
    assert matte.shadow is not None and matte.shadow_hard
    assert whole_sad(matte.alpha, case) < 0.1 * whole_sad(keyed(case), case)
    assert shadow_error(matte, case) < 0.06
    assert decide(matte, preserve_shadow=True).state == "dropped_hard"


@pytest.mark.parametrize("name", ["hair/dense_curls", "hair/fine_teal", "motion/gradient"])
def test_no_shadow_is_found_where_the_photo_has_none(engine, name):
    case = case_named(name)
    matte = engine(case.image)
    if matte.shadow is not None:
        clean = (case.alpha < 0.01)
        assert float(np.mean(matte.shadow[clean] < 0.97)) < 0.005
    assert decide(matte, preserve_shadow=True).state in ("none_found",)


def test_dense_opaque_hair_keeps_its_alpha(engine):
    case = case_named("hair/dense_curls")
    matte = engine(case.image)
    region = band(case)
    ours = metrics.sad(matte.alpha, case.alpha, region)
    # Measured: 0.18x the keyed baseline, 0.6x the oracle (the engine before: 0.5x, 1.7x).
    assert ours <= 0.3 * metrics.sad(keyed(case), case.alpha, region)
    assert ours <= 2.0 * metrics.sad(oracle(case), case.alpha, region)
    # Opaque curls stay opaque, not washed out to a grey haze (measured: 88% of them at
    # 0.9 or more; the engine before: 69%).
    opaque = region & (case.alpha >= 0.95)
    assert float(np.mean(matte.alpha[opaque] >= 0.9)) > 0.8


def test_fine_strands_stay_fractional_and_beat_the_feathered_mask(engine):
    case = studio_truth.make_case("hair/fine_teal", WIDTH, HEIGHT, seed=3, compress=False)
    matte = engine(case.image)
    region = band(case)
    feathered = metrics.feathered_binary_matte(case.alpha)
    assert metrics.mse(matte.alpha, case.alpha, region) < 0.5 * metrics.mse(
        feathered, case.alpha, region)
    strands = region & (case.alpha > 0.1) & (case.alpha < 0.6)
    assert float(np.mean((matte.alpha[strands] > 0) & (matte.alpha[strands] < 1))) > 0.8


def test_motion_blur_on_a_gradient_sweep_beats_every_baseline(engine):
    case = case_named("motion/gradient")
    matte = engine(case.image)
    region = band(case)
    ours = metrics.mse(matte.alpha, case.alpha, region)
    assert ours < 0.2 * metrics.mse(metrics.feathered_binary_matte(case.alpha), case.alpha,
                                    region)
    assert metrics.sad(matte.alpha, case.alpha, region) <= metrics.sad(
        keyed(case), case.alpha, region)
