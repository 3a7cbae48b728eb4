"""The standard diffusers inference options, each measured on and off in one process.

Each option is timed where it acts: a UNet step (dtype, channels_last, the attention
kernel, torch.compile, a few-step LoRA fused into the weights or left as adapters) or
a VAE decode (tiling, which trades time for peak memory). The UNet step is called
directly, with the inputs the pipeline gives it at the render's canvas: classifier-free
guidance doubles the batch, SDXL adds its pooled text and six micro-conditioning ids.
Every option is switched back off before the next one is measured, so each row
compares with the same baseline.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from module_timer import synchronize


@dataclass
class OptionRow:
    option: str
    off_label: str
    on_label: str
    off_ms: float | None
    on_ms: float | None
    note: str = ""
    off_peak_mb: float | None = None
    on_peak_mb: float | None = None

    @property
    def speedup(self) -> float | None:
        if not self.off_ms or not self.on_ms:
            return None
        return self.off_ms / self.on_ms


def unet_inputs(pipe: Any, latent_hw: tuple[int, int], batch: int, dtype: torch.dtype) -> dict[str, Any]:
    """What the inpainting pipeline passes the UNet at one step."""
    unet = pipe.unet
    device = unet.device
    config = unet.config
    h, w = latent_hw
    generator = torch.Generator(device="cpu").manual_seed(0)

    def noise(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    inputs: dict[str, Any] = {
        "sample": noise(batch, config.in_channels, h, w),
        "timestep": torch.tensor(999, device=device),
        "encoder_hidden_states": noise(batch, 77, config.cross_attention_dim),
    }
    if config.addition_embed_type == "text_time":
        text_embeds = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": noise(batch, text_embeds),
            "time_ids": torch.tensor([[h * 8, w * 8, 0, 0, h * 8, w * 8]] * batch, device=device, dtype=dtype),
        }
    return inputs


def timed_ms(device: torch.device, call: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median milliseconds per call, after ``warmup`` untimed calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            call()
        samples = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def peak_mb(device: torch.device, call: Callable[[], Any]) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        call()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


class OptionBench:
    """Measures each option against the pipeline as the worker would run it."""

    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype, latent_hw: tuple[int, int],
                 batch: int, repeats: int, compile_mode: str, warmup: int = 1) -> None:
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.latent_hw = latent_hw
        self.batch = batch
        self.repeats = repeats
        self.warmup = warmup
        self.compile_mode = compile_mode
        self.cuda = device.type == "cuda"

    def unet_step_ms(self, unet: Any = None, dtype: torch.dtype | None = None) -> float:
        unet = unet or self.pipe.unet
        inputs = unet_inputs(self.pipe, self.latent_hw, self.batch, dtype or self.dtype)
        return timed_ms(self.device, lambda: unet(**inputs, return_dict=False), self.repeats, self.warmup)

    def dtypes(self) -> list[OptionRow]:
        if not self.cuda:
            return [OptionRow("dtype", "float32", "float16 / bfloat16", self.unet_step_ms(), None,
                              "half precision not measured on CPU (no fast fp16/bf16 kernels there)")]
        rows = []
        unet = self.pipe.unet
        baseline = self.unet_step_ms(dtype=self.dtype)
        for candidate in (torch.float32, torch.float16, torch.bfloat16):
            if candidate == self.dtype:
                continue
            unet.to(dtype=candidate)
            try:
                ms = self.unet_step_ms(dtype=candidate)
            finally:
                unet.to(dtype=self.dtype)
            rows.append(OptionRow("dtype", _name(self.dtype), _name(candidate), baseline, ms))
        return rows

    def channels_last(self) -> OptionRow:
        unet = self.pipe.unet
        off = self.unet_step_ms()
        unet.to(memory_format=torch.channels_last)
        try:
            on = self.unet_step_ms()
        finally:
            unet.to(memory_format=torch.contiguous_format)
        return OptionRow("channels_last (UNet)", "contiguous", "channels_last", off, on)

    def attention(self) -> OptionRow:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        unet = self.pipe.unet
        unet.set_attn_processor(AttnProcessor())
        try:
            classic = self.unet_step_ms()
        finally:
            unet.set_attn_processor(AttnProcessor2_0())
        sdpa = self.unet_step_ms()
        return OptionRow("attention", "classic (matmul)", "SDPA", classic, sdpa)

    def compiled(self) -> OptionRow:
        if not self.cuda:
            return OptionRow("torch.compile (UNet)", "eager", "compiled", None, None, "CUDA only; not run on CPU")
        eager = self.unet_step_ms()
        compiled = torch.compile(self.pipe.unet, mode=self.compile_mode, fullgraph=True)
        inputs = unet_inputs(self.pipe, self.latent_hw, self.batch, self.dtype)
        started = time.perf_counter()
        with torch.inference_mode():
            compiled(**inputs, return_dict=False)
            compiled(**inputs, return_dict=False)
        synchronize(self.device)
        warmup_s = time.perf_counter() - started
        on = self.unet_step_ms(unet=compiled)
        return OptionRow("torch.compile (UNet)", "eager", f"compiled ({self.compile_mode})", eager, on,
                         f"warm-up {warmup_s:.1f} s per canvas shape, excluded")

    def vae_tiling(self) -> OptionRow:
        vae = self.pipe.vae
        h, w = self.latent_hw
        # The pipeline upcasts a force_upcast VAE (SDXL's) to fp32 for decoding in fp16.
        dtype = torch.float32 if (self.dtype == torch.float16 and vae.config.force_upcast) else self.dtype
        vae.to(dtype=dtype)
        latents = torch.randn(1, vae.config.latent_channels, h, w, generator=torch.Generator().manual_seed(0))
        latents = latents.to(self.device, dtype)

        def decode():
            return vae.decode(latents, return_dict=False)

        try:
            off, off_peak = timed_ms(self.device, decode, self.repeats, self.warmup), peak_mb(self.device, decode)
            vae.enable_tiling()
            on, on_peak = timed_ms(self.device, decode, self.repeats, self.warmup), peak_mb(self.device, decode)
        finally:
            vae.disable_tiling()
            vae.to(dtype=self.dtype)
        note = "slicing splits a batch; the worker decodes one image, so it changes nothing"
        return OptionRow("VAE tiling (decode)", "whole", "tiled", off, on, note, off_peak, on_peak)

    def fused_lora(self, rank: int = 64) -> OptionRow:
        """A random few-step LoRA of LCM-LoRA's shape, as adapters and then fused."""
        from peft import LoraConfig

        unet = self.pipe.unet
        targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights="gaussian"),
                         adapter_name="few_step")
        unet.to(device=self.device, dtype=self.dtype)
        adapters = self.unet_step_ms()
        unet.fuse_lora(lora_scale=1.0)
        unet.unload_lora()
        fused = self.unet_step_ms()
        return OptionRow(f"few-step LoRA (rank {rank})", "adapters", "fused", adapters, fused)

    def all(self, names: list[str]) -> list[OptionRow]:
        rows: list[OptionRow] = []
        for name in names:
            result = {"dtype": self.dtypes, "channels_last": self.channels_last, "attention": self.attention,
                      "compile": self.compiled, "vae_tiling": self.vae_tiling, "lora": self.fused_lora}[name]()
            rows.extend(result if isinstance(result, list) else [result])
        return rows


OPTION_NAMES = ("dtype", "channels_last", "attention", "vae_tiling", "lora", "compile")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
