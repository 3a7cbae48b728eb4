"""Matte quality measures: the four of Rhemann et al. 2009, halo error, subject exactness.

SAD, MSE, Gradient and Connectivity follow "A Perceptually Motivated Online Benchmark
for Image Matting" (Rhemann et al., CVPR 2009) and the evaluation code published with
the Deep Image Matting data set: alpha in 0..1, errors summed over the unknown region
of a trimap; SAD, Gradient and Connectivity are reported divided by 1000 (the usual
convention), MSE as a mean. Because our engines are trimap-free, `sad_full` also counts
errors outside the unknown region (a hole punched in the subject's interior).

Connectivity takes, at each threshold, the largest 4-connected component of pixels
where BOTH mattes reach the threshold, never counting the background label. A widely
copied Python version takes ``argmax(bincount(labels))`` including label 0, so it
usually picks the background as "the largest component"; another labels with
8-connectivity (scikit-image's default in 2-D). Both are wrong and both are tested
against here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

# 4-connectivity: a pixel touches its left, right, upper and lower neighbours only.
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class MatteScores:
    sad: float
    mse: float
    gradient: float
    connectivity: float
    sad_full: float
    halo: float
    exactness: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def evaluation_trimap(alpha_true: np.ndarray, radius: int | None = None) -> np.ndarray:
    """The unknown region used for scoring: every fractional pixel of the truth, dilated.

    Returns a uint8 trimap (0 background, 128 unknown, 255 foreground), the format of
    the published benchmarks. `radius` defaults to 0.5% of the short side (4 px at 1 MP).
    """
    if radius is None:
        radius = max(2, int(round(0.005 * min(alpha_true.shape))))
    fractional = (alpha_true > 0) & (alpha_true < 1)
    unknown = ndimage.binary_dilation(fractional, iterations=radius)
    trimap = np.where(alpha_true >= 1.0, 255, 0).astype(np.uint8)
    trimap[unknown] = 128
    return trimap


def sad(alpha: np.ndarray, alpha_true: np.ndarray, region: np.ndarray) -> float:
    return float(np.abs(alpha - alpha_true)[region].sum(dtype=np.float64) / 1000.0)


def mse(alpha: np.ndarray, alpha_true: np.ndarray, region: np.ndarray) -> float:
    count = int(region.sum())
    if count == 0:
        return 0.0
    diff = (alpha - alpha_true)[region].astype(np.float64)
    return float((diff * diff).sum() / count)


def _gradient_magnitude(alpha: np.ndarray, sigma: float) -> np.ndarray:
    a = alpha.astype(np.float64)
    gx = ndimage.gaussian_filter(a, sigma, order=(0, 1))
    gy = ndimage.gaussian_filter(a, sigma, order=(1, 0))
    return np.hypot(gx, gy)


def gradient_error(alpha: np.ndarray, alpha_true: np.ndarray, region: np.ndarray,
                   sigma: float = 1.4) -> float:
    """Squared difference of gradient magnitudes (first-order Gaussian derivatives, sigma 1.4)."""
    diff = _gradient_magnitude(alpha, sigma) - _gradient_magnitude(alpha_true, sigma)
    return float((diff * diff)[region].sum() / 1000.0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of `mask` (all False when `mask` is empty)."""
    labels, count = ndimage.label(mask, structure=FOUR_CONNECTED)
    if count == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # label 0 is the background, never a component
    return labels == int(np.argmax(sizes))


def connectivity_error(alpha: np.ndarray, alpha_true: np.ndarray, region: np.ndarray,
                       step: float = 0.1, theta: float = 0.15) -> float:
    """Rhemann's connectivity error: how much each matte departs from the connected source."""
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    level = np.full(alpha.shape, -1.0)
    for i in range(1, len(thresholds)):
        omega = largest_component((alpha >= thresholds[i]) & (alpha_true >= thresholds[i]))
        newly_lost = (level == -1) & ~omega
        level[newly_lost] = thresholds[i - 1]
    level[level == -1] = 1.0
    d = alpha - level
    d_true = alpha_true - level
    phi = 1.0 - d * (d >= theta)
    phi_true = 1.0 - d_true * (d_true >= theta)
    return float(np.abs(phi - phi_true)[region].sum() / 1000.0)


def edge_band(alpha: np.ndarray, alpha_true: np.ndarray, radius: int = 1) -> np.ndarray:
    """Pixels where either matte is fractional: where a halo can show."""
    fractional = ((alpha > 0) & (alpha < 1)) | ((alpha_true > 0) & (alpha_true < 1))
    return ndimage.binary_dilation(fractional, iterations=radius) if radius else fractional


def composite_float(alpha: np.ndarray, foreground: np.ndarray,
                    background: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float32)
    return foreground * a + background * (1.0 - a)


def halo_error(composite: np.ndarray, alpha_true: np.ndarray, foreground_true: np.ndarray,
               new_background: np.ndarray, band: np.ndarray) -> float:
    """Mean absolute colour error in 8-bit levels, in the edge band, of a re-composite.

    `composite` is what the system produced on `new_background` (uint8 or float 0..1);
    the ideal is the true foreground over the same background with the true alpha.
    """
    ideal = composite_float(alpha_true, foreground_true, new_background)
    ours = composite.astype(np.float32) / 255.0 if composite.dtype == np.uint8 else composite
    if not band.any():
        return 0.0
    return float(np.abs(ours - ideal)[band].mean() * 255.0)


def subject_exactness(output: np.ndarray, source: np.ndarray, alpha: np.ndarray) -> float:
    """Share of alpha == 1 pixels whose output is bit-identical to the source (1.0 if none)."""
    opaque = alpha >= 1.0
    count = int(opaque.sum())
    if count == 0:
        return 1.0
    same = np.all(output == source, axis=-1) & opaque
    return float(same.sum() / count)


def feathered_binary_matte(alpha_true: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Baseline: the TRUE mask thresholded at 0.5, its edge feathered (Gaussian, `sigma` px).

    The best a hard-mask cutout tool could do; its interior stays exactly opaque.
    """
    hard = (alpha_true >= 0.5).astype(np.float32)
    soft = ndimage.gaussian_filter(hard, sigma).astype(np.float32)
    soft[(hard > 0) & (soft > 0.999)] = 1.0
    return np.clip(soft, 0.0, 1.0)


def score_matte(alpha: np.ndarray, alpha_true: np.ndarray, *, composite: np.ndarray,
                source: np.ndarray, foreground_true: np.ndarray,
                new_background: np.ndarray, trimap: np.ndarray | None = None) -> MatteScores:
    """All measures for one matte and its re-composite on `new_background`."""
    if trimap is None:
        trimap = evaluation_trimap(alpha_true)
    unknown = trimap == 128
    everywhere = np.ones(alpha.shape, bool)
    return MatteScores(
        sad=sad(alpha, alpha_true, unknown),
        mse=mse(alpha, alpha_true, unknown),
        gradient=gradient_error(alpha, alpha_true, unknown),
        connectivity=connectivity_error(alpha, alpha_true, unknown),
        sad_full=sad(alpha, alpha_true, everywhere),
        halo=halo_error(composite, alpha_true, foreground_true, new_background,
                        edge_band(alpha, alpha_true)),
        exactness=subject_exactness(composite, source, alpha),
    )
