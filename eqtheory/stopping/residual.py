"""``residual<tol``: stop when the step ``||z_k - z_{k-1}||`` is small (paper: eps)."""

from __future__ import annotations

from torch import Tensor

from eqtheory.stopping.base import StepInfo
from eqtheory.stopping.registry import STOPPING
from eqtheory.stopping.tolerance import ToleranceRule


@STOPPING.register("residual")
class Residual(ToleranceRule):
    """Fires when ``||z_k - z_{k-1}|| < tol`` (absolute), or, with ``relative=True``, when
    ``||z_k - z_{k-1}|| / ||z_{k-1}|| < tol`` (the paper's relative change < 1e-3).
    """

    name = "residual"

    def __init__(self, tol: float = 1e-4, relative: bool = False) -> None:
        super().__init__(tol)
        self.relative = bool(relative)

    def quantity(self, info: StepInfo) -> Tensor:
        return info.relative_residual if self.relative else info.residual

    def spec(self) -> str:
        return f"residual(tol={self.tol:g},relative=1)" if self.relative else super().spec()
