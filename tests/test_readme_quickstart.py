"""The README's quickstart, run as written on a fresh copy: `make run`, then the first curl.

Everything it needs comes from `make run` itself (its own Redis on a free port, a
fresh SQLite database, the demo account and its key file); nothing of this test run's
environment (its Redis, its database) is passed on. See scripts/check_quickstart.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_make_run_and_the_readmes_first_curl_give_a_finished_studio_render():
    result = subprocess.run([sys.executable, "scripts/check_quickstart.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    assert "quickstart: ok" in result.stdout and "scene studio" in result.stdout
