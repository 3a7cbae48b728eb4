"""The scene stage's inference options (SCENE_DTYPE, SCENE_ATTENTION, SCENE_CHANNELS_LAST,
SCENE_VAE_TILING, SCENE_COMPILE_MODE): read strictly, and applied without changing the image.

bench/gpu_cost.py measures each option on and off; these tests prove the worker applies
the same function and that an option changes speed or memory, never the picture.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_worker.scene.config import SceneConfigError, scene_config_from_env
from gpu_worker.scene.loading import apply_inference_options, select_device
from gpu_worker.scene.tiny import tiny_inpaint_pipeline


def test_the_options_default_to_sdpa_contiguous_untiled_and_automatic_dtype():
    config = scene_config_from_env({})
    assert (config.dtype, config.attention, config.channels_last, config.vae_tiling) == ("auto", "sdpa", False,
                                                                                          False)
    assert select_device(replace(config, device="cpu"))[1] == torch.float32


def test_scene_dtype_picks_the_networks_dtype():
    config = scene_config_from_env({"SCENE_DTYPE": "bfloat16", "SCENE_DEVICE": "cpu"})
    assert select_device(config) == (torch.device("cpu"), torch.bfloat16)


@pytest.mark.parametrize("name,value", [("SCENE_DTYPE", "half"), ("SCENE_ATTENTION", "flash3"),
                                        ("SCENE_COMPILE_MODE", "fast")])
def test_an_unknown_option_value_fails_when_the_config_is_read(name, value):
    with pytest.raises(SceneConfigError, match=name):
        scene_config_from_env({name: value})


def _paint(pipe) -> np.ndarray:
    image = Image.new("RGB", (64, 64), (120, 130, 140))
    mask = Image.new("L", (64, 64), 255)
    with torch.inference_mode():
        out = pipe(prompt="a kitchen", image=image, mask_image=mask, height=64, width=64, strength=0.99,
                   num_inference_steps=2, guidance_scale=7.5, output_type="np",
                   generator=torch.Generator().manual_seed(3))
    return np.asarray(out.images[0])


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_the_attention_kernel_and_memory_layout_change_the_speed_never_the_picture(family):
    base = scene_config_from_env({"SCENE_DEVICE": "cpu"})
    reference = _paint(apply_inference_options(tiny_inpaint_pipeline(family), base, torch.device("cpu")))
    tuned = replace(base, attention="classic", channels_last=True, compile_unet=True)
    pipe = apply_inference_options(tiny_inpaint_pipeline(family), tuned, torch.device("cpu"))
    assert not isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule)  # compile is CUDA-only
    np.testing.assert_allclose(_paint(pipe), reference, atol=2e-3)


def test_vae_tiling_decodes_in_tiles_so_it_is_off_unless_asked():
    """Tiles are blended at their seams: the picture changes a little, hence off by default."""
    base = scene_config_from_env({"SCENE_DEVICE": "cpu"})
    plain = _paint(apply_inference_options(tiny_inpaint_pipeline("sd15"), base, torch.device("cpu")))
    tiled_pipe = apply_inference_options(tiny_inpaint_pipeline("sd15"), replace(base, vae_tiling=True),
                                         torch.device("cpu"))
    tiled = _paint(tiled_pipe)
    assert tiled.shape == plain.shape and np.isfinite(tiled).all()
    assert np.abs(tiled - plain).max() > 1e-3  # the 64 px canvas is two 32 px tiles a side
