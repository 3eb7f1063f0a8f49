r"""Limited-memory "good" Broyden's method for the root of ``g(z) = T(z) - z = -eta G(z)``.

The inverse Jacobian is kept as ``J^{-1} ~ -I + U^T V`` (``m`` rank-one terms per sample, rows
of ``U, V: [B, m, n]``); each step takes ``dz = -J^{-1} g`` and applies the Sherman-Morrison
update

.. math:: u = \frac{dz - J^{-1} dg}{dz^\top J^{-1} dg}, \qquad v = J^{-\top} dz

skipping samples whose denominator is tiny. When the memory is full it restarts from
``J^{-1} = -I`` (``restart=True``, the default) or overwrites the oldest pair. For a linear
``g`` in ``n`` dimensions it terminates in at most ``2n`` steps (exact arithmetic, ``m >= 2n``).
Only the ``min(count, m)`` filled pairs enter the products, and the pairs are written in place
when no autograd graph runs through them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.checks import flag, number, optional_number
from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, bdot, flat, observe, write_slot
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("broyden")
class Broyden(Solver):
    """Broyden's method.

    Args:
        memory: rank-one pairs kept, ``m >= 1``.
        restart: when the memory is full, restart from ``-I`` (True) or overwrite the oldest
            pair (False).
        step_size: ``eta`` of the map (None: 1 for fixed points, 0.1 for energies).
    """

    name = "broyden"

    def __init__(
        self, memory: int = 30, restart: bool = True, step_size: float | None = None
    ) -> None:
        super().__init__()
        self.memory = number(memory, "memory", owner="broyden", at_least=1, whole=True)
        self.restart = flag(restart, "restart", owner="broyden")
        self.step_size = optional_number(step_size, "step_size", owner="broyden", above=0)

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        state = observe(problem, z0)
        n = flat(z0).shape[1]
        state["U"] = z0.new_zeros(z0.shape[0], self.memory, n)
        state["V"] = z0.new_zeros(z0.shape[0], self.memory, n)
        state["count"] = 0
        return state, 1

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        eta = self.step_size_for(problem, self.step_size)
        U, V, count = state["U"], state["V"], state["count"]
        if self.restart and count == self.memory:
            U, V, count = torch.zeros_like(U), torch.zeros_like(V), 0
        used = min(count, self.memory)
        g = -eta * flat(state["G"])
        dz = -_apply(U[:, :used], V[:, :used], g)
        z_new = state["z"] + dz.reshape(state["z"].shape)
        new = observe(problem, z_new, like=state)
        dg = -eta * flat(new["G"]) - g
        inv_dg = _apply(U[:, :used], V[:, :used], dg)
        denominator = bdot(dz, inv_dg)
        safe = denominator.abs() > torch.finfo(dz.dtype).eps * (
            torch.linalg.vector_norm(dz, dim=1) * torch.linalg.vector_norm(inv_dg, dim=1)
        )
        scale = torch.where(safe, denominator, 1.0)[:, None]
        u = torch.where(safe[:, None], (dz - inv_dg) / scale, 0.0)
        v = torch.where(safe[:, None], _apply_transposed(U[:, :used], V[:, :used], dz), 0.0)
        slot = count % self.memory
        new["U"] = write_slot(U, 1, slot, u)
        new["V"] = write_slot(V, 1, slot, v)
        new["count"] = count + 1
        return new, 1


def _apply(U: Tensor, V: Tensor, x: Tensor) -> Tensor:
    """``(-I + U^T V) x`` per sample, with ``U, V: [B, m, n]`` stored row-wise."""
    return -x + (U.transpose(1, 2) @ (V @ x[:, :, None]))[:, :, 0]


def _apply_transposed(U: Tensor, V: Tensor, x: Tensor) -> Tensor:
    """``(-I + V^T U) x`` per sample."""
    return -x + (V.transpose(1, 2) @ (U @ x[:, :, None]))[:, :, 0]
