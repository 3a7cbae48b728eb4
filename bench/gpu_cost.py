"""GPU cost per render, measured without weights: full-size random-weight networks.

    make bench-gpu                                    # the configured preset on CUDA
    .venv/bin/python bench/gpu_cost.py --gpu-price 2.50 --out var/bench/gpu
    .venv/bin/python bench/gpu_cost.py --device cpu --size 256 --steps 1 --repeats 1   # a CPU smoke run

What a render costs depends on the networks' shapes, not on their weight values, so the
scene pipeline is built at full size from the configs vendored in
``gpu_worker/scene/architectures/`` (SDXL-inpainting 0.1; SD 1.5 inpainting as the light
option) with random weights and the Hub offline (``gpu_worker.scene.full_size``).

Then the worker's own code renders a production-size product shot (about 1 MP) once
per sampling setting: ``gpu_worker.tasks.replace_background``, with the worker's
configured matting engine and ``DiffusionSceneGenerator`` around the random pipeline,
storage in a temporary folder. So the end-to-end time includes every CPU-side stage
(decode, compose, encode, the exactness check), which a worker spends holding its GPU.
Inside the scene stage, the text encoders, each UNet step and the VAE encode and decode
are timed by wrapping their calls with CUDA synchronised around each.

Sampling settings: the preset's default (20 steps, guidance 8: classifier-free guidance
doubles the UNet batch), LCM 4-step and TCD 4-step (guidance 1: no CFG). The few-step
LoRA is fused into the UNet's weights in the worker, so its per-step cost is the plain
UNet's; the option table measures fused against unfused adapters.

The learned matting network (BiRefNet / ISNet) runs in ONNX Runtime from an exported
file; its architecture is not buildable here without its authors' code, so the matting
row is whatever engine the worker is configured with: the ONNX network when
MATTING_MODEL_PATH (or installed weights) points at one, else the classical CPU engine,
and the table says which.

Cost per render = end-to-end seconds x the GPU price per hour / 3600, beside the price
the API is sold at ($0.00018 a call; about 0.26 s of one H100 at a typical rental price).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gpu_cost_options import OPTION_NAMES, OptionBench, OptionRow  # noqa: E402
from module_timer import ModuleTimer, synchronize  # noqa: E402

from gpu_worker import tasks  # noqa: E402
from gpu_worker.config import WorkerConfig  # noqa: E402
from gpu_worker.models import load_matting  # noqa: E402
from gpu_worker.pipeline import ReplaceBackgroundPipeline  # noqa: E402
from gpu_worker.scene import full_size  # noqa: E402
from gpu_worker.scene.config import MODEL_PRESETS, SceneConfig, scene_config_from_env  # noqa: E402
from gpu_worker.scene.generator import DiffusionSceneGenerator  # noqa: E402
from gpu_worker.scene.loading import apply_inference_options, make_scheduler, select_device  # noqa: E402
from gpu_worker.storage import LocalStorage  # noqa: E402
from gpu_worker.synthetic import make_case  # noqa: E402

SOLD_AT = 0.00018  # dollars per call: the API's compute budget per render
PUBLISHED_TOLERANCE = 0.02  # model cards round: "2.6 B" for 2,567,478,084


@dataclass(frozen=True)
class Setting:
    name: str
    scheduler: str
    steps: int
    guidance: float


@dataclass
class SettingResult:
    setting: Setting
    end_to_end_s: float
    unet_calls: int
    unet_step_ms: float
    text_encode_ms: float
    vae_encode_ms: float
    vae_decode_ms: float
    stages_ms: dict[str, float]

    def cost(self, price_per_hour: float) -> float:
        return self.end_to_end_s * price_per_hour / 3600.0


def settings_for(preset: str, steps_override: int | None, names: list[str]) -> list[Setting]:
    default = MODEL_PRESETS[preset]
    known = {
        "default": Setting(f"default ({default.steps} steps, CFG {default.guidance:g})", "default",
                           default.steps, default.guidance),
        "lcm": Setting("LCM 4-step", "lcm", 4, 1.0),
        "tcd": Setting("TCD 4-step", "tcd", 4, 1.0),
    }
    chosen = [known[name] for name in names]
    if steps_override is not None:
        chosen = [replace(s, steps=steps_override, name=f"{name} at {steps_override} step(s)")
                  for name, s in zip(names, chosen)]
    return chosen


def published_check(preset: str, counts: dict[str, int]) -> list[tuple[str, int, int, bool]]:
    """(component, built, published, within tolerance) per published figure."""
    published = full_size.source(preset)["published_parameters"]
    built = {"unet": counts["unet"], "vae": counts["vae"],
             "text_encoders": counts.get("text_encoder", 0) + counts.get("text_encoder_2", 0)}
    return [(name, built[name], value, abs(built[name] - value) <= PUBLISHED_TOLERANCE * value)
            for name, value in published.items()]


def source_image(size: int | None, megapixels: float):
    if size:
        return make_case("product", "white", width=size, height=size, supersample=2)
    width = int(round((megapixels * 1024 * 1024 * 4 / 3) ** 0.5 / 8) * 8)
    return make_case("product", "white", width=width, height=width * 3 // 4 // 8 * 8, supersample=2)


class Bench:
    def __init__(self, args) -> None:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32": none are
        self.args = args
        env = dict(os.environ, SCENE_MODEL=args.preset)
        if args.device != "auto":
            env["SCENE_DEVICE"] = args.device
        if args.dtype != "auto":
            env["SCENE_DTYPE"] = args.dtype
        self.scene_config: SceneConfig = scene_config_from_env(env)
        self.device, self.dtype = select_device(self.scene_config)
        self.worker_config = WorkerConfig.from_env(env)

    def build(self):
        started = time.perf_counter()
        pipe = full_size.build_pipeline(self.args.preset, self.device, self.dtype)
        synchronize(self.device)
        build_s = time.perf_counter() - started
        counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
                  for name in full_size.component_names(self.args.preset)}
        apply_inference_options(pipe, replace(self.scene_config, compile_unet=False), self.device)
        return pipe, counts, build_s

    def run_setting(self, pipe, matting, setting: Setting, request, timer: ModuleTimer) -> SettingResult:
        config = replace(self.scene_config, scheduler=setting.scheduler, steps=setting.steps,
                         guidance=setting.guidance, working_pixels=self.working_pixels, max_attempts=1)
        default_scheduler = pipe.scheduler
        pipe.scheduler = make_scheduler(setting.scheduler, default_scheduler)
        generator = DiffusionSceneGenerator(pipe, config, matte_fn=None, name=f"random {self.args.preset}")
        storage = LocalStorage(Path(self.workdir))
        tasks.install(tasks.Runtime(storage=storage, renderer=ReplaceBackgroundPipeline(matting, generator)))
        try:
            ends, calls, steps, text, enc, dec = [], [], [], [], [], []
            stages: dict[str, list[float]] = {}
            for run in range(self.args.warmup + self.args.repeats):
                timer.reset()
                synchronize(self.device)
                started = time.perf_counter()
                result = tasks.replace_background(request)
                synchronize(self.device)
                if run < self.args.warmup:
                    continue
                ends.append(time.perf_counter() - started)
                unet = timer.times["unet"]
                calls.append(len(unet))
                steps.append(statistics.median(unet) * 1000 if unet else 0.0)
                text.append(sum(timer.times["text"]) * 1000)
                enc.append(sum(timer.times["vae encode"]) * 1000)
                dec.append(sum(timer.times["vae decode"]) * 1000)
                for stage, ms in result["timings_ms"].items():
                    stages.setdefault(stage, []).append(ms)
        finally:
            pipe.scheduler = default_scheduler
            tasks.install(None)
        med = statistics.median
        return SettingResult(setting, med(ends), int(med(calls)), med(steps), med(text), med(enc), med(dec),
                             {k: med(v) for k, v in stages.items()})

    def main(self) -> dict:
        args = self.args
        torch.manual_seed(0)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        pipe, counts, build_s = self.build()
        case = source_image(args.size, args.megapixels)
        height, width = case.image.shape[:2]
        self.working_pixels = height * width if args.size else int(args.megapixels * 1024 * 1024)
        matting = load_matting(self.worker_config, "cuda" if self.device.type == "cuda" else "cpu",
                               "float16" if self.dtype == torch.float16 else "float32")

        timer = ModuleTimer(self.device)
        timer.wrap("unet", pipe.unet, "forward")
        timer.wrap("vae encode", pipe.vae, "encode")
        timer.wrap("vae decode", pipe.vae, "decode")
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                timer.wrap("text", getattr(pipe, name), "forward")

        results = []
        with tempfile.TemporaryDirectory() as workdir:
            self.workdir = workdir
            storage = LocalStorage(Path(workdir))
            buffer = _png(case.image)
            storage.write("inputs/bench.png", buffer, "image/png")
            request = {"render_id": "bench", "input_key": "inputs/bench.png", "output_key": "outputs/bench.webp",
                       "matte_key": "outputs/bench-matte.png", "output_format": args.format,
                       "scene_prompt": "a marble kitchen counter in soft morning light",
                       "preserve_shadow": True, "seed": 1234}
            for setting in settings_for(args.preset, args.steps, args.settings):
                results.append(self.run_setting(pipe, matting, setting, request, timer))
        timer.unwrap()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None

        latent_hw = _latent_hw(self.working_pixels, height, width)
        cfg_batch = 2 if MODEL_PRESETS[args.preset].guidance > 1 else 1
        options = OptionBench(pipe, self.device, self.dtype, latent_hw, cfg_batch, args.option_repeats,
                              args.compile_mode, warmup=args.option_warmup).all(args.options)
        return self.report(counts, build_s, matting.name, (width, height), latent_hw, results, options, peak)

    def report(self, counts, build_s, matting_name, size, latent_hw, results, options, peak) -> dict:
        args = self.args
        checks = published_check(args.preset, counts)
        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        lines = [
            f"GPU cost per render: {args.preset} at full size, random weights "
            f"({full_size.source(args.preset)['repo_id']}@{full_size.source(args.preset)['revision'][:12]})",
            f"device {self.device} ({device_name}), {str(self.dtype).replace('torch.', '')}; source "
            f"{size[0]}x{size[1]}, latents {latent_hw[1]}x{latent_hw[0]}; networks built in {build_s:.1f} s; "
            f"matting engine: {matting_name}",
            "",
            "| component | parameters built | published | matches |",
            "|---|---:|---:|---|",
        ]
        for name, built, published, ok in checks:
            lines.append(f"| {name} | {built:,} | {published:,} | {'yes' if ok else 'NO'} |")
        lines += ["", "| setting | UNet calls | ms per UNet step | text encode ms | VAE encode ms | VAE decode ms "
                  "| matting ms | CPU-side stages ms | end-to-end s | $ per render | vs $0.00018 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            cpu_side = sum(v for k, v in r.stages_ms.items() if k in ("read", "decode", "compose", "encode",
                                                                      "verify", "write"))
            cost = r.cost(args.gpu_price)
            lines.append(
                f"| {r.setting.name} | {r.unet_calls} | {r.unet_step_ms:.1f} | {r.text_encode_ms:.1f} | "
                f"{r.vae_encode_ms:.1f} | {r.vae_decode_ms:.1f} | {r.stages_ms.get('matting', 0):.0f} | "
                f"{cpu_side:.0f} | {r.end_to_end_s:.3f} | {cost:.6f} | {cost / SOLD_AT:.2f}x |")
        lines.append("")
        lines.append(f"GPU price ${args.gpu_price:.2f}/h; peak GPU memory "
                     + (f"{peak:,.0f} MiB" if peak is not None else "n/a (CPU)"))
        lines += ["", "| option | off | on | off ms | on ms | speed-up | peak MiB off/on | note |",
                  "|---|---|---|---:|---:|---:|---|---|"]
        for o in options:
            lines.append(
                f"| {o.option} | {o.off_label} | {o.on_label} | {_fmt(o.off_ms)} | {_fmt(o.on_ms)} | "
                f"{(f'{o.speedup:.2f}x' if o.speedup else '-')} | "
                f"{_fmt(o.off_peak_mb, 0)}/{_fmt(o.on_peak_mb, 0)} | {o.note} |")
        text = "\n".join(lines)
        print(text)
        data = {
            "preset": args.preset, "device": str(self.device), "device_name": device_name,
            "dtype": str(self.dtype).replace("torch.", ""), "source": list(size), "latents": list(latent_hw),
            "build_s": build_s, "matting_engine": matting_name, "parameters": counts,
            "published": [{"component": c, "built": b, "published": p, "matches": ok} for c, b, p, ok in checks],
            "settings": [{**asdict(r.setting), "end_to_end_s": r.end_to_end_s, "unet_calls": r.unet_calls,
                          "unet_step_ms": r.unet_step_ms, "text_encode_ms": r.text_encode_ms,
                          "vae_encode_ms": r.vae_encode_ms, "vae_decode_ms": r.vae_decode_ms,
                          "stages_ms": r.stages_ms, "cost": r.cost(args.gpu_price)} for r in results],
            "options": [asdict(o) | {"speedup": o.speedup} for o in options],
            "peak_gpu_mb": peak, "gpu_price": args.gpu_price, "sold_at": SOLD_AT,
        }
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            stem = f"gpu_cost_{args.preset}_{self.device.type}"
            (out / f"{stem}.md").write_text(text + "\n")
            (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
        return data


def _latent_hw(working_pixels: int, height: int, width: int) -> tuple[int, int]:
    from gpu_worker.scene import canvas

    h, w = canvas.working_size(height, width, working_pixels)
    return h // 8, w // 8


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=full_size.PRESETS,
                        default=scene_config_from_env().diffusion_preset if os.environ.get("SCENE_MODEL") in
                        full_size.PRESETS else "sdxl-inpainting")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    parser.add_argument("--megapixels", type=float, default=1.0, help="production canvas (default 1 MP)")
    parser.add_argument("--size", type=int, default=None, help="a square source of this many pixels a side "
                        "(the CPU smoke run: 256)")
    parser.add_argument("--steps", type=int, default=None, help="override every setting's steps (CPU smoke: 1)")
    parser.add_argument("--settings", type=lambda s: s.split(","), default=["default", "lcm", "tcd"])
    parser.add_argument("--options", type=lambda s: [o for o in s.split(",") if o],
                        default=list(OPTION_NAMES), help=f"comma list of {', '.join(OPTION_NAMES)} (empty: none)")
    parser.add_argument("--repeats", type=int, default=3, help="timed renders per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed renders per setting before timing")
    parser.add_argument("--option-repeats", type=int, default=5)
    parser.add_argument("--option-warmup", type=int, default=2, help="untimed calls before each option's timing")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                        help="torch.compile mode for the compile row (the worker's: SCENE_COMPILE_MODE)")
    parser.add_argument("--format", default="webp", choices=["png", "webp", "jpeg"])
    parser.add_argument("--gpu-price", type=float, default=2.50, help="dollars per GPU hour (H100 rental: ~2.50)")
    parser.add_argument("--out", default=None, help="folder for the .md table and the .json figures")
    args = parser.parse_args(argv)
    unknown = set(args.options) - set(OPTION_NAMES)
    if unknown:
        parser.error(f"unknown options: {', '.join(sorted(unknown))}")
    return args


if __name__ == "__main__":
    Bench(parse_args()).main()
    sys.exit(0)


__all__ = ["Bench", "OptionRow", "parse_args"]
