"""The classical alpha estimator: a subject on a plain studio backdrop, no weights needed.

Most catalogue inputs are a product or a person on seamless paper. There the backdrop
is known once it is modelled from the image border (`backdrop.fit_backdrop`), and the
matte follows from it:

1. at a coarse scale (256 px on the short side), every pixel that differs from the
   backdrop model by more than its noise is "subject"; the deep interior of each
   substantial subject region is certainly opaque, except where its colour changes
   fast along the line towards the backdrop colour (a motion-blur ramp);
2. closed-form matting solves alpha for the rest of the subject at that coarse scale.
   That region is wide on purpose: a translucent dupatta or a glass can be any colour,
   and only the colour-line model across its junctions with the opaque subject and the
   backdrop reveals how transparent it is;
3. at the working resolution, backdrop-coloured pixels are known background; the band
   refiner then re-solves every other uncertain pixel at full detail (hair strands a
   fraction of a pixel wide).

It refuses ("backdrop_not_plain") when the border is not a plain backdrop, and reports
"no_subject_found" when nothing stands out from it.

A see-through panel (a dupatta, a glass sheet) is found at the working resolution by
its texture varying along the line to the backdrop colour (`find_translucent_panel`) and
solved per pixel along that line, reading its colour as the most saturated one the
gamut allows; the coarse solve keeps those values. Known limits (measured by
bench/matting_quality.py): a panel with no texture at all looks exactly like an opaque
subject of its mixed colour and is taken as opaque; a pale panel at full cover reads as
a stronger tint at lower cover. JPEG artefacts around sub-pixel strands (most uploads)
cost much of the edge detail: at quality 90 hair is no better than an ideal binary
mask, while blur ramps keep their advantage. The learned engine is the answer to these.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from gpu_worker.errors import RenderError
from gpu_worker.matting.backdrop import Backdrop, border_mask, fit_backdrop
from gpu_worker.matting.base import Estimate, dilate, disk, drop_small, resize_image
from gpu_worker.matting.closed_form import solve_alpha
from gpu_worker.matting.shadow_layer import ShadowLayer, no_shadow, separate_shadow


def backdrop_distance(image: np.ndarray, backdrop: Backdrop) -> np.ndarray:
    """Per-pixel largest channel difference from the backdrop model (HxW float32 0..1)."""
    height, width = image.shape[:2]
    return distance_to(image, backdrop.render(height, width))


def distance_to(image: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Per-pixel largest channel difference of uint8 `image` from `model` (HxWx3 0..1)."""
    return np.max(np.abs(image.astype(np.float32) / 255.0 - model), axis=2)


def _noise(distance: np.ndarray) -> float:
    """Robust noise level of the border residual at this resolution."""
    border = distance[border_mask(*distance.shape)]
    med = float(np.median(border))
    # The distance is the largest of 3 channels' |noise|; for Gaussian noise its median
    # is 1.26 sigma ((2 Phi(x) - 1)^3 = 1/2 at x = 1.26).
    return max(med / 1.26, 0.5 / 255.0)


