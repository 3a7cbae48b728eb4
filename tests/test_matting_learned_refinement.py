"""The learned engine's edge refinement: a network's hard mask becomes a true alpha.

The network here is a tiny ONNX graph, exported in-process, whose output is a known
hard mask: it thresholds the red channel. The images are generated with a known true
alpha (gpu_worker.synthetic's subjects) over backdrops no plain-backdrop method could
key: a checkerboard and a two-colour gradient. Every subject is red and every backdrop
colour has little red, so the threshold finds the subject and nothing but it; what the
mask cannot give is the fractional edge.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gpu_worker import metrics, synthetic
from gpu_worker.config import WorkerConfig
from gpu_worker.errors import RenderError
from gpu_worker.matting.base import Estimate, erode
from gpu_worker.matting.engine import MattingPipeline
from gpu_worker.matting.learned import NetworkSpec, load_onnx_estimator
from gpu_worker.matting.learned_refine import BACKGROUND, FOREGROUND, UNKNOWN, TrimapRefiner
from gpu_worker.matting.refine import BandRefiner
from gpu_worker.models import load_models

torch = pytest.importorskip("torch")

from tests.test_matting_learned_onnx import export  # noqa: E402  (needs torch)

WIDTH, HEIGHT, NET = 320, 240, 128
RED = np.array([0.88, 0.32, 0.22], np.float32)
BACKDROP_COLOURS = (np.array([0.15, 0.55, 0.40], np.float32),
                    np.array([0.22, 0.32, 0.72], np.float32))


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


class RedThreshold(torch.nn.Module):
    """A hard 0/1 mask: red above half, with ISNet's normalisation (mean 0.5, std 1)."""

    def forward(self, x):
        return (x[:, :1] > 0.0).float()


@pytest.fixture(scope="module")
def hard_mask_model(tmp_path_factory):
    return export(RedThreshold(), tmp_path_factory.mktemp("hard") / "hard.onnx")


@pytest.fixture(scope="module")
def estimator(hard_mask_model):
    return load_onnx_estimator(hard_mask_model, input_size=NET, spec=NetworkSpec(family="isnet"))


