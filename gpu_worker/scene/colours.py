"""Colours named in a prompt: CSS names, hex codes, and the words photographers use.

A customer writes "pastel pink", "#ff8800", "off-white" or "charcoal seamless", not an
RGB triple, so the studio engine and the prompt router read colours the same way, from
the same word list (:func:`tokenize`). A colour is:

* a hex code, ``#rgb`` or ``#rrggbb``;
* one of the 148 CSS names (Pillow's table), also written as separate words
  ("sky blue", "light sea green") or with "grey" for "gray";
* a name from :data:`EXTRA_COLOURS` ("off-white", "charcoal", "cream", ...), which also
  overrides CSS where CSS reads wrongly in a prompt (CSS's ``darkgray`` is lighter than
  its ``gray``);
* any of those after modifiers: "pastel" / "pale" / "light" / "soft" mix towards white, "dark" /
  "deep" towards black, "muted" towards mid grey ("pastel teal", "dark navy"). A CSS
  compound wins over the modifier rule ("light blue" is CSS ``lightblue``), because that
  is the colour people who type it have seen.

Some names are also things ("snow", "gold", "coral", "lavender", "sand"): they are still
parsed as colours, but flagged ``ambiguous`` so that the router does not send "snow" or
"coral" on their own to a plain backdrop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from PIL import ImageColor

RGB = tuple[int, int, int]

# Names a prompt uses that CSS lacks (or gets wrong for a photograph). Keys are the words
# joined without spaces, as the lookup joins them.
EXTRA_COLOURS: dict[str, RGB] = {
    "offwhite": (248, 246, 240),
    "charcoal": (54, 58, 62),
    "cream": (255, 251, 219),
    "eggshell": (240, 234, 214),
    "greige": (190, 183, 172),
    "sand": (214, 196, 160),
    "stone": (146, 142, 133),
    "taupe": (139, 128, 120),
    "champagne": (247, 231, 206),
    "peach": (255, 218, 185),
    "blush": (240, 200, 200),
    "lilac": (200, 162, 200),
    "mauve": (204, 153, 204),
    "sage": (156, 175, 136),
    "mint": (170, 240, 209),
    "emerald": (80, 200, 120),
    "terracotta": (204, 105, 80),
    "mustard": (225, 173, 1),
    "burgundy": (128, 0, 32),
    # The established pastel names: "pastel" + a primary by the mixing rule comes out
    # lilac for blue and grey-green for green, which is not what anyone means by them.
    "pastelblue": (174, 198, 207),
    "pastelpink": (255, 209, 220),
    "pastelgreen": (119, 221, 119),
    "pastelyellow": (253, 253, 150),
    "pastelpurple": (179, 158, 181),
    "pastelorange": (255, 179, 71),
    "pastelred": (255, 105, 97),
    "navyblue": (0, 0, 128),
    "babyblue": (137, 207, 240),
    "babypink": (244, 194, 194),
    # CSS's darkgray (#a9a9a9) is lighter than gray (#808080), a historical accident;
    # "dark grey" in a prompt means darker than grey.
    "darkgrey": (90, 90, 90),
    "darkgray": (90, 90, 90),
}

# Colour names that are just as often things or places: a colour inside a backdrop
# prompt, but not on their own a reason to paint a plain backdrop.
AMBIGUOUS_NAMES: frozenset[str] = frozenset({
    "snow", "gold", "silver", "coral", "chocolate", "tomato", "olive", "lime", "salmon",
    "wheat", "linen", "peru", "orchid", "plum", "lavender", "honeydew", "moccasin", "tan",
    "sienna", "khaki", "bisque", "seashell", "thistle", "violet", "turquoise", "sand",
    "stone", "peach", "sage", "mint", "emerald", "champagne", "mustard", "terracotta",
    "cream", "aqua", "azure", "ivory", "indigo", "crimson", "fuchsia", "magenta",
})

# modifier: (target, share of the target mixed in)
MODIFIERS: dict[str, tuple[RGB, float]] = {
    "pastel": ((255, 255, 255), 0.55),
    "pale": ((255, 255, 255), 0.5),
    "soft": ((255, 255, 255), 0.3),
    "light": ((255, 255, 255), 0.4),
    "dark": ((0, 0, 0), 0.4),
    "deep": ((0, 0, 0), 0.25),
    "muted": ((128, 128, 128), 0.4),
}

_TOKEN = re.compile(r"#[0-9a-f]{6}(?![0-9a-z])|#[0-9a-f]{3}(?![0-9a-z])|[a-z0-9]+", re.IGNORECASE)
_HEX = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})", re.IGNORECASE)
_LONGEST_NAME_WORDS = 3  # "light sea green", "dark slate grey"


def tokenize(text: str) -> list[str]:
    """Lower-case words and hex codes; hyphens and punctuation split words ("off-white")."""
    return [t.lower() for t in _TOKEN.findall(text)]


def _named(key: str) -> RGB | None:
    if key in EXTRA_COLOURS:
        return EXTRA_COLOURS[key]
    # getrgb, not the table's value: Pillow replaces the table's strings with tuples
    # as it looks them up.
    if key in ImageColor.colormap:
        return ImageColor.getrgb(key)[:3]
    return None


def _hex(token: str) -> RGB | None:
    if not _HEX.fullmatch(token):
        return None
    return ImageColor.getrgb(token)[:3]


def mix(colour: RGB, target: RGB, share: float) -> RGB:
    """``colour`` moved ``share`` of the way to ``target`` (in sRGB, as CSS mixes)."""
    return tuple(int(round(c + (t - c) * share)) for c, t in zip(colour, target))  # type: ignore[return-value]


@dataclass(frozen=True)
class Colour:
    """A colour found in a prompt; ``start``/``end`` index the tokens it was read from."""

    rgb: RGB
    phrase: str
    start: int
    end: int
    ambiguous: bool = False

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    @property
    def unit(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.rgb)  # type: ignore[return-value]


def _base_at(tokens: Sequence[str], i: int) -> tuple[RGB, int, str] | None:
    """The longest colour name (or hex code) starting at token ``i``: (rgb, length, key)."""
    hex_rgb = _hex(tokens[i])
    if hex_rgb is not None:
        return hex_rgb, 1, tokens[i]
    for length in range(min(_LONGEST_NAME_WORDS, len(tokens) - i), 0, -1):
        key = "".join(tokens[i:i + length]).replace("gray", "grey")
        rgb = _named(key) or _named(key.replace("grey", "gray"))
        if rgb is not None:
            return rgb, length, key
    return None


def _colour_at(tokens: Sequence[str], i: int) -> Colour | None:
    base = _base_at(tokens, i)
    if base is not None:
        rgb, length, key = base
        return Colour(rgb, " ".join(tokens[i:i + length]), i, i + length, key in AMBIGUOUS_NAMES)
    if tokens[i] in MODIFIERS and i + 1 < len(tokens):
        rest = _colour_at(tokens, i + 1)
        if rest is not None and rest.start == i + 1:
            target, share = MODIFIERS[tokens[i]]
            return Colour(mix(rest.rgb, target, share), f"{tokens[i]} {rest.phrase}", i, rest.end,
                          rest.ambiguous)
    return None


def find_colours(tokens: Sequence[str]) -> list[Colour]:
    """Every colour in ``tokens`` (from :func:`tokenize`), left to right, not overlapping."""
    found: list[Colour] = []
    i = 0
    while i < len(tokens):
        colour = _colour_at(tokens, i)
        if colour is None:
            i += 1
            continue
        found.append(colour)
        i = colour.end
    return found


def parse_colour(text: str) -> RGB | None:
    """The colour ``text`` names as a whole ("pastel pink", "#f80"), or None."""
    tokens = tokenize(text)
    if not tokens:
        return None
    colour = _colour_at(tokens, 0)
    return colour.rgb if colour is not None and colour.end == len(tokens) else None
