"""The matting pipeline: the four stages as explicit components, configuration in, arrays out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
import numpy as np

from gpu_worker.errors import RenderError
from gpu_worker.matting.base import (AlphaEstimator, Estimate, Matte, Refiner, fractional,
                                     quantize_alpha, resize_image, working_size)
from gpu_worker.matting.foreground import ForegroundEstimator
from gpu_worker.matting.refine import BandRefiner
from gpu_worker.matting.upsample import GuidedUpsampler

# A matte with less opaque area than this share of the image has found no subject.
MIN_SUBJECT_SHARE = 0.0005


@dataclass
class MattingPipeline:
    """estimator -> band refiner -> guided upsampler -> foreground estimator.

    `working_pixels` bounds the resolution of everything but the final, band-limited
    full-resolution steps, so a 24 MP input costs little more than a 1 MP one.
    """

    estimator: AlphaEstimator
    refiner: Refiner = field(default_factory=BandRefiner)
    upsampler: GuidedUpsampler = field(default_factory=GuidedUpsampler)
    foreground: ForegroundEstimator = field(default_factory=ForegroundEstimator)
    working_pixels: int = 1_048_576

    @property
    def name(self) -> str:
        return self.estimator.name

    def __call__(self, image: np.ndarray) -> Matte:
        timings: dict[str, float] = {}
        alpha, band, image_small, alpha_small, estimate = self._alpha(image, timings)
        started = time.perf_counter()
        foreground = self.foreground(image, alpha, band, image_small, alpha_small,
                                     background_small=estimate.background)
        timings["matting_foreground"] = _ms(started)
        facts = dict(estimate.facts)
        facts["working_size"] = [image_small.shape[1], image_small.shape[0]]
        shadow = None
        if estimate.shadow is not None:
            # S is smooth: bilinear enlargement is exact enough, and cheap at 24 MP.
            shadow = resize_image(estimate.shadow.astype(np.float32), *alpha.shape)
        return Matte(alpha=alpha, foreground=foreground, band=band, facts=facts,
                     timings_ms=timings, shadow=shadow, shadow_hard=estimate.shadow_hard)

    def matte_fn(self, image: np.ndarray) -> np.ndarray:
        """Alpha (HxW float32, 8-bit levels) of any RGB uint8 array, without foreground.

        For re-matting a generated image (the scene stage's expansion check).
        """
        alpha, *_ = self._alpha(image, {})
        return alpha

    def _alpha(self, image: np.ndarray, timings: dict[str, float]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Estimate]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise RenderError("invalid_image", "matting needs an 8-bit RGB image")
        height, width = image.shape[:2]
        h, w = working_size(height, width, self.working_pixels)
        started = time.perf_counter()
        image_small = resize_image(image, h, w)
        estimate = self.estimator(image_small)
        timings["matting_forward"] = _ms(started)

        started = time.perf_counter()
        alpha_small = self.refiner(image_small, estimate)
        timings["matting_refine"] = _ms(started)
        if float(np.mean(alpha_small >= 0.5)) < MIN_SUBJECT_SHARE:
            raise RenderError("no_subject_found", "The matte is empty: no subject was found.")

        started = time.perf_counter()
        alpha, _ = self.upsampler(image, image_small, alpha_small)
        alpha = quantize_alpha(alpha)
        band = fractional(alpha)
        if (h, w) == (height, width):
            alpha_small = alpha  # the foreground stage then sees exactly the final alpha
        timings["matting_upsample"] = _ms(started)
        return alpha, band, image_small, alpha_small, estimate


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
