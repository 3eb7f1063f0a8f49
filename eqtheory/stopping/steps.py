"""``steps=K``: stop after ``K`` iterations with status ``MAX_STEPS`` (the paper's fixed K)."""

from __future__ import annotations

from torch import Tensor

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like
from eqtheory.stopping.registry import STOPPING


@STOPPING.register("steps")
class Steps(StopRule):
    """Fires when ``k >= K``.

    Args:
        k: the step budget ``K >= 0`` (``K = 0`` returns the start unchanged).
    """

    name = "steps"
    primary = "k"
    comparator = "="
    stops_early = False

    def __init__(self, k: int = 50) -> None:
        super().__init__()
        if int(k) != k or k < 0:
            raise ValueError(f"steps=K needs a whole number K >= 0, got {k!r}")
        self.k = int(k)

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        done = info.residual.new_full(info.residual.shape, info.step >= self.k, dtype=bool)
        return done, status_like(done, Status.MAX_STEPS), state

    def budget(self) -> int:
        return self.k

    def idle(self, info: StepInfo) -> bool:
        return info.step < self.k

    def spec(self) -> str:
        return f"steps={self.k}"
