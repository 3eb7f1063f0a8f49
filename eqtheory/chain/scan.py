r"""Linear recurrences over the sequence, the linear systems of Newton-type chain solvers.

Forward: ``x_t = J_t x_{t-1} + c_t`` for ``t = 0..T-1`` from ``x_{-1} = x0``; reverse (the adjoint
of a causal chain): ``w_t = v_t + J_{t+1}^T w_{t+1}`` for ``t = T-1..0`` with ``w_T = 0``.
``J`` is ``[B, T, d, d]`` (dense) or ``[B, T, d]`` (diagonal); ``c, v, x0`` are ``[B, T, d]`` /
``[B, d]``.

``method="scan"`` composes the affine maps ``x -> J x + c`` with an inclusive Hillis-Steele
doubling scan, ``(J_2, c_2) o (J_1, c_1) = (J_2 J_1, J_2 c_1 + c_2)``: ``ceil(log2 T)`` rounds of
batched products (depth ``O(log T)``, work ``O(T log T d^3)``). ``method="sequential"`` is the
plain loop (depth ``T``, work ``O(T d^2)``): the reference, and the faster one on a CPU core.
PyTorch's own ``torch._higher_order_ops.associative_scan`` is private and a prototype without a
documented contract, so the scan is written here; ``python -m benchmarks --only scan`` times the
three (docs/performance.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Method = Literal["scan", "sequential"]


def apply_jacobian(J: Tensor, x: Tensor) -> Tensor:
    """``J x`` for dense ``J [..., d, d]`` or diagonal ``J [..., d]`` and ``x [..., d]``."""
    if J.dim() == x.dim():
        return J * x
    return (J @ x.unsqueeze(-1)).squeeze(-1)


def linear_recurrence(J: Tensor, c: Tensor, x0: Tensor, *, method: Method = "scan") -> Tensor:
    """``x: [B, T, d]`` with ``x_t = J_t x_{t-1} + c_t``, ``x_{-1} = x0 [B, d]``.

    Example:
        >>> J = torch.full((1, 4, 1), 0.5); c = torch.ones(1, 4, 1)
        >>> linear_recurrence(J, c, torch.zeros(1, 1)).flatten().tolist()
        [1.0, 1.5, 1.75, 1.875]
    """
    diagonal = J.dim() == c.dim()
    if method == "sequential":
        x, out = x0, []
        for t in range(c.shape[1]):
            x = apply_jacobian(J[:, t], x) + c[:, t]
            out.append(x)
        return torch.stack(out, dim=1)
    if method != "scan":
        raise ValueError(f"method must be 'scan' or 'sequential', got {method!r}")
    # fold x0 into the first element: position 0 becomes the constant map x -> J_0 x0 + c_0
    b = torch.cat([(apply_jacobian(J[:, 0], x0) + c[:, 0]).unsqueeze(1), c[:, 1:]], dim=1)
    A = J
    shift, length = 1, c.shape[1]
    while shift < length:
        # element t absorbs element t - shift: (A_t, b_t) o (A_{t-s}, b_{t-s})
        absorbed = apply_jacobian(A[:, shift:], b[:, :-shift]) + b[:, shift:]
        b = torch.cat([b[:, :shift], absorbed], dim=1)
        if shift * 2 < length:  # the last round needs no products of the maps
            head = A[:, :shift]
            tail = A[:, shift:] * A[:, :-shift] if diagonal else A[:, shift:] @ A[:, :-shift]
            A = torch.cat([head, tail], dim=1)
        shift *= 2
    return b


def reverse_linear_recurrence(J: Tensor, v: Tensor, *, method: Method = "scan") -> Tensor:
    """``w: [B, T, d]`` with ``w_t = v_t + J_{t+1}^T w_{t+1}``, ``w_{T-1} = v_{T-1}``.

    This solves ``(I - N)^T w = v`` for the block-subdiagonal ``N`` with blocks ``J_t``
    (``N[t, t-1] = J_t``): the adjoint system of a causal chain at its fixed point.
    """
    Jt = J if J.dim() == v.dim() else J.transpose(-1, -2)
    # reversed time s = T-1-t: w_s = Jt_{s-1}' w_{s-1} + v_s, with the first map unused (x0 = 0)
    flipped = torch.flip(Jt[:, 1:], dims=[1])  # the map into reversed position s >= 1
    maps = torch.cat([torch.zeros_like(Jt[:, :1]), flipped], dim=1)
    w = linear_recurrence(maps, torch.flip(v, dims=[1]), torch.zeros_like(v[:, 0]), method=method)
    return torch.flip(w, dims=[1])
