"""The learned alpha estimator: a BiRefNet-family network run through ONNX Runtime.

BiRefNet (MIT licence) is trimap-free; its matting variants give a true soft alpha. Its
PyTorch code needs torchvision (deformable convolutions), which the worker does not
install; the published ONNX exports need only onnxruntime. The network sees the image
stretched to its native square input (1024, or 2048 for HR variants) with ImageNet
normalisation, as in training; its output (logits or probabilities, detected) is
resized back to the working resolution, where the band refiner and the guided upsampler
take over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gpu_worker.errors import RenderError
from gpu_worker.matting.base import Estimate

log = logging.getLogger("gpu_worker.matting.learned")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class OnnxAlphaEstimator:
    session: Any  # onnxruntime.InferenceSession
    input_size: tuple[int, int]  # (height, width) the network takes
    name: str = "birefnet-onnx"
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        first = self.session.get_inputs()[0]
        self._input_name = first.name
        self._input_dtype = np.float16 if "float16" in first.type else np.float32
        # BiRefNet exports list their side outputs first; the final prediction is last.
        self._output_name = self.session.get_outputs()[-1].name

    def __call__(self, image: np.ndarray) -> Estimate:
        height, width = image.shape[:2]
        net_h, net_w = self.input_size
        interpolation = cv2.INTER_AREA if height * width > net_h * net_w else cv2.INTER_LINEAR
        x = cv2.resize(image, (net_w, net_h), interpolation=interpolation).astype(np.float32)
        x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(self._input_dtype)
        (raw,) = self.session.run([self._output_name], {self._input_name: x})
        out = np.asarray(raw, dtype=np.float32).reshape(raw.shape[-2], raw.shape[-1])
        if out.min() < 0.0 or out.max() > 1.0:
            out = 1.0 / (1.0 + np.exp(-out))  # logits
        alpha = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return Estimate(alpha=np.clip(alpha, 0.0, 1.0).astype(np.float32),
                        facts=dict(self.facts))


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # The CPU build of onnxruntime on a GPU machine: matting still works, slowly;
        # better than failing every render. onnxruntime-gpu of the same version fixes it.
        log.warning("CUDA device present but onnxruntime has no CUDA provider; the matting "
                    "network runs on the CPU (install onnxruntime-gpu==%s)", ort.__version__)
    return ["CPUExecutionProvider"]


def load_onnx_estimator(path: Path, device: str = "cpu", input_size: int = 1024,
                        threads: int = 0, name: str = "birefnet-onnx",
                        facts: dict[str, Any] | None = None) -> OnnxAlphaEstimator:
    """Opens an ONNX matting network; RenderError("model_unavailable") if it cannot."""
    import onnxruntime as ort

    if not path.is_file():
        raise RenderError("model_unavailable", f"matting weights not found at {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=_providers(device))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RenderError("model_unavailable", f"cannot load {path}: {exc}") from exc
    shape = session.get_inputs()[0].shape
    # Static exports fix the size; dynamic ones take the configured native size.
    net_h = shape[2] if isinstance(shape[2], int) else input_size
    net_w = shape[3] if isinstance(shape[3], int) else input_size
    return OnnxAlphaEstimator(session=session, input_size=(net_h, net_w), name=name,
                              facts=dict(facts or {}))
