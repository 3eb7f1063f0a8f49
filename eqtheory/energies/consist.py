r"""``consist``: inverse-dynamics round trip (the paper's Sec. 2 consistency term).

.. math:: E_{\text{consist}}(z) = \sum_t \| z_t - F^{-1}(F(z_t)) \|^2

summed over positions and feature dimensions, with a forward map ``F`` and an inverse map
``F_inv``, each a small MLP ``dim -> hidden -> dim`` (GELU). Low energy means ``z_t`` lies where
``F_inv`` undoes ``F``. If training makes ``F_inv o F`` the identity the energy is 0 everywhere and
says nothing about ``z``; pair it with a term that ties ``F`` to the data (the paper's Sec. 2 pairs
it with self-prediction). With ``hidden >= 2 * dim`` the identity is exactly representable, since
``gelu(x) - gelu(-x) = x``.
"""

from __future__ import annotations

from torch import Tensor, nn

from eqtheory.energies.base import Context, Energy, per_sample_sum
from eqtheory.energies.registry import ENERGIES


@ENERGIES.register("consist")
class Consist(Energy):
    """Round-trip error ``||z - F_inv(F(z))||^2`` of a learned forward/inverse pair.

    Args:
        dim: latent size ``d`` (the last dimension of ``z``).
        hidden: width of the hidden layer of ``F`` and of ``F_inv``.

    Shapes:
        ``z: [B, *S, d]`` (usually ``[B, T, d]``); returns ``[B]``.

    Example:
        >>> import torch
        >>> Consist(dim=4)(torch.randn(2, 3, 4)).shape
        torch.Size([2])
    """

    name = "consist"

    def __init__(self, *, dim: int, hidden: int = 64) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"consist needs hidden >= 1, got {hidden}")
        self.forward_map = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.inverse_map = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        del context
        return per_sample_sum((z - self.inverse_map(self.forward_map(z))) ** 2)
