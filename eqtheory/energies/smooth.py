r"""``smooth``: an L2 smoothness prior between neighbouring positions.

.. math:: E_{\text{smooth}}(z) = \sum_{t=1}^{T-1} \| z_t - z_{t-1} \|^2

Not one of the paper's terms: it is the worked example of ``docs/energies.md`` (a new energy
term is one file). A sequence of length 1 has energy 0.
"""

from __future__ import annotations

from torch import Tensor

from eqtheory.energies.base import Context, Energy, per_sample_sum
from eqtheory.energies.registry import ENERGIES


@ENERGIES.register("smooth")
class Smooth(Energy):
    """Squared differences of consecutive latents, summed over positions and features.

    Shapes:
        ``z: [B, T, *F]``; returns ``[B]``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[[0.0], [1.0], [3.0]]])  # B=1, T=3, d=1
        >>> Smooth()(z)
        tensor([5.])
    """

    name = "smooth"

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        del context
        return per_sample_sum((z[:, 1:] - z[:, :-1]) ** 2)
