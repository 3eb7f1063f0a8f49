"""``stable=n``: stop when the predicted tokens ``argmax readout(z)`` stay unchanged n steps."""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like
from eqtheory.stopping.registry import STOPPING


@STOPPING.register("stable")
class Stable(StopRule):
    """Fires once ``argmax_V readout(z_k)`` (at every position) equals that of the previous step
    for ``n`` consecutive steps. Without a ``readout`` the argmax is over ``z``'s last dimension.
    """

    name = "stable"
    primary = "n"
    comparator = "="

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        if int(n) != n or n < 1:
            raise ValueError(f"stable=n needs a whole number n >= 1, got {n!r}")
        self.n = int(n)

    def init(self, info: StepInfo) -> RuleState:
        tokens = info.logits().argmax(dim=-1)
        return {"tokens": tokens, "count": torch.zeros_like(info.residual, dtype=torch.int64)}

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        tokens = info.logits().argmax(dim=-1)
        same = (tokens == state["tokens"]).reshape(tokens.shape[0], -1).all(dim=1) & (info.step > 0)
        count = torch.where(same, state["count"] + 1, torch.zeros_like(state["count"]))
        done = count >= self.n
        return done, status_like(done, Status.CONVERGED), {"tokens": tokens, "count": count}

    def spec(self) -> str:
        return f"stable={self.n}"
