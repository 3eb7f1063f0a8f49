"""``plateau<tol``: stop when the energy no longer decreases by ``tol`` per step."""

from __future__ import annotations

from torch import Tensor

from eqtheory.stopping.base import StepInfo
from eqtheory.stopping.registry import STOPPING
from eqtheory.stopping.tolerance import ToleranceRule


@STOPPING.register("plateau")
class Plateau(ToleranceRule):
    """Fires when ``E(z_{k-1}) - E(z_k) < tol`` (an increase fires too). NaN energies never fire."""

    name = "plateau"

    def __init__(self, tol: float = 1e-6) -> None:
        super().__init__(tol)

    def quantity(self, info: StepInfo) -> Tensor:
        return info.energy_prev - info.energy
