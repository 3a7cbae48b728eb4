"""Matte quality on generated images with known truth, against two baselines in the same run.

    .venv/bin/python bench/matting_quality.py                 # every case at 1 MP
    .venv/bin/python bench/matting_quality.py --size 576x432 --cases hair/white
    .venv/bin/python bench/matting_quality.py --onnx path/to/model.onnx   # add the learned engine
    .venv/bin/python bench/matting_quality.py --jpeg 90   # inputs JPEG-compressed first

Methods per case:
  classical           the classical engine (backdrop model, closed form, guided upsampling,
                      foreground estimation): what a render uses on a plain backdrop
  classical-no-fg     the same alpha, composed with the source colour as F (no foreground
                      estimation): isolates what foreground estimation buys (halo)
  binary-feathered    the TRUE mask thresholded at 0.5, edges feathered (Gaussian, 1 px),
                      source colour as F: the best any hard-mask cutout tool could do
  learned             the ONNX engine, when --onnx or installed weights are given

Targets for the classical engine at 1 MP (checked per case, printed at the end): SAD and
MSE at least 3x lower than binary-feathered, halo at least 2x lower than
classical-no-fg, subject exactness 100%.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gpu_worker import metrics, synthetic  # noqa: E402
from gpu_worker.composite import compose  # noqa: E402
from gpu_worker.errors import RenderError  # noqa: E402
from gpu_worker.matting.classical import ClassicalAlphaEstimator  # noqa: E402
from gpu_worker.matting.engine import MattingPipeline  # noqa: E402

COLUMNS = ("sad", "mse", "gradient", "connectivity", "sad_full", "halo", "exactness")


def jpeg_compressed(case: synthetic.SyntheticCase, quality: int) -> synthetic.SyntheticCase:
    buffer = io.BytesIO()
    Image.fromarray(case.image).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        image = np.asarray(decoded.convert("RGB"))
    return dataclasses.replace(case, image=image)


def score(case: synthetic.SyntheticCase, alpha: np.ndarray, foreground: np.ndarray,
          new_background: np.ndarray, trimap: np.ndarray) -> dict[str, float]:
    out = compose(case.image, alpha, foreground, new_background)
    return metrics.score_matte(alpha, case.alpha, composite=out, source=case.image,
                               foreground_true=case.foreground,
                               new_background=new_background, trimap=trimap).as_dict()


def run_case(case: synthetic.SyntheticCase, engines: dict[str, MattingPipeline]
             ) -> dict[str, dict[str, float]]:
    height, width = case.alpha.shape
    new_background = synthetic.new_background(height, width)
    trimap = metrics.evaluation_trimap(case.alpha)
    source_colour = case.image.astype(np.float32) / 255.0
    rows: dict[str, dict[str, float]] = {}
    for name, engine in engines.items():
        started = time.perf_counter()
        try:
            matte = engine(case.image)
        except RenderError as exc:
            rows[name] = {"error": exc.code}
            continue
        elapsed = time.perf_counter() - started
        rows[name] = score(case, matte.alpha, matte.foreground, new_background, trimap)
        rows[name]["seconds"] = elapsed
        if name == "classical":
            rows["classical-no-fg"] = score(case, matte.alpha, source_colour, new_background,
                                            trimap)
    rows["binary-feathered"] = score(case, metrics.feathered_binary_matte(case.alpha),
                                     source_colour,
                                     new_background, trimap)
    return rows


def check_targets(rows: dict[str, dict[str, float]]) -> list[str]:
    """Failed targets for one case (empty when all are met)."""
    ours, binary, no_fg = rows.get("classical", {}), rows["binary-feathered"], \
        rows.get("classical-no-fg", {})
    if "error" in ours or not ours:
        return [f"classical failed: {ours.get('error', 'missing')}"]
    failed = []
    for key in ("sad", "mse"):
        if binary[key] < 3.0 * ours[key]:
            failed.append(f"{key} only {binary[key] / max(ours[key], 1e-12):.1f}x lower")
    if no_fg["halo"] < 2.0 * ours["halo"]:
        failed.append(f"halo only {no_fg['halo'] / max(ours['halo'], 1e-12):.1f}x lower")
    if ours["exactness"] < 1.0:
        failed.append(f"exactness {ours['exactness']:.4%}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1152x864", help="WxH of the generated images")
    parser.add_argument("--cases", default="", help="comma list like hair/white (default all)")
    parser.add_argument("--onnx", default="", help="also run the learned engine on this model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg", type=int, default=0,
                        help="JPEG-compress each input at this quality (4:2:0) before matting, "
                             "as most uploads are; the truth is unchanged")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    wanted = [tuple(c.split("/")) for c in args.cases.split(",") if c]
    cases = wanted or [(s, b) for s in synthetic.SUBJECTS for b in synthetic.BACKDROPS]

    engines: dict[str, MattingPipeline] = {
        "classical": MattingPipeline(ClassicalAlphaEstimator())}
    if args.onnx:
        from gpu_worker.matting.learned import load_onnx_estimator

        engines["learned"] = MattingPipeline(load_onnx_estimator(Path(args.onnx)))

    print(f"matting quality at {width}x{height} ({width * height / 1e6:.2f} MP)"
          + (f", inputs JPEG-compressed at quality {args.jpeg}" if args.jpeg else "") + ", "
          f"threads: OMP={os.environ.get('OMP_NUM_THREADS', 'default')}")
    print("SAD, Gradient, Connectivity: /1000 over the unknown region; MSE: mean over it;")
    print("sad_full: SAD over the whole image; halo: mean |colour error| in 8-bit levels in")
    print("the edge band of a re-composite on a new background; exactness: alpha==1 pixels")
    print("bit-identical to the source.\n")
    header = f"{'case':22s} {'method':18s}" + "".join(f"{c:>13s}" for c in COLUMNS) + \
        f"{'seconds':>9s}"
    print(header)
    print("-" * len(header))
    failures: dict[str, list[str]] = {}
    totals: dict[str, dict[str, float]] = {}
    for subject, backdrop in cases:
        case = synthetic.make_case(subject, backdrop, width, height, args.seed)
        if args.jpeg:
            case = jpeg_compressed(case, args.jpeg)
        rows = run_case(case, engines)
        for method, row in rows.items():
            if "error" in row:
                print(f"{case.name:22s} {method:18s} refused: {row['error']}")
                continue
            cells = "".join(f"{row[c]:13.4f}" if c in ("mse", "exactness") else
                            f"{row[c]:13.3f}" for c in COLUMNS)
            seconds = f"{row['seconds']:9.2f}" if "seconds" in row else " " * 9
            print(f"{case.name:22s} {method:18s}{cells}{seconds}", flush=True)
            total = totals.setdefault(method, dict.fromkeys(COLUMNS, 0.0))
            for c in COLUMNS:
                total[c] += row[c] / len(cases)
        failed = check_targets(rows)
        if failed:
            failures[case.name] = failed
    print("\nmean over cases:")
    for method, total in totals.items():
        cells = "".join(f"{total[c]:13.4f}" if c in ("mse", "exactness") else
                        f"{total[c]:13.3f}" for c in COLUMNS)
        print(f"{'':22s} {method:18s}{cells}")
    print("\ntargets (classical vs baselines, per case):")
    for subject, backdrop in cases:
        name = f"{subject}/{backdrop}"
        verdict = "met" if name not in failures else "NOT met: " + "; ".join(failures[name])
        print(f"  {name:22s} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
