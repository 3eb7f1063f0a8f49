"""``energy<tau``: the paper's Corollary 5 — stop at the first k with ``E(z_k) < tau``."""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like
from eqtheory.stopping.registry import STOPPING


@STOPPING.register("energy")
class EnergyBelow(StopRule):
    """Fires when ``E(z_k) < tau`` (``tau`` may be negative). Never fires on fixed-point problems
    (their energy is NaN): combine with ``steps=K`` there.
    """

    name = "energy"
    primary = "tau"
    comparator = "<"

    def __init__(self, tau: float = 0.0) -> None:
        super().__init__()
        self.tau = float(tau)

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        done = torch.nan_to_num(info.energy, nan=float("inf")) < self.tau
        return done, status_like(done, Status.CONVERGED), state

    def spec(self) -> str:
        return f"energy<{self.tau:g}"
