r"""Cells ``g(s, h)`` of a causal chain, ``s, h: [..., d] -> [..., d]``, and their Jacobians.

* ``gru`` (`GRUCell`): the gated recurrent unit (Cho et al. 2014),

  .. math:: u = \sigma(W_u h + U_u s + b_u),\; r = \sigma(W_r h + U_r s + b_r),\;
            n = \tanh(W_n h + b_n + r \odot (U_n s + c_n)),\; g = (1 - u) \odot n + u \odot s;

* ``tanh`` (`TanhCell`): the Elman cell ``g = tanh(W h + U s + b)``.

Both map ``[-1, 1]^d`` into itself (``n`` and ``tanh`` lie in ``(-1, 1)``; a GRU output is a
convex combination of ``n`` and ``s``), so with ``s_0`` in ``[-1, 1]^d`` every position of the
chain's fixed point lies in ``[-1, 1]^d``: `range` is what Newton-type solvers clamp their
iterates to. Chain solves start from the range's `centre` (``0``): see `solve_chain` for why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from eqtheory.registry import Registry

CELLS: Registry = Registry("chain cell")


TransposedJacobian = Callable[[Tensor, int], Tensor]
"""``(w: [B, d], t) -> J_t^T w: [B, d]`` for the Jacobians ``J_t`` at one sequence of points."""


class ChainCell(nn.Module):
    """Base class: ``forward(s, h) = update(s, project(h))`` over any leading dims (the input
    projection does not depend on the state, so a sweep computes it once for all positions);
    `range` bounds the outputs."""

    name: str = "cell"
    range: tuple[float, float] = (-1.0, 1.0)

    @property
    def centre(self) -> float:
        """The midpoint of `range`, where chain solves start (`eqtheory.chain.solve_chain`)."""
        low, high = self.range
        return (low + high) / 2

    def __init__(self, dim: int) -> None:
        super().__init__()
        if int(dim) != dim or dim < 1:
            raise ValueError(f"a chain cell needs dim >= 1, got {dim!r}")
        self.dim = int(dim)

    def project(self, h: Tensor) -> Tensor:
        """What the cell reads of its input ``h: [..., d]`` (default: ``h`` itself)."""
        return h

    def update(self, s: Tensor, x: Tensor) -> Tensor:
        """``g`` from the state ``s`` and the projected input ``x = project(h)``."""
        raise NotImplementedError

    def forward(self, s: Tensor, h: Tensor) -> Tensor:
        return self.update(s, self.project(h))

    def transposed_jacobian(self, s: Tensor, h: Tensor) -> TransposedJacobian:
        """At ``(s, h): [B, T, d]``: a function ``(w, t) -> J_t^T w`` (the adjoint recurrence's
        products, one position at a time). Default: through the dense `jacobian`."""
        jac = self.jacobian(s, h)
        return lambda w, t: (jac[:, t].transpose(-1, -2) @ w.unsqueeze(-1)).squeeze(-1)

    def jacobian(self, s: Tensor, h: Tensor) -> Tensor:
        """``dg/ds`` at ``(s, h): [..., d]`` -> ``[..., d, d]`` (row ``i``: output ``i``)."""
        lead = s.shape[:-1]
        flat_s, flat_h = s.reshape(-1, self.dim), h.reshape(-1, self.dim)
        jac = vmap(jacrev(lambda a, b: self(a, b)))(flat_s, flat_h)  # (N, d, d)
        return jac.reshape(*lead, self.dim, self.dim)

    def jacobian_diagonal(self, s: Tensor, h: Tensor) -> Tensor:
        """The diagonal of `jacobian`, ``[..., d]``."""
        return torch.diagonal(self.jacobian(s, h), dim1=-2, dim2=-1)


@CELLS.register("gru")
class GRUCell(ChainCell):
    """The GRU cell (module docstring); ``jacobian`` is analytic (no autograd)."""

    name = "gru"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.input = nn.Linear(dim, 3 * dim)  # W_u, W_r, W_n and b_u, b_r, b_n
        self.state = nn.Linear(dim, 3 * dim)  # U_u, U_r, U_n and their biases (c_n for n)

    def project(self, h: Tensor) -> Tensor:
        return self.input(h)  # (..., 3d): W_u h + b_u, W_r h + b_r, W_n h + b_n

    def _gates(self, s: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_u, x_r, x_n = x.chunk(3, dim=-1)
        s_u, s_r, s_n = self.state(s).chunk(3, dim=-1)
        u = torch.sigmoid(x_u + s_u)
        r = torch.sigmoid(x_r + s_r)
        n = torch.tanh(x_n + r * s_n)
        return u, r, n, s_n

    def update(self, s: Tensor, x: Tensor) -> Tensor:
        u, _, n, _ = self._gates(s, x)
        return n + u * (s - n)  # (1 - u) n + u s

    def transposed_jacobian(self, s: Tensor, h: Tensor) -> TransposedJacobian:
        """Matrix-free: ``J_t^T w = u w + [c_u w, c_r w, c_n w] U`` with ``U`` the stacked state
        weights and the per-position factors ``c`` computed once (``O(d^2)`` per product)."""
        u, r, n, s_n = self._gates(s, self.project(h))
        slope = (1 - n**2) * (1 - u)
        factors = torch.cat([(s - n) * u * (1 - u), s_n * slope * r * (1 - r), r * slope], -1)
        weight = self.state.weight  # (3d, d)
        return lambda w, t: u[:, t] * w + (factors[:, t] * w.repeat(1, 3)) @ weight

    def jacobian(self, s: Tensor, h: Tensor) -> Tensor:
        u, r, n, s_n = self._gates(s, self.project(h))
        d = self.dim
        U_u, U_r, U_n = self.state.weight.split(d, dim=0)  # each (d, d): row = output unit
        du = (u * (1 - u)).unsqueeze(-1) * U_u  # (..., d, d)
        dr = (r * (1 - r)).unsqueeze(-1) * U_r
        dn = (1 - n**2).unsqueeze(-1) * (r.unsqueeze(-1) * U_n + s_n.unsqueeze(-1) * dr)
        eye = torch.eye(d, dtype=s.dtype, device=s.device)
        # g = n + u (s - n): dg = dn + du (s - n) + u (I - dn)
        return dn * (1 - u).unsqueeze(-1) + (s - n).unsqueeze(-1) * du + u.unsqueeze(-1) * eye

    def jacobian_diagonal(self, s: Tensor, h: Tensor) -> Tensor:
        """The diagonal of `jacobian` without the ``d x d`` blocks (``O(d)`` per position):
        ``dg_i/ds_i = (1 - u_i) dn_ii + (s_i - n_i) du_ii + u_i``."""
        u, r, n, s_n = self._gates(s, self.project(h))
        U_u, U_r, U_n = (torch.diagonal(w) for w in self.state.weight.split(self.dim, dim=0))
        du = u * (1 - u) * U_u
        dn = (1 - n**2) * (r * U_n + s_n * r * (1 - r) * U_r)
        return dn * (1 - u) + (s - n) * du + u


@CELLS.register("tanh")
class TanhCell(ChainCell):
    """The Elman cell ``tanh(W h + U s + b)``; ``jacobian`` is analytic."""

    name = "tanh"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.input = nn.Linear(dim, dim)
        self.state = nn.Linear(dim, dim, bias=False)

    def project(self, h: Tensor) -> Tensor:
        return self.input(h)

    def update(self, s: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(x + self.state(s))

    def transposed_jacobian(self, s: Tensor, h: Tensor) -> TransposedJacobian:
        """Matrix-free: ``J_t^T w = ((1 - g_t^2) w) U``."""
        slope = 1 - self(s, h) ** 2
        return lambda w, t: (slope[:, t] * w) @ self.state.weight

    def jacobian(self, s: Tensor, h: Tensor) -> Tensor:
        slope = 1 - self(s, h) ** 2  # (..., d)
        return slope.unsqueeze(-1) * self.state.weight
