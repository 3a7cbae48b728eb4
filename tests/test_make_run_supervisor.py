"""`make run` stops and recovers as a process supervisor should, tried with real processes.

Each scenario runs the real `make run` on a copy of the project (scripts/check_quickstart.py's
copy: tracked files, the venv linked) with a clean environment, a free port and a marker in
its environment. Every process of that run inherits the marker, so "nothing is left" means
no process on the machine carries it: the web server and its workers, both rq workers, the
sweeper and the embedded Redis included. The supervisor's unit-level rules (back-off,
crash loop, a web server that never serves) are tested on scripts/supervise.py directly
with short real child processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import supervise  # noqa: E402
from check_quickstart import clean_env, copy_project, free_port  # noqa: E402

MARKER = "PIXELAPI_SUPERVISOR_TEST_RUN"
SAMPLE = ROOT / "platform_site" / "static" / "landing" / "before.jpg"
pytestmark = pytest.mark.slow


def marked_pids(marker: str) -> list[int]:
    """Every live process whose environment carries this run's marker."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """Running or sleeping, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class MakeRun:
    """One `make run` of the copied project, in its own process group, output to a log."""

    def __init__(self, project: Path, home: Path, port: int | None = None) -> None:
        self.project = project
        self.port = port or free_port()
        self.marker = uuid.uuid4().hex
        self.env = clean_env(home, self.port) | {MARKER: self.marker}
        self.log_path = project.parent / f"make-run-{self.marker[:8]}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["make", "run"], cwd=project, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Serving, and the GPU worker registered on its queue (renders can run)."""
        deadline = time.monotonic() + timeout
        while not (self.answers("/login/") and self.gpu_worker_pids()):
            assert self.proc.poll() is None, f"make run exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"make run not ready in {timeout:.0f} s:\n{self.log()[-4000:]}"
            time.sleep(0.25)

    def answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def redis(self) -> redis.Redis:
        match = re.search(r"run: Redis: (redis://\S+)", self.log())
        assert match, self.log()[-2000:]
        return redis.Redis.from_url(match.group(1), socket_timeout=2)

    def gpu_worker_pids(self) -> set[int]:
        """pids of the live workers registered on rq's "gpu" queue."""
        try:
            client = self.redis()
            pids = set()
            for key in client.smembers("rq:workers:gpu"):
                pid = client.hget(b"rq:worker:" + key.split(b":")[-1], "pid")
                if pid and Path(f"/proc/{int(pid)}").exists():
                    pids.add(int(pid))
            return pids
        except (AssertionError, redis.RedisError):
            return set()

    def pid_running(self, pattern: str) -> int:
        for pid in marked_pids(self.marker):
            if pattern in cmdline(pid):
                return pid
        raise AssertionError(f"no process of this run matches {pattern!r}")

    def wait_gone(self, timeout: float) -> list[str]:
        """Waits until no process carries the marker; returns those still alive at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not marked_pids(self.marker):
                return []
            time.sleep(0.1)
        return [f"{pid}: {cmdline(pid)}" for pid in marked_pids(self.marker)]

    def kill_everything(self) -> None:
        for pid in marked_pids(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One copy for all scenarios: the first run migrates its SQLite database, the rest reuse it."""
    base = tmp_path_factory.mktemp("make-run")
    (base / "project").mkdir()
    (base / "home").mkdir()
    copy_project(base / "project")
    return base / "project"


@pytest.fixture
def make_run(project):
    runs: list[MakeRun] = []

    def start(port: int | None = None) -> MakeRun:
        run = MakeRun(project, project.parent / "home", port)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill_everything()


def render(run: MakeRun) -> dict:
    key = (run.project / "var" / "demo-api-key").read_text().strip()
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"scene_prompt\"\r\n\r\n"
            f"pure white background\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"image_file\"; filename=\"before.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += SAMPLE.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(run.url("/v1/image/replace-background"), data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_two_signals_to_the_process_group_within_100_ms_leave_no_process_of_the_run(make_run, signum):
    run = make_run()
    run.wait_ready()
    os.killpg(run.proc.pid, signum)
    time.sleep(0.05)
    os.killpg(run.proc.pid, signum)
    left = run.wait_gone(20)
    assert not left, f"still running 20 s after two {signum.name}s:\n" + "\n".join(left) + run.log()[-3000:]
    assert "Traceback" not in run.log(), run.log()[-4000:]
    assert run.log().count("run: stopped web") == 1


def test_a_second_signal_during_shutdown_kills_what_is_left_and_says_so(make_run):
    run = make_run()
    run.wait_ready()
    supervisor = run.pid_running("scripts/devserver.py")
    os.kill(supervisor, signal.SIGTERM)
    time.sleep(1.5)  # past the window in which a duplicate delivery counts as the same request
    try:
        os.kill(supervisor, signal.SIGINT)
    except ProcessLookupError:
        pass  # it had already stopped everything (an idle uvicorn worker stops in well under 1.5 s)
    left = run.wait_gone(20)
    assert not left, "\n".join(left)
    log = run.log()
    assert "SIGTERM: stopping everything" in log
    # The run may have finished stopping before the second signal; if not, it said it escalated.
    if "SIGINT again" in log:
        assert "killing what is left now (SIGKILL)" in log


