"""Foreground colour estimation in the edge band.

A pixel that is 40% hair and 60% white paper is, in the source, a pale brown. Composing
that colour with alpha 0.4 onto a dark scene leaves a pale fringe: the halo cheap cutouts
have. We estimate the subject's own colour F (and the old backdrop B) with pymatting's
multi-level method (Germer et al. 2020) at the working resolution, on the band's bounding
box only. At higher source resolutions each band pixel is then corrected against its own
full-resolution colour: F and B are moved the least (in the least-squares sense) that
makes ``alpha * F + (1 - alpha) * B`` equal the observed colour, staying close to the
working-resolution estimates. Outside the band F is the source colour itself, so opaque
pixels stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatting import estimate_foreground_ml

from gpu_worker.matting.upsample import band_positions, sample_bilinear


@dataclass
class ForegroundEstimator:
    regularization: float = 1e-5
    margin: int = 8  # working pixels of context around the band
    # Weight of the working-resolution estimates in the full-resolution correction.
    correction_prior: float = 0.05

    def __call__(self, image: np.ndarray, alpha: np.ndarray, band: np.ndarray,
                 image_small: np.ndarray, alpha_small: np.ndarray,
                 background_small: np.ndarray | None = None) -> np.ndarray:
        """Returns F (HxWx3 float32 0..1) at the size of `image`.

        `background_small`, when the estimator modelled the backdrop, replaces the
        multi-level method's own guess of B in the per-pixel correction.
        """
        height, width = image.shape[:2]
        foreground = image.astype(np.float32)
        foreground *= np.float32(1.0 / 255.0)
        index = np.flatnonzero(band)
        if index.size == 0:
            return foreground
        h, w = alpha_small.shape
        same_size = (h, w) == (height, width)
        if same_size:
            ys, xs = np.divmod(index, width)
        else:
            ys, xs = band_positions(index, (height, width), (h, w))
        m = self.margin
        box = (slice(max(0, int(ys.min()) - m), min(h, int(ys.max()) + 2 + m)),
               slice(max(0, int(xs.min()) - m), min(w, int(xs.max()) + 2 + m)))
        crop = image_small[box].astype(np.float32) / 255.0
        f_small, b_small = estimate_foreground_ml(
            crop, alpha_small[box].astype(np.float32), regularization=self.regularization,
            return_background=True)
        flat = foreground.reshape(-1, 3)
        if same_size and background_small is None:
            flat[index] = np.clip(f_small[ys - box[0].start, xs - box[1].start], 0.0, 1.0)
            return foreground
        if background_small is not None:
            b0 = sample_bilinear(background_small, ys.astype(np.float32),
                                 xs.astype(np.float32))
        ys = ys.astype(np.float32) - box[0].start
        xs = xs.astype(np.float32) - box[1].start
        f0 = sample_bilinear(f_small, ys, xs)
        if background_small is None:
            b0 = sample_bilinear(b_small, ys, xs)
        a = alpha.reshape(-1)[index][:, None].astype(np.float32)
        observed = flat[index]
        residual = observed - a * f0 - (1.0 - a) * b0
        # With B known, F absorbs the whole residual (weighted by how much of the pixel
        # it covers); otherwise F and B share it.
        spread = 0.0 if background_small is not None else (1.0 - a) ** 2
        weight = a / (a * a + spread + self.correction_prior)
        flat[index] = np.clip(f0 + weight * residual, 0.0, 1.0)
        return foreground
