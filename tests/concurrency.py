"""Starting several database-touching calls at the same instant, each on its own connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs work(0..n-1) in n threads released together by a barrier; their results.

    Each thread closes its connections when done, so a transactional test database
    is not left with open sessions.
    """
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        try:
            barrier.wait(timeout=10)
            return work(i)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))
