"""The learned engine's real ONNX path, with tiny networks exported in-process.

No weights can be downloaded here, so each test exports a small torch network of its
own to ONNX and runs it through the same loading and inference code as BiRefNet. Two
graphs stand for the two usual layouts: BiRefNet's (side outputs first, the prediction
last, ImageNet normalisation) and DIS/ISNet's (the full-size prediction first, then side
outputs and a 16x16 feature map, mean 0.5 and std 1). Each computes a known function of
its input, so the normalisation actually applied can be read back from the alpha.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from gpu_worker import synthetic, tasks
from gpu_worker.composite import encode_image
from gpu_worker.config import WorkerConfig
from gpu_worker.errors import RenderError
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.matting.learned import (IMAGENET_MEAN, IMAGENET_STD, NetworkSpec,
                                        OnnxAlphaEstimator, load_onnx_estimator)
from gpu_worker.models import fetch_models, load_models, missing_weights
from gpu_worker.pipeline import ReplaceBackgroundPipeline
from gpu_worker.stages import PlainSceneGenerator
from gpu_worker.storage import open_storage

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    # Nothing here may reach the Hugging Face Hub, even by accident.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


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


# The graphs' known function of their input: logits = WEIGHTS . normalised RGB.
WEIGHTS = (1.0, -0.5, 0.25)


def logits(x):
    return (x * torch.tensor(WEIGHTS).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


class BiRefNetLike(torch.nn.Module):
    """A half-size side output first, the full-size prediction (logits) last."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(logits(x), 2), logits(x)


class ISNetLike(torch.nn.Module):
    """The full-size prediction first (probabilities), then a half-size side output and a
    16x16 multi-channel feature map, as ISNet's exports list them."""

    def forward(self, x):
        prediction = torch.sigmoid(logits(x))
        side = torch.sigmoid(torch.nn.functional.avg_pool2d(logits(x), 2))
        features = torch.nn.functional.interpolate(torch.cat([x, x, x], dim=1), size=(16, 16),
                                                   mode="bilinear", align_corners=False)
        return prediction, side, features


class FeaturesOnly(torch.nn.Module):
    """Outputs that no mask can be read from: 8 channels at full size, one at 16x16."""

    def forward(self, x):
        return torch.cat([x, x, x[:, :2]], dim=1), torch.nn.functional.avg_pool2d(x[:, :1], 8)


ISNET_OUTPUTS = ["d1", "d2", "features"]


