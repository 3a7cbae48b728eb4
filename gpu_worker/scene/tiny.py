"""Tiny, randomly initialised SD 1.5 and SDXL inpainting pipelines, built in-process.

They have the real architectures (a UNet with 9 input channels: 4 noisy latents, 1 mask,
4 masked-image latents; a VAE that downsamples 8x; CLIP text encoders, two for SDXL) at a
few thousand to a few hundred thousand parameters, so tests and the offline demo exercise
the exact diffusers code paths the real weights take, in well under a second per image.
Their output is noise: nothing here is trained.

The tokenizer comes from the small vocabulary and merges files in ``tiny_tokenizer/``
(shipped inside the package because the demo mode needs them as much as the tests do).
Weights are drawn under a fixed torch seed, so two builds give identical models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLInpaintPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TOKENIZER_DIR = Path(__file__).resolve().parent / "tiny_tokenizer"

# Text encoders: SD uses one hidden size; SDXL concatenates two of them for cross-attention.
_TEXT_HIDDEN = 16
_SDXL_PROJECTION = 16
_TIME_EMBED = 4  # SDXL's addition_time_embed_dim; six micro-conditioning values each
_SEED = 0


def tiny_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


def _text_config(tokenizer: CLIPTokenizer, projection_dim: int = _SDXL_PROJECTION) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=2,  # SDXL reads the penultimate layer: two is the minimum
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )


def tiny_vae(scaling_factor: float) -> AutoencoderKL:
    """Four blocks, three of which downsample: 8x like the real VAE, at 4-8 channels."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=scaling_factor,
        force_upcast=False,
    )


def _tiny_unet(cross_attention_dim: int, sdxl: bool) -> UNet2DConditionModel:
    extra: dict = {}
    if sdxl:
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=_TIME_EMBED,
            # requires_aesthetics_score=False: six time ids (sizes and crop) plus the pooled text.
            projection_class_embeddings_input_dim=6 * _TIME_EMBED + _SDXL_PROJECTION,
            use_linear_projection=True,
            transformer_layers_per_block=1,
        )
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        **extra,
    )


def tiny_sd_inpaint_pipeline() -> StableDiffusionInpaintPipeline:
    """SD 1.5 inpainting shape: PNDM like the real scheduler config, no safety checker."""
    torch.manual_seed(_SEED)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    unet = _tiny_unet(cross_attention_dim=_TEXT_HIDDEN, sdxl=False)
    vae = tiny_vae(scaling_factor=0.18215)
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_inpaint_pipeline() -> StableDiffusionXLInpaintPipeline:
    """SDXL inpainting 0.1 shape: two text encoders, Euler, no aesthetic score."""
    torch.manual_seed(_SEED)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer))
    unet = _tiny_unet(cross_attention_dim=2 * _TEXT_HIDDEN, sdxl=True)
    vae = tiny_vae(scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_inpaint_pipeline(family: str):
    """The tiny pipeline of a model family: ``"sdxl"`` or ``"sd15"``."""
    if family == "sdxl":
        return tiny_sdxl_inpaint_pipeline()
    if family == "sd15":
        return tiny_sd_inpaint_pipeline()
    raise ValueError(f"unknown model family {family!r}; expected 'sdxl' or 'sd15'")


def parameter_count(pipe) -> int:
    total = 0
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            total += sum(p.numel() for p in module.parameters())
    return total
