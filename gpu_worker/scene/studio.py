"""StudioSceneGenerator: photographic studio backdrops, painted on the CPU from the prompt.

Plain backdrops are most of what a product-photo API is asked for, and a diffusion model
is the wrong tool for them: slow, GPU-bound, never exactly the colour asked for, and
never exactly white. This engine paints them directly, at the source's full resolution,
deterministically from the seed:

* **sweep**: seamless paper whose floor curves into the wall behind the subject, shaded
  by a soft key light (Lambert with wrap-around, a large ambient share) and falling off
  away from it: darker towards the top of the wall and the far side;
* **solid**: one colour;
* **gradient**: two colours, top to bottom unless the prompt says horizontal, diagonal
  or radial.

The colour comes from the prompt (``gpu_worker.scene.colours``). The light comes from the
prompt ("light from the left") or else from the subject's own shading
(``gpu_worker.light``), so the backdrop is lit from where the product was. Every
backdrop except pure white gets a fine monochrome grain (triangular-PDF dither, about one
8-bit level) so that large smooth areas do not band once quantised.

**Pure white** ("white", "pure white background") is exactly 1.0 everywhere: no grain,
no fall-off. Marketplaces require RGB 255 outside the product's shadow for main images,
and the composite keeps 1.0 * 255 exact. A white *sweep* ("white paper sweep") is a
shaded sweep, because that is what was asked for; "pure" always means pure.

The generator returns no shadow of its own unless the pipeline asks for one (only when
the matting stage separated none): the pipeline multiplies the matting engine's shadow
layer onto this background, as for any scene. Shading is applied in sRGB as a power of
the linear-light factor (``s ** (1 / 2.2)``), which is exact for a power-law gamma and
keeps the whole sweep separable into a row and a column profile: cheap at 24 MP.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from gpu_worker.light import LightEstimate, estimate_light_direction
from gpu_worker.scene.colours import RGB, Colour, find_colours, mix, tokenize
from gpu_worker.shadow import ShadowEstimate, estimate_contact_shadow
from gpu_worker.stages import Scene, SceneRequest

Kind = Literal["sweep", "solid", "gradient"]
Orientation = Literal["vertical", "horizontal", "diagonal", "radial"]

ShadowEstimator = Callable[[np.ndarray, np.ndarray], ShadowEstimate]
LightEstimator = Callable[[np.ndarray, np.ndarray], LightEstimate]

WHITE: RGB = (255, 255, 255)
# A studio's default paper when the prompt names no colour ("plain studio", "seamless").
DEFAULT_PAPER: RGB = (232, 232, 232)
DEFAULT_GRADIENT: tuple[RGB, RGB] = ((250, 250, 250), (200, 200, 200))

SWEEP_WORDS = frozenset({"sweep", "sweeps", "seamless", "paper", "cyclorama", "cyc", "infinity",
                         "cove", "studio"})
# "studio" alone does not turn white into a shaded sweep: a "white studio background" is
# the marketplace's pure white. These words ask for the sweep's shape explicitly.
EXPLICIT_SWEEP_WORDS = SWEEP_WORDS - {"studio"}
GRADIENT_WORDS = frozenset({"gradient", "gradients", "ombre", "fade", "fading", "graduated",
                            "gradation"})
_FLAT_WORDS = frozenset({"solid", "plain", "flat"})
_CONNECTORS = frozenset({"to", "and", "into", "then", "through"})

# Key-light vectors (x right, y up, z towards the viewer, as gpu_worker.light): a studio
# light is always somewhat above and in front, whatever side it is on.
def _unit_vector(x: float, y: float, z: float) -> tuple[float, float, float]:
    norm = float(np.sqrt(x * x + y * y + z * z))
    return (x / norm, y / norm, z / norm)


KEY_LIGHTS: dict[str, tuple[float, float, float]] = {
    "left": _unit_vector(-0.6, 0.5, 0.62),
    "right": _unit_vector(0.6, 0.5, 0.62),
    "above": _unit_vector(0.0, 0.85, 0.53),
    "front": _unit_vector(0.0, 0.45, 0.89),
}
_DIRECTION_WORDS = {"left": "left", "right": "right", "above": "above", "overhead": "above",
                    "top": "above", "front": "front", "frontal": "front"}
_LIGHT_WORDS = frozenset({"light", "lights", "lighting", "lit", "key", "backlit", "sun"})
_LIGHT_WINDOW = 3  # tokens either side of a light word that may say its direction

_GAMMA = 1.0 / 2.2
_WRAP = 0.5  # wrap-around Lambert: large soft sources light past 90 degrees
_AMBIENT = 0.6
_CURVE_HALF = 0.12  # half the height of the floor-to-wall curve, as a share of the image
_STRIP_PIXELS = 1 << 20  # bounds each strip's temporaries to a few MB at any size
_LIGHT_SIDE = 1024  # the long side the subject is subsampled to before estimating its light


@dataclass(frozen=True)
class Backdrop:
    """What the prompt asks the studio to paint."""

    kind: Kind
    colours: tuple[RGB, ...]
    pure_white: bool = False
    orientation: Orientation = "vertical"

    def as_facts(self, grain: float, falloff: float) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "kind": self.kind,
            "colours": ["#{:02x}{:02x}{:02x}".format(*c) for c in self.colours],
            "grain": round(grain, 4),
            "falloff": round(falloff, 3),
            "pure_white": self.pure_white,
        }
        if self.kind == "gradient":
            facts["orientation"] = self.orientation
        return facts


def _orientation(tokens: Sequence[str]) -> Orientation:
    words = set(tokens)
    if words & {"radial", "vignette", "spotlight", "centre", "center"}:
        return "radial"
    if "diagonal" in words or "diagonally" in words:
        return "diagonal"
    if words & {"horizontal", "horizontally"} or ("left" in words and "right" in words):
        return "horizontal"
    return "vertical"


def _joined(tokens: Sequence[str], first: Colour, second: Colour) -> bool:
    """"navy to teal", "navy and teal": two colours with only connectors between them."""
    between = tokens[first.end:second.start]
    return bool(between) and all(t in _CONNECTORS for t in between)


def read_backdrop(prompt: str) -> Backdrop:
    """The backdrop a studio prompt describes (any prompt gets one; routing decides who asks)."""
    tokens = tokenize(prompt)
    words = set(tokens)
    colours = find_colours(tokens)
    paired = next(((a, b) for a, b in zip(colours, colours[1:]) if _joined(tokens, a, b)), None)
    if words & GRADIENT_WORDS or paired is not None:
        if paired is not None:
            stops = (paired[0].rgb, paired[1].rgb)
        elif len(colours) >= 2:
            stops = (colours[0].rgb, colours[1].rgb)
        elif colours:
            stops = (mix(colours[0].rgb, WHITE, 0.5), colours[0].rgb)
        else:
            stops = DEFAULT_GRADIENT
        return Backdrop("gradient", stops, orientation=_orientation(tokens))
    colour = colours[0].rgb if colours else DEFAULT_PAPER
    if colour == WHITE and ("pure" in words or not words & EXPLICIT_SWEEP_WORDS):
        return Backdrop("solid", (WHITE,), pure_white=True)
    # Without a colour or a "plain", a backdrop prompt means the studio's paper.
    sweep = bool(words & SWEEP_WORDS) or not (colours or words & _FLAT_WORDS)
    return Backdrop("sweep" if sweep else "solid", (colour,))


def prompt_light_direction(prompt: str) -> str | None:
    """"light from the left", "top-lit", "key light camera right": the direction, or None.

    Only a direction word near a light word counts, so the sides of a "left to right"
    gradient are not read as light, and "light" inside a colour ("light grey") is not a light.
    """
    tokens = tokenize(prompt)
    in_colour = {i for c in find_colours(tokens) for i in range(c.start, c.end)}
    lights = [i for i, t in enumerate(tokens) if t in _LIGHT_WORDS and i not in in_colour]
    for i in lights:
        lo, hi = max(0, i - _LIGHT_WINDOW), min(len(tokens), i + _LIGHT_WINDOW + 1)
        for token in tokens[lo:hi]:
            if token in _DIRECTION_WORDS:
                return _DIRECTION_WORDS[token]
    return None


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def horizon_for(alpha: np.ndarray) -> float:
    """Where the floor meets the wall (centre of the curve), as a share of the height.

    Behind the subject, 0.3 of its height above its base: the product stands on the
    floor with the curve rising behind it. A subject cut off at the bottom (a portrait)
    has no floor in frame, so the curve goes below the frame.
    """
    step = max(1, int(max(alpha.shape) // 512))
    solid = alpha[::step, ::step] >= 0.5
    rows = np.flatnonzero(solid.any(axis=1))
    if rows.size == 0:
        return 0.62
    height = solid.shape[0]
    top, base = rows[0] / height, (rows[-1] + 1) / height
    if base > 0.97:
        return 1.0 + _CURVE_HALF
    return float(np.clip(base - 0.3 * (base - top), 0.3, 0.85))


def sweep_profiles(height: int, width: int, horizon: float, light: Sequence[float],
                   falloff: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column multipliers (sRGB, peak 1.0) whose outer product shades the sweep.

    Rows: the surface normal turns from the wall's (towards the camera) to the floor's
    (up) through the curve, lit by ``light`` with wrap-around Lambert, times a fall-off
    with the distance from the curve (the top of the wall and the front of the floor are
    further from the light). Columns: a fall-off away from the light's side.
    """
    lx, ly, lz = (float(v) for v in np.asarray(light, np.float64) / np.linalg.norm(light))
    y = (np.arange(height, dtype=np.float32) + 0.5) / height
    t = np.clip((y - (horizon - _CURVE_HALF)) / (2 * _CURVE_HALF), 0.0, 1.0)
    theta = (np.pi / 2) * _smoothstep(t)
    lambert = np.clip((np.sin(theta) * ly + np.cos(theta) * lz + _WRAP) / (1 + _WRAP), 0.0, 1.0)
    rows = _AMBIENT + (1 - _AMBIENT) * lambert
    up = np.clip((horizon - y) / max(horizon, 1e-3), 0.0, 1.0)
    down = np.clip((y - horizon) / max(1.0 - horizon, 1e-3), 0.0, 1.0)
    rows *= 1.0 - falloff * (0.6 * up**2 + 0.25 * down**2)

    x = (np.arange(width, dtype=np.float32) + 0.5) / width
    centre = 0.5 + 0.9 * lx  # just outside the frame for a side light
    reach = 0.5 + abs(centre - 0.5)
    cols = 1.0 - falloff * ((x - centre) / reach) ** 2
    rows = (rows / rows.max()) ** _GAMMA
    cols = (np.clip(cols, 1e-3, None) / cols.max()) ** _GAMMA
    return rows.astype(np.float32), cols.astype(np.float32)


