"""The classical engine and the shared matting stages, each on its own, on generated truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gpu_worker import metrics, synthetic
from gpu_worker.errors import RenderError
from gpu_worker.matting.backdrop import fit_backdrop
from gpu_worker.matting.base import Estimate, resize_image
from gpu_worker.matting.classical import ClassicalAlphaEstimator
from gpu_worker.matting.closed_form import solve_alpha
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.matting.foreground import ForegroundEstimator
from gpu_worker.matting.refine import BandRefiner
from gpu_worker.matting.upsample import GuidedUpsampler


@pytest.fixture(scope="module")
def engine() -> MattingPipeline:
    return MattingPipeline(ClassicalAlphaEstimator())


@pytest.fixture(scope="module")
def product() -> synthetic.SyntheticCase:
    return synthetic.make_case("product", "gradient", width=240, height=180, supersample=4)


def test_it_mattes_a_product_on_a_gradient_backdrop_close_to_the_truth(engine, product):
    matte = engine(product.image)
    unknown = metrics.evaluation_trimap(product.alpha) == 128
    assert matte.alpha.shape == product.alpha.shape and matte.alpha.dtype == np.float32
    assert metrics.sad(matte.alpha, product.alpha, unknown) < 0.1
    # No hole in the product, no stray matter in the backdrop.
    interior = metrics.evaluation_trimap(product.alpha) == 255
    assert np.mean(matte.alpha[interior] >= 1) > 0.995
    assert np.all(matte.alpha[metrics.evaluation_trimap(product.alpha) == 0] < 0.05)


def test_the_matte_holds_only_the_256_levels_an_8_bit_png_can_store(engine, product):
    alpha = engine(product.image).alpha
    assert np.array_equal(alpha, np.round(alpha * 255) / 255)


def test_it_refuses_a_backdrop_that_is_not_plain(engine):
    busy = synthetic.checkerboard_scene(180, 240)
    with pytest.raises(RenderError) as caught:
        engine(busy)
    assert caught.value.code == "backdrop_not_plain"


def test_it_says_no_subject_when_the_backdrop_is_empty(engine):
    empty = synthetic.make_case("product", "grey", width=160, height=120, supersample=1)
    blank = np.clip(np.round(empty.background * 255), 0, 255).astype(np.uint8)
    with pytest.raises(RenderError) as caught:
        engine(blank)
    assert caught.value.code == "no_subject_found"


def test_the_backdrop_model_ignores_a_subject_covering_much_of_the_border():
    # The portrait's shoulders cover half the bottom edge; the gradient must still fit.
    case = synthetic.make_case("hair", "gradient", width=320, height=240, supersample=2)
    model = fit_backdrop(case.image, order=3)
    rendered = model.render(240, 320)
    visible = case.alpha == 0
    error = np.abs(rendered - case.background)[visible].mean() * 255
    assert error < 1.5
    assert model.noise * 255 < 2.5


def test_the_band_refiner_snaps_near_certain_values_and_keeps_real_fractions():
    alpha = np.array([[0.03, 0.5, 0.97]], np.float32)
    snapped = BandRefiner(mode="snap")(np.zeros((1, 3, 3), np.uint8), Estimate(alpha))
    assert snapped.tolist() == [[0.0, 0.5, 1.0]]


def test_the_closed_form_solve_survives_an_unknown_region_touching_no_known_pixel():
    image = np.random.default_rng(0).uniform(0, 1, (20, 20, 3))
    known = np.ones((20, 20), bool)
    known[2:18, 2:18] = False  # a wide unknown island: only the prior decides its middle
    values = np.zeros((20, 20))
    prior = np.full((20, 20), 0.5)
    alpha = solve_alpha(image, known, values, prior=prior)
    assert np.isfinite(alpha).all() and alpha.min() >= 0 and alpha.max() <= 1


def test_the_closed_form_solve_recovers_a_soft_edge_between_known_regions():
    case = synthetic.make_case("motion_blur", "white", width=160, height=120, supersample=2)
    truth = case.alpha
    known = (truth == 0) | (truth == 1)
    alpha = solve_alpha(case.image / 255.0, known, truth.astype(np.float64),
                        prior=np.full(truth.shape, 0.5))
    ramp = ~known
    assert np.abs(alpha - truth)[ramp].mean() < 0.05


def test_guided_upsampling_beats_a_plain_resize_on_hair():
    case = synthetic.make_case("hair", "white", width=480, height=360, supersample=4)
    small = resize_image(case.image, 180, 240)
    alpha_small = resize_image(case.alpha, 180, 240)
    guided, band = GuidedUpsampler()(case.image, small, alpha_small)
    plain = cv2.resize(alpha_small, (480, 360), interpolation=cv2.INTER_LINEAR)
    unknown = metrics.evaluation_trimap(case.alpha) == 128
    assert guided.shape == case.alpha.shape and band.shape == case.alpha.shape
    assert metrics.sad(guided, case.alpha, unknown) < 0.85 * metrics.sad(plain, case.alpha, unknown)
    # Outside the band every pixel is exactly 0 or 1.
    assert set(np.unique(guided[~band])) <= {0.0, 1.0}


def test_foreground_estimation_removes_the_old_backdrop_from_edge_pixels():
    case = synthetic.make_case("hair", "white", width=240, height=180, supersample=4)
    band = (case.alpha > 0.1) & (case.alpha < 0.9)
    estimated = ForegroundEstimator()(case.image, case.alpha, (case.alpha > 0) & (case.alpha < 1),
                                      case.image, case.alpha)
    source = case.image / 255.0
    error_estimated = np.abs(estimated - case.foreground)[band].mean()
    error_source = np.abs(source - case.foreground)[band].mean()
    assert error_estimated < 0.5 * error_source


def test_foreground_is_the_source_colour_outside_the_band(engine, product):
    matte = engine(product.image)
    outside = ~matte.band
    assert np.array_equal(np.round(matte.foreground[outside] * 255).astype(np.uint8),
                          product.image[outside])


def test_the_matte_function_returns_alpha_for_any_rgb_array(engine, product):
    alpha = engine.matte_fn(product.image)
    assert alpha.shape == product.image.shape[:2] and alpha.dtype == np.float32
    assert np.array_equal(alpha, engine(product.image).alpha)


def test_a_large_input_is_matted_at_the_bounded_working_resolution():
    case = synthetic.make_case("product", "white", width=400, height=300, supersample=2)
    small_engine = MattingPipeline(ClassicalAlphaEstimator(), working_pixels=100 * 75)
    matte = small_engine(case.image)
    assert matte.facts["working_size"] == [100, 75]
    assert matte.alpha.shape == (300, 400)
    unknown = metrics.evaluation_trimap(case.alpha) == 128
    assert metrics.sad(matte.alpha, case.alpha, unknown) < 0.5


@pytest.mark.parametrize("width,height", [(300, 200), (200, 300), (256, 256)])
def test_no_false_subject_appears_in_the_backdrop_at_any_aspect_ratio(engine, width, height):
    # A needlessly flexible backdrop model, pinned only at the frame where shoulders
    # hide the bottom edge, once bulged in the middle and turned paper into "subject".
    case = synthetic.make_case("hair", "white", width=width, height=height, supersample=2)
    matte = engine(case.image)
    far = metrics.evaluation_trimap(case.alpha, radius=3) == 0
    assert np.mean(matte.alpha[far] > 0) < 0.001


def _panel_of(case: synthetic.SyntheticCase):
    from gpu_worker.matting.classical import _noise, find_translucent_panel

    height, width = case.alpha.shape
    model = fit_backdrop(resize_image(case.image, height // 2, width // 2)).render(height, width)
    distance = np.max(np.abs(case.image / 255.0 - model), axis=2).astype(np.float32)
    noise = _noise(distance)
    threshold = max(4.0 * noise, 10.0 / 255.0)
    return find_translucent_panel(case.image, model, distance >= threshold, noise, threshold)


def test_a_see_through_drape_is_found_and_solved_along_its_colour_line():
    case = synthetic.make_case("translucent", "coloured", width=384, height=288, supersample=2)
    panel = _panel_of(case)
    assert panel is not None
    over_backdrop = (case.alpha > 0.2) & (case.alpha < 0.6)
    # Most of the drape over paper is the panel, and almost none of the opaque figure.
    assert panel.mask[over_backdrop].mean() > 0.7
    assert (panel.mask & (case.alpha >= 1)).sum() < 0.02 * panel.mask.sum()
    found = panel.mask & over_backdrop
    assert abs(float(panel.alpha[found].mean()) - float(case.alpha[found].mean())) < 0.06


@pytest.mark.parametrize("subject", ["hair", "product", "motion_blur"])
def test_opaque_subjects_have_no_see_through_panel(subject):
    case = synthetic.make_case(subject, "white", width=384, height=288, supersample=2)
    assert _panel_of(case) is None
