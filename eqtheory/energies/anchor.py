r"""``anchor``: the proximal prior (the paper's dynamical prior / quadratic anchor).

.. math:: E_{\text{anchor}}(z) = \frac{\|z - z_0\|^2}{2\gamma}

summed over every non-batch dimension, with ``z0 = context["z0"]`` (the one-shot proposal ``f``;
`eqtheory.minimize` supplies it). ``gamma = inf`` disables it (no prior), and *no prior is
gamma -> infinity*, not gamma -> 0 as the paper's Prop. 9 says. Added to a convex energy it makes
the total ``1/gamma``-strongly convex. ``gamma`` is a buffer; anneal it with `set_gamma`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.energies.base import Context, Energy, per_sample_sum, require
from eqtheory.energies.registry import ENERGIES


@ENERGIES.register("anchor")
class Anchor(Energy):
    """Proximal prior ``||z - z0||^2 / (2 gamma)``.

    Args:
        gamma: ``gamma > 0``; ``math.inf`` gives zero energy.

    Example:
        >>> import torch
        >>> z0 = torch.zeros(2, 3)
        >>> Anchor(gamma=0.5)(torch.ones(2, 3), {"z0": z0})
        tensor([3., 3.])
    """

    name = "anchor"
    primary = "gamma"
    requires = ("z0",)

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        # float64 so that float64 solves see gamma exactly (cast to z's dtype when used)
        self.register_buffer("gamma", torch.tensor(0.0, dtype=torch.float64))
        self.set_gamma(gamma)

    def set_gamma(self, gamma: float) -> None:
        if not gamma > 0:
            raise ValueError(f"anchor needs gamma > 0 (inf disables it), got {gamma!r}")
        self.gamma.fill_(float(gamma))

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        z0 = require(context, "z0", term=self.name)
        return per_sample_sum((z - z0) ** 2) * self.prepared(z, context)["scale"]

    def invariants(self, z: Tensor, context: Context | None) -> dict[str, Tensor]:
        """``scale = 1 / (2 gamma)`` in ``z``'s dtype (prepare again after `set_gamma`)."""
        del context
        # 0.5 / gamma is exactly 0 for gamma = inf: value and gradient 0, no branch, no host sync
        return {"scale": 0.5 / self.gamma.to(z.dtype)}

    def spec(self) -> str:
        return f"anchor={float(self.gamma):g}"
