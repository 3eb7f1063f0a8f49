"""``grad<tol``: stop when the optimality residual ``||G(z)||`` is small.

For energies ``G = grad_z E`` (first-order stationarity); for fixed points ``G = z - f(z)``.
"""

from __future__ import annotations

from torch import Tensor

from eqtheory.stopping.base import StepInfo
from eqtheory.stopping.registry import STOPPING
from eqtheory.stopping.tolerance import ToleranceRule


@STOPPING.register("grad")
class GradNorm(ToleranceRule):
    """Fires when ``||G(z_k)|| < tol``."""

    name = "grad"

    def __init__(self, tol: float = 1e-5) -> None:
        super().__init__(tol)

    def quantity(self, info: StepInfo) -> Tensor:
        return info.grad_norm
