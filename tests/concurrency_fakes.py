"""Stand-ins for `benchmarks.gpu_check.time_run` that spawned processes can import: the first
process to reach a cell of length 16 fails there (out of memory: `fake_time_run`) or dies
without a word (`dying_time_run`), while its peers wait for it at the cell's barrier; every
other cell times instantly."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

FAIL_ONCE = "EQT_FAKE_FAIL_ONCE"
"""Environment variable naming the file whose creation marks the one failure."""


def _first_here(config: Any) -> bool:
    """Whether this process is the first to reach a length-16 cell (it creates the file)."""
    if config.length != 16:
        return False
    try:
        os.close(os.open(os.environ[FAIL_ONCE], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def fake_time_run(config: Any, device: torch.device, *, members: int, evaluate: bool,
                  repeats: int, before_timing: Callable[[], None]) -> dict[str, Any]:
    if _first_here(config):
        raise torch.OutOfMemoryError("fake: out of memory")
    before_timing()
    return {"step_s": 1e-3 * config.length * members}


def dying_time_run(config: Any, device: torch.device, *, members: int, evaluate: bool,
                   repeats: int, before_timing: Callable[[], None]) -> dict[str, Any]:
    if _first_here(config):
        os._exit(3)  # as the out-of-memory killer or a fatal CUDA error would end it
    before_timing()
    return {"step_s": 1e-3 * config.length * members}