def _unit(rgb: RGB) -> np.ndarray:
    return np.asarray(rgb, np.float32) / 255.0


def _gradient_t(orientation: Orientation, rows: slice, height: int, width: int) -> np.ndarray:
    """The gradient's position 0..1 for the rows of one strip (broadcastable to rows x W)."""
    y = ((np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) / height)[:, None]
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
    if orientation == "vertical":
        return y
    if orientation == "horizontal":
        return x
    if orientation == "diagonal":
        return (x + y) * 0.5
    # Radial in pixels, so a wide frame gets a round, not an oval, light.
    dy = (y - 0.5) * height
    dx = (x - 0.5) * width
    return np.clip(np.hypot(dx, dy) / (0.5 * np.hypot(height, width)), 0.0, 1.0)


def grain_field(rng: np.random.Generator, height: int, width: int, std: float) -> np.ndarray:
    """Triangular-PDF noise with standard deviation ``std``, HxW float32.

    The difference of two uniforms is the dither that removes banding without making the
    noise depend on the signal. Both uniforms come from the generator's raw 64-bit
    output split into 16-bit quarters, which costs less than ``standard_normal``.
    """
    count = height * width
    halves = rng.bit_generator.random_raw((count + 1) // 2).view(np.uint16)
    noise = halves[:count].astype(np.float32).reshape(height, width)
    noise -= halves[count:2 * count].reshape(height, width)
    # The difference of two uniforms on [0, 1) has variance 1/6.
    noise *= np.float32(std * np.sqrt(6.0) / 65536.0)
    return noise


def paint(backdrop: Backdrop, height: int, width: int, *, seed: int, grain: float,
          profiles: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The HxWx3 float32 backdrop in 0..1, in row strips so temporaries stay small.

    Pure white is a read-only broadcast view of 1.0: nothing to paint, exact by
    construction, and no 288 MB array at 24 MP. Everything else is written one channel
    at a time: numpy broadcasting over a last axis of 3 runs an inner loop of length 3,
    several times slower than a row-long loop with a 12-byte stride.
    """
    if backdrop.pure_white:
        return np.broadcast_to(np.ones(3, np.float32), (height, width, 3))
    if backdrop.kind == "sweep" and profiles is None:
        raise ValueError("a sweep needs its row and column profiles")
    out = np.empty((height, width, 3), np.float32)
    rng = np.random.default_rng(seed)
    first = _unit(backdrop.colours[0])
    step = _unit(backdrop.colours[-1]) - first
    strip = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, strip):
        rows = slice(top, min(height, top + strip))
        target = out[rows]
        position = (_gradient_t(backdrop.orientation, rows, height, width)
                    if backdrop.kind == "gradient" else None)
        for c in range(3):
            channel = target[..., c]
            if backdrop.kind == "sweep":
                np.multiply(profiles[0][rows, None], profiles[1] * first[c], out=channel)
            elif position is not None:
                np.multiply(position, step[c], out=channel)
                channel += first[c]
            else:
                channel.fill(first[c])
        if grain > 0:
            # One monochrome field for all three channels: grain in luminance, as film's,
            # not coloured speckle.
            noise = grain_field(rng, rows.stop - rows.start, width, grain)
            for c in range(3):
                target[..., c] += noise
        np.clip(target, 0.0, 1.0, out=target)
    return out


@dataclass(frozen=True)
class Light:
    direction: str | None  # as reported; None when the subject's light was not measurable
    vector: tuple[float, float, float]
    facts: dict[str, Any]


def choose_light(prompt: str, image: np.ndarray, alpha: np.ndarray,
                 estimator: LightEstimator) -> Light:
    """The prompt's light when it names one (confidence 1), else the subject's estimate."""
    named = prompt_light_direction(prompt)
    if named is not None:
        vector = KEY_LIGHTS[named]
        facts = LightEstimate(named, vector, 1.0).as_facts()
        facts["source"] = "prompt"
        return Light(named, vector, facts)
    # Shading is a low-frequency signal and the estimator works at 256 px anyway: a
    # strided view first saves resizing all 24 MP of a large photo.
    step = max(1, max(alpha.shape) // _LIGHT_SIDE)
    estimate = estimator(np.ascontiguousarray(image[::step, ::step]),
                         np.ascontiguousarray(alpha[::step, ::step]))
    facts = estimate.as_facts()
    facts["source"] = "subject"
    # No measurable light (a flat or tiny subject): reported as None, painted with the
    # studio's usual front key.
    return Light(estimate.direction, KEY_LIGHTS[estimate.direction or "front"], facts)


@dataclass
class StudioSceneGenerator:
    """Paints the studio backdrop a prompt describes; ``StudioSceneGenerator()`` just works.

    ``grain``: the standard deviation of the grain, in 0..1 (about one 8-bit level).
    ``falloff``: how much darker, in linear light, the sweep gets far from its light.
    """

    name: str = "studio"
    grain: float = 1.0 / 255.0
    falloff: float = 0.22
    light_estimator: LightEstimator = field(default=estimate_light_direction, repr=False)
    shadow_estimator: ShadowEstimator = field(default=estimate_contact_shadow, repr=False)

    def __call__(self, request: SceneRequest) -> Scene:
        timings: dict[str, float] = {}
        height, width = request.alpha.shape
        seed = int(request.seed) if request.seed is not None else secrets.randbelow(1 << 31)
        prompt = request.prompt.strip()
        backdrop = read_backdrop(prompt)

        started = time.perf_counter()
        light = choose_light(prompt, request.image, request.alpha, self.light_estimator)
        timings["light_s"] = time.perf_counter() - started

        started = time.perf_counter()
        grain = 0.0 if backdrop.pure_white else self.grain
        falloff = self.falloff if backdrop.kind == "sweep" else 0.0
        profiles = None
        facts_extra: dict[str, Any] = {}
        if backdrop.kind == "sweep":
            horizon = horizon_for(request.alpha)
            profiles = sweep_profiles(height, width, horizon, light.vector, falloff)
            facts_extra["horizon"] = round(horizon, 3)
        background = paint(backdrop, height, width, seed=seed, grain=grain, profiles=profiles)
        timings["paint_s"] = time.perf_counter() - started

        shadow = None
        shadow_facts: dict[str, Any] = {"carried": False, "reason": "not_requested"}
        if request.preserve_shadow:
            # Asked only when the matting stage separated no shadow (a learned engine):
            # the contact shadow is then estimated from the photo, as the diffusion engine does.
            started = time.perf_counter()
            estimate = self.shadow_estimator(request.image, request.alpha)
            timings["shadow_s"] = time.perf_counter() - started
            shadow_facts = estimate.facts
            shadow = estimate.multiplier if estimate.carried else None

        backdrop_facts = backdrop.as_facts(grain, falloff)
        backdrop_facts.update(facts_extra)
        facts = {
            "scene_generated": True,
            "scene_model": self.name,
            "prompt": prompt,
            "requested_seed": seed,
            "scene_seed": seed,
            "light": light.facts,
            "light_direction": light.direction,
            "backdrop": backdrop_facts,
            "shadow": shadow_facts,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
        }
        return Scene(background=background, shadow=shadow, facts=facts)
