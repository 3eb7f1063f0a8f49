r"""Contraction of a map ``f: [B, *S] -> [B, *S]`` at a point, per sample.

With ``J = df/dz`` at ``z`` (per sample; ``f`` is batch-independent):

* Lipschitz constant near ``z``: ``||J||_2 = sqrt(lambda_max(J^T J))``, by power iteration on
  ``v -> J^T (J v)`` (`torch.func.jvp` then `torch.func.vjp`).
* Spectral radius ``rho(J) = lim_k ||J^k v||^{1/k}``: power iteration on ``J`` alone, averaging
  ``log(||J v_j|| / ||v_j||)`` over the second half of the iterations (works for complex or
  repeated dominant eigenvalues, where the Rayleigh quotient does not).

``rho(J(z*)) <= ||J(z*)||_2 <= Lip(f)``; the asymptotic linear rate of Picard iteration at a
fixed point ``z*`` is ``rho(J(z*))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from eqtheory.problem import batch_norm, row_view

Apply = Callable[[Tensor], Tensor]


def _unit(v: Tensor) -> Tensor:
    return v / row_view(batch_norm(v).clamp_min(torch.finfo(v.dtype).tiny), v)


def _start(z: Tensor, seed: int) -> Tensor:
    generator = torch.Generator(device=z.device).manual_seed(seed)
    return _unit(torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device))


def power_iteration(apply: Apply, v0: Tensor, *, iters: int = 100) -> Tensor:
    """Largest eigenvalue (Rayleigh quotient) of a symmetric PSD per-sample operator.

    Args:
        apply: ``[B, *S] -> [B, *S]``; v0: ``[B, *S]`` start; iters: iterations.

    Returns:
        ``[B]`` estimate of ``lambda_max`` (from below).
    """
    v = _unit(v0)
    for _ in range(iters):
        v = _unit(apply(v))
    return (apply(v) * v).reshape(v.shape[0], -1).sum(dim=1)


def lipschitz_at(f: Apply, z: Tensor, *, iters: int = 100, seed: int = 0) -> Tensor:
    """``||J_f(z)||_2`` per sample, ``[B]``.

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
        >>> z = torch.ones(1, 2, dtype=torch.float64)
        >>> round(float(lipschitz_at(lambda z: z @ W.T, z)[0]), 6)
        2.0
    """
    point = z.detach()
    _, pullback = torch.func.vjp(f, point)

    def normal(v: Tensor) -> Tensor:
        jv = torch.func.jvp(f, (point,), (v,))[1]
        return pullback(jv)[0]

    return power_iteration(normal, _start(point, seed), iters=iters).clamp_min(0).sqrt()


def spectral_radius(f: Apply, z: Tensor, *, iters: int = 200, seed: int = 0) -> Tensor:
    """``rho(J_f(z))`` per sample, ``[B]`` (geometric mean growth over the last half).

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)  # nilpotent: rho = 0
        >>> float(spectral_radius(lambda z: z @ W.T, torch.ones(1, 2, dtype=torch.float64))[0])
        0.0
    """
    point = z.detach()
    v = _start(point, seed)
    logs = []
    for _ in range(iters):
        jv = torch.func.jvp(f, (point,), (v,))[1]
        growth = batch_norm(jv)
        logs.append(torch.log(growth))
        v = _unit(jv)
    tail = torch.stack(logs[iters // 2 :])
    return torch.exp(tail.mean(dim=0)).nan_to_num(0.0)
