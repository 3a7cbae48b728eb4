"""Production settings: `check --deploy` passes, and SECRET_KEY is required without DEBUG.

Settings are read once per process, so each case runs manage.py in a subprocess with
the environment a production deployment would have.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Variables that change security settings; the parent's values must not leak in.
SECURITY_VARIABLES = [
    "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SITE_URL",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD", "BEHIND_TLS_PROXY",
    "FETCH_ALLOW_PRIVATE_ADDRESSES",
]


def production_environment(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="platform_site.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="api.example.com",
        CSRF_TRUSTED_ORIGINS="https://api.example.com",
        SITE_URL="https://api.example.com",
        BEHIND_TLS_PROXY="1",
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_deploy_check_passes_with_a_production_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_environment())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_fails_on_a_weak_secret_key():
    # Proves the check above really runs the deploy checks and fails on warnings.
    env = production_environment(SECRET_KEY="django-insecure-short")

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_the_settings_refuse_to_load_without_a_secret_key_when_debug_is_off():
    env = production_environment()
    del env["SECRET_KEY"]

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
