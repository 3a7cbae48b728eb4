"""The prompt the scene model sees: the user's words, a light hint, a negative prompt.

The subject keeps its own lighting (it is composed, never redrawn), so the scene must be
lit to match it. When the user's prompt already says where the light comes from, that
wins: the user knows the scene they want and the brief tells them to name the light.
Otherwise a sentence from the light estimate is appended after the user's text, so that
when the text encoder's 77 tokens run out it is the hint that is cut, not the user's words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LIGHT_SENTENCES = {
    "left": "Soft light coming from the left.",
    "right": "Soft light coming from the right.",
    "above": "Soft light coming from above.",
    "front": "Soft frontal light.",
}

# Words that place a light source. "bright", "brightly", "lightweight" do not match
# because of the word boundaries; "right next to" does, which only costs the hint.
_DIRECTION_WORDS = re.compile(
    r"\b("
    r"left|right|above|overhead|below|beneath|underneath|behind|"
    r"front(?:al|-lit|lit)?|back-?lit|backlight(?:ing)?|rim[- ]?light|side-?lit|side[- ]?light|"
    r"top-?lit|top[- ]light|from (?:the )?(?:top|side|back|window)|"
    r"camera[- ](?:left|right)|north|south|east|west"
    r")\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ScenePrompt:
    prompt: str
    negative_prompt: str
    light_hint: str | None  # the sentence added, None when the user named a direction

    def as_facts(self) -> dict:
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "light_hint": self.light_hint}


def names_light_direction(text: str) -> bool:
    return _DIRECTION_WORDS.search(text) is not None


def build_scene_prompt(scene_prompt: str, light_direction: str | None, negative_prompt: str) -> ScenePrompt:
    """The user's prompt, plus a light sentence when it names no direction and one is known."""
    text = " ".join(scene_prompt.split())
    hint = None
    if light_direction in LIGHT_SENTENCES and not names_light_direction(text):
        hint = LIGHT_SENTENCES[light_direction]
    if hint:
        separator = " " if text.endswith((".", "!", "?")) else ". "
        text = f"{text}{separator}{hint}" if text else hint
    return ScenePrompt(prompt=text, negative_prompt=negative_prompt, light_hint=hint)
