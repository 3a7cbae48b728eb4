"""The scene prompt: the user's words first, a light hint only when they name no direction."""

from __future__ import annotations

import pytest

from gpu_worker.scene.config import DEFAULT_NEGATIVE_PROMPT
from gpu_worker.scene.prompting import LIGHT_SENTENCES, build_scene_prompt, names_light_direction
from gpu_worker.scene.tiny import tiny_tokenizer


def test_it_appends_the_estimated_light_direction_when_the_prompt_names_none():
    built = build_scene_prompt("modern kitchen counter with morning light", "left", DEFAULT_NEGATIVE_PROMPT)
    assert built.prompt == "modern kitchen counter with morning light. Soft light coming from the left."
    assert built.light_hint == LIGHT_SENTENCES["left"]


@pytest.mark.parametrize(
    "prompt",
    [
        "marble surface, soft window light from camera-left",
        "beach at golden hour, sun from the right",
        "desk lit from above",
        "backlit forest clearing",
        "studio with a rim light",
        "temple courtyard with frontal light",
    ],
)
def test_it_leaves_a_prompt_that_already_names_a_light_direction_alone(prompt):
    built = build_scene_prompt(prompt, "above", DEFAULT_NEGATIVE_PROMPT)
    assert built.prompt == prompt
    assert built.light_hint is None


@pytest.mark.parametrize("prompt", ["bright sunny garden", "lightweight fabric backdrop", "brightly lit cafe"])
def test_words_that_merely_contain_right_or_light_do_not_count_as_a_direction(prompt):
    assert not names_light_direction(prompt)


def test_the_users_words_come_first_so_truncation_cuts_the_hint_not_them():
    long_prompt = " ".join(["rustic wooden table"] * 30)
    built = build_scene_prompt(long_prompt, "right", DEFAULT_NEGATIVE_PROMPT)
    tokenizer = tiny_tokenizer()
    kept = tokenizer(built.prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    user_only = tokenizer(long_prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    assert kept == user_only


def test_it_adds_no_hint_when_no_direction_was_measured():
    built = build_scene_prompt("  garden   with festival lights ", None, "text")
    assert built.prompt == "garden with festival lights"
    assert built.light_hint is None


def test_the_default_negative_prompt_steers_away_from_extra_objects_text_and_watermarks():
    built = build_scene_prompt("kitchen", "front", DEFAULT_NEGATIVE_PROMPT)
    for word in ("extra objects", "text", "watermark"):
        assert word in built.negative_prompt
    assert built.prompt == "kitchen. Soft frontal light."
    assert built.as_facts()["light_hint"] == "Soft frontal light."