@dataclass
class ClassicalAlphaEstimator:
    """Trimap-free alpha for an image on a plain backdrop (see the module docstring)."""

    name: str = "classical"
    coarse_short_side: int = 256
    # Pixels deeper inside a subject region than this share of the short side are opaque.
    core_depth: float = 0.05
    backdrop_order: int = 3
    noise_factor: float = 4.0
    min_subject_share: float = 0.0005
    ridge: float = 0.6
    prior_weight: float = 1e-4
    # Colour change per coarse pixel above which a pixel cannot be certain core: a
    # motion-blur ramp or a soft shadow edge changes fast, an opaque interior slowly.
    max_core_gradient: float = 0.01
    # Smallest difference from the backdrop (8-bit levels) that can mark a pixel as not
    # background at the working resolution, whatever the measured noise.
    background_floor: float = 10.0
    # Look for a see-through panel (a dupatta, glass) and solve it along its colour line.
    find_panels: bool = True
    # Separate shadows on the paper from the subject (shadow_layer), at this short side.
    separate_shadows: bool = True
    shadow_short_side: int = 512

    def __call__(self, image: np.ndarray) -> Estimate:
        height, width = image.shape[:2]
        scale = min(1.0, self.coarse_short_side / float(min(height, width)))
        ch, cw = max(8, int(round(height * scale))), max(8, int(round(width * scale)))
        small = resize_image(image, ch, cw)
        backdrop = fit_backdrop(small, order=self.backdrop_order)
        layer = self._shadow_layer(image, backdrop)
        # The paper with its shadow (S B) is the backdrop the subject is matted against.
        clean_small = backdrop.render(ch, cw)
        paper_small = clean_small
        if layer.found:
            paper_small = clean_small * resize_image(layer.ratio, ch, cw)[..., None]

        distance = distance_to(small, paper_small)
        threshold = max(self.noise_factor * _noise(distance), 3.0 / 255.0)
        subject = distance >= threshold
        if layer.found:
            # S under the subject is only a guess continued from the floor around it; a
            # subject of about the shadowed paper's colour must not vanish into it, so
            # whatever differs from the clean paper and is not seen floor is subject too.
            floor = resize_image(layer.floor.astype(np.float32), ch, cw) >= 0.5
            subject |= (distance_to(small, clean_small) >= threshold) & ~dilate(floor, 1)
        solid_small = np.zeros_like(subject)
        if layer.subject.any():
            subject |= resize_image(layer.subject.astype(np.float32), ch, cw) >= 0.5
            solid_small = resize_image(layer.solid.astype(np.float32), ch, cw) >= 0.5
        subject = drop_small(subject, min_size=3)
        if subject.sum() < max(4, self.min_subject_share * subject.size):
            raise RenderError("no_subject_found",
                              "Nothing in the image stands out from its backdrop.")

        core = _opaque_core(subject, self.core_depth * min(ch, cw), self.ridge)
        if self.max_core_gradient > 0:
            steep = core & (_colour_gradient(small) >= self.max_core_gradient)
            core &= ~steep
            # Fast colour change inside the subject is either a blend with the backdrop
            # (a blur ramp: not certain) or the subject's own shading and print (a
            # highlight, a label edge: still opaque). A blend lies on the line from the
            # backdrop colour to the nearest certain colour; anything else is opaque.
            core |= steep & ~_blends_with_backdrop(small, paper_small, core, steep, threshold)
        if solid_small.any():
            # A subject of nearly the paper's colour (white on white, grey on grey) gives
            # the colour-line solve nothing to go on, and it reads the subject's own
            # shading as transparency. Broad untextured regions its sharp outline
            # encloses are opaque; thin ones (strands) are left to the solve.
            solid = ndimage.binary_opening(solid_small, iterations=2)
            core |= ndimage.binary_erosion(solid, iterations=1)
        clean = backdrop.render(height, width)
        shadow = resize_image(layer.ratio, height, width) if layer.found else None
        model = clean if shadow is None else clean * shadow[..., None]
        full_distance = distance_to(image, model)
        full_noise = _noise(full_distance)
        full_threshold = max(self.noise_factor * full_noise, self.background_floor / 255.0)
        panel = None
        if self.find_panels:
            panel = find_translucent_panel(image, model, full_distance >= full_threshold,
                                           full_noise, full_threshold)
        known_values = core.astype(np.float64)
        if panel is not None:
            # The panel's alpha is known from its colour line; the coarse solve keeps it
            # and only fills in what lies between it and the opaque subject.
            share = resize_image(panel.mask.astype(np.float32), ch, cw)
            on_panel = share > 0.5
            panel_small = resize_image(panel.alpha, ch, cw) / np.maximum(share, 1e-6)
            core &= ~on_panel
            known_values = np.where(on_panel, np.clip(panel_small, 0.0, 1.0), known_values)
        else:
            on_panel = np.zeros_like(core)
        if not core.any():
            raise RenderError("no_subject_found",
                              "No part of the image is clearly an opaque subject.")
        # Known background: backdrop-coloured pixels, minus a one-pixel ring around the
        # subject so soft edges are solved rather than clipped.
        background = ~dilate(subject, 1)
        known = core | background | on_panel
        coarse = solve_alpha(small.astype(np.float64) / 255.0, known, known_values,
                             prior=subject.astype(np.float64),
                             prior_weight=self.prior_weight)

        alpha = resize_image(coarse, height, width).astype(np.float32)
        if panel is not None:
            alpha = np.where(panel.mask, panel.alpha, alpha)
        # Backdrop-coloured pixels are background unless the coarse solve found them
        # inside an opaque region (a white label on a bottle on white paper).
        known_background = (full_distance < full_threshold) & (alpha < 0.9)
        if layer.found:
            # As at the coarse scale: near the shadowed paper is background only where
            # the floor was seen, or where the pixel is near the clean paper too.
            seen_floor = resize_image(layer.floor.astype(np.float32), height, width) >= 0.5
            known_background &= seen_floor | (distance_to(image, clean) < full_threshold)
        facts = dict(backdrop.facts)
        facts.update(layer.facts)
        facts["subject_threshold_levels"] = round(full_threshold * 255.0, 2)
        if panel is not None:
            facts["translucent_panel_share"] = round(float(panel.mask.mean()), 4)
            facts["translucent_panel_colour"] = [round(float(c), 4) for c in panel.colour]
        return Estimate(alpha=alpha, known_background=known_background, background=model,
                        facts=facts, shadow=shadow,
                        shadow_hard=layer.hard,
                        line_solved=None if panel is None else dilate(panel.mask, 2))

    def _shadow_layer(self, image: np.ndarray, backdrop: Backdrop) -> ShadowLayer:
        height, width = image.shape[:2]
        if not self.separate_shadows:
            return no_shadow(height, width)
        scale = min(1.0, self.shadow_short_side / float(min(height, width)))
        mh, mw = max(8, int(round(height * scale))), max(8, int(round(width * scale)))
        return separate_shadow(resize_image(image, mh, mw), backdrop.render(mh, mw))


