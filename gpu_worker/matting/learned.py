"""The learned alpha estimator: any single-image segmentation network, run through ONNX Runtime.

Networks of the usual shape take one RGB image at a native square size and give, among
their outputs, one single-channel map of the subject (logits or probabilities). They
differ in two ways that matter here, and both come from configuration, never from a
guess about one family:

* which output is the prediction. BiRefNet exports list side outputs first and the
  final logits last; DIS/ISNet (and BRIA's RMBG, an ISNet) give the full-size
  prediction FIRST, then coarser side outputs and multi-channel feature maps (one of
  them 16x16, which is what broke "take the last output"). The output is chosen by
  name when configured, else by shape: a single-channel map, preferably at the input's
  full size, with the family's order breaking ties.
* how the input is normalised: BiRefNet was trained on ImageNet mean/std, DIS/ISNet on
  mean 0.5 and std 1.0.

`NetworkSpec` holds those choices. `load_onnx_estimator` resolves it in this order: the
explicit settings (``MATTING_OUTPUT``, ``MATTING_MEAN``... see `gpu_worker.config`),
then the model's own ``config.json`` / ``preprocessor_config.json`` beside the weights,
then the family's preset. It validates the choice when the model loads, so a network
whose outputs hold no usable mask is ``model_unavailable`` at worker start, not a crash
on the first render; a failure during inference is a clean ``render_failed`` with its
cause logged.

The network sees the image stretched to its native square input; its output is resized
back to the working resolution, where the refiner (for this engine the trimap band of
`gpu_worker.matting.learned_refine`) and the guided upsampler take over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from gpu_worker.errors import RenderError
from gpu_worker.matting.base import Estimate

try:  # rq's job timeout is raised inside the running code; it must stay a timeout
    from rq.timeouts import BaseTimeoutException as _JobTimeout
except ImportError:  # pragma: no cover - rq is a worker dependency
    _JobTimeout = ()

log = logging.getLogger("gpu_worker.matting.learned")

Triple = tuple[float, float, float]

IMAGENET: tuple[Triple, Triple] = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGENET_MEAN = np.array(IMAGENET[0], np.float32)
IMAGENET_STD = np.array(IMAGENET[1], np.float32)


@dataclass(frozen=True)
class FamilyPreset:
    mean: Triple
    std: Triple
    # Among outputs that are equally good masks by shape, which one is the prediction.
    prefer: str  # "first" | "last"


FAMILIES: dict[str, FamilyPreset] = {
    "birefnet": FamilyPreset(mean=IMAGENET[0], std=IMAGENET[1], prefer="last"),
    "isnet": FamilyPreset(mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), prefer="first"),
}
FAMILY_ALIASES = {"dis": "isnet", "isnet-dis": "isnet", "rmbg": "isnet", "briarmbg": "isnet"}
DEFAULT_FAMILY = "birefnet"
OUTPUT_KEYWORDS = ("auto", "first", "last")
ACTIVATIONS = ("auto", "sigmoid", "none")

# A prediction may come at a lower resolution than the input (it is resized anyway), but
# not much lower: a side output at 1/8 of the input or a 16x16 feature map is no matte.
MIN_MASK_SCALE = 0.25


def canonical_family(value: str) -> str:
    """'dis' -> 'isnet' and so on; ValueError for a family without a preset."""
    name = value.strip().lower()
    name = FAMILY_ALIASES.get(name, name)
    if name != "auto" and name not in FAMILIES:
        known = ", ".join(["auto", *FAMILIES, *FAMILY_ALIASES])
        raise ValueError(f"unknown matting model family {value!r}: expected one of {known}")
    return name


@dataclass(frozen=True)
class NetworkSpec:
    """How to talk to one network. "auto" and None mean "not chosen": `resolved` fills them.

    output: "auto" (by shape, the family's order breaking ties) | "first" | "last" (the
    first or last output that can be a mask) | an output's exact name.
    mean, std: per-channel normalisation of RGB scaled to 0..1.
    activation: "auto" (sigmoid when the values leave 0..1) | "sigmoid" | "none".
    """

    family: str = "auto"
    output: str = "auto"
    mean: Triple | None = None
    std: Triple | None = None
    activation: str = "auto"

    def resolved(self, model_config: Mapping[str, Any] | None = None) -> NetworkSpec:
        """These settings, then the model's config, then the family preset, in that order."""
        found = dict(model_config or {})
        family = canonical_family(self.family)
        if family == "auto":
            family = canonical_family(found.get("family", DEFAULT_FAMILY))
            if family == "auto":
                family = DEFAULT_FAMILY
        preset = FAMILIES[family]
        output = self.output if self.output != "auto" else str(found.get("output", "auto"))
        if output.lower() in OUTPUT_KEYWORDS:
            output = output.lower()
        activation = (self.activation if self.activation != "auto"
                      else str(found.get("activation", "auto")).lower())
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: expected one of "
                             f"{', '.join(ACTIVATIONS)}")
        mean = self.mean or _triple("mean", found.get("mean")) or preset.mean
        std = self.std or _triple("std", found.get("std")) or preset.std
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        return NetworkSpec(family=family, output=output, mean=mean, std=std,
                           activation=activation)

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "output": self.output, "mean": list(self.mean or ()),
                "std": list(self.std or ()), "activation": self.activation}


