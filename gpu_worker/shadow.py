"""The soft contact shadow under the subject, carried from the source onto the new scene.

A shadow is a multiplier on the floor it falls on. The clean floor is estimated from the
source backdrop outside the subject with a smooth surface fitted robustly (pixels darker
than the fit are treated as shadow and left out of the next fit), which suits the studio
backdrops this stage is for: white, grey, coloured, gradient sweeps. The shadow is then
``observed / clean`` (clamped to at most 1), measured on encoded 0..1 values because that
is the space the composite multiplies in.

What is kept is the contact shadow: it fades with distance from the subject's base (the
bottom of its silhouette) and fades sooner and is softened when its edges are hard. A
harsh, far-reaching cast shadow belongs to the old studio's lamp and would fight the new
scene's light; the soft darkening where the subject meets the floor is what stops it
from floating. On a textured backdrop the ratio means nothing, so nothing is carried.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpu_worker.matting.base import smoothstep
from gpu_worker.scene.canvas import fill_from_known

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
_MAX_BACKDROP_NOISE = 0.035  # robust residual spread above which the backdrop is not plain
_MIN_BACKGROUND_SHARE = 0.05


@dataclass(frozen=True)
class ShadowEstimate:
    """``multiplier`` is HxW float32 at the source size, 1 where no shadow is carried."""

    multiplier: np.ndarray
    carried: bool
    facts: dict


def _exponents(degree: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def _poly_terms(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([x**i * y**j for i, j in _exponents(degree)], axis=-1)


def clean_floor(luma: np.ndarray, background: np.ndarray, degree: int = 3) -> tuple[np.ndarray, float]:
    """A smooth surface through the unshadowed backdrop, and the robust spread around it.

    Asymmetric reweighting: after each fit, pixels well below it (shadow) and far above
    it (a highlight) leave the next fit, so a shadow covering a fifth of the backdrop does
    not drag the floor down.
    """
    h, w = luma.shape
    ys, xs = np.nonzero(background)
    step = max(1, len(ys) // 30000)  # a smooth surface needs thousands of samples, not millions
    ys, xs = ys[::step], xs[::step]
    x = xs / max(w - 1, 1) * 2 - 1
    y = ys / max(h - 1, 1) * 2 - 1
    design = _poly_terms(x.astype(np.float64), y.astype(np.float64), degree)
    values = luma[ys, xs].astype(np.float64)
    use = values >= np.percentile(values, 30)  # start from the brighter part: shadows are dark
    sigma = 0.0
    for _ in range(8):
        coef, *_ = np.linalg.lstsq(design[use], values[use], rcond=None)
        residual = values - design @ coef
        sigma = float(1.4826 * np.median(np.abs(residual[use] - np.median(residual[use])))) + 1e-4
        new_use = (residual > -2.5 * sigma) & (residual < 4.0 * sigma)
        if np.array_equal(new_use, use):
            break
        use = new_use
    # Evaluated term by term as outer products: a full design matrix at the working size
    # costs ten times more and holds ten copies of the image.
    col = np.linspace(-1.0, 1.0, w) if w > 1 else np.zeros(1)
    row = np.linspace(-1.0, 1.0, h) if h > 1 else np.zeros(1)
    surface = np.zeros((h, w), np.float64)
    for c, (i, j) in zip(coef, _exponents(degree)):
        surface += c * np.outer(row**j, col**i)
    return surface.astype(np.float32), sigma


def _base_distance(solid: np.ndarray) -> tuple[np.ndarray, float]:
    """Distance from the subject's base (its lowest silhouette pixels) and the subject's height."""
    rows = np.nonzero(solid.any(axis=1))[0]
    cols = np.nonzero(solid.any(axis=0))[0]
    top, bottom = rows[0], rows[-1]
    height = float(bottom - top + 1)
    width = float(cols[-1] - cols[0] + 1)
    size = max(height, 0.25 * width)  # a shoe's contact shadow still scales with its length
    lowest = solid.shape[0] - 1 - np.argmax(solid[::-1, :], axis=0)  # per column
    present = solid.any(axis=0)
    base = np.zeros_like(solid, dtype=np.uint8)
    near_bottom = present & (lowest >= bottom - 0.1 * height)
    base[lowest[near_bottom], np.nonzero(near_bottom)[0]] = 1
    dist = cv2.distanceTransform((1 - base).astype(np.uint8), cv2.DIST_L2, 5)
    return dist, size


def _hardness(darkness: np.ndarray, measured: np.ndarray, size: float) -> float:
    """0 for a soft penumbra, 1 for a razor edge: how much blurring lowers the steepest edges.

    A step's steepest gradient falls in proportion to the blur; a penumbra wider than the
    blur barely changes. Compared at 1 px and at 2% of the subject's height.
    """
    if measured.sum() < 20:
        return 0.0
    fine_sigma, coarse_sigma = 1.0, max(3.0, 0.02 * size)
    fine = cv2.GaussianBlur(darkness, (0, 0), fine_sigma)
    coarse = cv2.GaussianBlur(darkness, (0, 0), coarse_sigma)
    g_fine = np.hypot(*np.gradient(fine))[measured]
    g_coarse = np.hypot(*np.gradient(coarse))[measured]
    top_fine = float(np.percentile(g_fine, 99.5))
    if top_fine < 1e-4:
        return 0.0
    ratio = float(np.percentile(g_coarse, 99.5)) / top_fine
    step_ratio = fine_sigma / coarse_sigma
    return float(np.clip((1.0 - ratio) / (1.0 - step_ratio), 0.0, 1.0))


def estimate_contact_shadow(
    image: np.ndarray,
    alpha: np.ndarray,
    *,
    max_side: int = 768,
    reach: float = 0.3,
    fade: float = 0.35,
) -> ShadowEstimate:
    """The soft contact shadow to multiply onto a new background.

    ``image`` HxWx3 uint8, ``alpha`` HxW 0..1. ``reach`` (full strength) and ``fade``
    (then down to nothing) are fractions of the subject's height, measured from its base;
    a hard-edged shadow gets a third of both, half its depth, and a blur.
    """
    height, width = alpha.shape
    ones = np.ones((height, width), np.float32)
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    small_alpha = cv2.resize(alpha.astype(np.float32), size, interpolation=cv2.INTER_AREA) if scale < 1 else alpha
    solid = small_alpha >= 0.5
    if not solid.any():
        return ShadowEstimate(ones, False, {"carried": False, "reason": "no_subject"})
    subject = cv2.dilate((small_alpha > 0.02).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    background = ~subject
    if background.mean() < _MIN_BACKGROUND_SHARE:
        return ShadowEstimate(ones, False, {"carried": False, "reason": "no_backdrop_visible"})

    luma = (small.astype(np.float32) / 255.0) @ _LUMA
    luma = cv2.GaussianBlur(luma, (0, 0), 1.2)
    floor, noise = clean_floor(luma, background)
    if noise > _MAX_BACKDROP_NOISE:
        return ShadowEstimate(
            ones, False, {"carried": False, "reason": "backdrop_not_plain", "backdrop_noise": round(noise, 4)}
        )
    ratio = np.clip(luma / np.maximum(floor, 1e-3), 0.0, 1.0)
    darkness = np.where(background, 1.0 - ratio, 0.0).astype(np.float32)
    # Below a few noise levels a "shadow" is sensor noise or backdrop unevenness.
    gate = max(0.02, 3.0 * noise / max(float(np.median(floor[background])), 1e-3))
    darkness *= smoothstep(gate, 2 * gate, darkness)
    darkness = fill_from_known(darkness[..., None], background)[..., 0]
    observed = float(darkness[background].max())

    base_dist, subject_size = _base_distance(solid)
    away = cv2.distanceTransform(subject.astype(np.uint8) ^ 1, cv2.DIST_L2, 3)
    measured = background & (away > 3) & (darkness > gate)
    hardness = _hardness(darkness, measured, subject_size)
    # Penumbrae a few pixels wide still read as soft; only clearly hard edges count.
    harsh = float(smoothstep(0.3, 0.8, np.float32(hardness)))
    shrink = 1.0 - (2.0 / 3.0) * harsh
    full, zero = reach * shrink * subject_size, (reach + fade) * shrink * subject_size
    # What is left of a hard shadow near the base is lightened and blurred into a soft
    # contact shadow: a sharp stub of the old lamp's shadow would point the wrong way.
    kept = darkness * (1.0 - smoothstep(full, zero, base_dist)) * (1.0 - 0.5 * harsh)
    if harsh > 0:
        kept = cv2.GaussianBlur(kept, (0, 0), max(0.5, harsh * 0.05 * subject_size))
    kept = np.clip(kept, 0.0, 1.0)
    facts = {
        "carried": bool(kept.max() > 0.02),
        "observed_max_darkness": round(observed, 3),
        "kept_max_darkness": round(float(kept.max()), 3),
        "hardness": round(hardness, 3),
        "backdrop_noise": round(noise, 4),
    }
    if not facts["carried"]:
        facts["reason"] = "no_shadow_found"
        return ShadowEstimate(ones, False, facts)
    multiplier = 1.0 - kept
    if scale < 1:
        multiplier = cv2.resize(multiplier, (width, height), interpolation=cv2.INTER_LINEAR)
    return ShadowEstimate(np.clip(multiplier, 0.0, 1.0).astype(np.float32), True, facts)