def export(model, path: Path, size: int = 64, dynamic: bool | dict = True,
           output_names: list[str] | None = None) -> Path:
    """`dynamic`: True for symbolic spatial sizes, False for a static export, or the
    exporter's own dynamic_axes mapping."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dynamic_axes = dynamic if isinstance(dynamic, dict) else None
    if dynamic is True:
        dynamic_axes = {"input_image": {2: "height", 3: "width"}}
        for name in output_names or []:
            dynamic_axes[name] = {2: f"{name}_h", 3: f"{name}_w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model.eval(), (torch.zeros(1, 3, size, size),), str(path),
            input_names=["input_image"], output_names=output_names, opset_version=17,
            dynamic_axes=dynamic_axes, dynamo=False)
    return path


def expected_alpha(rgb: tuple[int, int, int], mean, std) -> float:
    """What the graphs give for one colour under the given normalisation."""
    x = (np.asarray(rgb, np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
    return float(1.0 / (1.0 + np.exp(-np.dot(WEIGHTS, x))))


LEFT, RIGHT = (220, 40, 90), (30, 170, 230)


def two_colour_image(size: int = 32) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 2] = LEFT
    image[:, size // 2:] = RIGHT
    return image


def assert_normalised_with(alpha: np.ndarray, mean, std) -> None:
    size = alpha.shape[1]
    assert alpha[size // 2, 3] == pytest.approx(expected_alpha(LEFT, mean, std), abs=1e-4)
    assert alpha[size // 2, size - 4] == pytest.approx(expected_alpha(RIGHT, mean, std), abs=1e-4)


@pytest.fixture(scope="module")
def isnet_like(tmp_path_factory) -> Path:
    return export(ISNetLike(), tmp_path_factory.mktemp("isnet") / "isnet.onnx",
                  output_names=ISNET_OUTPUTS)


@pytest.fixture(scope="module")
def birefnet_like(tmp_path_factory) -> Path:
    return export(BiRefNetLike(), tmp_path_factory.mktemp("birefnet") / "birefnet.onnx")


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


def test_a_birefnet_like_graph_is_read_from_its_last_output_with_imagenet_normalisation(
        birefnet_like):
    estimator = load_onnx_estimator(birefnet_like, input_size=32)
    assert estimator.output_name == estimator.session.get_outputs()[-1].name
    assert estimator.name == "birefnet-onnx"
    assert_normalised_with(estimator(two_colour_image()).alpha, IMAGENET_MEAN, IMAGENET_STD)


def test_an_isnet_like_graph_is_read_from_its_full_size_first_output_with_mean_half_std_one(
        isnet_like):
    estimator = load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(family="isnet"))
    assert estimator.output_name == "d1"
    assert estimator.name == "isnet-onnx"
    alpha = estimator(two_colour_image()).alpha
    assert_normalised_with(alpha, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    # The ImageNet figures differ by far more than the tolerance, so the check has teeth.
    assert abs(expected_alpha(LEFT, IMAGENET_MEAN, IMAGENET_STD)
               - expected_alpha(LEFT, (0.5,) * 3, (1.0,) * 3)) > 0.05


def test_dis_is_another_name_for_the_isnet_preset(isnet_like):
    estimator = load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(family="dis"))
    assert estimator.spec.family == "isnet" and estimator.spec.std == (1.0, 1.0, 1.0)


def test_by_shape_alone_the_full_size_output_wins_over_the_later_16x16_feature_map(isnet_like):
    # What "take the last output" crashed on: the last output here is 9x16x16.
    estimator = load_onnx_estimator(isnet_like, input_size=64)
    assert estimator.output_name == "d1"
    assert estimator(np.zeros((40, 50, 3), np.uint8)).alpha.shape == (40, 50)


def test_the_family_and_output_come_from_the_worker_settings(tmp_path, isnet_like):
    config = WorkerConfig.from_env({
        "MATTING_ENGINE": "learned", "WORKER_DEVICE": "cpu", "SCENE_MODEL": "tiny-demo",
        "MODEL_DIR": str(tmp_path), "MATTING_MODEL_PATH": str(isnet_like),
        "MATTING_INPUT_SIZE": "32", "MATTING_MODEL_FAMILY": "isnet", "MATTING_OUTPUT": "d2"})
    loaded = load_models(config)
    estimator = loaded.renderer.matting.estimator
    assert estimator.output_name == "d2"  # a configured name wins over the shape rule
    assert loaded.report["matting"]["family"] == "isnet"
    assert loaded.report["matting"]["output"] == "d2"
    assert loaded.report["matting"]["mean"] == [0.5, 0.5, 0.5]


def test_a_config_json_beside_the_weights_sets_the_family(tmp_path, isnet_like):
    # The Hub layout: weights under onnx/, the model's config at the repository root.
    config = WorkerConfig.from_env({"MATTING_ENGINE": "learned", "WORKER_DEVICE": "cpu",
                                    "SCENE_MODEL": "tiny-demo", "MODEL_DIR": str(tmp_path),
                                    "MATTING_INPUT_SIZE": "32"})
    target = config.matting_weights.local_path(config.model_dir)
    target.parent.mkdir(parents=True)
    target.write_bytes(isnet_like.read_bytes())
    (target.parent.parent / "config.json").write_text(json.dumps(
        {"architectures": ["BriaRMBG"], "in_ch": 3}))
    loaded = load_models(config)
    estimator = loaded.renderer.matting.estimator
    assert estimator.spec.family == "isnet" and estimator.output_name == "d1"
    assert_normalised_with(estimator(two_colour_image()).alpha, (0.5,) * 3, (1.0,) * 3)


def test_a_preprocessor_config_gives_the_normalisation(tmp_path, birefnet_like):
    model = tmp_path / "model.onnx"
    model.write_bytes(birefnet_like.read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.5, 0.25, 2.0], "do_normalize": True}))
    estimator = load_onnx_estimator(model, input_size=32)
    assert_normalised_with(estimator(two_colour_image()).alpha, (0.4, 0.5, 0.6), (0.5, 0.25, 2.0))


def test_a_transformers_config_that_skips_normalisation_gives_plain_rgb(tmp_path, isnet_like):
    model = tmp_path / "model.onnx"
    model.write_bytes(isnet_like.read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    estimator = load_onnx_estimator(model, input_size=32)
    assert_normalised_with(estimator(two_colour_image()).alpha, (0.0,) * 3, (1.0,) * 3)


def test_first_and_last_pick_among_the_outputs_that_can_be_a_mask(isnet_like):
    # "last" skips the 16x16 feature map: the last mask-shaped output is the side output.
    last = load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(output="last"))
    first = load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(output="first"))
    assert (first.output_name, last.output_name) == ("d1", "d2")


def test_explicit_mean_and_std_win_over_the_model_config(tmp_path, isnet_like):
    model = tmp_path / "model.onnx"
    model.write_bytes(isnet_like.read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"family": "isnet", "mean": 0.5}))
    config = WorkerConfig.from_env({
        "MATTING_ENGINE": "learned", "WORKER_DEVICE": "cpu", "SCENE_MODEL": "tiny-demo",
        "MODEL_DIR": str(tmp_path), "MATTING_MODEL_PATH": str(model),
        "MATTING_INPUT_SIZE": "32", "MATTING_MEAN": "0.2", "MATTING_STD": "0.3,0.4,0.5"})
    estimator = load_models(config).renderer.matting.estimator
    assert estimator.spec.family == "isnet"
    assert_normalised_with(estimator(two_colour_image()).alpha, (0.2,) * 3, (0.3, 0.4, 0.5))


@pytest.mark.parametrize("env, message", [
    ({"MATTING_MEAN": "0.1,0.2"}, "MATTING_MEAN"),
    ({"MATTING_STD": "0"}, "MATTING_STD"),
    ({"MATTING_STD": "wide"}, "MATTING_STD"),
    ({"MATTING_MODEL_FAMILY": "u2net"}, "MATTING_MODEL_FAMILY"),
    ({"MATTING_ACTIVATION": "softmax"}, "MATTING_ACTIVATION"),
])
def test_a_malformed_network_setting_is_refused_when_the_config_is_read(env, message):
    with pytest.raises(ValueError, match=message):
        WorkerConfig.from_env(env)


def test_a_named_output_that_does_not_exist_fails_at_load_with_model_unavailable(isnet_like):
    with pytest.raises(RenderError) as caught:
        load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(output="mask"))
    assert caught.value.code == "model_unavailable"
    assert "'mask'" in caught.value.message and "d1" in caught.value.message


def test_a_named_output_that_is_a_feature_map_fails_at_load_with_model_unavailable(isnet_like):
    with pytest.raises(RenderError) as caught:
        load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(output="features"))
    assert caught.value.code == "model_unavailable"
    assert "not a single-channel mask" in caught.value.message


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_model_whose_outputs_include_no_usable_mask_fails_at_load_with_model_unavailable(
        tmp_path, dynamic, portrait):
    model = export(FeaturesOnly(), tmp_path / "features.onnx", size=128, dynamic=dynamic)
    with pytest.raises(RenderError) as caught:
        load_onnx_estimator(model, input_size=128)
    assert caught.value.code == "model_unavailable"
    assert "no output of the matting network can be a mask" in caught.value.message
    # The worker still starts; its renders fail with the same clean code.
    config = WorkerConfig.from_env({"MATTING_ENGINE": "learned", "WORKER_DEVICE": "cpu",
                                    "MODEL_DIR": str(tmp_path), "MATTING_MODEL_PATH": str(model),
                                    "MATTING_INPUT_SIZE": "128"})
    loaded = load_models(config)
    assert "can be a mask" in loaded.report["error"]
    with pytest.raises(RenderError) as caught:
        loaded.renderer(portrait.image, "a beach", 1, True)
    assert caught.value.code == "model_unavailable"


def test_a_config_json_that_is_not_json_is_model_unavailable(tmp_path, isnet_like):
    model = tmp_path / "model.onnx"
    model.write_bytes(isnet_like.read_bytes())
    (tmp_path / "config.json").write_text("{family: isnet")
    with pytest.raises(RenderError) as caught:
        load_onnx_estimator(model, input_size=32)
    assert caught.value.code == "model_unavailable" and "config.json" in caught.value.message


class DropsTheBatchAxis:
    """Feeds the real session a 3-D input: onnxruntime itself raises (INVALID_ARGUMENT)."""

    def __init__(self, session) -> None:
        self.session = session

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        return self.session.run(names, {k: v[0] for k, v in feeds.items()})


class ReturnsAFeatureMap(DropsTheBatchAxis):
    def run(self, names, feeds):
        return [np.zeros((1, 8, 32, 32), np.float32)]


class ReturnsNaN(DropsTheBatchAxis):
    def run(self, names, feeds):
        return [np.full((1, 1, 32, 32), np.nan, np.float32)]


@pytest.mark.parametrize("broken", [DropsTheBatchAxis, ReturnsAFeatureMap, ReturnsNaN])
def test_a_failure_inside_inference_is_render_failed_with_the_cause_logged(
        isnet_like, broken, caplog):
    estimator = load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(family="isnet"))
    estimator.session = broken(estimator.session)
    with caplog.at_level(logging.ERROR, logger="gpu_worker.matting.learned"):
        with pytest.raises(RenderError) as caught:
            MattingPipeline(estimator)(two_colour_image())
    assert caught.value.code == "render_failed"
    assert caught.value.message == "The matting network failed on this image."
    record = next(r for r in caplog.records
                  if r.name == "gpu_worker.matting.learned" and r.levelno == logging.ERROR)
    assert record.exc_info is not None  # the cause, with its traceback, is in the log


def test_the_render_task_ends_a_network_failure_as_a_clean_render_failed(tmp_path, isnet_like):
    estimator = load_onnx_estimator(isnet_like, input_size=32, spec=NetworkSpec(family="isnet"))
    estimator.session = DropsTheBatchAxis(estimator.session)
    storage = open_storage({"STORAGE_DIR": str(tmp_path)})
    storage.write("in/a.png", encode_image(two_colour_image(), "png")[0], "image/png")
    renderer = ReplaceBackgroundPipeline(MattingPipeline(estimator), PlainSceneGenerator())
    tasks.install(tasks.Runtime(storage=storage, renderer=renderer))
    try:
        with pytest.raises(RenderError) as caught:
            tasks.replace_background({
                "render_id": "r1", "input_key": "in/a.png", "output_key": "out/a.png",
                "matte_key": "out/a-matte.png", "scene_prompt": "plain grey studio",
                "seed": 1})
    finally:
        tasks.install(None)
    assert caught.value.code == "render_failed"
    assert caught.value.message == "The matting network failed on this image."


class CountingSession(DropsTheBatchAxis):
    runs = 0

    def run(self, names, feeds):
        CountingSession.runs += 1
        return self.session.run(names, feeds)


def test_a_static_export_with_a_symbolic_batch_axis_is_checked_without_running_it(tmp_path):
    import onnxruntime as ort

    names = ["side", "prediction"]
    model = export(BiRefNetLike(), tmp_path / "batch.onnx", size=32, output_names=names,
                   dynamic={name: {0: "batch"} for name in ["input_image", *names]})
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[1].shape == ["batch", 1, 32, 32]
    estimator = OnnxAlphaEstimator(session=CountingSession(session), input_size=(32, 32))
    assert estimator.output_name == "prediction" and CountingSession.runs == 0
