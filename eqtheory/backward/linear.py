"""Batched linear solves for adjoint systems ``A w = v`` given only ``u -> A u`` (per sample)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from eqtheory.problem import row_view


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor], rhs: Tensor, *, tol: float = 1e-10, max_iter: int = 200
) -> Tensor:
    """Solve ``A w = rhs`` for symmetric positive definite ``A`` (per sample, batched CG).

    Stops when every sample has ``||r|| <= tol * ||rhs||`` or after ``max_iter`` iterations.
    """
    w = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = _dot(r, r)
    target = tol**2 * rs
    for _ in range(max_iter):
        if bool((rs <= target).all()):
            break
        Ap = apply(p)
        curvature = _dot(p, Ap)
        alpha = torch.where(curvature > 0, rs / torch.where(curvature > 0, curvature, 1), 0)
        w = w + row_view(alpha, w) * p
        r = r - row_view(alpha, r) * Ap
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, 1), 0)
        p = r + row_view(beta, p) * p
        rs = rs_new
    return w


def fixed_point_adjoint(
    apply: Callable[[Tensor], Tensor], rhs: Tensor, *, tol: float = 1e-10, max_iter: int = 200
) -> Tensor:
    """Solve ``A w = rhs`` as the fixed point ``w = w - (A w - rhs)`` with Anderson acceleration
    (converges when ``I - A`` is a contraction, e.g. ``A = (I - J_f)^T`` for contractive f).

    ``A`` is block-diagonal per sample (linear), so each sample solves for ``rhs_i / ||rhs_i||``
    and the tolerance is relative per sample, whatever the other samples' scales."""
    from eqtheory.api import fixed_point  # the adjoint is itself a fixed-point problem

    norms = torch.linalg.vector_norm(rhs.reshape(rhs.shape[0], -1), dim=1)
    scale = row_view(torch.where(norms > 0, norms, 1), rhs)
    unit = rhs / scale
    solution = fixed_point(
        lambda w: w - (apply(w) - unit), unit, solver="anderson", backward="unrolled",
        stop=f"residual<{max(tol, 1e-300):g}|steps={max_iter}",
    )
    return solution.z * scale
