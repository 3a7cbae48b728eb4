"""The Procfile and docs/systemd/ run what `make run` runs, and docs/deploy.md's
environment tables name only variables the code reads.

`make run` (scripts/devserver.py, ``process_commands``) is the one source of the
command lines. A deployment may differ only in the interpreter's path, the bind
address and the gunicorn control socket's path; anything else is drift.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import devserver  # noqa: E402

SYSTEMD = ROOT / "docs" / "systemd"
DEPLOY_MD = ROOT / "docs" / "deploy.md"
APP_ROOT = "/opt/pixelapi"

# Procfile process type and systemd unit of each process `make run` starts.
PROCFILE_NAMES = {"web": "web", "worker": "django-worker", "gpu": "gpu-worker", "sweeper": "sweeper"}
UNITS = {
    "pixelapi-web.service": "web",
    "pixelapi-worker.service": "django-worker",
    "pixelapi-gpu-worker@.service": "gpu-worker",
    "pixelapi-sweeper.service": "sweeper",
}
# The role environment file each unit reads besides the shared one.
ROLE_FILES = {
    "pixelapi-web.service": ["/etc/pixelapi/django.env", "-/etc/pixelapi/web.env"],
    "pixelapi-worker.service": ["/etc/pixelapi/django.env", "-/etc/pixelapi/worker.env"],
    "pixelapi-sweeper.service": ["/etc/pixelapi/django.env", "-/etc/pixelapi/sweeper.env"],
    "pixelapi-gpu-worker@.service": ["/etc/pixelapi/gpu-worker.env", "-/etc/pixelapi/gpu-worker@%i.env"],
    "pixelapi-purge.service": ["/etc/pixelapi/django.env", "-/etc/pixelapi/purge.env"],
}
# Values that legitimately differ per deployment: replaced before comparing.
PLACEHOLDER_OPTIONS = ("--bind", "--control-socket")
SECRETS_NEVER_ON_GPU_MACHINES = {"DATABASE_URL", "SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET",
                                 "METRICS_TOKEN"}


def normalised(argv: list[str]) -> list[str]:
    """The argv with the interpreter and the per-deployment values replaced by placeholders."""
    out = list(argv)
    name = Path(out[0]).name
    if name.startswith("python"):
        out[0] = "<python>"
    elif name == "gunicorn":
        out[0] = "<gunicorn>"
    for index, word in enumerate(out[:-1]):
        if word in PLACEHOLDER_OPTIONS:
            out[index + 1] = f"<{word.lstrip('-')}>"
    return out


def make_run_commands() -> dict[str, list[str]]:
    return {name: normalised(argv) for name, argv in devserver.process_commands().items()}


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(command)
    return entries


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values, in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(name: str) -> dict[str, list[str]]:
    return unit(name)["Service"]


def env_tables() -> dict[str, set[str]]:
    """docs/deploy.md's environment tables: each follows ``<!-- env-table: ROLE -->``."""
    tables: dict[str, set[str]] = {}
    lines = DEPLOY_MD.read_text().splitlines()
    for index, line in enumerate(lines):
        marker = re.fullmatch(r"<!-- env-table: ([\w-]+) -->", line.strip())
        if not marker:
            continue
        names: set[str] = set()
        rows = []
        for row in lines[index + 1:]:
            if not row.startswith("|"):
                if rows:
                    break
                continue
            rows.append(row)
        for row in rows[2:]:  # after the header and its separator
            first_cell = row.strip("|").split("|")[0]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
        assert names, f"empty environment table {marker.group(1)}"
        tables[marker.group(1)] = names
    return tables