def _blends_with_backdrop(image: np.ndarray, backdrop: np.ndarray, core: np.ndarray,
                          candidates: np.ndarray, noise: float) -> np.ndarray:
    """Which candidate pixels look like a mix of the backdrop and the nearest core colour."""
    out = np.zeros_like(candidates)
    if not candidates.any() or not core.any():
        return candidates.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(~core, return_indices=True)
    ys, xs = np.nonzero(candidates)
    colour = image[ys, xs].astype(np.float32) / 255.0
    certain = image[iy[ys, xs], ix[ys, xs]].astype(np.float32) / 255.0
    behind = backdrop[ys, xs]
    span = certain - behind
    t = np.sum((colour - behind) * span, axis=1) / np.maximum(np.sum(span * span, axis=1), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    off_line = np.linalg.norm(colour - (behind + t[:, None] * span), axis=1)
    out[ys, xs] = (off_line < max(3.0 * noise, 0.03)) & (t < 0.97)
    return out


def _colour_gradient(image: np.ndarray) -> np.ndarray:
    """Largest per-channel colour change per pixel (Sobel, lightly smoothed), 0..1 units."""
    f = cv2.GaussianBlur(image.astype(np.float32) / 255.0, (0, 0), 1.0)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.max(np.sqrt(gx * gx + gy * gy), axis=2)


def _opaque_core(subject: np.ndarray, depth: float, ridge: float) -> np.ndarray:
    """Pixels deep inside each substantial subject region.

    A region thinner than the nominal depth (a pen, a bottle neck seen alone) still gets
    its ridge as core, so thin opaque objects are not solved as transparent; regions
    only a few pixels thick at this scale (strands, fringes) get none and are left to
    the solver.
    """
    labels, count = ndimage.label(subject)
    if count == 0:
        return np.zeros_like(subject)
    # The frame edge is not background to the distance transform, so a portrait cut
    # by the bottom edge is deep there, as it should be.
    depth_map = ndimage.distance_transform_edt(subject)
    deepest = ndimage.maximum(depth_map, labels, index=np.arange(1, count + 1))
    needed = np.minimum(depth, ridge * deepest)
    needed[deepest < 3.0] = np.inf
    threshold = np.concatenate([[np.inf], needed])[labels]
    return depth_map > threshold


@dataclass(frozen=True)
class TranslucentPanel:
    """A see-through region (a dupatta, a glass sheet) found at the working resolution."""

    mask: np.ndarray  # HxW bool: pixels explained as the panel over the backdrop
    alpha: np.ndarray  # HxW float32: per-pixel alpha along the line backdrop -> panel colour
    colour: np.ndarray  # (3,) float32: the panel's own colour as estimated


def find_translucent_panel(image: np.ndarray, backdrop: np.ndarray, subject: np.ndarray,
                           noise: float, threshold: float, min_share: float = 0.004,
                           window: float = 2.0, min_alignment: float = 0.95,
                           max_opacity: float = 0.9) -> TranslucentPanel | None:
    """The see-through part of the subject, if it has one, with its alpha.

    On a plain backdrop a translucent pixel is ``a * F + (1 - a) * B`` with B known.
    Two cues separate such a panel from an opaque subject of the same colour:

    * its texture (the weave of a fabric, the gaps between threads, uneven thickness of
      glass) changes the coverage a, so the colour varies along the line from B towards
      F and nowhere else, while the shading and print of an opaque subject vary along
      other lines (towards black, between inks). Broad areas where nearly all local
      colour variance lies on the backdrop line are the panel's seeds; thin responses at
      edges between opaque regions are removed by a morphological opening.
    * its colours stay on that one line: every pixel of the subject connected to the
      seeds that is a blend of its backdrop and the panel colour belongs to the panel,
      where the panel lies over an opaque part it leaves the line and is left opaque.

    One image cannot say how dense the panel's own colour is (a pale tint at full
    cover looks like a strong one at low cover); we take the most saturated colour on
    the line that the RGB gamut allows, i.e. the most transparent reading the image
    permits. Dyed fabrics and tinted glass are saturated, and this reading errs towards
    letting the new background through rather than carrying the old one along.
    Returns None when there is no such panel.
    """
    height, width = subject.shape
    colour = image.astype(np.float32) * np.float32(1.0 / 255.0)
    noise = max(noise, 1.0 / 255.0)
    mean = cv2.GaussianBlur(colour, (0, 0), window)
    offset = mean - backdrop
    length = np.sqrt(np.sum(offset * offset, axis=2))
    direction = offset / np.maximum(length, 1e-6)[..., None]
    # Texture is what a one-pixel blur removes: a smooth ramp (a motion blur, which is a
    # blend with the backdrop too, but one that reaches an opaque colour and is solved
    # by the coarse stage) is linear locally and leaves nothing here.
    detail = colour - cv2.GaussianBlur(colour, (0, 0), 1.0)
    along = np.zeros((height, width), np.float32)
    total = np.zeros((height, width), np.float32)
    for i in range(3):
        for j in range(i, 3):
            cov = cv2.GaussianBlur(detail[..., i] * detail[..., j], (0, 0), window)
            if i == j:
                total += cov
                along += direction[..., i] * direction[..., i] * cov
            else:
                along += 2.0 * direction[..., i] * direction[..., j] * cov
    noise_var = noise * noise
    # Share of the texture's variance (noise removed) that lies on the backdrop line.
    alignment = (along - noise_var) / np.maximum(total - 3.0 * noise_var, 1e-12)
    seeds = (subject & (along > 9.0 * noise_var) & (alignment > min_alignment)
             & (length > threshold))
    # Every edge of an opaque subject against the backdrop is a step along the backdrop
    # line too, and the window sees it a few pixels either side: an opening wider than
    # that band keeps only broad see-through areas.
    radius = max(4, int(round(0.01 * min(height, width))))
    seeds = cv2.morphologyEx(seeds.astype(np.uint8), cv2.MORPH_OPEN, disk(radius)).astype(bool)
    min_area = min_share * height * width
    labels, count = ndimage.label(seeds)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    seeds = (sizes >= min_area)[labels]
    if not seeds.any():
        return None

    # The panel's tint: the mean direction of its most opaque half (best signal).
    projection = length[seeds]
    strong = projection >= np.median(projection)
    tint = np.mean(direction[seeds][strong], axis=0)
    tint /= max(float(np.linalg.norm(tint)), 1e-6)
    behind = np.mean(backdrop[seeds], axis=0)
    reach = float(_gamut_reach(behind[None, :], tint[None, :])[0])
    if not np.isfinite(reach) or np.percentile(projection, 99) > max_opacity * reach:
        return None  # as far from the backdrop as a colour can be: opaque
    panel_colour = np.clip(behind + reach * tint, 0.0, 1.0).astype(np.float32)

    # Small gaps in the texture evidence (a thread darker than its neighbours) are
    # still the panel.
    mask = cv2.morphologyEx(seeds.astype(np.uint8), cv2.MORPH_CLOSE, disk(2)).astype(bool)
    ys, xs = np.nonzero(mask)
    # Per pixel, along the locally measured direction (the panel's colour shades with
    # the light across it), the most transparent reading the gamut permits.
    local = direction[ys, xs]
    behind_px = backdrop[ys, xs]
    reach_px = _gamut_reach(behind_px, local)
    observed = colour[ys, xs] - behind_px
    values = np.sum(observed * local, axis=1) / np.maximum(reach_px, 1e-6)
    alpha = np.zeros((height, width), np.float32)
    alpha[ys, xs] = np.clip(values, 0.0, 1.0)
    return TranslucentPanel(mask=mask, alpha=alpha, colour=panel_colour)


def _gamut_reach(origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """How far (N,) one can go from each colour `origin` (Nx3) along `direction` (Nx3,
    unit) before leaving the RGB cube: the distance to the most saturated colour."""
    up = (1.0 - origin) / np.maximum(direction, 1e-6)
    down = origin / np.maximum(-direction, 1e-6)
    limits = np.where(direction > 1e-6, up, np.where(direction < -1e-6, down, np.inf))
    return np.min(limits, axis=1)
