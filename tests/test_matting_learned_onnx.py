"""The learned engine's real ONNX path, with tiny networks exported in-process.

No weights can be downloaded here, so each test exports a small torch network of its
own to ONNX and runs it through the same loading and inference code as BiRefNet.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from gpu_worker import synthetic
from gpu_worker.config import WorkerConfig
from gpu_worker.errors import RenderError
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.matting.learned import IMAGENET_MEAN, IMAGENET_STD, load_onnx_estimator
from gpu_worker.models import fetch_models, load_models, missing_weights
from gpu_worker.pipeline import ReplaceBackgroundPipeline

torch = pytest.importorskip("torch")


class TinyMattingNet(torch.nn.Module):
    """Encoder-decoder shaped like a matting network, randomly initialised."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = torch.nn.Conv2d(4, 1, 3, padding=1)
        self.side = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        features = torch.relu(self.mid(torch.relu(self.down(x))))
        # Like BiRefNet exports: a side output first, the final logits last.
        return self.side(features), self.head(torch.relu(self.up(features)))


class RedChannelNet(torch.nn.Module):
    """Outputs the normalised red channel as logits: the preprocessing is checkable."""

    def forward(self, x):
        return x[:, :1] * 1.0


def export(model, path: Path, size: int = 64, dynamic: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model.eval(), (torch.zeros(1, 3, size, size),), str(path),
            input_names=["input_image"], output_names=None, opset_version=17,
            dynamic_axes={"input_image": {2: "height", 3: "width"}} if dynamic else None,
            dynamo=False)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export(TinyMattingNet(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def portrait() -> synthetic.SyntheticCase:
    return synthetic.make_case("hair", "grey", width=160, height=120, supersample=2)


def test_the_learned_engine_runs_an_exported_network_end_to_end(tiny_model, portrait):
    estimator = load_onnx_estimator(tiny_model, input_size=64)
    engine = MattingPipeline(estimator)
    estimate = estimator(portrait.image)
    assert estimate.alpha.shape == (120, 160) and estimate.alpha.dtype == np.float32
    assert 0.0 <= estimate.alpha.min() and estimate.alpha.max() <= 1.0
    try:
        matte = engine(portrait.image)
    except RenderError as exc:  # an untrained net may find nothing; that is a clean outcome
        assert exc.code == "no_subject_found"
    else:
        assert matte.alpha.shape == (120, 160)
        assert matte.foreground.shape == (120, 160, 3)


def test_the_network_sees_imagenet_normalised_rgb_and_its_logits_become_alpha(tmp_path):
    model = export(RedChannelNet(), tmp_path / "red.onnx")
    estimator = load_onnx_estimator(model, input_size=32)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16, 0] = 255
    alpha = estimator(image).alpha
    expected_left = 1 / (1 + np.exp(-(1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]))
    expected_right = 1 / (1 + np.exp(IMAGENET_MEAN[0] / IMAGENET_STD[0]))
    assert alpha[16, 2] == pytest.approx(expected_left, abs=1e-4)
    assert alpha[16, 29] == pytest.approx(expected_right, abs=1e-4)


def test_a_static_export_gets_its_fixed_input_size_and_alpha_comes_back_at_image_size(tmp_path):
    model = export(TinyMattingNet(), tmp_path / "static.onnx", size=48, dynamic=False)
    estimator = load_onnx_estimator(model, input_size=1024)
    assert estimator.input_size == (48, 48)
    assert estimator(np.zeros((30, 70, 3), np.uint8)).alpha.shape == (30, 70)


def test_missing_weights_with_the_learned_engine_give_model_unavailable(tmp_path, portrait):
    config = WorkerConfig.from_env({"MATTING_ENGINE": "learned", "MODEL_DIR": str(tmp_path),
                                    "WORKER_DEVICE": "cpu"})
    assert missing_weights(config)  # says which file it expected, and where
    loaded = load_models(config)
    with pytest.raises(RenderError) as caught:
        loaded.renderer(portrait.image, "a beach", 1, True)
    assert caught.value.code == "model_unavailable"


def test_a_broken_weights_file_is_model_unavailable_too(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(RenderError) as caught:
        load_onnx_estimator(broken)
    assert caught.value.code == "model_unavailable"


def test_auto_picks_the_learned_engine_when_its_weights_are_installed(tmp_path, tiny_model):
    config = WorkerConfig.from_env({"MODEL_DIR": str(tmp_path), "WORKER_DEVICE": "cpu",
                                    "MATTING_INPUT_SIZE": "64"})
    target = config.matting_weights.local_path(config.model_dir)
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_model.read_bytes())
    loaded = load_models(config)
    assert isinstance(loaded.renderer, ReplaceBackgroundPipeline)
    assert loaded.renderer.matting.name == "birefnet-onnx"
    assert loaded.report["matting"]["model"].startswith(config.matting_weights.repo_id)


def test_auto_falls_back_to_the_classical_engine_without_weights(tmp_path):
    config = WorkerConfig.from_env({"MODEL_DIR": str(tmp_path), "WORKER_DEVICE": "cpu"})
    loaded = load_models(config)
    assert loaded.renderer.matting.name == "classical"
    assert loaded.device == "cpu" and loaded.dtype == "float32"


def test_a_local_model_path_overrides_the_hub_weights(tmp_path, tiny_model):
    config = WorkerConfig.from_env({"MATTING_ENGINE": "learned", "WORKER_DEVICE": "cpu", "SCENE_MODEL": "tiny-demo",
                                    "MATTING_MODEL_PATH": str(tiny_model),
                                    "MODEL_DIR": str(tmp_path), "MATTING_INPUT_SIZE": "64"})
    assert missing_weights(config) == []
    loaded = load_models(config)
    assert loaded.renderer.matting.name == "birefnet-onnx"
    assert loaded.report["matting"]["model"] == str(tiny_model)


def test_fetch_models_downloads_the_pinned_revision_into_the_model_dir(tmp_path, monkeypatch,
                                                                       tiny_model):
    calls = []

    def fake_hub_download(repo_id, filename, revision, local_dir):
        # Stands in for the Hugging Face Hub, which tests cannot reach.
        calls.append((repo_id, filename, revision, Path(local_dir)))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_model.read_bytes())
        return str(path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub_download)
    config = WorkerConfig.from_env({"MODEL_DIR": str(tmp_path), "MATTING_ENGINE": "learned", "SCENE_MODEL": "tiny-demo",
                                    "MATTING_MODEL_REVISION": "0123abc"})
    assert missing_weights(config)
    fetched = fetch_models(config)
    assert {c[1] for c in calls} == {"onnx/model.onnx", "onnx/model_fp16.onnx"}
    assert all(c[0] == "onnx-community/BiRefNet-ONNX" and c[2] == "0123abc" for c in calls)
    assert all(c[3] == tmp_path / "birefnet" for c in calls)
    assert all(path.is_file() for path in fetched)
    assert missing_weights(config) == []


def test_without_a_cuda_provider_the_network_falls_back_to_the_cpu(tiny_model, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has onnxruntime's CUDA provider")
    estimator = load_onnx_estimator(tiny_model, device="cuda", input_size=64)
    assert estimator.session.get_providers() == ["CPUExecutionProvider"]
    assert "no CUDA provider" in caplog.text
