"""The learned engine's refiner: a trimap from the network's coarse mask, the band solved.

Segmentation networks are good at deciding what is subject and many of them are poor at
the edge itself: a hard 0/1 mask, or a soft ramp a few pixels wide that follows no
strand. `BandRefiner` (the classical engine's refiner) only re-solves the pixels the
estimate is unsure about, and a hard mask leaves none; it also keeps the estimate for
unknown pixels more than 12 px from any known one, so a band sized for a larger working
image would keep an unsolved middle. Turning the mask into an Estimate with 0.5 in a
band would therefore not be enough, hence a refiner of its own, chosen for the learned
engine in `gpu_worker.models`:

1. trimap: sure foreground is where the mask is high, eroded by the band's half-width;
   sure background where it is low, eroded the same; the rest is the unknown band. The
   half-width is a share of the working image's short side (1% by default, at least
   3 px), so the band covers the same part of the subject at every resolution, and a
   network's own soft pixels (hair it did see) always fall inside it;
2. the band is solved with closed-form matting (`closed_form.solve_alpha`, restricted to
   the band's bounding boxes) against the full-detail working image, the network's
   value as a weak prior; unknown pixels far from every known one (a translucent
   interior the network marked soft) keep the network's value, so the solve stays a band;
3. near-0 and near-1 values are snapped, as the band refiner does, so the subject stays
   exact (alpha 1 means the source pixel, bit for bit).

The matting pipeline then upsamples the alpha and estimates the foreground colour in
the fractional band as for every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpu_worker.matting.base import Estimate, erode
from gpu_worker.matting.closed_form import solve_alpha

# Trimap values, as the published matting benchmarks store them.
BACKGROUND, UNKNOWN, FOREGROUND = 0, 128, 255


@dataclass
class TrimapRefiner:
    band: float = 0.01  # half-width of the unknown band, as a share of the short side
    min_band: int = 3  # ... and at least this many working pixels
    high: float = 0.9  # mask values at or above this are foreground before erosion
    low: float = 0.1  # ... at or below this, background
    # Unknown pixels farther than reach x half-width from every known pixel keep the
    # network's value: a hard mask's band never has any (its pixels are at most one
    # half-width from a known side); wide soft regions do.
    reach: float = 2.0
    snap: float = 0.04  # alpha within this of 0 or 1 becomes 0 or 1
    epsilon: float = 1e-6

    def half_width(self, shape: tuple[int, ...]) -> int:
        return max(self.min_band, int(round(self.band * min(shape[:2]))))

    def trimap(self, coarse: np.ndarray, known_background: np.ndarray | None = None
               ) -> np.ndarray:
        """uint8 trimap (0 background, 128 unknown, 255 foreground) of a coarse mask."""
        radius = self.half_width(coarse.shape)
        foreground = erode(coarse >= self.high, radius)
        background = erode(coarse <= self.low, radius)
        if known_background is not None:
            background |= erode(known_background, radius)
        background &= ~foreground
        trimap = np.full(coarse.shape, UNKNOWN, np.uint8)
        trimap[foreground] = FOREGROUND
        trimap[background] = BACKGROUND
        return trimap

    def __call__(self, image: np.ndarray, estimate: Estimate) -> np.ndarray:
        coarse = np.clip(estimate.alpha.astype(np.float32), 0.0, 1.0)
        trimap = self.trimap(coarse, estimate.known_background)
        known = trimap != UNKNOWN
        values = np.where(trimap == FOREGROUND, 1.0, np.where(known, 0.0, coarse))
        if not known.all():
            distance = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 3)
            known = known | (distance > self.reach * self.half_width(coarse.shape))
        alpha = values.astype(np.float32)
        if not known.all():
            alpha = solve_alpha(image.astype(np.float64) / 255.0, known, values,
                                prior=coarse, epsilon=self.epsilon)
        alpha[alpha < self.snap] = 0.0
        alpha[alpha > 1.0 - self.snap] = 1.0
        return alpha
