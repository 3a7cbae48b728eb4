"""Settles, times out and re-enqueues renders nobody is watching (see imaging.sweeper)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from imaging.sweeper import sweep


class Command(BaseCommand):
    help = "Fail renders past their deadline, release their holds, re-enqueue lost jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=None, metavar="SECONDS",
                            help="Keep running, one pass every SECONDS (until SIGTERM/Ctrl-C).")

    def handle(self, *args: Any, **options: Any) -> None:
        every = options["every"]
        if not every:
            self.stdout.write(f"sweep: {sweep()}")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.is_set():
            close_old_connections()
            try:
                report = sweep()
                if any(vars(report).values()):
                    self.stdout.write(f"sweep: {report}")
            except Exception as exc:  # one bad pass (database restarting) must not end the loop
                self.stderr.write(f"sweep failed: {exc!r}")
            stop.wait(every)
