"""Reference mattes the engine is measured against, in the same run.

* the feathered hard mask: the TRUE mask thresholded and feathered, what a cut-out tool
  could at best do (`metrics.feathered_binary_matte`);
* keyed-trimap closed form: the plain classical recipe. Fit a surface to the border,
  call every pixel far from it foreground and every pixel near it background, erode
  both, and solve closed-form matting in between. No shadow model, no special cases:
  if the engine is not at least this good on a case class, its extra machinery hurts;
* oracle-trimap closed form: closed form given the TRUE trimap (every fractional pixel
  of the truth unknown, the rest known): the bound for any classical method, which the
  engine should come within 2x of.

Closed form is solved with the project's band-restricted solver (the same Laplacian as
pymatting's `estimate_alpha_cf`, cropped to the unknown pixels), so the baselines run at
1 MP in seconds.
"""

from __future__ import annotations

import numpy as np

from gpu_worker.matting.backdrop import fit_backdrop
from gpu_worker.matting.base import dilate, erode
from gpu_worker.matting.classical import _noise, backdrop_distance
from gpu_worker.matting.closed_form import solve_alpha


def keyed_trimap(image: np.ndarray, radius: int | None = None,
                 floor_levels: float = 10.0) -> np.ndarray:
    """uint8 trimap (0 / 128 / 255) keyed from the distance to the fitted border surface."""
    if radius is None:
        radius = max(2, int(round(0.005 * min(image.shape[:2]))))
    backdrop = fit_backdrop(image)
    distance = backdrop_distance(image, backdrop)
    threshold = max(4.0 * _noise(distance), floor_levels / 255.0)
    subject = distance >= threshold
    trimap = np.full(subject.shape, 128, np.uint8)
    trimap[erode(subject, radius)] = 255
    trimap[~dilate(subject, radius)] = 0
    return trimap


def oracle_trimap(alpha_true: np.ndarray, radius: int = 2) -> np.ndarray:
    """The true trimap: fractional pixels of the truth (grown by `radius`) unknown."""
    fractional = (alpha_true > 0.002) & (alpha_true < 0.998)
    trimap = np.where(alpha_true >= 0.5, 255, 0).astype(np.uint8)
    trimap[dilate(fractional, radius)] = 128
    return trimap


def closed_form_from_trimap(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Closed-form alpha (HxW float32) for a uint8 image and a 0/128/255 trimap."""
    known = trimap != 128
    values = (trimap == 255).astype(np.float64)
    return solve_alpha(image.astype(np.float64) / 255.0, known, values)