def test_a_sigkilled_supervisor_leaves_no_child_behind(make_run):
    run = make_run()
    run.wait_ready()
    os.kill(run.pid_running("scripts/devserver.py"), signal.SIGKILL)
    left = run.wait_gone(20)
    assert not left, "still running 20 s after the supervisor was SIGKILLed:\n" + "\n".join(left)


def test_a_gpu_worker_killed_with_sigkill_is_back_within_10_s_and_the_api_answers_throughout(make_run):
    run = make_run()
    run.wait_ready()
    key = (run.project / "var" / "demo-api-key").read_text().strip()
    answers: list[int | str] = []
    stop = threading.Event()

    def poll_account() -> None:
        request = urllib.request.Request(run.url("/v1/account"), headers={"Authorization": f"Bearer {key}"})
        while not stop.is_set():
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    answers.append(response.status)
            except (urllib.error.URLError, OSError) as exc:
                answers.append(repr(exc))
            time.sleep(0.1)

    poller = threading.Thread(target=poll_account, daemon=True)
    poller.start()
    try:
        (old,) = run.gpu_worker_pids()
        os.kill(old, signal.SIGKILL)
        killed_at = time.monotonic()
        while not (run.gpu_worker_pids() - {old}):
            assert time.monotonic() - killed_at < 10, f"no new GPU worker within 10 s:\n{run.log()[-3000:]}"
            time.sleep(0.1)
        back_after = time.monotonic() - killed_at
        body = render(run)
    finally:
        stop.set()
        poller.join(10)
    assert body["status"] == "succeeded", body
    assert "gpu-worker was killed by SIGKILL; restarting it in 1 s" in run.log()
    assert answers and all(status == 200 for status in answers), [a for a in answers if a != 200][:5]
    print(f"GPU worker back after {back_after:.1f} s; {len(answers)} /v1/account answers, all 200")
    os.killpg(run.proc.pid, signal.SIGTERM)
    assert not run.wait_gone(20)


def test_a_taken_port_gives_one_line_and_a_non_zero_exit(make_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = make_run(port=taken.getsockname()[1])
        assert run.proc.wait(timeout=120) != 0
    log = run.log()
    assert f"run: port {run.port} on 127.0.0.1 is already in use" in log, log[-2000:]
    assert "Traceback" not in log
    assert not run.wait_gone(10)


def test_an_embedded_redis_left_by_an_earlier_run_is_named_instead_of_started_beside(make_run, project):
    pidfile = project / "var" / "run" / "redis.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    leftover = subprocess.Popen(["redis-server", "--port", str(free_port()), "--bind", "127.0.0.1",
                                 "--save", "", "--pidfile", str(pidfile)], stdout=subprocess.DEVNULL)
    try:
        supervise_deadline = time.monotonic() + 10
        while not pidfile.exists():
            assert time.monotonic() < supervise_deadline
            time.sleep(0.05)
        run = make_run()
        assert run.proc.wait(timeout=120) != 0
        log = run.log()
        assert f"the embedded Redis of an earlier run is still running (pid {leftover.pid}" in log, log[-2000:]
        assert "Traceback" not in log
    finally:
        leftover.terminate()
        leftover.wait(10)


# -- scripts/supervise.py's rules, with short real child processes ----------------------------

def child(name: str, code: str) -> supervise.Child:
    return supervise.Child(name, [sys.executable, "-c", code])


def test_a_crash_looping_worker_is_restarted_with_back_off_then_stops_everything(monkeypatch, capsys):
    monkeypatch.setattr(supervise, "BACKOFF_S", (0.1, 0.2, 0.4))
    supervisor = supervise.Supervisor(ROOT)
    steady = supervisor.spawn(child("steady", "import time; time.sleep(60)"))
    supervisor.spawn(child("crashy", "raise SystemExit(3)"))
    started = time.monotonic()
    assert supervisor.watch() == 1
    out = capsys.readouterr()
    assert out.err.count("crashy exited with status 3; restarting it in") == 5
    assert "a crash loop; stopping everything" in out.err
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4 + 0.4 + 0.4
    assert not steady.alive() and "stopped steady" in out.out


def test_a_web_server_that_exits_before_serving_is_a_one_line_start_up_error():
    supervisor = supervise.Supervisor(ROOT)
    web = supervisor.spawn(child("web", "raise SystemExit(3)"))
    with pytest.raises(supervise.StartupError, match="the web server could not start: web exited with status 3"):
        supervisor.wait_until(lambda: False, web, 10, "the web server")


def test_a_child_of_a_sigkilled_parent_receives_sigterm():
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, subprocess, time; sys.path.insert(0, 'scripts'); import supervise; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "preexec_fn=supervise.die_with_parent()); print(p.pid, flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(grandchild):
        assert time.monotonic() < deadline, "the child outlived its SIGKILLed parent"
        time.sleep(0.05)
