"""Runs the README's quickstart as a new user would, on a fresh copy of the project.

    .venv/bin/python scripts/check_quickstart.py     (tests/test_readme_quickstart.py runs it)

1. copies the project's files (what git tracks, plus new files it does not ignore) into
   an empty folder: no ``var/``, no database, no Redis data, no model weights;
2. starts ``make run`` there in the background, with a clean environment (no
   REDIS_URL, no DATABASE_URL: the defaults a new user gets) on a free port;
3. runs the shell block of the README between ``<!-- quickstart:begin -->`` and
   ``<!-- quickstart:end -->`` with bash, exactly as written except for the port;
4. checks that it left a succeeded render in ``render.json`` and a finished image in
   ``result.png`` of the sample's size, then stops ``make run`` with one SIGTERM.

The virtual environment is linked, not rebuilt (setup.sh sees its stamp and skips):
installing the pinned requirements again would only measure PyPI. Exit 0 on success;
otherwise 1, with the README block's output and the tail of ``make run``'s log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- quickstart:begin -->.*?```sh\n(.*?)```.*?<!-- quickstart:end -->", re.S)
START_TIMEOUT = 300.0
BLOCK_TIMEOUT = 240.0


def quickstart_block(readme: str) -> str:
    match = BLOCK.search(readme)
    if match is None:
        raise SystemExit("README.md has no <!-- quickstart:begin --> ... <!-- quickstart:end --> block")
    return match.group(1)


def copy_project(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def clean_env(home: Path, port: int) -> dict[str, str]:
    """What a new user's shell has: no project settings at all."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "PORT": str(port)}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
        project, home = Path(tmp) / "project", Path(tmp) / "home"
        project.mkdir()
        home.mkdir()
        copy_project(project)
        port = free_port()
        env = clean_env(home, port)
        log_path = Path(tmp) / "make-run.log"
        with open(log_path, "wb") as log:
            run = subprocess.Popen(["make", "run"], cwd=project, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return check(project, env, port, run, log_path)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGTERM)
                try:
                    run.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(run.pid, signal.SIGKILL)
                    print("quickstart: make run did not stop within 40 s of SIGTERM", file=sys.stderr)


def check(project: Path, env: dict[str, str], port: int, run: subprocess.Popen, log_path: Path) -> int:
    def fail(why: str, output: str = "") -> int:
        print(f"quickstart: {why}\n{output}\n--- make run log (tail) ---\n"
              f"{log_path.read_text(errors='replace')[-6000:]}", file=sys.stderr)
        return 1

    deadline = time.monotonic() + START_TIMEOUT
    while not answers(f"http://127.0.0.1:{port}/login/"):
        if run.poll() is not None:
            return fail(f"make run exited with {run.returncode} before serving")
        if time.monotonic() > deadline:
            return fail(f"make run did not serve within {START_TIMEOUT:.0f} s")
        time.sleep(0.5)

    block = quickstart_block((project / "README.md").read_text()).replace(
        "127.0.0.1:8000", f"127.0.0.1:{port}")
    started = time.monotonic()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=project, env=env,
                            capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return fail(f"the README's quickstart block exited with {result.returncode}", output)
    body = json.loads((project / "render.json").read_text())
    if body.get("status") != "succeeded":
        return fail(f"the render did not succeed: {json.dumps(body)[:800]}", output)
    with Image.open(project / "result.png") as picture:
        picture.load()
        size = picture.size
    if size != (body["width"], body["height"]):
        return fail(f"result.png is {size}, the render says {body['width']}x{body['height']}", output)
    print(f"quickstart: ok in {time.monotonic() - started:.1f} s: {body['id']} {size[0]}x{size[1]} "
          f"scene {body['scene']['engine']}, exact {body['exactness']['share']}, "
          f"worker {body['timings_ms'].get('total')} ms\n{output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
