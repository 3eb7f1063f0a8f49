"""``adaptive(low=8,high=32,threshold=0.5)``: a per-sample step budget chosen by entropy.

Samples whose start is uncertain, mean entropy ``H(softmax(readout(z0))) > threshold`` nats,
get ``high`` steps; the others get ``low`` (the paper's K = 8 vs 32 chosen by entropy).
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like
from eqtheory.stopping.registry import STOPPING


def mean_entropy(logits: Tensor) -> Tensor:
    """``[B, ..., V] -> [B]``: entropy of ``softmax`` over V, averaged over positions (nats)."""
    log_p = torch.log_softmax(logits, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    return entropy.reshape(entropy.shape[0], -1).mean(dim=1)


@STOPPING.register("adaptive")
class AdaptiveBudget(StopRule):
    """Fires at step ``high`` for uncertain samples and ``low`` for confident ones (MAX_STEPS)."""

    name = "adaptive"

    def __init__(self, low: int = 8, high: int = 32, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0 <= low <= high:
            raise ValueError(f"adaptive needs 0 <= low <= high, got low={low}, high={high}")
        self.low, self.high, self.threshold = int(low), int(high), float(threshold)

    def init(self, info: StepInfo) -> RuleState:
        uncertain = mean_entropy(info.logits()) > self.threshold
        return {"budget": torch.where(uncertain, self.high, self.low)}

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        done = info.step >= state["budget"]
        return done, status_like(done, Status.MAX_STEPS), state

    def budget(self) -> int:
        return self.high

    def trace_values(self, state: RuleState) -> dict[str, Tensor]:
        return {"budget": state["budget"].to(torch.get_default_dtype())}

    def spec(self) -> str:
        return f"adaptive(low={self.low},high={self.high},threshold={self.threshold:g})"
