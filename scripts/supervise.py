"""The small process supervisor behind `make run` (scripts/devserver.py).

What it guarantees, and why each part exists:

* **Shutdown is idempotent.** Signal handlers only record the request; the main loop
  stops each child exactly once, web and workers first, Redis last (a draining worker
  still needs it). A group-wide ``kill -TERM -- -<pgid>`` reaches this process twice
  (``make`` forwards it), so signals within ``SAME_REQUEST_S`` of the first count as one
  request. A later one (the impatient second Ctrl-C during the GPU worker's drain)
  says so and SIGKILLs what is left.
* **Children die with their parent.** Each child is started with Linux's
  ``PR_SET_PDEATHSIG`` (SIGTERM), so even a SIGKILLed supervisor (OOM killer, closed
  terminal) leaves nothing running: each child then stops as it would on Ctrl-C.
* **Crashed workers are restarted** with exponential back-off, each time with a line
  saying why; five restarts of one child within a minute is a crash loop, which stops
  everything with a clear message, as does a web server that never starts serving.

Why not honcho or supervisord: honcho stops every process when any one exits (no
restarts); supervisord neither ties its children's lives to its own nor stops on a
crash loop, and would add a daemon and its configuration to a development command.
What remains here is about 200 lines with no dependency.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PR_SET_PDEATHSIG = 1
SAME_REQUEST_S = 1.0
STOP_GRACE_S = 15.0  # the GPU worker finishes its current render (a warm shutdown)
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_S = 60.0  # a child that ran this long starts its back-off from the beginning again
CRASH_LOOP = (5, 60.0)  # this many restarts within this many seconds stop everything


def say(message: str, *, error: bool = False) -> None:
    print(f"run: {message}", file=sys.stderr if error else sys.stdout, flush=True)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive SIGTERM when this process dies."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is None:
            return
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class Child:
    """One supervised process, in its own session (its process group is what gets signalled)."""

    name: str
    argv: list[str]
    restart: bool = True  # restarted when it exits on its own
    stop_last: bool = False  # stopped after the others (Redis)
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: deque = field(default_factory=deque)
    backoff_step: int = 0
    restart_at: float | None = None
    signalled: bool = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class StartupError(Exception):
    """A start-up problem with a one-line explanation (no traceback for the user)."""


class Supervisor:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.children: list[Child] = []
        self.stop_requested_at: float | None = None
        self.escalate = False
        self.exit_code = 0

    # -- signals ---------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only records the request; it never raises into the code it interrupted. os.write,
        # not print: a print interrupted by a signal whose handler prints raises RuntimeError.
        now = time.monotonic()
        name = signal.Signals(signum).name
        if self.stop_requested_at is None:
            self.stop_requested_at = now
            os.write(1, f"run: {name}: stopping everything (a second Ctrl-C kills at once)\n".encode())
        elif now - self.stop_requested_at > SAME_REQUEST_S and not self.escalate:
            self.escalate = True
            os.write(1, f"run: {name} again: killing what is left now (SIGKILL)\n".encode())

    @property
    def stopping(self) -> bool:
        return self.stop_requested_at is not None

    # -- starting --------------------------------------------------------------------
    def spawn(self, child: Child) -> Child:
        say(f"starting {child.name}: {' '.join(child.argv)}")
        child.proc = subprocess.Popen(child.argv, cwd=self.cwd, start_new_session=True,
                                      env={**os.environ, **child.env} if child.env else None,
                                      preexec_fn=die_with_parent())
        child.started_at = time.monotonic()
        child.signalled = False
        if child not in self.children:
            self.children.append(child)
        return child

    def run_step(self, name: str, argv: list[str]) -> None:
        """A one-off start-up step (migrate); a stop request interrupts it."""
        proc = subprocess.Popen(argv, cwd=self.cwd, start_new_session=True, preexec_fn=die_with_parent())
        while proc.poll() is None:
            if self.stopping:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                return
            time.sleep(0.1)
        if proc.returncode != 0:
            raise StartupError(f"{name} {describe_exit(proc.returncode)}; its output is above")

    def wait_until(self, ready: Callable[[], bool], child: Child, timeout: float, what: str) -> bool:
        """Waits for ``ready()``; False when a stop was requested. The child exiting first is fatal."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.stopping:
                return False
            if not child.alive():
                raise StartupError(f"{what} could not start: {child.name} "
                                   f"{describe_exit(child.proc.returncode)}; its output is above")
            if time.monotonic() > deadline:
                raise StartupError(f"{what} did not start within {timeout:.0f} s; its output is above")
            time.sleep(0.1)
        return True

    # -- running ---------------------------------------------------------------------
    def watch(self) -> int:
        """Restarts children that exit, until a stop request or a crash loop; then stops all."""
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restart_at = None
                        self.spawn(child)
                elif not child.alive():
                    if not self._schedule_restart(child, now):
                        self.exit_code = 1
                        self.stop_requested_at = time.monotonic()
                        break
            time.sleep(0.2)
        self.stop_all()
        return self.exit_code

    def _schedule_restart(self, child: Child, now: float) -> bool:
        how = describe_exit(child.proc.returncode)
        if not child.restart:
            say(f"{child.name} {how}; stopping everything", error=True)
            return False
        if now - child.started_at >= STABLE_S:
            child.backoff_step = 0
        limit, window = CRASH_LOOP
        while child.restarts and now - child.restarts[0] > window:
            child.restarts.popleft()
        if len(child.restarts) >= limit:
            say(f"{child.name} {how}, its {limit + 1}th exit within {window:.0f} s: a crash loop; "
                "stopping everything (its output is above)", error=True)
            return False
        delay = BACKOFF_S[min(child.backoff_step, len(BACKOFF_S) - 1)]
        child.backoff_step += 1
        child.restarts.append(now)
        child.restart_at = now + delay
        say(f"{child.name} {how}; restarting it in {delay:.0f} s", error=True)
        return True

    # -- stopping --------------------------------------------------------------------
    def stop_all(self) -> None:
        """Stops every child exactly once: the others first, then those marked stop_last."""
        first = [c for c in reversed(self.children) if not c.stop_last]
        last = [c for c in reversed(self.children) if c.stop_last]
        for group, grace in ((first, STOP_GRACE_S), (last, 5.0)):
            for child in group:
                child.restart_at = None
                if child.alive() and not child.signalled:
                    child.signalled = True
                    child.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while any(c.alive() for c in group) and time.monotonic() < deadline and not self.escalate:
                time.sleep(0.05)
            for child in group:
                if child.alive():
                    if not self.escalate:
                        say(f"{child.name} did not stop within {grace:.0f} s; killing it (SIGKILL)")
                    child.signal_group(signal.SIGKILL)
                    child.proc.wait()
                elif child.proc is not None:
                    # Its group may still hold a grandchild (a gunicorn worker): no survivors.
                    child.signal_group(signal.SIGKILL)
                if child.proc is not None:
                    say(f"stopped {child.name}")


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (a bind as gunicorn does it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def serving(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
