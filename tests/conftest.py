"""Shared test set-up: hypothesis profiles and the default exclusion of long runs.

Profiles (select with HYPOTHESIS_PROFILE=...): ``ci`` (default: derandomized, no example
database, no deadline, 25 examples) and ``thorough`` (500 examples). Tests marked ``slow`` or
``thorough`` run only when asked for with ``-m``.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    database=None,
    deadline=None,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow``/``thorough`` tests unless the ``-m`` expression selects markers."""
    if config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="long run: select with -m slow / -m thorough")
    for item in items:
        if "slow" in item.keywords or "thorough" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and do not fight other processes) on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
