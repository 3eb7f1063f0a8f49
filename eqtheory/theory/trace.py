r"""`DistanceTo`: record ``||z_k - z_ref||`` per sample in a solve's trace (never stops).

A stopping rule is the loop's hook into every step, so the distance to a reference solution
(from scipy or a closed form) is traced by composing this rule with the real one:
``stop = DistanceTo(z_ref) | Steps(k=100)`` gives ``solution.trace["distance"]: [K+1, B]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule, status_like


class DistanceTo(StopRule):
    """Trace ``distance_k = ||z_k - z_ref||`` (per sample, over all non-batch dims).

    Args:
        reference: ``[B, *S]`` reference point(s), or ``[*S]`` shared by every sample.

    Example:
        >>> import torch, eqtheory as eqt
        >>> rule = DistanceTo(torch.zeros(1, 2)) | eqt.stopping.Steps(k=3)
        >>> sol = eqt.minimize(lambda z: 0.5 * (z ** 2).sum(1), torch.ones(1, 2), stop=rule,
        ...                    step_size=0.5)
        >>> [round(v, 4) for v in sol.trace["distance"][:, 0].tolist()]
        [1.4142, 0.7071, 0.3536, 0.1768]
    """

    name = "distance"

    def __init__(self, reference: Tensor) -> None:
        super().__init__()
        self.reference = reference.detach()

    def _distance(self, z: Tensor) -> Tensor:
        diff = (z.detach() - self.reference.to(z.dtype)).reshape(z.shape[0], -1)
        return torch.linalg.vector_norm(diff, dim=1)

    def init(self, info: StepInfo) -> RuleState:
        return {"distance": self._distance(info.z)}

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        del state
        distance = self._distance(info.z)
        done = torch.zeros_like(distance, dtype=torch.bool)
        return done, status_like(done, Status.RUNNING), {"distance": distance}

    def trace_values(self, state: RuleState) -> dict[str, Tensor]:
        return {"distance": state["distance"]}
