"""Small shared builders for the core tests (not a conftest: imported explicitly)."""

from __future__ import annotations

import torch
from torch import Tensor

import eqtheory as eqt
from eqtheory.energies import Energy
from eqtheory.energies.logcosh import log_cosh
from eqtheory.solvers import Solver


class TargetEnergy(Energy):
    """``1/2 z^T A z - t_i . z + w sum log cosh(z - c)`` with a per-sample target ``t_i`` read
    from ``context["target"]`` ``[B, n]``: strongly convex, smooth, batch-independent."""

    name = "target"
    requires = ("target",)
    latent_layout = "flat"

    def __init__(self, dim: int, *, mu: float = 1.0, L: float = 5.0, weight: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("matrix", eqt.energies.random_spd(dim, mu, L, seed=3))
        self.register_buffer("center", torch.linspace(-1, 1, dim, dtype=torch.float64))
        self.weight = weight

    def energy(self, z: Tensor, context) -> Tensor:
        flat = z.reshape(z.shape[0], -1)
        A, c = self.matrix.to(flat.dtype), self.center.to(flat.dtype)
        quadratic = 0.5 * ((flat @ A) * flat).sum(1) - (context["target"] * flat).sum(1)
        return quadratic + self.weight * log_cosh(flat - c).sum(1)


def build_solver(name: str, step_size: float) -> Solver:
    """Every registered solver, configured with the step size the energy's smoothness allows
    (all solvers take ``step_size``; the contract test checks that too)."""
    return eqt.solvers.REGISTRY.build(name, step_size=step_size)


def solver_kinds() -> list[tuple[str, str]]:
    """(solver name, problem kind) for every registered solver and every kind it declares,
    but ``chain`` (causal chains over ``[B, T, d]``: their contract is tests/test_chain.py)."""
    return [
        (name, kind) for name, cls in eqt.solvers.REGISTRY.items() for kind in sorted(cls.solves)
        if kind != "chain"
    ]
