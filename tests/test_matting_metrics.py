"""The matte quality measures compute what Rhemann et al. 2009 define, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker import metrics


def test_sad_sums_absolute_errors_over_the_region_in_thousands():
    truth = np.zeros((4, 4), np.float32)
    alpha = truth.copy()
    alpha[0, 0] = 0.5
    alpha[3, 3] = 1.0  # outside the region: not counted
    region = np.zeros((4, 4), bool)
    region[:2, :2] = True
    assert metrics.sad(alpha, truth, region) == pytest.approx(0.5 / 1000)


def test_mse_is_the_mean_squared_error_over_the_region():
    truth = np.zeros((2, 2), np.float32)
    alpha = np.array([[0.5, 0.0], [0.0, 0.0]], np.float32)
    assert metrics.mse(alpha, truth, np.ones((2, 2), bool)) == pytest.approx(0.25 / 4)


def test_the_largest_component_uses_four_connectivity():
    # Two diagonal neighbours are NOT connected under 4-connectivity: the 3-pixel
    # L-shape is the largest component, not the diagonal chain of 4.
    mask = np.array([
        [1, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 1, 1],
        [0, 0, 0, 1, 0, 1],
    ], bool)
    largest = metrics.largest_component(mask)
    expected = np.zeros_like(mask)
    expected[2, 4] = expected[2, 5] = expected[3, 5] = True
    assert np.array_equal(largest, expected)


def test_the_largest_component_never_is_the_background():
    # Background (label 0) is by far the most common label; a buggy argmax over all
    # labels would return it. The answer must be the 2-pixel foreground blob.
    mask = np.zeros((20, 20), bool)
    mask[5, 5] = mask[5, 6] = True
    mask[15, 15] = True
    largest = metrics.largest_component(mask)
    assert largest.sum() == 2 and largest[5, 5] and largest[5, 6]


def test_the_largest_component_of_an_empty_mask_is_empty():
    assert not metrics.largest_component(np.zeros((3, 3), bool)).any()


def test_connectivity_error_is_zero_for_a_perfect_matte():
    truth = np.zeros((16, 16), np.float32)
    truth[4:12, 4:12] = 1.0
    truth[4:12, 3] = 0.5
    region = np.ones_like(truth, bool)
    assert metrics.connectivity_error(truth, truth, region) == 0.0


def test_connectivity_error_matches_a_hand_computed_case():
    # truth [1, 1, 0, 0, 0], prediction [1, .5, .4, 0, 0]. The joint component {0, 1}
    # loses pixel 1 after threshold 0.5 and never holds pixel 2, so the levels are
    # l = [1, .5, 0, 0, 0]; phi_pred = [1, 1, .6, 1, 1], phi_true = [1, .5, 1, 1, 1];
    # error = .5 + .4 = .9 (/1000). Picking the background label as "largest
    # component" (the copied bug) gives .5 instead.
    truth = np.array([[1, 1, 0, 0, 0]], np.float32)
    prediction = np.array([[1, 0.5, 0.4, 0, 0]], np.float32)
    region = np.ones_like(truth, bool)
    assert metrics.connectivity_error(prediction, truth, region) == pytest.approx(0.9 / 1000)


def test_gradient_error_sees_a_blurred_edge():
    truth = np.zeros((32, 32), np.float32)
    truth[:, 16:] = 1.0
    blurred = np.clip((np.arange(32, dtype=np.float32) - 12) / 8, 0, 1)[None].repeat(32, 0)
    region = np.ones_like(truth, bool)
    assert metrics.gradient_error(truth, truth, region) == 0.0
    assert metrics.gradient_error(blurred, truth, region) > 0.0


def test_the_evaluation_trimap_marks_fractional_truth_unknown_and_keeps_the_rest():
    truth = np.zeros((40, 40), np.float32)
    truth[10:30, 10:30] = 1.0
    truth[10:30, 9] = 0.5
    trimap = metrics.evaluation_trimap(truth, radius=2)
    assert trimap[20, 9] == 128 and trimap[20, 7] == 128
    assert trimap[20, 20] == 255 and trimap[0, 0] == 0


def test_the_halo_error_is_zero_for_the_ideal_composite_and_grows_with_old_background():
    alpha = np.full((4, 4), 0.5, np.float32)
    fg = np.zeros((4, 4, 3), np.float32)
    old_bg = np.ones((4, 4, 3), np.float32)
    new_bg = np.zeros((4, 4, 3), np.float32)
    band = np.ones((4, 4), bool)
    ideal = metrics.composite_float(alpha, fg, new_bg)
    assert metrics.halo_error(ideal, alpha, fg, new_bg, band) == 0.0
    # Using the source colour (half old white background) as F leaves a grey halo.
    source = metrics.composite_float(alpha, fg, old_bg)
    halo = metrics.composite_float(alpha, source, new_bg)
    assert metrics.halo_error(halo, alpha, fg, new_bg, band) == pytest.approx(0.25 * 255)


def test_subject_exactness_counts_only_opaque_pixels():
    source = np.zeros((2, 2, 3), np.uint8)
    output = source.copy()
    output[0, 0] = 1  # opaque and changed
    output[1, 1] = 9  # transparent: may differ
    alpha = np.array([[1.0, 1.0], [1.0, 0.0]], np.float32)
    assert metrics.subject_exactness(output, source, alpha) == pytest.approx(2 / 3)
    assert metrics.subject_exactness(output, source, np.zeros((2, 2))) == 1.0
