"""Per-sample solve statuses; each member carries a human-readable message."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Why a sample stopped. Stored per sample as an int tensor ``[B]`` in `Solution.status`."""

    RUNNING = 0
    CONVERGED = 1
    MAX_STEPS = 2
    DIVERGED = 3
    NONFINITE = 4
    HALTED = 5

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.RUNNING: "still running (the loop was cut off before a stopping rule fired)",
    Status.CONVERGED: "converged: a tolerance-based stopping rule was met",
    Status.MAX_STEPS: "stopped at the step budget before any tolerance was met",
    Status.DIVERGED: "diverged: the iterate or its residual grew past the divergence bound",
    Status.NONFINITE: "non-finite value (NaN or inf) in the iterate, energy or gradient",
    Status.HALTED: "halted by the learned halting rule",
}
