"""Matte quality on generated images with known truth, beside three baselines in one run.

    .venv/bin/python bench/matting_quality.py                  # studio + clean sets at 1 MP
    .venv/bin/python bench/matting_quality.py --set studio --size 768x576
    .venv/bin/python bench/matting_quality.py --cases bottle/hard_cast,hair/white
    .venv/bin/python bench/matting_quality.py --onnx path/to/model.onnx   # + learned engine
    .venv/bin/python bench/matting_quality.py --jpeg 90   # clean-set inputs JPEG-compressed

Two sets of cases:
  studio  `gpu_worker.studio_truth`: paper with fall-off and vignetting, sensor noise,
          JPEG 4:2:0 at q85-95, soft contact shadows (15-60%) the product stands in, a
          hard cast shadow, dense curly hair, fine hair, grey on grey, white on white,
          motion blur on a gradient. Truth includes the shadow ratio S.
  clean   `gpu_worker.synthetic`: four subjects on four clean backdrops (no shadow).

Methods per case:
  classical     the classical engine: what a render uses on a plain backdrop
  feathered     the TRUE mask thresholded at 0.5 and feathered (1 px): a perfect cut-out
  keyed-cf      closed form in a trimap keyed from the fitted border surface (no shadow
                model): the plain classical recipe
  oracle-cf     closed form given the TRUE trimap: the bound for any classical method
  learned       the ONNX engine, with --onnx

Columns: band SAD and band MSE over the truth's fractional pixels grown by 0.5% of the
short side (SAD /1000, MSE x1e3); SAD over the whole image (/1000), which counts a
shadow matted as subject; shadow err: mean |S_est - S| where the truth has a shadow
outside the subject; false sh: share (%) of shadow-free backdrop pixels given S < 0.97;
halo: mean colour error (8-bit levels) at the edge of a re-composite on a new
background; exact: share of alpha == 1 pixels bit-identical to the source; policy:
what the shadow policy did with the separated shadow (kept / dropped_hard / none_found).

Targets, checked per case for the classical engine and printed at the end:
  band SAD and whole SAD <= keyed-cf's; band SAD <= 2x oracle-cf's; band MSE and halo <=
  the feathered mask's (whose colour is the source's, old backdrop included); exactness 100%; on shadow cases shadow err <= 0.05 and the policy
  matches the truth's kind (soft kept, hard dropped); false shadow <= 0.5% everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from gpu_worker import metrics, studio_truth, synthetic  # noqa: E402
from gpu_worker.composite import compose  # noqa: E402
from gpu_worker.errors import RenderError  # noqa: E402
from gpu_worker.matting import baselines  # noqa: E402
from gpu_worker.matting.classical import ClassicalAlphaEstimator  # noqa: E402
from gpu_worker.matting.engine import MattingPipeline  # noqa: E402
from gpu_worker.shadow_policy import decide  # noqa: E402

COLUMNS = ("band_sad", "band_mse", "whole_sad", "shadow_err", "false_sh", "halo", "exact")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray
    alpha: np.ndarray
    foreground: np.ndarray
    shadow: np.ndarray  # true S (ones when there is none)
    kind: str  # soft | hard | none


def studio_case(name: str, width: int, height: int, seed: int) -> Case:
    c = studio_truth.make_case(name, width, height, seed)
    return Case(c.name, c.image, c.alpha, c.foreground, c.shadow, c.kind)


def clean_case(name: str, width: int, height: int, seed: int, quality: int) -> Case:
    subject, backdrop = name.split("/")
    c = synthetic.make_case(subject, backdrop, width, height, seed)
    image = c.image
    if quality:
        image = studio_truth.jpeg(image, quality)
    return Case(c.name, image, c.alpha, c.foreground, np.ones(c.alpha.shape, np.float32),
                "none")


def shadow_scores(estimate: np.ndarray | None, case: Case) -> tuple[float, float]:
    """(mean |S_est - S| over the true shadow outside the subject, false-shadow share %)."""
    s_est = np.ones(case.alpha.shape, np.float32) if estimate is None else estimate
    outside = case.alpha < 0.01
    support = outside & (case.shadow < 0.97)
    err = float(np.abs(s_est - case.shadow)[support].mean()) if support.any() else float("nan")
    clean = outside & (case.shadow >= 0.999)
    false = float(np.mean(s_est[clean] < 0.97) * 100.0) if clean.any() else 0.0
    return err, false


def score(case: Case, alpha: np.ndarray, foreground: np.ndarray, shadow: np.ndarray | None,
          new_background: np.ndarray, band: np.ndarray) -> dict[str, float]:
    out = compose(case.image, alpha, foreground, new_background)
    edge = metrics.edge_band(alpha, case.alpha)
    err, false = shadow_scores(shadow, case)
    return {
        "band_sad": metrics.sad(alpha, case.alpha, band),
        "band_mse": metrics.mse(alpha, case.alpha, band) * 1000.0,
        "whole_sad": metrics.sad(alpha, case.alpha, np.ones(alpha.shape, bool)),
        "shadow_err": err,
        "false_sh": false,
        "halo": metrics.halo_error(out, case.alpha, case.foreground, new_background, edge),
        "exact": metrics.subject_exactness(out, case.image, alpha),
    }


def run_case(case: Case, engines: dict[str, MattingPipeline]) -> dict[str, dict]:
    height, width = case.alpha.shape
    new_background = synthetic.new_background(height, width)
    band = metrics.evaluation_trimap(case.alpha) == 128
    source_colour = case.image.astype(np.float32) / 255.0
    rows: dict[str, dict] = {}
    for name, engine in engines.items():
        started = time.perf_counter()
        try:
            matte = engine(case.image)
        except RenderError as exc:
            rows[name] = {"error": exc.code}
            continue
        row = score(case, matte.alpha, matte.foreground, matte.shadow, new_background, band)
        row["seconds"] = time.perf_counter() - started
        row["policy"] = decide(matte, preserve_shadow=True).state
        rows[name] = row
    rows["feathered"] = score(case, metrics.feathered_binary_matte(case.alpha), source_colour,
                              None, new_background, band)
    for name, trimap in (("keyed-cf", lambda: baselines.keyed_trimap(case.image)),
                         ("oracle-cf", lambda: baselines.oracle_trimap(case.alpha))):
        started = time.perf_counter()
        try:
            alpha = baselines.closed_form_from_trimap(case.image, trimap())
        except RenderError as exc:
            rows[name] = {"error": exc.code}
            continue
        rows[name] = score(case, alpha, source_colour, None, new_background, band)
        rows[name]["seconds"] = time.perf_counter() - started
    return rows


def check_targets(case: Case, rows: dict[str, dict]) -> list[str]:
    """Failed targets for one case (empty when all are met)."""
    ours = rows.get("classical", {})
    if "error" in ours or not ours:
        return [f"classical failed: {ours.get('error', 'missing')}"]
    keyed, oracle, feathered = rows["keyed-cf"], rows["oracle-cf"], rows["feathered"]
    failed = []
    for key in ("band_sad", "whole_sad"):
        if "error" not in keyed and ours[key] > keyed[key]:
            failed.append(f"{key} {ours[key]:.2f} > keyed-cf {keyed[key]:.2f}")
    if ours["band_sad"] > 2.0 * oracle["band_sad"]:
        failed.append(f"band_sad {ours['band_sad'] / oracle['band_sad']:.1f}x oracle-cf")
    if ours["band_mse"] > feathered["band_mse"]:
        failed.append(f"band_mse {ours['band_mse']:.2f} > feathered {feathered['band_mse']:.2f}")
    if ours["halo"] > feathered["halo"]:
        failed.append(f"halo {ours['halo']:.2f} > feathered {feathered['halo']:.2f}")
    if ours["exact"] < 1.0:
        failed.append(f"exactness {ours['exact']:.4%}")
    if case.kind != "none" and not ours["shadow_err"] <= 0.05:
        failed.append(f"shadow err {ours['shadow_err']:.3f}")
    if ours["false_sh"] > 0.5:
        failed.append(f"false shadow {ours['false_sh']:.2f}%")
    wanted = {"soft": "kept", "hard": "dropped_hard", "none": "none_found"}[case.kind]
    if ours["policy"] != wanted:
        failed.append(f"policy {ours['policy']} (wanted {wanted})")
    return failed


def _cells(row: dict) -> str:
    out = []
    for c in COLUMNS:
        v = row[c]
        out.append(f"{'-':>11s}" if v != v else f"{v:11.4f}" if c == "exact" else f"{v:11.3f}")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1152x864", help="WxH of the generated images")
    parser.add_argument("--set", default="all", choices=("all", "studio", "clean"))
    parser.add_argument("--cases", default="", help="comma list like hair/white (default all)")
    parser.add_argument("--onnx", default="", help="also run the learned engine on this model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg", type=int, default=0,
                        help="JPEG-compress each clean-set input at this quality (4:2:0); the "
                             "studio set has its own qualities")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    clean_names = [f"{s}/{b}" for s in synthetic.SUBJECTS for b in synthetic.BACKDROPS]
    names = []
    if args.set in ("all", "studio"):
        names += [("studio", n) for n in studio_truth.NAMES]
    if args.set in ("all", "clean"):
        names += [("clean", n) for n in clean_names]
    if args.cases:
        wanted = set(args.cases.split(","))
        names = [(s, n) for s, n in names if n in wanted]

    engines: dict[str, MattingPipeline] = {
        "classical": MattingPipeline(ClassicalAlphaEstimator())}
    if args.onnx:
        from gpu_worker.matting.learned import load_onnx_estimator
        from gpu_worker.matting.learned_refine import TrimapRefiner

        # As the worker runs it: the network's mask, then the trimap band solve.
        engines["learned"] = MattingPipeline(load_onnx_estimator(Path(args.onnx)),
                                             refiner=TrimapRefiner())

    print(f"matting quality at {width}x{height} ({width * height / 1e6:.2f} MP), "
          f"threads: OMP={os.environ.get('OMP_NUM_THREADS', 'default')}")
    header = f"{'case':22s} {'method':11s}" + "".join(f"{c:>11s}" for c in COLUMNS) + \
        f"{'seconds':>9s}  policy"
    print(header)
    print("-" * len(header))
    failures: dict[str, list[str]] = {}
    for which, name in names:
        case = (studio_case(name, width, height, args.seed) if which == "studio"
                else clean_case(name, width, height, args.seed, args.jpeg))
        rows = run_case(case, engines)
        for method, row in rows.items():
            if "error" in row:
                print(f"{name:22s} {method:11s} refused: {row['error']}")
                continue
            seconds = f"{row['seconds']:9.2f}" if "seconds" in row else " " * 9
            print(f"{name:22s} {method:11s}{_cells(row)}{seconds}  {row.get('policy', '')}",
                  flush=True)
        failed = check_targets(case, rows)
        if failed:
            failures[name] = failed
    print("\ntargets (classical, per case):")
    for _, name in names:
        verdict = "met" if name not in failures else "NOT met: " + "; ".join(failures[name])
        print(f"  {name:22s} {verdict}")
    print(f"\n{len(names) - len(failures)}/{len(names)} cases meet every target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
