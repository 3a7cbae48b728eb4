"""The generated test images carry an exact truth: real sub-pixel alpha, not feathering."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker import synthetic


@pytest.fixture(scope="module")
def hair() -> synthetic.SyntheticCase:
    return synthetic.make_case("hair", "white", width=320, height=240, supersample=8)


@pytest.mark.parametrize("subject", synthetic.SUBJECTS)
@pytest.mark.parametrize("backdrop", synthetic.BACKDROPS)
def test_every_case_obeys_the_compositing_equation(subject, backdrop):
    case = synthetic.make_case(subject, backdrop, width=96, height=72, supersample=4)
    ideal = case.alpha[..., None] * case.foreground + \
        (1 - case.alpha[..., None]) * case.background
    # Only sensor noise (1 level) and 8-bit rounding separate image and truth.
    error = np.abs(case.image / 255.0 - ideal)
    assert error.mean() * 255 < 1.5
    assert case.image.dtype == np.uint8 and case.image.shape == (72, 96, 3)
    assert case.alpha.dtype == np.float32 and 0 <= case.alpha.min() <= case.alpha.max() <= 1


def test_hair_strands_are_sub_pixel_with_true_fractional_alpha(hair):
    # Strands thinner than a pixel never reach alpha 1; a feathered mask would give a
    # smooth ramp next to solid pixels instead. Many pixels sit well below 0.5.
    thin = (hair.alpha > 0.05) & (hair.alpha < 0.5)
    assert thin.sum() > 400
    # Above the head there are only strands: few of their pixels are fully covered.
    strands = hair.alpha[: int(hair.alpha.shape[0] * 0.14)]
    assert (strands > 0).sum() > 300
    assert (strands >= 1).sum() < 0.15 * (strands > 0).sum()


def test_supersampling_gives_coverage_not_a_blur():
    coarse = synthetic.make_case("product", "grey", width=120, height=90, supersample=1)
    fine = synthetic.make_case("product", "grey", width=120, height=90, supersample=8)
    # Without supersampling every pixel is 0 or 1; with it, edges take the covered share.
    assert set(np.unique(coarse.alpha)) <= {0.0, 1.0}
    fractional = (fine.alpha > 0) & (fine.alpha < 1)
    assert 0 < fractional.sum() < 0.05 * fine.alpha.size


def test_the_translucent_drape_has_a_wide_see_through_region():
    case = synthetic.make_case("translucent", "white", width=200, height=150, supersample=4)
    see_through = (case.alpha > 0.25) & (case.alpha < 0.55)
    assert see_through.sum() > 0.03 * case.alpha.size


def test_motion_blur_makes_long_alpha_ramps():
    case = synthetic.make_case("motion_blur", "white", width=200, height=150, supersample=4)
    assert ((case.alpha > 0.1) & (case.alpha < 0.9)).sum() > 300


def test_cases_are_reproducible_from_their_seed():
    a = synthetic.make_case("hair", "gradient", width=64, height=48, seed=3, supersample=2)
    b = synthetic.make_case("hair", "gradient", width=64, height=48, seed=3, supersample=2)
    c = synthetic.make_case("hair", "gradient", width=64, height=48, seed=4, supersample=2)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_foreground_colours_are_far_from_the_backdrop_so_halos_show(hair):
    opaque = hair.alpha >= 1
    distance = np.abs(hair.foreground[opaque] - hair.background[opaque]).max(axis=1)
    assert np.median(distance) > 0.3