def busy_scene(subject: str, backdrop: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, true alpha): a synthetic subject, recoloured red, over a busy backdrop."""
    case = synthetic.make_case(subject, "grey", width=WIDTH, height=HEIGHT, supersample=4,
                               noise=0.0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    c0, c1 = BACKDROP_COLOURS
    if backdrop == "checkerboard":
        t = ((x // 12 + y // 12) % 2).astype(np.float32)
    else:
        t = ((x + y) / float(WIDTH + HEIGHT)).astype(np.float32)
    background = c0 * (1 - t[..., None]) + c1 * t[..., None]
    # The subject keeps its own shading, so F varies as in a photo.
    shade = 0.85 + 0.3 * case.foreground.mean(axis=2, keepdims=True)
    foreground = np.clip(RED * shade, 0.0, 1.0)
    a = case.alpha[..., None]
    noise = np.random.default_rng(0).normal(0.0, 1.0 / 255.0, background.shape)
    image = a * foreground + (1 - a) * background + noise
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8), case.alpha


def network_output(estimator, image: np.ndarray) -> np.ndarray:
    """What the graph itself returns for `image`, at its input size."""
    x = cv2.resize(image, (NET, NET), interpolation=cv2.INTER_AREA) / 255.0 - 0.5
    feed = {"input_image": x.transpose(2, 0, 1)[None].astype(np.float32)}
    return estimator.session.run([estimator.output_name], feed)[0]


def band_sad(alpha: np.ndarray, truth: np.ndarray) -> float:
    return metrics.sad(alpha, truth, metrics.evaluation_trimap(truth) == 128)


@pytest.mark.parametrize("backdrop", ["checkerboard", "gradient"])
@pytest.mark.parametrize("subject", ["motion_blur", "product"])
def test_a_network_that_outputs_a_hard_mask_gets_a_fractional_alpha_at_the_edges(
        estimator, subject, backdrop):
    image, truth = busy_scene(subject, backdrop)
    hard = (image[..., 0] > 127).astype(np.float32)  # the network's rule at full resolution
    assert set(np.unique(network_output(estimator, image))) == {0.0, 1.0}
    coarse = estimator(image).alpha  # that mask at the image's size

    matte = MattingPipeline(estimator, refiner=TrimapRefiner())(image)

    ours = band_sad(matte.alpha, truth)
    assert ours < 0.5 * band_sad(hard, truth)
    assert ours < 0.5 * band_sad(coarse, truth)
    edge = (truth > 0) & (truth < 1)
    assert np.mean((matte.alpha[edge] > 0) & (matte.alpha[edge] < 1)) > 0.5
    # The solve never eats into the subject: its interior stays exactly opaque.
    assert np.all(matte.alpha[erode(truth >= 1.0, 2)] == 1.0)
    assert np.all(matte.alpha[truth == 0.0] < 0.5)


@pytest.mark.parametrize("backdrop", ["checkerboard", "gradient"])
def test_the_trimap_band_beats_the_band_refiner_on_a_wide_soft_edge(estimator, backdrop):
    # The band refiner only re-solves pixels the network was unsure of: a hard mask's
    # thin ramp. A motion-blur ramp is wider than that.
    image, truth = busy_scene("motion_blur", backdrop)
    trimap = band_sad(MattingPipeline(estimator, refiner=TrimapRefiner())(image).alpha, truth)
    band = band_sad(MattingPipeline(estimator, refiner=BandRefiner())(image).alpha, truth)
    assert trimap < 0.85 * band


def test_the_learned_engine_is_built_with_the_trimap_refiner(tmp_path, hard_mask_model):
    env = {"MATTING_ENGINE": "learned", "WORKER_DEVICE": "cpu", "SCENE_MODEL": "tiny-demo",
           "MODEL_DIR": str(tmp_path), "MATTING_MODEL_PATH": str(hard_mask_model),
           "MATTING_INPUT_SIZE": str(NET), "MATTING_MODEL_FAMILY": "isnet"}
    loaded = load_models(WorkerConfig.from_env(env))
    assert isinstance(loaded.renderer.matting.refiner, TrimapRefiner)
    image, truth = busy_scene("motion_blur", "checkerboard")
    output = loaded.renderer(image, "plain grey studio", 1, False)
    alpha = output.alpha.astype(np.float32) / 255.0
    assert band_sad(alpha, truth) < 0.5 * band_sad((image[..., 0] > 127).astype(np.float32),
                                                   truth)
    snap = load_models(WorkerConfig.from_env({**env, "MATTING_REFINE": "snap"}))
    assert isinstance(snap.renderer.matting.refiner, BandRefiner)
    assert snap.renderer.matting.refiner.mode == "snap"


def test_the_unknown_band_is_sized_relative_to_the_image():
    refiner = TrimapRefiner()
    widths = []
    for size in (200, 800):
        mask = np.zeros((size, size), np.float32)
        mask[:, : size // 2] = 1.0
        trimap = refiner.trimap(mask)
        row = trimap[size // 2]
        assert row[0] == FOREGROUND and row[-1] == BACKGROUND
        widths.append(int(np.sum(row == UNKNOWN)))
    assert widths == [2 * 3, 2 * 8]  # at least 3 px each side, else 1% of the short side


def test_a_wide_soft_region_keeps_the_networks_value_far_from_known_pixels():
    # A translucent veil the network saw as 0.5 over 60 px: only its rim is solved.
    alpha = np.zeros((100, 160), np.float32)
    alpha[20:80, 20:140] = 1.0
    alpha[30:70, 40:120] = 0.5
    image = np.full((100, 160, 3), 128, np.uint8)
    refined = TrimapRefiner()(image, Estimate(alpha=alpha))
    assert refined[50, 80] == pytest.approx(0.5)
    assert refined[5, 5] == 0.0 and refined[25, 30] == 1.0  # sure background, foreground


def test_a_hard_mask_with_no_subject_is_still_no_subject_found(estimator):
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 2] = 200  # blue: nothing passes the red threshold
    with pytest.raises(RenderError) as caught:
        MattingPipeline(estimator, refiner=TrimapRefiner())(image)
    assert caught.value.code == "no_subject_found"
