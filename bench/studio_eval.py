"""Runs the classical engine on an independent studio truth set and scores it there.

The truth set and its scorer live outside the project (../shared/eval/) so that the
engine is checked on photos its own generator did not shape:

    .venv/bin/python bench/studio_eval.py                    # make the set, run, score
    .venv/bin/python bench/studio_eval.py --truth /tmp/truth --png

It writes <case>.matte.png (the subject's alpha) and <case>.shadow.png (the shadow layer
S the matting stage separated from the subject; 255 = no shadow) for every case into
--pred, then runs the shared scorer on them. JPEG inputs (the set's --jpeg 90) are used
when present, as most uploads are JPEG; --png uses the lossless copies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gpu_worker.errors import RenderError  # noqa: E402
from gpu_worker.matting.classical import ClassicalAlphaEstimator  # noqa: E402
from gpu_worker.matting.engine import MattingPipeline  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth", default="/tmp/studio_truth")
    parser.add_argument("--pred", default="/tmp/studio_pred")
    parser.add_argument("--eval-dir", default=str(EVAL))
    parser.add_argument("--png", action="store_true", help="use the lossless inputs")
    args = parser.parse_args(argv)
    generator = Path(args.eval_dir) / "studio_truth.py"
    scorer = Path(args.eval_dir) / "score_mattes.py"
    if not generator.is_file():
        print(f"no truth set generator at {generator}", file=sys.stderr)
        return 2
    if not any(f.endswith(".npz") for f in os.listdir(args.truth)) if os.path.isdir(
            args.truth) else True:
        subprocess.run([sys.executable, str(generator), args.truth, "--jpeg", "90"],
                       check=True)
    os.makedirs(args.pred, exist_ok=True)
    engine = MattingPipeline(ClassicalAlphaEstimator())
    for name in sorted(f[:-4] for f in os.listdir(args.truth) if f.endswith(".npz")):
        source = os.path.join(args.truth, name + ".jpg")
        if args.png or not os.path.exists(source):
            source = os.path.join(args.truth, name + ".png")
        with Image.open(source) as picture:
            image = np.asarray(picture.convert("RGB"))
        try:
            matte = engine(image)
        except RenderError as exc:
            print(f"{name}: engine refused: {exc.code}")
            continue
        Image.fromarray(matte.alpha_u8, "L").save(os.path.join(args.pred, name + ".matte.png"))
        shadow = matte.shadow
        path = os.path.join(args.pred, name + ".shadow.png")
        if shadow is not None:
            u8 = np.round(np.clip(shadow, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(u8, "L").save(path)
        elif os.path.exists(path):
            os.remove(path)
    print(f"inputs: {'PNG' if args.png else 'JPEG q90 (4:2:0)'}; engine: classical")
    return subprocess.run([sys.executable, str(scorer), args.truth, args.pred]).returncode


if __name__ == "__main__":
    sys.exit(main())
