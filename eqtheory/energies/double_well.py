r"""``double_well``: a nonconvex analytic energy with known local minima (for Thm. 3 checks).

.. math:: E(z) = \frac{a}{4} \sum_i (z_i^2 - 1)^2 + \tfrac12 \epsilon \|z\|^2

Stationary points per coordinate solve ``a z (z^2 - 1) + eps z = 0``: local minima at
``z_i = ±sqrt(1 - eps / a)`` with curvature ``2a - 2 eps`` (for ``eps < a``), a local
maximum at 0 with curvature ``eps - a``. Basins are ``z_i > 0`` and ``z_i < 0``.
"""

from __future__ import annotations

import math

from torch import Tensor

from eqtheory.energies.base import Context, Energy
from eqtheory.energies.registry import ENERGIES


@ENERGIES.register("double_well")
class DoubleWell(Energy):
    """Separable double well.

    Args:
        scale: ``a > 0``; ``tilt``: ``eps`` in ``[0, a)``.
    """

    name = "double_well"
    latent_layout = "flat"

    def __init__(self, scale: float = 1.0, tilt: float = 0.0) -> None:
        super().__init__()
        if not scale > 0 or not 0 <= tilt < scale:
            raise ValueError(
                f"double_well needs scale > 0 and 0 <= tilt < scale, got {scale}, {tilt}"
            )
        self.scale, self.tilt = float(scale), float(tilt)

    @property
    def minimum(self) -> float:
        """Positive coordinate of the local minima."""
        return math.sqrt(1 - self.tilt / self.scale)

    @property
    def curvature(self) -> float:
        """Hessian eigenvalue (all coordinates) at every local minimum."""
        return 2 * (self.scale - self.tilt)

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        del context
        flat = z.reshape(z.shape[0], -1)
        return (self.scale / 4 * (flat**2 - 1) ** 2 + 0.5 * self.tilt * flat**2).sum(dim=1)
