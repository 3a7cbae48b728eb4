"""Which scene engine paints a prompt: the studio engine or the diffusion model.

The studio engine (``gpu_worker.scene.studio``) paints plain backdrops on the CPU in
milliseconds, exactly and deterministically; the diffusion model paints everything
else, on a GPU, with its own weights. :func:`route` decides by the prompt alone:

* **studio** when every word of the prompt belongs to a backdrop description (colours,
  "sweep", "seamless", "gradient", "background", light and shadow words, filler) and at
  least one of them says which backdrop: a backdrop noun or kind, a hex code, or a
  colour name that is not also a thing. "pure white background", "#ff8800 backdrop",
  "pastel pink studio background", "gradient from navy to teal";
* **diffusion** otherwise: a word outside that vocabulary describes a place or an
  object ("white marble table in a bright kitchen": a colour word does not make a
  studio when a table is in it), and prompts that name no backdrop ("soft light",
  "snow", "coral") are ambiguous, which goes to the model that can paint either.

The vocabulary is closed on purpose: a wrong "studio" answer paints a flat colour where
the customer asked for a kitchen, while a wrong "diffusion" answer still paints a
plausible backdrop.

:class:`RoutedSceneGenerator` applies the decision in the pipeline and records it in the
scene's facts under ``route``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gpu_worker.errors import MODEL_UNAVAILABLE, RenderError
from gpu_worker.scene.colours import find_colours, tokenize
from gpu_worker.stages import Scene, SceneGenerator, SceneRequest

Engine = Literal["studio", "diffusion"]

# Quoted in messages that tell a customer or an operator what renders without a GPU.
STUDIO_EXAMPLES: tuple[str, ...] = ("pure white background", "pastel pink paper sweep")

# Words that say which backdrop: any one of them (or a colour) makes a backdrop prompt.
BACKDROP_WORDS: frozenset[str] = frozenset({
    "background", "backgrounds", "backdrop", "backdrops", "bg", "sweep", "sweeps", "seamless",
    "paper", "studio", "cyclorama", "cyc", "infinity", "cove", "colour", "color", "solid",
    "plain", "flat", "gradient", "gradients", "ombre", "fade", "fading", "graduated",
    "gradation", "radial", "hex",
})

# Words a backdrop prompt may contain besides those: light and shadow, layout, tone,
# photographic and marketplace filler. None of them names a place or an object.
OTHER_STUDIO_WORDS: frozenset[str] = frozenset({
    # light and shadow
    "light", "lights", "lighting", "lit", "soft", "softly", "gentle", "gently", "subtle",
    "subtly", "diffused", "diffuse", "even", "evenly", "shadow", "shadows", "shadowed",
    "contact", "drop", "falloff", "fall", "off", "glow", "key", "high", "low", "bright",
    "brighter", "darker", "lighter", "spotlight", "vignette", "vignetting", "backlit",
    "no", "without", "none", "natural",
    # directions and layout
    "from", "left", "right", "above", "top", "overhead", "front", "frontal", "side",
    "camera", "bottom", "centre", "center", "middle", "edge", "edges", "corner", "corners",
    "horizontal", "horizontally", "vertical", "vertically", "diagonal", "diagonally",
    "upwards", "downwards", "up", "down",
    # tone
    "pure", "neutral", "warm", "cool", "mid", "medium", "pastel", "pale", "dark", "deep",
    "muted", "tone", "toned", "tones", "tonal", "hue", "shade", "shades", "coloured",
    "colored", "colours", "colors", "smooth", "clean", "simple", "minimal", "minimalist",
    "very", "slightly", "slight", "matte", "matt",
    # filler and shop talk
    "a", "an", "the", "with", "and", "or", "on", "in", "of", "to", "into", "for", "as", "by",
    "behind", "under", "at", "is", "it", "main", "product", "products", "photo", "photos",
    "photograph", "photography", "shot", "shoot", "image", "picture", "style", "look",
    "ecommerce", "e", "commerce", "marketplace", "amazon", "etsy", "ebay", "shopify",
    "catalogue", "catalog", "listing", "professional", "packshot", "only", "just", "please",
    "like",
})

STUDIO_WORDS: frozenset[str] = BACKDROP_WORDS | OTHER_STUDIO_WORDS


@dataclass(frozen=True)
class Route:
    engine: Engine
    reason: str

    def as_facts(self) -> dict[str, str]:
        return {"engine": self.engine, "reason": self.reason}


def _quoted(words: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{w}'" for w in dict.fromkeys(words[:limit]))
    return shown + (", ..." if len(words) > limit else "")


def route(prompt: str) -> Route:
    """The engine for ``prompt``, and a one-line reason a customer or an operator can read."""
    tokens = tokenize(prompt)
    if not tokens:
        return Route("diffusion", "the prompt describes nothing: the scene model decides")
    colours = find_colours(tokens)
    in_colour = {i for colour in colours for i in range(colour.start, colour.end)}
    rest = [t for i, t in enumerate(tokens) if i not in in_colour]
    foreign = [t for t in rest if t not in STUDIO_WORDS]
    if foreign:
        return Route("diffusion", f"describes a scene: {_quoted(foreign)}")
    nouns = [t for t in rest if t in BACKDROP_WORDS]
    if not nouns and all(c.ambiguous for c in colours):
        said = [c.phrase for c in colours] or rest
        return Route("diffusion", f"names no backdrop ({_quoted(said)}): ambiguous")
    return Route("studio", f"a plain backdrop: {_quoted([c.phrase for c in colours] + nouns)}")


class RoutedSceneGenerator:
    """The studio engine and the diffusion model behind one scene stage, chosen per prompt.

    ``diffusion`` is whatever the configuration built: a loaded model, or a stand-in that
    fails each render with ``model_unavailable`` and says what to install. Studio prompts
    never touch it, so a worker without weights or a GPU still renders them.
    """

    def __init__(self, studio: SceneGenerator, diffusion: SceneGenerator, *, name: str) -> None:
        self.studio = studio
        self.diffusion = diffusion
        self.name = name

    def __call__(self, request: SceneRequest) -> Scene:
        decision = route(request.prompt)
        engine = self.studio if decision.engine == "studio" else self.diffusion
        try:
            scene = engine(request)
        except RenderError as exc:
            if exc.code != MODEL_UNAVAILABLE:
                raise
            # Say why this prompt needed the missing model: the customer can rephrase.
            raise RenderError(exc.code, f"this prompt needs the diffusion scene model (it "
                                        f"{decision.reason}); {exc.message}") from exc
        facts: dict[str, Any] = dict(scene.facts)
        facts["route"] = decision.as_facts()
        return Scene(background=scene.background, shadow=scene.shadow, facts=facts)
