r"""``logcosh``: a strongly convex, smooth, non-quadratic energy with certified constants.

.. math:: E(z) = \tfrac12 z^\top A z - b^\top z + \lambda \sum_i \log\cosh(z_i - c_i)

``log cosh`` has second derivative ``sech^2 in (0, 1]``, so
``lambda_min(A) I <= Hessian <= (lambda_max(A) + lambda) I``: ``mu = lambda_min(A)``,
``L = lambda_max(A) + lambda``. The minimiser has no closed form (checks use scipy).
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.energies.base import Context
from eqtheory.energies.quadratic import Quadratic
from eqtheory.energies.registry import ENERGIES


def log_cosh(x: Tensor) -> Tensor:
    """Numerically stable ``log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log 2``."""
    a = x.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - torch.log(torch.tensor(2.0, dtype=x.dtype))


@ENERGIES.register("logcosh")
class LogCosh(Quadratic):
    """Quadratic plus ``lambda sum log cosh(z - c)``.

    Args:
        weight: ``lambda >= 0``; ``center``: ``c [n]`` (None: random from ``seed + 2``).
        Others as in `Quadratic`.
    """

    name = "logcosh"

    def __init__(
        self,
        matrix: Tensor | None = None,
        shift: Tensor | None = None,
        center: Tensor | None = None,
        weight: float = 1.0,
        dim: int = 8,
        mu: float = 1.0,
        L: float = 10.0,
        seed: int = 0,
    ) -> None:
        super().__init__(matrix, shift, dim=dim, mu=mu, L=L, seed=seed)
        if center is None:
            generator = torch.Generator().manual_seed(seed + 2)
            center = torch.randn(self.matrix.shape[0], generator=generator, dtype=self.matrix.dtype)
        self.register_buffer("center", center)
        self.weight = float(weight)

    @property
    def L(self) -> float:  # noqa: N802
        return super().L + self.weight

    def minimiser(self, batch: int = 1) -> Tensor:
        raise NotImplementedError("logcosh has no closed-form minimiser; use scipy.optimize")

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        flat = z.reshape(z.shape[0], -1)
        smooth = log_cosh(flat - self.center.to(flat.dtype)).sum(dim=1)
        return super().energy(z, context) + self.weight * smooth
