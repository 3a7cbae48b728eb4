"""Separating the subject from its shadow on a plain backdrop.

A studio photo is ``I = alpha F + (1 - alpha) S B``: B the paper (fitted to the border,
`backdrop.fit_backdrop`), S in (0, 1] the share of light the paper still gets (a
shadow), alpha and F the subject alone. A matte that ignores S takes every shadow for
subject: the contact shadow under a bottle is cut out with it and pasted into the new
scene as a grey disc with a ring of the old paper around it.

Shadow pixels are a darkening of the paper's own colour: ``I = s B`` for one scalar s.
So are a grey product on grey paper, a white mug on white paper and the thin tips of
dark hair, so colour alone cannot tell them apart. Space can:

* a subject is in focus: it ends at a sharp edge. A contact shadow fades smoothly
  into the paper (its penumbra is many pixels wide). The edge test compares the
  darkening's gradient at two blurs: a step or a strand loses most of its gradient
  under the wider blur, a penumbra almost none;
* texture (hair, weave, print) belongs to the subject; a shadow is smooth;
* colour that is not a darkening of B, light brighter than B, or darkening deeper than
  any shadow a studio keeps, is subject.

The floor is then what can be reached from the clean paper at the frame without
crossing any of those barriers; every "darker paper" pixel not reached is subject,
enclosed by its own edges. One exception is a hard cast shadow (a spotlight's): it has
sharp edges too. It is told from a grey part of the subject by where it lies: it is
neutral, it touches the subject's base line, and most of it lies beside the subject's
body rather than under it. Those regions are floor, marked hard, so the policy can drop
them.

A white mug's lit face on white paper is not even darker: it is the paper's colour. It
is told from paper by lying inside the subject's outline along its row (crossed by the
outline's edges an even number of times) with a broad part of the subject on both
sides; a handle's hole (crossed four times) and the paper between hanging threads and a
body (flanked by a thread) stay paper.

The result is S over the whole frame (filled in under the subject from the floor around
it) and the pixels known to be subject. The classical engine then mattes against the
shadowed paper ``S B`` instead of B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from gpu_worker.matting.backdrop import border_mask
from gpu_worker.matting.base import dilate, drop_small, nearest_values, smoothstep

# Darkening beyond this is subject: studio shadows worth keeping are 15-60% deep, and
# a black cap or dark hair is darker than any of them.
MAX_SHADOW_DARKNESS = 0.72
# A darkening shallower than this is not worth carrying (and hard to tell from the
# paper's own fall-off): no shadow is reported.
MIN_SHADOW_STRENGTH = 0.08
# Under the wider blur a sharp edge keeps less than this share of its gradient.
SHARPNESS_RATIO = 0.6


@dataclass(frozen=True)
class ShadowLayer:
    """The separated shadow at the scale it was measured (see the module docstring)."""

    ratio: np.ndarray  # HxW float32 S, 1 where no shadow; filled in under the subject
    subject: np.ndarray  # HxW bool: "darker paper" pixels found to be subject
    solid: np.ndarray  # HxW bool: the untextured part of `subject` (opaque, not strands)
    floor: np.ndarray  # HxW bool: pixels found to be shadowed paper (soft or cast)
    hard: bool  # the shadow is (mostly) a hard cast shadow
    strength: float  # darkening of the shadow's deepest visible part (0 = none)
    facts: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.strength > 0.0


def no_shadow(height: int, width: int) -> ShadowLayer:
    nothing = np.zeros((height, width), bool)
    return ShadowLayer(np.ones((height, width), np.float32), nothing, nothing, nothing, False,
                       0.0, {"shadow_found": False})


def _gradient(field_: np.ndarray, sigma: float) -> np.ndarray:
    f = cv2.GaussianBlur(field_, (0, 0), sigma)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.sqrt(gx * gx + gy * gy)


def separate_shadow(image: np.ndarray, backdrop: np.ndarray) -> ShadowLayer:
    """The shadow layer of `image` (uint8 HxWx3) on the modelled `backdrop` (HxWx3 0..1).

    Works at whatever scale it is given; the classical engine calls it at about 512 px
    on the short side, where a contact shadow's penumbra is still many pixels wide and a
    subject's edge is one.
    """
    height, width = image.shape[:2]
    colour = image.astype(np.float32) * np.float32(1.0 / 255.0)
    paper = np.maximum(backdrop.astype(np.float32), 1e-3)
    # s: the one scalar that best explains the pixel as darker paper; rho: what is left.
    s = np.sum(colour * paper, axis=2) / np.sum(paper * paper, axis=2)
    rho = np.max(np.abs(colour - s[..., None] * paper), axis=2)
    darkness = 1.0 - s

    frame = border_mask(height, width)
    border_residual = np.max(np.abs(colour - paper), axis=2)[frame]
    noise = max(float(np.median(border_residual)) / 1.26, 0.5 / 255.0)
    level = float(np.mean(paper))
    gate = max(0.02, 3.0 * noise / level)
    # A darkening of the paper, within the noise plus a little tint a deeper shadow may
    # pick up from the fill light or the JPEG's subsampled chroma.
    neutral = rho <= 3.0 * noise + 0.06 * np.maximum(darkness, 0.0)
    darkish = darkness > gate

    fine = _gradient(s, 0.8)
    wide = _gradient(s, 2.5)
    # Thresholds from the paper at the frame, by medians: a subject leaving through the
    # frame (a strap, shoulders) must not raise them. For noise, the 99.5th percentile
    # of a gradient's magnitude is about 3.3x its median.
    edge_floor = max(5.0 * float(np.median(fine[frame])), 0.6 * noise / level)
    sharp = (fine > edge_floor) & (wide < SHARPNESS_RATIO * fine)
    # Texture: what a one-pixel blur removes, well above the paper's own.
    detail = np.abs(s - cv2.GaussianBlur(s, (0, 0), 1.0))
    texture = cv2.GaussianBlur(detail, (0, 0), 2.0)
    textured = texture > max(6.0 * float(np.median(texture[frame])), noise / level)
    # Every edge leaves a ring of "detail" a few pixels wide; texture is broad.
    textured = cv2.morphologyEx(textured.astype(np.uint8), cv2.MORPH_OPEN,
                                np.ones((7, 7), np.uint8)).astype(bool)

    departs = ~neutral & (np.max(np.abs(colour - paper), axis=2) > 3.0 * noise)
    brighter = s > 1.0 + gate
    barrier = (dilate(sharp, 1) | departs | brighter | (darkness > MAX_SHADOW_DARKNESS)
               | textured)
    open_floor = ~barrier
    labels, _ = ndimage.label(open_floor)
    seeds = np.unique(labels[frame & open_floor & ~darkish])
    seeds = seeds[seeds > 0]
    floor = np.isin(labels, seeds)

    body = drop_small(departs | brighter | (darkness > MAX_SHADOW_DARKNESS),
                      max(20, int(2e-4 * height * width)), eight=True)
    # Inside the outline a subject's sharp edges draw, "darker paper" is subject even
    # where the flood got in (a grey mug standing in a shadow as dark as itself has
    # no edge at its base, only at its sides and top).
    outline, inside = _outline_hulls(sharp, min(height, width))
    enclosed = darkish & neutral & (~floor | outline) & ~body
    cast = _cast_shadows(enclosed, body, darkness, min(height, width))
    subject = enclosed & ~cast
    # Paper-coloured pixels inside an outline (a white face on white paper) are subject.
    # Not among strands: the paper between flyaways is paper.
    # Only those: coloured pixels are the colour-line solve's to judge (a see-through
    # drape is subject but far from opaque).
    # And only where the face is flanked on its row by a broad part of the subject on
    # both sides (a mug's shaded sides), not by a thread hanging beside the paper.
    face = inside & neutral & ~darkish & ~brighter & ~dilate(cast, 2) & ~dilate(textured, 4)
    # Noise speckles a face with "darker" pixels; runs are read across them.
    face = cv2.morphologyEx(face.astype(np.uint8), cv2.MORPH_CLOSE,
                            np.ones((1, 7), np.uint8)).astype(bool) & inside
    flank = max(3, int(0.02 * min(height, width)))
    flanked = _flanked(face, (darkish & neutral) | body, flank)
    # Rows of a face the flank test missed (noise, a handle's junction) between rows it
    # passed are face too.
    column = np.ones((max(3, int(0.03 * min(height, width))) | 1, 1), np.uint8)
    bridged = cv2.morphologyEx(flanked.astype(np.uint8), cv2.MORPH_CLOSE, column).astype(bool)
    subject |= flanked | (bridged & face)
    # Textured pixels (strands, weave) are subject too, but not solid: left to the solve.
    solid = subject & ~dilate(textured, 2)
    shadowed = (floor | cast) & darkish & neutral
    # S: the measured ratio on the floor (smoothed to the noise), exactly 1 where the
    # paper is clean, blended between so no step is made at the gate.
    smooth = _normalised_blur(np.clip(s, 0.0, 1.0), shadowed, 1.0)
    depth = np.clip(1.0 - smooth, 0.0, 1.0) * smoothstep(gate, 2.0 * gate, 1.0 - smooth)
    ratio = np.where(shadowed, 1.0 - depth, 1.0).astype(np.float32)
    # Under the subject (and its edge) the floor is not seen: continue it from around.
    # Pixels at the subject's edge mix its colour into the paper's: their darkening is
    # the subject's, not a shadow's, so they are not measured (a dark line around the
    # subject on the new scene otherwise).
    seen = ~dilate(subject | body, 3) & ~dilate(sharp, 2)
    # Each unseen pixel takes the floor nearest to it: at the subject's sides that is
    # the paper right beside them, so a shadow at the base does not creep up the sides
    # (a wider average would darken a ring around the subject on the new scene).
    if seen.any() and not seen.all():
        nearest = nearest_values(ratio, seen)
        ratio = np.where(seen, ratio, cv2.GaussianBlur(nearest, (0, 0), 1.5)).astype(np.float32)

    visible = shadowed & seen
    strength = float(np.percentile(1.0 - ratio[visible], 99)) if visible.sum() > 20 else 0.0
    if strength < max(2.0 * gate, MIN_SHADOW_STRENGTH):
        layer = no_shadow(height, width)
        return ShadowLayer(layer.ratio, subject, solid, layer.floor, False, 0.0,
                           {"shadow_found": False, "enclosed_subject_share":
                            round(float(subject.mean()), 4)})
    hard_area = float((cast & visible).sum())
    hard = hard_area > 0.3 * float(visible.sum())
    facts = {"shadow_found": True, "shadow_strength": round(strength, 3),
             "shadow_hard_share": round(hard_area / max(float(visible.sum()), 1.0), 3),
             "enclosed_subject_share": round(float(subject.mean()), 4)}
    return ShadowLayer(ratio, subject, solid, visible, hard, strength, facts)


def _outline_hulls(sharp: np.ndarray, short_side: int) -> tuple[np.ndarray, np.ndarray]:
    """What the subject's sharp edges enclose, row by row: (span, inside).

    `span`: on every row a chain of edges crosses twice or more, the pixels between its
    leftmost and rightmost crossing. That closes the open bottom of a product standing
    in its shadow (its sides are edges, its base is not) without the concavities a
    convex hull adds (the corner between a mug's handle and its body).

    `inside`: the even-odd rule along each row over all substantial edges (in at the
    first crossing, out at the next, ...), on rows crossed 2 or 4 times only. It holds
    the lit face of a white product on white paper, which has no colour of its own to
    go by and whose top edge may vanish where it is as bright as the paper, while a mug
    handle's hole (crossed four times) stays out; rows through hair (many crossings)
    or with an odd count are left alone.
    """
    span = np.zeros(sharp.shape, bool)
    inside = np.zeros(sharp.shape, bool)
    # Chains are joined across small breaks (a rounded corner where the contrast
    # fades); crossings are read off the edges themselves (grown by one pixel), so the
    # joining does not push an outline out by its own width.
    chains, count = ndimage.label(dilate(sharp, 2), structure=np.ones((3, 3), bool))
    edges = dilate(sharp, 1)
    min_length = max(12, int(0.04 * short_side))
    sizes = np.bincount(chains.ravel(), weights=edges.ravel().astype(np.float64))
    substantial = (sizes >= min_length)
    substantial[0] = False
    edges &= substantial[chains]
    gap = 4  # crossings closer than this are the two sides of one edge, not two edges
    for index, region in enumerate(ndimage.find_objects(chains), start=1):
        if not substantial[index]:
            continue
        own = (chains[region] == index) & edges[region]
        top, left0 = region[0].start, region[1].start
        for row in np.flatnonzero(own.any(axis=1)):
            xs = np.flatnonzero(own[row])
            if xs[-1] - xs[0] > gap:
                span[top + row, left0 + xs[0]:left0 + xs[-1] + 1] = True
    for row in np.flatnonzero(edges.any(axis=1)):
        xs = np.flatnonzero(edges[row])
        # Runs of edge pixels along the row are the crossings.
        breaks = np.flatnonzero(np.diff(xs) > gap)
        starts = np.concatenate([[xs[0]], xs[breaks + 1]])
        ends = np.concatenate([xs[breaks], [xs[-1]]])
        if len(starts) in (2, 4):
            for k in range(0, len(starts), 2):
                inside[row, ends[k] + 1:starts[k + 1]] = True
    # A lone row read as inside is a chance pairing of two unrelated edges (a thread
    # and a drape's corner): a face is many rows tall. Then a few rows with an odd
    # count (where a handle joins the body) between rows that read well are inside too:
    # closed along the columns, within the outline's span.
    length = max(3, int(0.02 * short_side)) | 1
    column = np.ones((length, 1), np.uint8)
    inside = cv2.morphologyEx(inside.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 1), np.uint8))
    closed = cv2.morphologyEx(inside, cv2.MORPH_CLOSE, column).astype(bool)
    return span, inside.astype(bool) | (closed & span)


def _flanked(candidates: np.ndarray, solid: np.ndarray, flank: int) -> np.ndarray:
    """The runs of `candidates` along each row with `flank` pixels of `solid` right
    before and right after them (within two pixels, for the edge between)."""
    out = np.zeros_like(candidates)
    height, width = candidates.shape
    for row in np.flatnonzero(candidates.any(axis=1)):
        xs = np.flatnonzero(candidates[row])
        breaks = np.flatnonzero(np.diff(xs) > 1)
        for start, stop in zip(np.concatenate([[xs[0]], xs[breaks + 1]]),
                               np.concatenate([xs[breaks], [xs[-1]]])):
            left = solid[row, max(0, start - 2 - flank):max(0, start - 2)]
            right = solid[row, min(width, stop + 3):min(width, stop + 3 + flank)]
            if left.size == flank and right.size == flank and left.all() and right.all():
                out[row, start:stop + 1] = True
    return out


def _normalised_blur(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    weight = where.astype(np.float32)
    total = cv2.GaussianBlur(values * weight, (0, 0), sigma)
    norm = cv2.GaussianBlur(weight, (0, 0), sigma)
    return np.where(norm > 1e-3, total / np.maximum(norm, 1e-3), values).astype(np.float32)


def _cast_shadows(enclosed: np.ndarray, body: np.ndarray, darkness: np.ndarray,
                  short_side: int) -> np.ndarray:
    """Which enclosed "darker paper" regions are a hard cast shadow rather than subject.

    A spotlight's shadow starts where the subject stands and falls beside it: the region
    touches a part of the body, reaches down to that part's base line, and most of it
    lies outside the columns that part spans. Its depth is that of a shadow, not of a
    dark part.
    """
    out = np.zeros_like(enclosed)
    if not body.any() or not enclosed.any():
        return out
    body_labels, _ = ndimage.label(body, structure=np.ones((3, 3), bool))
    labels, _ = ndimage.label(enclosed)
    margin = max(3, int(0.05 * short_side))
    min_area = max(30, int(1e-4 * enclosed.size))
    areas = np.bincount(labels.ravel())
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        area = int(areas[index])
        if area < min_area:
            continue  # most components are specks: skip them before any full-size work
        own = labels == index
        touching = np.unique(body_labels[dilate(own, 5) & (body_labels > 0)])
        if touching.size == 0:
            continue
        part = np.isin(body_labels, touching)
        part_rows = np.flatnonzero(part.any(axis=1))
        part_cols = np.flatnonzero(part.any(axis=0))
        rows = np.flatnonzero(own.any(axis=1))
        if abs(int(rows[-1]) - int(part_rows[-1])) > margin:
            continue
        columns = np.flatnonzero(own.any(axis=0))
        per_column = own[:, columns].sum(axis=0)
        beside = (columns < part_cols[0]) | (columns > part_cols[-1])
        share_beside = float(per_column[beside].sum()) / area
        depth = float(np.median(darkness[own]))
        if share_beside >= 0.5 and 0.1 <= depth <= MAX_SHADOW_DARKNESS:
            out |= own
    return out