def _triple(name: str, value: Any) -> Triple | None:
    """One value for all three channels, or three; None when absent."""
    if value is None:
        return None
    values = [value] if isinstance(value, (int, float)) else list(value)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{name} needs 1 or 3 values, got {value!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


# Files a model directory may ship, read in this order (later ones win): transformers
# and transformers.js exports carry image_mean/image_std in preprocessor_config.json;
# our own keys (family, output, mean, std, activation) live in config.json.
MODEL_CONFIG_FILES = ("preprocessor_config.json", "config.json")


def model_config_dirs(model_path: Path) -> list[Path]:
    """Where the config of the weights at `model_path` lives: its folder, and the
    repository root above it when the file sits in a Hub export's ``onnx/`` folder."""
    folder = model_path.parent
    return [folder.parent, folder] if folder.name == "onnx" else [folder]


def read_model_config(model_path: Path) -> dict[str, Any]:
    """The normalisation and output fields found beside the weights (maybe none).

    Reads ``family``, ``output``, ``mean``/``image_mean``, ``std``/``image_std`` and
    ``activation``; a transformers ``model_type`` or ``architectures`` entry naming a
    known family counts as ``family``, and ``do_normalize: false`` as mean 0, std 1.
    A file that is not a JSON object is ``model_unavailable``.
    """
    found: dict[str, Any] = {}
    for folder in model_config_dirs(model_path):
        for name in MODEL_CONFIG_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise RenderError("model_unavailable", f"cannot read {path}: {exc}") from exc
            if not isinstance(data, dict):
                raise RenderError("model_unavailable", f"{path} is not a JSON object")
            family = _family_from(data)
            if family:
                found["family"] = family
            for key, aliases in (("output", ("output",)), ("mean", ("mean", "image_mean")),
                                 ("std", ("std", "image_std")), ("activation", ("activation",))):
                for alias in aliases:
                    if alias in data:
                        found[key] = data[alias]
            if data.get("do_normalize") is False:  # transformers: the network takes 0..1 RGB
                found.update(mean=0.0, std=1.0)
    return found


def _family_from(data: Mapping[str, Any]) -> str | None:
    if isinstance(data.get("family"), str):
        return data["family"]
    names = [data.get("model_type")]
    architectures = data.get("architectures")
    if isinstance(architectures, list):
        names += architectures
    for raw in names:
        if not isinstance(raw, str):
            continue
        name = raw.lower()
        if "birefnet" in name:
            return "birefnet"
        if "isnet" in name or name in FAMILY_ALIASES:
            return "isnet"
    return None


Dim = int | None  # a static size, or None when the graph leaves it symbolic


def mask_size(shape: Sequence[Any]) -> tuple[Dim, Dim] | None:
    """The (height, width) of an output that can hold one mask, else None.

    Accepts HxW, 1xHxW, 1x1xHxW and 1xHxWx1 (a symbolic batch counts as 1): every
    axis but the two spatial ones must be 1.
    """
    dims: list[Dim] = [d if isinstance(d, int) else None for d in shape]
    if len(dims) == 4 and dims[3] == 1 and dims[1] != 1:
        dims = [dims[0], dims[3], dims[1], dims[2]]  # NHWC
    if not 2 <= len(dims) <= 4:
        return None
    *lead, height, width = dims
    if any(d is not None and d != 1 for d in lead):
        return None
    return height, width


def as_mask(raw: np.ndarray) -> np.ndarray:
    """The HxW float32 map inside one output array; ValueError if it holds none."""
    size = mask_size(raw.shape)
    if size is None:
        raise ValueError(f"the prediction output has shape {tuple(raw.shape)}, not a mask")
    if raw.ndim == 4 and raw.shape[3] == 1 and raw.shape[1] != 1:
        raw = raw[..., 0]
    return np.asarray(raw, dtype=np.float32).reshape(raw.shape[-2], raw.shape[-1])


def choose_output(outputs: Sequence[tuple[str, Sequence[Any]]], input_size: tuple[int, int],
                  spec: NetworkSpec) -> str:
    """The name of the prediction output; RenderError("model_unavailable") if there is none.

    `outputs` are (name, shape) in the graph's order, with the shapes a run at
    `input_size` gives (or the declared ones when those are all static).
    """
    net_h, net_w = input_size
    listing = ", ".join(f"{name} {list(shape)}" for name, shape in outputs)

    def usable(shape: Sequence[Any]) -> bool:
        size = mask_size(shape)
        if size is None:
            return False
        return all(d is None or d >= MIN_MASK_SCALE * n for d, n in zip(size, (net_h, net_w)))

    def full(shape: Sequence[Any]) -> bool:
        return mask_size(shape) == (net_h, net_w)

    if spec.output not in OUTPUT_KEYWORDS:
        shapes = dict(outputs)
        if spec.output not in shapes:
            raise RenderError("model_unavailable",
                              f"the matting network has no output named {spec.output!r} "
                              f"(its outputs: {listing})")
        if not usable(shapes[spec.output]):
            raise RenderError("model_unavailable",
                              f"matting output {spec.output!r} has shape "
                              f"{list(shapes[spec.output])}: not a single-channel mask of at "
                              f"least {MIN_MASK_SCALE:g} of the input size {net_h}x{net_w}")
        return spec.output
    candidates = [name for name, shape in outputs if usable(shape)]
    if not candidates:
        raise RenderError("model_unavailable",
                          f"no output of the matting network can be a mask for a "
                          f"{net_h}x{net_w} input (its outputs: {listing}); set "
                          f"MATTING_OUTPUT if the prediction is one of them")
    if spec.output == "auto":
        full_size = [name for name, shape in outputs if full(shape)]
        candidates = full_size or candidates
        prefer = FAMILIES[spec.family].prefer if spec.family in FAMILIES else "last"
    else:
        prefer = spec.output
    return candidates[0] if prefer == "first" else candidates[-1]


@dataclass
class OnnxAlphaEstimator:
    session: Any  # onnxruntime.InferenceSession
    input_size: tuple[int, int]  # (height, width) the network takes
    name: str = "birefnet-onnx"
    facts: dict[str, Any] = field(default_factory=dict)
    spec: NetworkSpec = field(default_factory=lambda: NetworkSpec().resolved())
    # The prediction output; chosen (and validated) from `spec` when not given.
    output_name: str | None = None

    def __post_init__(self) -> None:
        if self.spec.mean is None or self.spec.std is None:
            self.spec = self.spec.resolved()
        first = self.session.get_inputs()[0]
        self._input_name = first.name
        self._input_dtype = np.float16 if "float16" in first.type else np.float32
        self._mean = np.array(self.spec.mean, np.float32)
        self._std = np.array(self.spec.std, np.float32)
        if self.output_name is None:
            self.output_name = choose_output(self._output_shapes(), self.input_size, self.spec)

    def __call__(self, image: np.ndarray) -> Estimate:
        try:
            alpha = self._predict(image)
        except (RenderError, _JobTimeout):
            raise
        except Exception as exc:  # onnxruntime has its own exception types; any is a failure
            log.exception("matting network %s failed on a %s image", self.name,
                          "x".join(str(n) for n in image.shape))
            raise RenderError("render_failed", "The matting network failed on this image."
                              ) from exc
        return Estimate(alpha=alpha, facts=dict(self.facts))

    def _predict(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        net_h, net_w = self.input_size
        interpolation = cv2.INTER_AREA if height * width > net_h * net_w else cv2.INTER_LINEAR
        x = cv2.resize(image, (net_w, net_h), interpolation=interpolation).astype(np.float32)
        x = (x / 255.0 - self._mean) / self._std
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(self._input_dtype)
        (raw,) = self.session.run([self.output_name], {self._input_name: x})
        out = as_mask(np.asarray(raw))
        if not np.isfinite(out).all():
            raise ValueError("the prediction holds NaN or infinite values")
        if self.spec.activation == "sigmoid" or (
                self.spec.activation == "auto" and (out.min() < 0.0 or out.max() > 1.0)):
            out = 1.0 / (1.0 + np.exp(-out))  # logits
        alpha = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(alpha, 0.0, 1.0).astype(np.float32)

    def _output_shapes(self) -> list[tuple[str, Sequence[Any]]]:
        """Every output's shape at the native input size.

        Static exports declare it (a symbolic batch axis is fine: we feed one image); a
        graph with symbolic sizes is run once on a blank input, which also proves at load
        time that the network runs on this provider.
        """
        outputs = self.session.get_outputs()
        declared = [(o.name, list(o.shape)) for o in outputs]
        if all(isinstance(d, int) for _, shape in declared
               for d in (shape[1:] if len(shape) >= 3 else shape)):
            return declared
        net_h, net_w = self.input_size
        probe = np.zeros((1, 3, net_h, net_w), self._input_dtype)
        try:
            results = self.session.run([o.name for o in outputs], {self._input_name: probe})
        except Exception as exc:
            raise RenderError("model_unavailable",
                              f"the matting network does not run on a {net_h}x{net_w} "
                              f"input: {exc}") from exc
        return [(o.name, list(np.shape(r))) for o, r in zip(outputs, results)]


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
                        threads: int = 0, name: str | None = None,
                        facts: dict[str, Any] | None = None,
                        spec: NetworkSpec | None = None) -> OnnxAlphaEstimator:
    """Opens an ONNX segmentation network; RenderError("model_unavailable") if it cannot.

    `spec` holds the explicit settings; what it leaves at "auto" comes from the model's
    config files beside `path`, then from the family preset (BiRefNet by default).
    `name` defaults to "<family>-onnx".
    """
    import onnxruntime as ort

    if not path.is_file():
        raise RenderError("model_unavailable", f"matting weights not found at {path}")
    try:
        resolved = (spec or NetworkSpec()).resolved(read_model_config(path))
    except ValueError as exc:
        raise RenderError("model_unavailable", f"matting model config: {exc}") from exc
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
    inputs = session.get_inputs()
    shape = inputs[0].shape
    channels = shape[1] if len(shape) == 4 else None
    if len(inputs) != 1 or len(shape) != 4 or (isinstance(channels, int) and channels != 3):
        raise RenderError("model_unavailable",
                          f"{path}: expected one NCHW RGB image input, found "
                          f"{[(i.name, i.shape) for i in inputs]}")
    # Static exports fix the size; dynamic ones take the configured native size.
    net_h = shape[2] if isinstance(shape[2], int) else input_size
    net_w = shape[3] if isinstance(shape[3], int) else input_size
    estimator = OnnxAlphaEstimator(session=session, input_size=(net_h, net_w),
                                   name=name or f"{resolved.family}-onnx",
                                   facts=dict(facts or {}), spec=resolved)
    log.info("matting network %s: prediction output %r, input %dx%d, mean %s, std %s",
             path, estimator.output_name, net_h, net_w, list(resolved.mean or ()),
             list(resolved.std or ()))
    return estimator

