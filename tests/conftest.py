"""Suite-wide fixtures: the loopback-only network guard and one torch thread."""

from __future__ import annotations

import pytest

from tests import network_guard

network_guard.install()


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    except (ImportError, RuntimeError):
        pass


@pytest.fixture(autouse=True)
def _no_traffic_beyond_loopback():
    """Fails the test if anything it ran tried to leave loopback, even if it was caught."""
    before = len(network_guard.violations)
    yield
    new = network_guard.violations[before:]
    if new:
        pytest.fail("network guard: " + "; ".join(new), pytrace=False)
