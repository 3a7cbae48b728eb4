"""Full-size scene pipelines with random weights, built from vendored architecture configs.

What a render costs on a GPU depends on the networks' shapes, not on their weight
values: a UNet, a VAE and text encoders with SDXL-inpainting 0.1's published configs
run exactly the kernels the trained ones run. So the cost per render can be measured
on any CUDA machine without downloading 7 GB of weights (``bench/gpu_cost.py``).

The configs live in ``architectures/<preset>/``, one folder per component as in the
Hugging Face snapshot, next to ``source.json``: the repository and the pinned revision
they describe (the same as ``MODEL_PRESETS``) and the parameter counts the model cards
publish. The tokenizers are the tiny ones (``tiny.py``) with the real model's length of
77 tokens: their ids fit the full embedding tables, and the text encoders see full-length
sequences, so only the prompt's word pieces differ from the real tokenizer's.

Weights are initialised on the target device (seconds on a GPU; on a CPU, SDXL's 3.5 B
parameters take about a minute and 14 GB), under a fixed seed, in float32, then cast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

ARCHITECTURES_DIR = Path(__file__).resolve().parent / "architectures"
PRESETS = ("sdxl-inpainting", "sd15-inpainting")
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
_SEED = 0


def architecture_dir(preset: str) -> Path:
    if preset not in PRESETS:
        raise ValueError(f"no vendored architecture for {preset!r}; expected one of {', '.join(PRESETS)}")
    return ARCHITECTURES_DIR / preset


def read_json(preset: str, relative: str) -> dict[str, Any]:
    return json.loads((architecture_dir(preset) / relative).read_text())


def source(preset: str) -> dict[str, Any]:
    """The repository, the pinned revision and the published parameter counts."""
    return read_json(preset, "source.json")


def component_names(preset: str) -> list[str]:
    return [name for name in COMPONENTS if (architecture_dir(preset) / name / "config.json").is_file()]


def build_component(preset: str, name: str) -> torch.nn.Module:
    """One network from its vendored config, initialised on the current default device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = read_json(preset, f"{name}/config.json")
    if name == "unet":
        return UNet2DConditionModel.from_config(config)
    if name == "vae":
        return AutoencoderKL.from_config(config)
    classes = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}
    fields = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    return classes[config["architectures"][0]](CLIPTextConfig(**fields))


@functools.lru_cache(maxsize=None)
def parameter_counts(preset: str) -> dict[str, int]:
    """Parameters per component, counted on the meta device: no memory, no init, seconds.
    Cached: the configs are files in the package and do not change while it runs."""
    counts = {}
    with torch.device("meta"):
        for name in component_names(preset):
            counts[name] = sum(p.numel() for p in build_component(preset, name).parameters())
    return counts


def tokenizer(preset: str, folder: str = "tokenizer"):
    """The tiny vocabulary at the real model's sequence length (``tokenizer*/shape.json``)."""
    from gpu_worker.scene.tiny import tiny_tokenizer

    shape = read_json(preset, f"{folder}/shape.json")
    tok = tiny_tokenizer()
    tok.model_max_length = shape["model_max_length"]
    if len(tok) > shape["vocab_size"]:
        raise ValueError("the tiny tokenizer's ids must fit the full embedding table")
    return tok


def scheduler(preset: str):
    import diffusers

    config = read_json(preset, "scheduler/scheduler_config.json")
    return getattr(diffusers, config["_class_name"]).from_config(config)


def build_pipeline(preset: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """The real diffusers inpainting pipeline class around full-size random networks."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    device = torch.device(device)
    torch.manual_seed(_SEED)
    with torch.device(device):
        networks = {name: build_component(preset, name) for name in component_names(preset)}
    for module in networks.values():
        module.to(dtype=dtype).eval()
    if preset == "sdxl-inpainting":
        pipe = StableDiffusionXLInpaintPipeline(
            **networks,
            tokenizer=tokenizer(preset),
            tokenizer_2=tokenizer(preset, "tokenizer_2"),
            scheduler=scheduler(preset),
            requires_aesthetics_score=False,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    else:
        pipe = StableDiffusionInpaintPipeline(
            **networks,
            tokenizer=tokenizer(preset),
            scheduler=scheduler(preset),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
