r"""``quadratic``: the analytic test energy ``E(z) = 1/2 z^T A z - b^T z`` (per sample).

``A: [n, n]`` symmetric positive definite, ``b: [n]`` or ``[B, n]``, ``z: [B, n]`` (any
``[B, *S]`` is flattened to ``n`` features). Closed forms: minimiser ``z* = A^{-1} b``, strong
convexity ``mu = lambda_min(A)``, smoothness ``L = lambda_max(A)``. Built from a spec, ``A`` has
eigenvalues spread log-uniformly in ``[mu, L]`` with a random orthogonal basis from ``seed``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.energies.base import Context, Energy
from eqtheory.energies.registry import ENERGIES


def random_spd(dim: int, mu: float, L: float, *, seed: int = 0, dtype=torch.float64) -> Tensor:
    """``[dim, dim]`` SPD matrix with eigenvalues log-spaced in ``[mu, L]`` (both included)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
    if dim == 1:
        eigenvalues = torch.tensor([mu], dtype=dtype)
    else:
        eigenvalues = torch.logspace(
            torch.log10(torch.tensor(mu, dtype=dtype)),
            torch.log10(torch.tensor(L, dtype=dtype)),
            dim,
            dtype=dtype,
        )
    return (q * eigenvalues) @ q.T


@ENERGIES.register("quadratic")
class Quadratic(Energy):
    """``1/2 z^T A z - b^T z``.

    Args:
        matrix: ``A [n, n]`` SPD; if None, a random one of size ``dim`` with spectrum ``[mu, L]``.
        shift: ``b [n]`` or ``[B, n]``; if None, a random ``[n]`` vector from ``seed``.
        dim, mu, L, seed: used only when ``matrix`` or ``shift`` is None.
    """

    name = "quadratic"
    latent_layout = "flat"

    def __init__(
        self,
        matrix: Tensor | None = None,
        shift: Tensor | None = None,
        dim: int = 8,
        mu: float = 1.0,
        L: float = 10.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if matrix is None:
            matrix = random_spd(dim, mu, L, seed=seed)
        if shift is None:
            generator = torch.Generator().manual_seed(seed + 1)
            shift = torch.randn(matrix.shape[0], generator=generator, dtype=matrix.dtype)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square [n, n], got {list(matrix.shape)}")
        self.register_buffer("matrix", matrix)
        self.register_buffer("shift", shift)

    @property
    def mu(self) -> float:
        return float(torch.linalg.eigvalsh(self.matrix)[0])

    @property
    def L(self) -> float:  # noqa: N802  (the standard name of the smoothness constant)
        return float(torch.linalg.eigvalsh(self.matrix)[-1])

    def minimiser(self, batch: int = 1) -> Tensor:
        """``A^{-1} b`` as ``[batch, n]`` (or ``[B, n]`` for a per-sample shift)."""
        b = self.shift if self.shift.dim() == 2 else self.shift.expand(batch, -1)
        return torch.linalg.solve(self.matrix, b.T).T

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        del context
        flat = z.reshape(z.shape[0], -1)
        A, b = self.matrix.to(flat.dtype), self.shift.to(flat.dtype)
        return 0.5 * ((flat @ A) * flat).sum(dim=1) - (flat * b).sum(dim=1)
