"""Fail closed: the public development SECRET_KEY never serves beyond loopback.

Real gunicorn processes started the way `make run` starts them (from the repository
root, so they load ./gunicorn.conf.py). The refusals bind nothing: the addresses used
are documentation addresses (192.0.2.0/24, 2001:db8::/32) that are not on this
machine, and the refusal comes before gunicorn opens a socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import Client

from platform_site import serving
from tests.live_platform import GUNICORN, ROOT, free_port


def development_env(tmp_path: Path) -> dict[str, str]:
    """`make run`'s environment: no DEBUG, no SECRET_KEY, local SQLite."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "platform_site.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    for name in ("DEBUG", "SECRET_KEY"):
        env.pop(name, None)
    return env


def gunicorn(bind: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([GUNICORN, "platform_site.wsgi", "--bind", bind, "--workers", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("bind", ["192.0.2.10:8000", "[2001:db8::10]:8000"])
def test_gunicorn_refuses_the_development_key_on_an_address_beyond_loopback(tmp_path, bind):
    started = time.monotonic()
    result = gunicorn(bind, development_env(tmp_path))

    assert result.returncode != 0
    assert "refusing to serve with the development SECRET_KEY" in result.stderr
    assert bind.rsplit(":", 1)[0].strip("[]") in result.stderr
    # Refused at once, not after gunicorn's five attempts to bind an address it cannot have.
    assert time.monotonic() - started < 20
    assert "Listening at" not in result.stderr


def test_gunicorn_with_the_development_key_serves_on_loopback(tmp_path):
    port = free_port()
    proc = subprocess.Popen([GUNICORN, "platform_site.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                            cwd=ROOT, env=development_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and status is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/account", timeout=2)
            except urllib.error.HTTPError as answer:
                status = answer.code
            except OSError:
                time.sleep(0.2)
        assert status == 401  # served: the API asks for a key
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)


def test_gunicorn_with_a_real_key_starts_wherever_it_is_told(tmp_path):
    env = {**development_env(tmp_path), "SECRET_KEY": "a-real-secret-" + "x" * 40}
    result = gunicorn("192.0.2.10:8000", env, timeout=60)
    # It gets past our hook and fails only at binding an address this machine does not have.
    assert "refusing to serve with the development SECRET_KEY" not in result.stderr
    assert "192.0.2.10" in result.stderr


@pytest.mark.parametrize("addresses,refused", [
    ([("127.0.0.1", 8000)], False),
    ([("::1", 8000)], False),
    ([("localhost", 8000)], False),
    (["/run/pixelapi.sock"], False),
    ([("0.0.0.0", 8000)], True),
    ([("127.0.0.1", 8000), ("10.1.2.3", 8000)], True),
    ([("::", 8000)], True),
    (["fd://3"], True),
])
def test_which_bind_addresses_the_development_key_may_use(settings, addresses, refused):
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY
    if refused:
        with pytest.raises(RuntimeError, match="development SECRET_KEY"):
            serving.check_bind(addresses)
    else:
        serving.check_bind(addresses)


def test_a_real_key_may_bind_anywhere(settings):
    settings.SECRET_KEY = "a-real-secret-" + "y" * 40
    serving.check_bind([("0.0.0.0", 8000), "fd://3"])


def test_with_the_development_key_requests_from_beyond_loopback_are_refused(db, settings):
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY

    outside = Client(REMOTE_ADDR="203.0.113.9").get("/docs/")
    inside = Client(REMOTE_ADDR="127.0.0.1").get("/docs/")

    assert outside.status_code == 503 and "development SECRET_KEY" in outside.content.decode()
    assert inside.status_code == 200


def test_with_a_real_key_requests_from_anywhere_are_served(db, settings):
    settings.SECRET_KEY = "a-real-secret-" + "z" * 40
    assert Client(REMOTE_ADDR="203.0.113.9").get("/docs/").status_code == 200


def test_without_debug_a_missing_secret_key_still_stops_every_process(tmp_path):
    env = {**development_env(tmp_path), "DEBUG": "0"}
    result = subprocess.run([sys.executable, "-c", "import platform_site.settings"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "SECRET_KEY must be set when DEBUG is off" in result.stderr

