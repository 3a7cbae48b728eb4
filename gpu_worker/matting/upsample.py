"""Guided upsampling of the working-resolution alpha to the source resolution.

A 24 MP studio file is matted at about 1 MP; a plain resize of that alpha would blur
every hair. The guided filter (He, Sun and Tang) models alpha as a local linear function
of the image colour, ``alpha = a . I + b``, so fine structure in the full-resolution
image comes back into the matte. We use its fast form for upsampling (He and Sun 2015,
"Fast Guided Filter"): the coefficients are fitted at the working resolution, then
interpolated and applied to the full-resolution colours.

Why not `cv2.ximgproc.guidedFilter` on the full image: it would need a full-resolution
alpha to filter and nine box-filtered full-resolution planes (over 2 GB at 24 MP) to
touch every pixel, while the only pixels that can be fractional are the few percent in
the edge band. Here the full resolution is touched only in that band.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpu_worker.matting.base import dilate, fractional


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    return cv2.boxFilter(x, -1, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, source: np.ndarray, radius: int,
                        eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean coefficients (a: HxWx3, b: HxW) of the colour guided filter, float32."""
    guide = guide.astype(np.float32)
    p = source.astype(np.float32)
    mean_i = _box(guide, radius)
    mean_p = _box(p, radius)
    cov_ip = _box(guide * p[..., None], radius) - mean_i * mean_p[..., None]
    # The 3x3 colour covariance per pixel, regularised; solved in closed form.
    r, g, b = guide[..., 0], guide[..., 1], guide[..., 2]
    mr, mg, mb = mean_i[..., 0], mean_i[..., 1], mean_i[..., 2]
    vrr = _box(r * r, radius) - mr * mr + eps
    vrg = _box(r * g, radius) - mr * mg
    vrb = _box(r * b, radius) - mr * mb
    vgg = _box(g * g, radius) - mg * mg + eps
    vgb = _box(g * b, radius) - mg * mb
    vbb = _box(b * b, radius) - mb * mb + eps
    irr = vgg * vbb - vgb * vgb
    irg = vgb * vrb - vrg * vbb
    irb = vrg * vgb - vgg * vrb
    igg = vrr * vbb - vrb * vrb
    igb = vrb * vrg - vrr * vgb
    ibb = vrr * vgg - vrg * vrg
    det = vrr * irr + vrg * irg + vrb * irb
    c0, c1, c2 = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    a = np.stack([(irr * c0 + irg * c1 + irb * c2) / det,
                  (irg * c0 + igg * c1 + igb * c2) / det,
                  (irb * c0 + igb * c1 + ibb * c2) / det], axis=2)
    bias = mean_p - np.sum(a * mean_i, axis=2)
    return _box(a, radius), _box(bias, radius)


def sample_bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of `grid` (HxW or HxWxC) at float positions (pixel centres at i)."""
    h, w = grid.shape[:2]
    ys = np.clip(ys, 0.0, h - 1.0)
    xs = np.clip(xs, 0.0, w - 1.0)
    y0 = np.minimum(ys.astype(np.int32), h - 2) if h > 1 else np.zeros(ys.shape, np.int32)
    x0 = np.minimum(xs.astype(np.int32), w - 2) if w > 1 else np.zeros(xs.shape, np.int32)
    fy = (ys - y0).astype(np.float32)
    fx = (xs - x0).astype(np.float32)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    if grid.ndim == 3:
        fy, fx = fy[:, None], fx[:, None]
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def band_positions(band_index: np.ndarray, full_size: tuple[int, int],
                   working_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Working-resolution coordinates of full-resolution pixels given by flat index."""
    (height, width), (h, w) = full_size, working_size
    ys, xs = np.divmod(band_index, width)
    return ((ys + 0.5) * (h / height) - 0.5).astype(np.float32), \
        ((xs + 0.5) * (w / width) - 0.5).astype(np.float32)


@dataclass
class GuidedUpsampler:
    """Takes alpha from the working to the full resolution, touching only the edge band."""

    radius: int = 2  # at the working resolution
    eps: float = 1e-4

    def __call__(self, image: np.ndarray, image_small: np.ndarray,
                 alpha_small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (alpha HxW float32, band HxW bool) at the size of `image`."""
        height, width = image.shape[:2]
        h, w = alpha_small.shape
        if (h, w) == (height, width):
            alpha = alpha_small.astype(np.float32)
            return alpha, fractional(alpha)
        # The band: fractional pixels and every 0-to-1 step, grown by a pixel, at the
        # working resolution; every full-resolution pixel outside it is plainly 0 or 1.
        opaque = alpha_small >= 0.5
        step = opaque ^ cv2.erode(opaque.astype(np.uint8), np.ones((3, 3), np.uint8),
                                  borderType=cv2.BORDER_REPLICATE).astype(bool)
        band_small = dilate(fractional(alpha_small) | step, 1)
        band = cv2.resize(band_small.astype(np.uint8), (width, height),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
        alpha = cv2.resize(opaque.astype(np.uint8), (width, height),
                           interpolation=cv2.INTER_NEAREST).astype(np.float32)
        index = np.flatnonzero(band)
        if index.size:
            guide = image_small.astype(np.float32) / 255.0
            mean_a, mean_b = guided_coefficients(guide, alpha_small, self.radius, self.eps)
            ys, xs = band_positions(index, (height, width), (h, w))
            colours = image.reshape(-1, 3)[index].astype(np.float32) / 255.0
            values = np.sum(sample_bilinear(mean_a, ys, xs) * colours, axis=1) \
                + sample_bilinear(mean_b, ys, xs)
            alpha.reshape(-1)[index] = np.clip(values, 0.0, 1.0)
        return alpha, band
