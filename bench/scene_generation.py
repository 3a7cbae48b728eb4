"""Scene-generation stage: per-stage latency at 1 MP, renders per second, cost per render.

    .venv/bin/python bench/scene_generation.py                      # CPU: tiny models (overhead)
    .venv/bin/python bench/scene_generation.py --model configured   # the SCENE_* model (CUDA)
    .venv/bin/python bench/scene_generation.py --model sdxl-random  # SDXL-inpainting architecture,
                                                                    # random weights: timing without
                                                                    # downloading 7 GB

The source is part 1's rendered 1 MP product shot (gpu_worker.synthetic). Stages inside
the pipeline (text encoders, UNet steps, VAE encode/decode) are timed by wrapping each
module's forward, synchronising CUDA around it; the stages around the pipeline come from
the generator's own ``timings_s``. The expansion check is timed with a colour-key matte,
so it shows the check's overhead only: the real matting model's forward pass is part 1's
benchmark. Cost per render = seconds per render x GPU price per hour / 3600; the goal
is at most 0.26 s of H100 time per 1 MP render ($0.00018 at about $2.50 per hour).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(os.cpu_count() or 1))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from module_timer import ModuleTimer  # noqa: E402

from gpu_worker.scene.config import scene_config_from_env  # noqa: E402
from gpu_worker.scene.full_size import build_pipeline  # noqa: E402
from gpu_worker.scene.generator import DiffusionSceneGenerator  # noqa: E402
from gpu_worker.scene.loading import load_inpainting_pipeline, select_device  # noqa: E402
from gpu_worker.scene.tiny import parameter_count, tiny_inpaint_pipeline  # noqa: E402
from gpu_worker.stages import SceneRequest  # noqa: E402
from gpu_worker.synthetic import make_case  # noqa: E402

GOAL_SECONDS = 0.26


def sdxl_random_pipeline(device: torch.device, dtype: torch.dtype):
    """SDXL inpainting 0.1's networks from the vendored configs, random weights
    (gpu_worker.scene.full_size; bench/gpu_cost.py is the full GPU-cost benchmark)."""
    return build_pipeline("sdxl-inpainting", device, dtype)


def color_key_matte(image: np.ndarray) -> np.ndarray:
    """Stands in for the matting model: only the check's own overhead gets timed."""
    return (image.astype(np.float32).mean(axis=-1) < 200).astype(np.float32)


def build(args) -> tuple[DiffusionSceneGenerator, torch.device, str]:
    env_config = scene_config_from_env()
    if args.model == "tiny":
        config = replace(env_config, model="tiny-demo", family=args.family, steps=args.steps or 2, guidance=7.5,
                         lora="none", scheduler="default")
        pipe, device = tiny_inpaint_pipeline(args.family), torch.device("cpu")
        label = f"tiny {args.family} ({parameter_count(pipe):,} params), untrained"
    elif args.model == "sdxl-random":
        device, dtype = select_device(env_config)
        config = replace(env_config, family="sdxl", lora="none", steps=args.steps or env_config.steps)
        pipe = sdxl_random_pipeline(device, dtype)
        label = f"SDXL-inpainting architecture, random weights, {str(dtype).replace('torch.', '')}"
    else:
        device, dtype = select_device(env_config)
        config = replace(env_config, steps=args.steps or env_config.steps)
        pipe = load_inpainting_pipeline(config, device, dtype, download=config.download)
        label = f"{config.name}, {str(dtype).replace('torch.', '')}"
    if args.guidance is not None:
        config = replace(config, guidance=args.guidance)
    config = replace(config, working_pixels=int(args.megapixels * 1024 * 1024))
    return DiffusionSceneGenerator(pipe, config, color_key_matte), device, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "configured", "sdxl-random"], default=None,
                        help="default: tiny on CPU, configured on CUDA")
    parser.add_argument("--family", choices=["sdxl", "sd15"], default="sdxl", help="tiny model family")
    parser.add_argument("--megapixels", type=float, default=1.0, help="generation canvas size")
    parser.add_argument("--steps", type=int, default=None, help="override SCENE_STEPS")
    parser.add_argument("--guidance", type=float, default=None, help="override SCENE_GUIDANCE (<=1: no CFG)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-price", type=float, default=2.50, help="GPU price, dollars per hour")
    args = parser.parse_args()
    if args.model is None:
        args.model = "configured" if torch.cuda.is_available() else "tiny"

    case = make_case("product", "white", width=1152, height=864, supersample=4)
    request = SceneRequest(case.image, case.alpha, case.foreground, "modern kitchen counter", 1234, True)

    generator, device, label = build(args)
    pipe = generator.pipeline
    timer = ModuleTimer(device)
    timer.wrap("unet (all steps)", pipe.unet, "forward")
    timer.wrap("vae encode", pipe.vae, "encode")
    timer.wrap("vae decode", pipe.vae, "decode")
    timer.wrap("text encoders", pipe.text_encoder, "forward")
    if getattr(pipe, "text_encoder_2", None) is not None:
        timer.wrap("text encoders", pipe.text_encoder_2, "forward")

    generator(request)  # warm-up: allocator, kernels, lazy imports
    totals: list[float] = []
    stage_runs: dict[str, list[float]] = defaultdict(list)
    unet_calls = 0
    for _ in range(args.repeats):
        timer.reset()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        scene = generator(request)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        totals.append(time.perf_counter() - start)
        for name, values in timer.times.items():
            stage_runs[name].append(sum(values))
        for name, value in scene.facts["timings_s"].items():
            stage_runs[f"stage: {name.removesuffix('_s')}"].append(value)
        unet_calls = len(timer.times["unet (all steps)"])

    w, h = scene.facts["scene_canvas"]
    print(f"scene generation benchmark: {label}")
    print(f"device {device}; source {case.image.shape[1]}x{case.image.shape[0]}; canvas {w}x{h} "
          f"({w * h / 1e6:.2f} MP); steps {generator.config.steps} ({unet_calls} UNet calls), "
          f"guidance {generator.config.guidance}; {args.repeats} runs after a warm-up")
    print(f"{'stage':<28}{'mean s':>10}{'min s':>10}")
    for name in sorted(stage_runs):
        values = stage_runs[name]
        print(f"{name:<28}{statistics.mean(values):>10.4f}{min(values):>10.4f}")
    mean_total = statistics.mean(totals)
    print(f"{'total (scene stage)':<28}{mean_total:>10.4f}{min(totals):>10.4f}")
    per_second = 1.0 / mean_total
    cost = mean_total * args.gpu_price / 3600.0
    print(f"renders/s {per_second:.2f}; cost per render ${cost:.6f} at ${args.gpu_price:.2f}/h")
    if device.type == "cuda":
        verdict = "meets" if mean_total <= GOAL_SECONDS else "misses"
        print(f"goal <= {GOAL_SECONDS:.2f} s per 1 MP render: {verdict} it ({mean_total:.3f} s)")
    else:
        print("CPU run: shows the pipeline's overhead around the model, not a GPU cost.")


if __name__ == "__main__":
    main()
