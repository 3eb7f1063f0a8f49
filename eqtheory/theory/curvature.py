r"""Strong convexity ``mu`` and smoothness ``L`` of an energy at a point, per sample.

For ``E: [B, *S] -> [B]`` (batch-independent), the Hessian of ``sum_b E_b`` is block diagonal,
so one forward-over-reverse product (`torch.func.jvp` of `torch.func.grad`) gives every sample's
Hessian-vector product ``H_b v_b`` at once. Lanczos with full reorthogonalisation builds, per
sample, an orthonormal Krylov basis ``Q`` (``k`` vectors) and the tridiagonal ``T = Q^T H Q``;

.. math:: \mu(z) \approx \lambda_{\min}(T), \qquad L(z) \approx \lambda_{\max}(T)

Ritz values lie inside ``[lambda_min(H), lambda_max(H)]`` and are exact once ``k = n``
(``n = prod(S)``), so for small ``n`` the estimates are exact up to rounding. On a breakdown
(invariant subspace found) Lanczos restarts with a fresh vector orthogonal to ``Q``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from eqtheory.energies.base import Context, EnergyLike, as_energy

Apply = Callable[[Tensor], Tensor]


def hessian_vector_product(energy: EnergyLike, z: Tensor, context: Context | None = None) -> Apply:
    """``v -> H(z) v`` per sample, ``v: [B, *S]`` (forward-over-reverse with `torch.func`).

    Args:
        energy: an `Energy` or a callable ``z -> [B]``.
        z: ``[B, *S]`` point at which the Hessian is taken.
        context: passed to the energy (e.g. ``{"z0": z0}`` for the anchor).
    """
    energy_obj = as_energy(energy)
    point = z.detach()

    def total(x: Tensor) -> Tensor:
        return energy_obj(x, context).sum()

    gradient = torch.func.grad(total)

    def apply(v: Tensor) -> Tensor:
        return torch.func.jvp(gradient, (point,), (v.to(point.dtype),))[1]

    return apply


def lanczos(apply: Apply, v0: Tensor, *, iters: int) -> Tensor:
    """Ritz values of the symmetric operator ``apply`` per sample.

    Args:
        apply: ``[B, n] -> [B, n]`` symmetric linear map (per sample).
        v0: ``[B, n]`` start vectors (non-zero).
        iters: Krylov dimension ``k`` (capped at ``n``).

    Returns:
        ``[B, k]`` Ritz values in ascending order.
    """
    batch, n = v0.shape
    k = min(int(iters), n)
    generator = torch.Generator(device=v0.device).manual_seed(0x5EED)  # restart vectors
    basis = v0.new_zeros(batch, k, n)
    alphas, betas = v0.new_zeros(batch, k), v0.new_zeros(batch, k)
    q = v0 / torch.linalg.vector_norm(v0, dim=1, keepdim=True)
    for j in range(k):
        basis[:, j] = q
        w = apply(q)
        alphas[:, j] = (w * q).sum(dim=1)
        used = basis[:, : j + 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - torch.einsum("bkn,bk->bn", used, torch.einsum("bkn,bn->bk", used, w))
        beta = torch.linalg.vector_norm(w, dim=1)
        scale = alphas[:, : j + 1].abs().amax(dim=1) + torch.finfo(w.dtype).tiny
        broken = beta <= 1e3 * torch.finfo(w.dtype).eps * scale
        fresh = torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device)
        for _ in range(2):
            fresh = fresh - torch.einsum(
                "bkn,bk->bn", used, torch.einsum("bkn,bn->bk", used, fresh)
            )
        w = torch.where(broken[:, None], fresh, w)
        betas[:, j] = torch.where(broken, 0.0, beta)
        q = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)
    tridiagonal = (
        torch.diag_embed(alphas)
        + torch.diag_embed(betas[:, :-1], 1)
        + torch.diag_embed(betas[:, :-1], -1)
    )
    return torch.linalg.eigvalsh(tridiagonal)


@dataclass(frozen=True)
class Curvature:
    """Per-sample curvature estimates: ``mu [B]`` (smallest) and ``L [B]`` (largest Hessian
    eigenvalue), and all ``ritz [B, k]`` values."""

    mu: Tensor
    L: Tensor
    ritz: Tensor


def curvature(
    energy: EnergyLike, z: Tensor, context: Context | None = None, *, iters: int = 64, seed: int = 0
) -> Curvature:
    """Extreme Hessian eigenvalues of ``energy`` at ``z: [B, *S]`` per sample (Lanczos).

    Exact (to rounding) when ``iters >= n = prod(S)``; otherwise inner estimates
    (``mu`` from above, ``L`` from below), accurate for well-separated extremes.

    Example:
        >>> import torch
        >>> c = curvature(lambda z: (z ** 2).sum(1), torch.ones(3, 4, dtype=torch.float64))
        >>> [round(v, 9) for v in c.mu.tolist()], [round(v, 9) for v in c.L.tolist()]
        ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0])
    """
    apply = hessian_vector_product(energy, z, context)
    shape = z.shape
    generator = torch.Generator(device=z.device).manual_seed(seed)
    v0 = torch.randn(shape, generator=generator, dtype=z.dtype, device=z.device).reshape(
        shape[0], -1
    )
    ritz = lanczos(lambda v: apply(v.reshape(shape)).reshape(shape[0], -1), v0, iters=iters)
    return Curvature(mu=ritz[:, 0], L=ritz[:, -1], ritz=ritz)
