"""A model of a plain studio backdrop, fitted to the image border.

Catalogue photos are shot on seamless paper or a painted cove: one colour, or a smooth
falloff of light across it. Each channel is modelled as a low-order polynomial of the
pixel position, fitted robustly to the border (where the subject rarely is), then refitted
to every pixel that matches it, so the model is accurate right next to the subject where
the alpha is decided. A polynomial of order <= 3 is fully determined by its values on a
rectangle's boundary, so fitting to the border alone is well-posed.

The same fit tells us when the backdrop is NOT plain: the border does not fit a smooth
surface (texture, a room, a second object), or too little of it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpu_worker.errors import RenderError

# Refusal thresholds, in 8-bit levels / shares. A plain paper backdrop photographed
# well leaves a residual of 1-3 levels; textured walls and rooms leave 10+.
MAX_NOISE_LEVELS = 6.0
MIN_BORDER_INLIERS = 0.55


@dataclass(frozen=True)
class Backdrop:
    coefficients: np.ndarray  # (terms, 3) float64
    order: int
    noise: float  # robust per-channel sigma of the fit's residual, 0..1 units
    border_inliers: float  # share of border pixels the model explains

    def render(self, height: int, width: int) -> np.ndarray:
        """The modelled backdrop at any resolution (HxWx3 float32 0..1)."""
        ys = (np.arange(height, dtype=np.float64) + 0.5) / height * 2.0 - 1.0
        xs = (np.arange(width, dtype=np.float64) + 0.5) / width * 2.0 - 1.0
        out = np.zeros((height, width, 3), np.float32)
        for k, (px, py) in enumerate(_exponents(self.order)):
            term = np.outer(ys ** py, xs ** px).astype(np.float32)
            out += term[..., None] * self.coefficients[k].astype(np.float32)
        return np.clip(out, 0.0, 1.0)

    @property
    def facts(self) -> dict[str, float]:
        return {"backdrop_noise_levels": round(self.noise * 255.0, 2),
                "backdrop_border_inliers": round(self.border_inliers, 3),
                "backdrop_colour": [round(float(c), 4) for c in self.coefficients[0]]}


def _exponents(order: int) -> list[tuple[int, int]]:
    return [(i, d - i) for d in range(order + 1) for i in range(d + 1)]


def _design(ys: np.ndarray, xs: np.ndarray, height: int, width: int, order: int) -> np.ndarray:
    u = (xs + 0.5) / width * 2.0 - 1.0
    v = (ys + 0.5) / height * 2.0 - 1.0
    return np.stack([u ** px * v ** py for px, py in _exponents(order)], axis=1)


def _robust_sigma(residual: np.ndarray) -> float:
    # 1.4826 * MAD estimates a Gaussian sigma, ignoring the subject's outliers.
    med = np.median(residual, axis=0)
    return float(np.max(1.4826 * np.median(np.abs(residual - med), axis=0)))


def _consensus(design: np.ndarray, target: np.ndarray, rng: np.random.Generator,
               tries: int = 128, tolerance: float = 6.0 / 255.0) -> np.ndarray:
    """Inliers of the best of `tries` fits to small random subsets (RANSAC).

    Subsets are barely larger than the number of terms: with 15% of the border covered
    by the subject, a 30-pixel subset is all backdrop 0.8% of the time, a 12-pixel one
    14% of the time, so 128 tries find a clean one with near certainty.
    """
    n, terms = design.shape
    best = np.ones(n, bool)
    best_count = -1
    for _ in range(tries):
        pick = rng.choice(n, size=min(n, terms + 2), replace=False)
        coefficients, *_ = np.linalg.lstsq(design[pick], target[pick], rcond=None)
        inliers = np.max(np.abs(target - design @ coefficients), axis=1) < tolerance
        count = int(inliers.sum())
        if count > best_count:
            best, best_count = inliers, count
    return best if best_count >= terms * 10 else np.ones(n, bool)


def border_mask(height: int, width: int, width_share: float = 0.03) -> np.ndarray:
    band = max(2, int(round(min(height, width) * width_share)))
    mask = np.zeros((height, width), bool)
    mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = True, True, True, True
    return mask


def _terms(order: int) -> int:
    return (order + 1) * (order + 2) // 2


def _fit_border(design: np.ndarray, target: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, float, np.ndarray]:
    """Robust fit of one polynomial order: (coefficients, sigma, inliers)."""
    # The subject often covers part of the border (shoulders leave through the bottom),
    # which drags a least-squares fit far off; so start from the polynomial that most
    # border pixels agree with (RANSAC), then refine on its inliers.
    inliers = _consensus(design, target, rng)
    coefficients = np.zeros((design.shape[1], 3))
    sigma = 1.0
    for _ in range(4):
        coefficients, *_ = np.linalg.lstsq(design[inliers], target[inliers], rcond=None)
        residual = target - design @ coefficients
        sigma = max(_robust_sigma(residual[inliers]), 0.5 / 255.0)
        inliers = np.max(np.abs(residual), axis=1) < max(4.0 * sigma, 3.0 / 255.0)
        if inliers.sum() < design.shape[1] * 10:
            break
    return coefficients, sigma, inliers


def fit_backdrop(image: np.ndarray, order: int = 3, max_samples: int = 40_000,
                 seed: int = 0) -> Backdrop:
    """Fits the backdrop to `image` (uint8 HxWx3); refuses backdrops that are not plain.

    `order` is the highest polynomial order tried: the lowest order that fits the
    border about as well as the best is used, because a needlessly flexible surface,
    pinned only at the frame, can bulge in the middle where the subject hides the
    backdrop (and every bulge becomes false "subject").

    Raises RenderError("backdrop_not_plain") when the border does not look like a
    smooth studio backdrop, rather than returning a model that would give a bad matte.
    """
    height, width = image.shape[:2]
    rng = np.random.default_rng(seed)
    colours = image.reshape(-1, 3).astype(np.float64) / 255.0

    def sample(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask.ravel())
        if idx.size > max_samples:
            idx = rng.choice(idx, max_samples, replace=False)
        return idx

    border = sample(border_mask(height, width))
    ys, xs = np.divmod(border, width)
    design = _design(ys, xs, height, width, order)
    target = colours[border]
    fits = {o: _fit_border(design[:, :_terms(o)], target, np.random.default_rng([seed, o]))
            for o in range(1, order + 1)}
    # Judge every order by the same yardstick: the share of the border it explains
    # within the best fit's noise band.
    best_sigma = min(fit[1] for fit in fits.values())
    tolerance = max(4.0 * best_sigma, 3.0 / 255.0)
    shares = {o: float(np.mean(np.max(np.abs(target - design[:, :_terms(o)] @ fit[0]), axis=1)
                               < tolerance)) for o, fit in fits.items()}
    good_enough = [o for o, fit in fits.items()
                   if fit[1] <= 1.15 * best_sigma + 0.1 / 255.0
                   and shares[o] >= max(shares.values()) - 0.02]
    chosen = good_enough[0] if good_enough else min(fits, key=lambda o: fits[o][1])
    coefficients, sigma, inliers = fits[chosen]
    share = float(inliers.mean())
    if share < MIN_BORDER_INLIERS or sigma * 255.0 > MAX_NOISE_LEVELS:
        raise RenderError(
            "backdrop_not_plain",
            "The classical matting engine needs a plain studio backdrop (one colour or a "
            f"smooth gradient); this image's border is not one (fits {share:.0%} of the "
            f"border, residual {sigma * 255.0:.1f} levels). Use the learned engine.",
        )

    # Second pass: refit on every pixel that matches the border model, so the model is
    # right next to the subject, not only at the frame.
    everything = sample(np.ones((height, width), bool))
    ys, xs = np.divmod(everything, width)
    design_all = _design(ys, xs, height, width, chosen)
    for _ in range(2):
        residual_all = colours[everything] - design_all @ coefficients
        matches = np.max(np.abs(residual_all), axis=1) < max(4.0 * sigma, 3.0 / 255.0)
        if matches.sum() <= design_all.shape[1] * 50:
            break
        coefficients, *_ = np.linalg.lstsq(design_all[matches], colours[everything][matches],
                                           rcond=None)
        sigma = max(_robust_sigma((colours[everything] - design_all @ coefficients)[matches]),
                    0.5 / 255.0)
    return Backdrop(coefficients, chosen, sigma, share)
