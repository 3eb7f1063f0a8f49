"""Shared base for rules of the form ``quantity < tol`` that report ``CONVERGED``."""

from __future__ import annotations

from torch import Tensor

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like


class ToleranceRule(StopRule):
    """Fires when ``quantity(info) < tol``; NaN quantities (e.g. step 0's residual) never fire."""

    primary = "tol"
    comparator = "<"

    def __init__(self, tol: float) -> None:
        super().__init__()
        if not tol > 0:
            raise ValueError(f"{self.name}<tol needs tol > 0, got {tol!r}")
        self.tol = float(tol)

    def quantity(self, info: StepInfo) -> Tensor:
        raise NotImplementedError

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        value = self.quantity(info)
        done = value < self.tol  # False where NaN
        return done, status_like(done, Status.CONVERGED), state

    def spec(self) -> str:
        return f"{self.name}<{self.tol:g}"
