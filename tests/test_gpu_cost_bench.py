"""bench/gpu_cost.py: full-size random-weight pipelines, and the bench's code path on CPU.

The GPU figures need a CUDA machine; what the suite proves is that the vendored configs
are the published architectures (their parameter counts match the model cards) and
that the bench's whole path (build, the worker's render per sampling setting, every
option on and off, the report) runs, at a size a CPU manages in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_worker.scene import full_size
from gpu_worker.scene.config import MODEL_PRESETS
from gpu_worker.tasks import PUBLIC_TIMINGS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", full_size.PRESETS)
def test_the_vendored_configs_build_the_parameter_counts_the_model_cards_publish(preset):
    counts = full_size.parameter_counts(preset)
    published = full_size.source(preset)["published_parameters"]
    text = counts.get("text_encoder", 0) + counts.get("text_encoder_2", 0)
    for name, built in (("unet", counts["unet"]), ("vae", counts["vae"]), ("text_encoders", text)):
        assert abs(built - published[name]) <= 0.02 * published[name], (name, built, published[name])


def test_the_sdxl_unet_is_the_inpainting_variant_of_the_26_billion_parameter_base():
    counts = full_size.parameter_counts("sdxl-inpainting")
    # SDXL base 1.0's UNet has 2,567,463,684 parameters; inpainting widens conv_in from
    # 4 to 9 input channels: 5 x 320 x 3 x 3 more weights.
    assert counts["unet"] == 2_567_463_684 + 5 * 320 * 3 * 3
    assert counts["text_encoder_2"] > 5 * counts["text_encoder"]  # OpenCLIP bigG beside CLIP L


@pytest.mark.parametrize("preset", full_size.PRESETS)
def test_the_vendored_configs_describe_the_revision_the_worker_pins(preset):
    source = full_size.source(preset)
    assert (source["repo_id"], source["revision"]) == (MODEL_PRESETS[preset].repo_id,
                                                        MODEL_PRESETS[preset].revision)


@pytest.mark.slow
def test_the_bench_runs_the_workers_render_for_every_setting_and_option_on_cpu(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MATTING_ENGINE="classical")
    completed = subprocess.run(
        [sys.executable, "bench/gpu_cost.py", "--preset", "sd15-inpainting", "--device", "cpu",
         "--size", "64", "--steps", "1", "--repeats", "1", "--warmup", "0", "--option-repeats", "1",
         "--option-warmup", "0",
         "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_cost_sd15-inpainting_cpu.json").read_text())
    table = (tmp_path / "gpu_cost_sd15-inpainting_cpu.md").read_text()

    assert all(row["matches"] for row in data["published"]), data["published"]
    assert data["parameters"]["unet"] > 850_000_000  # built at full size, not a tiny twin
    assert [s["scheduler"] for s in data["settings"]] == ["default", "lcm", "tcd"]
    for setting in data["settings"]:
        assert setting["unet_calls"] >= 1 and setting["unet_step_ms"] > 0
        assert setting["text_encode_ms"] > 0 and setting["vae_encode_ms"] > 0 and setting["vae_decode_ms"] > 0
        assert set(PUBLIC_TIMINGS) <= set(setting["stages_ms"])
        # The scene stage holds the UNet, text and VAE calls the timers saw.
        inside = setting["unet_step_ms"] + setting["text_encode_ms"] + setting["vae_decode_ms"]
        assert setting["stages_ms"]["scene"] >= 0.9 * inside
        assert setting["cost"] == pytest.approx(setting["end_to_end_s"] * data["gpu_price"] / 3600)
    measured = {row["option"].split(" ")[0] for row in data["options"] if row["on_ms"]}
    assert {"channels_last", "attention", "VAE", "few-step"} <= measured
    compiled = next(row for row in data["options"] if row["option"].startswith("torch.compile"))
    assert compiled["on_ms"] is None and "CUDA only" in compiled["note"]
    assert "| lcm at 1 step(s) |" in table and "| unet | 859,535,364 |" in table