def string_constants(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def django_side_names() -> set[str]:
    """Every string in the code that reads the Django side's environment, and the
    variables libraries read for it (checked to be what those libraries read)."""
    import dj_database_url

    settings_source = (ROOT / "platform_site" / "settings.py").read_text()
    assert dj_database_url.DEFAULT_ENV == "DATABASE_URL" and "dj_database_url.config(" in settings_source
    import gunicorn.config

    assert "GUNICORN_CMD_ARGS" in Path(gunicorn.config.__file__).read_text()
    sources = [ROOT / "platform_site" / "settings.py", ROOT / "platform_site" / "metrics.py",
               ROOT / "gunicorn.conf.py"]
    return string_constants(sources) | {"DATABASE_URL", "GUNICORN_CMD_ARGS"}


def gpu_worker_names() -> set[str]:
    # CUDA_VISIBLE_DEVICES is read by the CUDA runtime (the unit sets it per instance).
    return string_constants(sorted((ROOT / "gpu_worker").rglob("*.py"))) | {"CUDA_VISIBLE_DEVICES"}


def test_the_procfile_runs_every_process_make_run_starts_with_the_same_arguments():
    entries = procfile()
    expected = make_run_commands()
    assert set(PROCFILE_NAMES.values()) == set(expected), "a process of `make run` has no Procfile line"
    assert set(entries) == {*PROCFILE_NAMES, "release"}
    for procfile_name, process in PROCFILE_NAMES.items():
        assert normalised(entries[procfile_name]) == expected[process], procfile_name


def test_the_procfile_release_step_is_the_migrate_make_run_does():
    assert normalised(procfile()["release"]) == normalised(devserver.setup_commands()["migrate"])


def test_each_unit_starts_the_same_command_as_make_run_from_the_virtualenv():
    expected = make_run_commands()
    assert set(UNITS.values()) == set(expected), "a process of `make run` has no systemd unit"
    for name, process in UNITS.items():
        [exec_start] = service(name)["ExecStart"]
        argv = shlex.split(exec_start)
        assert argv[0].startswith(f"{APP_ROOT}/.venv/bin/"), name
        assert normalised(argv) == expected[process], name


def test_each_unit_runs_as_a_dedicated_user_from_the_install_folder_with_its_environment_files():
    for name, files in ROLE_FILES.items():
        options = service(name)
        assert options["User"] == ["pixelapi"] and options["Group"] == ["pixelapi"], name
        assert options["WorkingDirectory"] == [APP_ROOT], name
        assert options["EnvironmentFile"] == files, name
        assert options["KillSignal"] == ["SIGTERM"], name
        if name in UNITS:
            assert options["Restart"] == ["on-failure"], name
    # gunicorn reads ./gunicorn.conf.py from its working directory (the install folder).
    assert (ROOT / "gunicorn.conf.py").is_file()


def test_the_gpu_worker_gets_longer_to_stop_than_a_render_may_run():
    default_job_timeout = int(re.search(r'env_int\("RQ_JOB_TIMEOUT", (\d+)\)',
                                        (ROOT / "platform_site" / "settings.py").read_text()).group(1))
    [stop] = service("pixelapi-gpu-worker@.service")["TimeoutStopSec"]
    assert int(stop) > default_job_timeout
    assert service("pixelapi-gpu-worker@.service")["Environment"] == ["CUDA_VISIBLE_DEVICES=%i"]


def test_django_side_units_share_the_web_units_metrics_folder_and_the_gpu_worker_does_not():
    web = service("pixelapi-web.service")
    assert web["RuntimeDirectory"] == ["pixelapi pixelapi/prometheus"]
    shared = "PROMETHEUS_MULTIPROC_DIR=/run/pixelapi/prometheus"
    for name in ("pixelapi-web.service", "pixelapi-worker.service", "pixelapi-sweeper.service"):
        assert shared in service(name)["Environment"], name
    for name in ("pixelapi-worker.service", "pixelapi-sweeper.service"):
        assert unit(name)["Unit"]["PartOf"] == ["pixelapi-web.service"], name
        assert unit(name)["Unit"]["After"] == ["pixelapi-web.service"], name
    assert not any("PROMETHEUS" in value for value in service("pixelapi-gpu-worker@.service")["Environment"])


def test_the_purge_runs_daily_from_its_timer():
    [command] = service("pixelapi-purge.service")["ExecStart"]
    assert shlex.split(command)[1:] == ["manage.py", "purge_renders"]
    assert (ROOT / "imaging" / "management" / "commands" / "purge_renders.py").is_file()
    timer = unit("pixelapi-purge.timer")["Timer"]
    assert timer["OnCalendar"] == ["daily"] and timer["Unit"] == ["pixelapi-purge.service"]


def test_every_variable_in_the_deploy_guides_tables_is_one_the_code_reads():
    tables = env_tables()
    assert set(tables) == {"django", "web", "gpu-worker"}
    django_names = django_side_names()
    for role in ("django", "web"):
        unknown = tables[role] - django_names
        assert not unknown, f"{role} table names variables the Django side never reads: {sorted(unknown)}"
    unknown = tables["gpu-worker"] - gpu_worker_names()
    assert not unknown, f"GPU worker table names variables the worker never reads: {sorted(unknown)}"


def test_the_gpu_machines_environment_names_no_database_or_stripe_secret():
    assert not tables_of("gpu-worker") & SECRETS_NEVER_ON_GPU_MACHINES
    # The worker cannot use them either: nothing under gpu_worker/ reads those names.
    assert not gpu_worker_names() & SECRETS_NEVER_ON_GPU_MACHINES
    assert {"DATABASE_URL", "SECRET_KEY", "REDIS_URL"} <= tables_of("django")
    assert {"REDIS_URL", "STORAGE_DIR", "S3_BUCKET"} <= tables_of("gpu-worker")


def tables_of(role: str) -> set[str]:
    return env_tables()[role]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    if not (ROOT / ".venv" / "bin" / "gunicorn").exists():
        pytest.skip("the virtualenv is not built (verify checks that ExecStart exists)")
    # verify checks that each ExecStart exists: point the install folder at this checkout.
    for path in SYSTEMD.iterdir():
        (tmp_path / path.name).write_text(path.read_text().replace(APP_ROOT, str(ROOT)))
    names = sorted(p.name for p in SYSTEMD.iterdir())
    paths = [str(tmp_path / name.replace("@.service", "@0.service")) for name in names]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths],
                            capture_output=True, text=True, timeout=30)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "pixelapi" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
