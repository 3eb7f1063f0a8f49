"""``halt``: learned halting (PonderNet, Banino et al. 2021).

A halting head gives ``lambda_k = sigmoid(w . pool(z_k) + b)``, the probability of halting at
step k given no halt before; the halting distribution is
``p_k = lambda_k * prod_{j<k} (1 - lambda_j)``, k = 0, 1, ... (k = 0 is the unrefined proposal,
so K = 0 can be chosen). At inference a sample stops (status ``HALTED``) once its cumulative
halting mass ``sum_{j<=k} p_j = 1 - prod_{j<=k} (1 - lambda_j)`` reaches ``threshold``.
Training adds `ponder_regulariser`, ``KL(p || Geometric(prior))``, to the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like
from eqtheory.stopping.registry import STOPPING


@STOPPING.register("halt")
class Halt(StopRule):
    """Learned halting; the head is ``nn.LazyLinear(1)`` on ``z`` averaged over its middle dims.

    Args:
        threshold: cumulative halting mass in (0, 1] at which a sample stops.
    """

    name = "halt"
    primary = "threshold"
    comparator = "="

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0 < threshold <= 1:
            raise ValueError(f"halt needs 0 < threshold <= 1, got {threshold!r}")
        self.threshold = float(threshold)
        self.head = nn.LazyLinear(1)

    def halting_probability(self, z: Tensor) -> Tensor:
        """``lambda(z): [B]`` for ``z: [B, *S, d]``, computed in the head's dtype (a float64
        solve reads a float32 head)."""
        pooled = z.reshape(z.shape[0], -1, z.shape[-1]).mean(dim=1)  # (B, d)
        return torch.sigmoid(self.head(pooled.to(self.head.weight.dtype))).squeeze(-1)

    def init(self, info: StepInfo) -> RuleState:
        zeros = torch.zeros_like(info.residual)
        return {"remaining": torch.ones_like(info.residual), "mass": zeros, "lambda": zeros}

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        lam = self.halting_probability(info.z).detach().to(info.residual.dtype)
        mass = state["mass"] + state["remaining"] * lam
        remaining = state["remaining"] * (1 - lam)
        done = mass >= self.threshold
        return done, status_like(done, Status.HALTED), {
            "remaining": remaining, "mass": mass, "lambda": lam,
        }

    def trace_values(self, state: RuleState) -> dict[str, Tensor]:
        return {"halt_lambda": state["lambda"], "halt_mass": state["mass"]}

    def spec(self) -> str:
        return f"halt={self.threshold:g}"


def halting_distribution(lambdas: Tensor) -> Tensor:
    """``[K, B]`` per-step halting probabilities -> ``[K, B]`` ``p_k``; the last step takes the
    remaining mass so each column sums to 1."""
    survive = torch.cumprod(1 - lambdas, dim=0)
    before = torch.cat([torch.ones_like(survive[:1]), survive[:-1]], dim=0)
    p = lambdas * before
    return torch.cat([p[:-1], before[-1:]], dim=0)


def ponder_regulariser(lambdas: Tensor, prior: float = 0.2) -> Tensor:
    """``[B]`` ``KL(p || Geometric(prior))`` over the K steps of ``lambdas: [K, B]`` (PonderNet)."""
    p = halting_distribution(lambdas)
    k = torch.arange(p.shape[0], device=p.device, dtype=p.dtype)[:, None]
    log_prior = torch.log(torch.as_tensor(prior, dtype=p.dtype)) + k * torch.log1p(
        torch.as_tensor(-prior, dtype=p.dtype)
    )
    return (p * (torch.log(p.clamp_min(1e-12)) - log_prior)).sum(dim=0)
