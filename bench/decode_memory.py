"""Peak memory of turning an uploaded image into the worker's input, per format.

    .venv/bin/python bench/decode_memory.py                 # make bench-decode
    .venv/bin/python bench/decode_memory.py --sizes 24 --formats png-gray16

The web process decodes every input before it reserves credits (``imaging.image_input
.load_image``) and encodes it as a PNG for the GPU worker (``encode_png``). Both run
in request threads, several at once, so their peak memory is what sizes a web box.
Each case runs in a fresh process: the image file is read, then for each step the
process's peak-RSS mark is reset (``/proc/self/clear_refs``) and read back after it
(``VmHWM``), so the figures are the extra memory the step needed on top of what the
process held. (``ru_maxrss`` would not do: Linux carries it across fork and exec, so
a child starts with its parent's peak.)

Target (issue 10): at most 600 MB of extra peak RSS for decoding a 40 MP input,
whatever its format. The 8-bit RGB result alone is 3 bytes a pixel (120 MB at 40 MP).
Exits non-zero when a 40 MP case misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 600
SIZES = {24: (6000, 4000), 40: (7744, 5164)}
FORMATS = ("png-gray16", "png-rgb16", "png-palette", "png-rgba", "png-gray8", "jpeg-rgb",
           "jpeg-gray", "jpeg-cmyk", "webp-rgb")


def _smooth(width: int, height: int, peak: int, dtype: type) -> np.ndarray:
    """A photo-like gradient with gentle texture (compresses like a studio backdrop)."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    field = 0.25 + 0.5 * x * (1.0 - 0.5 * y) + 0.05 * np.sin(40.0 * x) * np.cos(30.0 * y)
    return np.clip(field * peak, 0, peak).astype(dtype)


def make_image(kind: str, width: int, height: int, path: Path) -> None:
    if kind == "png-gray16":
        Image.fromarray(_smooth(width, height, 65535, np.uint16)).save(path, "PNG", compress_level=1)
        return
    if kind == "png-rgb16":
        # Pillow cannot write 48-bit PNGs; write the rows ourselves through its encoder-free path.
        _write_rgb16_png(_smooth(width, height, 65535, np.uint16), path)
        return
    grey = _smooth(width, height, 255, np.uint8)
    if kind == "png-palette":
        image = Image.fromarray(grey).convert("P")
        image.info["transparency"] = 0
        image.save(path, "PNG", compress_level=1, transparency=0)
    elif kind == "png-rgba":
        rgba = np.dstack([grey, grey[::-1], grey[:, ::-1], np.where(grey > 40, 255, 0).astype(np.uint8)])
        Image.fromarray(rgba).save(path, "PNG", compress_level=1)
    elif kind == "png-gray8":
        Image.fromarray(grey).save(path, "PNG", compress_level=1)
    elif kind == "jpeg-rgb":
        Image.fromarray(np.dstack([grey, grey[::-1], grey[:, ::-1]])).save(path, "JPEG", quality=90)
    elif kind == "jpeg-gray":
        Image.fromarray(grey).save(path, "JPEG", quality=90)
    elif kind == "jpeg-cmyk":
        cmyk = np.dstack([grey, grey[::-1], grey[:, ::-1], grey // 4])
        Image.frombytes("CMYK", (width, height), cmyk.tobytes()).save(path, "JPEG", quality=90)
    elif kind == "webp-rgb":
        Image.fromarray(np.dstack([grey, grey[::-1], grey[:, ::-1]])).save(path, "WEBP", quality=80,
                                                                                       method=0)
    else:
        raise ValueError(kind)


def _write_rgb16_png(grey16: np.ndarray, path: Path) -> None:
    import struct
    import zlib

    height, width = grey16.shape
    rgb = np.dstack([grey16, grey16[::-1], grey16[:, ::-1]]).astype(">u2")
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.view(np.uint8).reshape(height, -1)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


CHILD = r"""
import json, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")
import django
django.setup()
from imaging.image_input import encode_png, load_image

def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

def start_step():
    # Resets this process's peak-RSS mark (VmHWM) to its current RSS.
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return status_mb("VmRSS")

data = open(sys.argv[1], "rb").read()
before = start_step()
started = time.perf_counter()
image = load_image(data, param="image_file")
decode_extra = status_mb("VmHWM") - before
decode_s = time.perf_counter() - started
before = start_step()
encoded = encode_png(image.image)
encode_extra = status_mb("VmHWM") - before
print(json.dumps({"file_mb": len(data) / 1e6, "decode_extra_mb": decode_extra,
                  "encode_extra_mb": encode_extra, "decode_s": decode_s,
                  "mode": image.image.mode, "size": image.image.size}))
"""


def measure(path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    args = parser.parse_args()

    print(f"{'case':<20}{'MP':>5}{'file MB':>9}{'decode +MB':>12}{'encode +MB':>12}{'decode s':>10}  result")
    missed = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as workdir:
        for megapixels in args.sizes:
            width, height = SIZES[megapixels]
            for kind in args.formats:
                path = Path(workdir) / f"{kind}-{megapixels}.{kind.split('-')[0]}"
                started = time.perf_counter()
                make_image(kind, width, height, path)
                made = time.perf_counter() - started
                row = measure(path)
                path.unlink()
                if "error" in row:
                    print(f"{kind:<20}{megapixels:>5}  error: {row['error']}")
                    missed.append(kind)
                    continue
                ok = megapixels < 40 or row["decode_extra_mb"] <= TARGET_MB
                if not ok:
                    missed.append(f"{kind} at {megapixels} MP")
                print(f"{kind:<20}{megapixels:>5}{row['file_mb']:>9.1f}{row['decode_extra_mb']:>12.0f}"
                      f"{row['encode_extra_mb']:>12.0f}{row['decode_s']:>10.2f}  {row['mode']} "
                      f"{row['size'][0]}x{row['size'][1]}{'' if ok else '  OVER TARGET'}"
                      f"  (made in {made:.0f} s)")
    print(f"\ntarget: decoding a 40 MP input needs at most {TARGET_MB} MB of extra peak RSS: "
          + ("met" if not missed else f"missed by {', '.join(missed)}"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
