r"""``chain``: a causal chain energy that carries information along the sequence.

.. math:: E(z; x) = \sum_{t=0}^{T-1} \tfrac12 \|z_t - g(z_{t-1}, h_t)\|^2, \qquad z_{-1} = s_0,

with ``h = context["z0"]: [B, T, d]`` (the proposals), ``g`` a gated cell
(`eqtheory.chain.cells`: ``gru`` or ``tanh``) and a learned initial state
``s_0 = tanh(initial)`` (inside the cell's range). ``E = 0`` exactly on the recurrence
``z = F(z)``, ``F(z)_t = g(z_{t-1}, h_t)``; unlike the per-token terms it couples positions, so a
model refines whole sequences with it (``couples_positions``).

The gradient a solver sees (``gradient=``):

* ``"causal"`` (default): the Jacobi field ``z - F(z)``, i.e. ``z_{t-1}`` inside term ``t`` is held
  fixed. The update of ``z_t`` never reads a position after ``t``, a gradient step with step 1 is a
  Picard step of the recurrence, and ``grad E = 0`` exactly at the recurrence. It is not the
  gradient of the value (``exact_gradient = False``); parameters and ``h`` still receive the
  value's exact gradient, and second-order graphs (unrolled backward) follow the field.
* ``"full"``: the exact gradient, which adds ``-J_{t+1}^T (z_{t+1} - g(z_t, h_{t+1}))`` at ``t``:
  the future acts on the past, and gradient descent on it converges poorly (measured in
  docs/performance.md).

Alone and without a prior (``gamma = inf``) a model solves it as the fixed point ``z = F(z)``
(`eqtheory.chain.ChainProblem`, the ``sequential``/``newton``/``quasi_newton`` solvers, implicit
gradients by a reverse scan); composed with other terms it is minimised per sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from eqtheory.chain.cells import CELLS
from eqtheory.energies.base import Context, Energy, per_sample_sum, require
from eqtheory.energies.registry import ENERGIES

if TYPE_CHECKING:  # eqtheory.problem imports the energies package
    from eqtheory.chain.problem import ChainProblem

GRADIENTS = ("causal", "full")


class _CausalValue(torch.autograd.Function):
    """``0.5 ||u_value||^2`` per sample whose gradient in ``z`` is ``u_field`` (with its graph)
    and in ``u_value`` the usual ``u_value`` (reaching parameters and ``h`` only)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, u_field: Tensor, u_value: Tensor) -> Tensor:
        del z, u_field
        return 0.5 * u_value.pow(2).flatten(1).sum(1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        del output
        _, u_field, u_value = inputs
        ctx.save_for_backward(u_field, u_value)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, Tensor]:
        u_field, u_value = ctx.saved_tensors
        scale = grad_out.reshape(-1, *([1] * (u_field.dim() - 1)))
        return scale * u_field, None, scale * u_value


@ENERGIES.register("chain")
class Chain(Energy):
    """Causal chain energy (module docstring).

    Args:
        dim: ``d``, the latents' width (the cell's state and input width).
        cell: ``"gru"`` or ``"tanh"``.
        gradient: ``"causal"`` (Jacobi field) or ``"full"`` (exact gradient).

    Example:
        >>> import torch
        >>> term = Chain(dim=4).double()
        >>> h = torch.randn(2, 5, 4, dtype=torch.float64)
        >>> z = term.problem(h).map(torch.zeros(2, 5, 4, dtype=torch.float64))
        >>> term(z, {"z0": h}).shape   # not yet the fixed point: E > 0 after the first position
        torch.Size([2])
    """

    name = "chain"
    primary = "cell"
    requires = ("z0",)
    couples_positions = True
    exact_gradient = False  # the default, causal gradient; True with gradient="full"

    def __init__(self, dim: int, cell: str = "gru", gradient: str = "causal") -> None:
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"chain gradient must be one of {list(GRADIENTS)}, got {gradient!r}")
        self.cell = CELLS.build(cell, dim=dim)
        self.cell_name, self.gradient = cell, gradient
        self.initial = nn.Parameter(torch.zeros(dim))
        self.exact_gradient = gradient == "full"

    @property
    def s0(self) -> Tensor:
        """``[d]`` initial state ``tanh(initial)``."""
        return torch.tanh(self.initial)

    def problem(self, h: Tensor) -> ChainProblem:
        """The fixed point ``z = F(z)`` of this chain over ``h: [B, T, d]``."""
        from eqtheory.chain.problem import ChainProblem

        return ChainProblem(self.cell, h, self.s0.to(h.dtype))

    def field(self, z: Tensor, context: Context | None) -> Tensor:
        """The causal field ``z - F(z)``, ``[B, T, d]`` (the ``causal`` gradient)."""
        return z - self.problem(require(context, "z0", term=self.name)).map(z)

    def per_position(self, z: Tensor, context: Context | None) -> Tensor:
        """``[B, T]``: ``0.5 ||z_t - g(z_{t-1}, h_t)||^2``, position ``t``'s term (it reads only
        positions ``<= t``, so it is also the energy position ``t`` adds to its prefix)."""
        return 0.5 * (self.field(z, context) ** 2).sum(-1)

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        problem = self.problem(require(context, "z0", term=self.name))
        if self.gradient == "full":
            return 0.5 * per_sample_sum((z - problem.map(z)) ** 2)
        u_field = z - problem.map(z)
        plain = z.detach()
        u_value = plain - problem.map(plain)
        return _CausalValue.apply(z, u_field, u_value)

    def spec(self) -> str:
        options = [f"gradient={self.gradient}"] if self.gradient != "causal" else []
        if self.cell_name != "gru" or options:
            return f"chain({', '.join([f'cell={self.cell_name}', *options])})"
        return "chain"
