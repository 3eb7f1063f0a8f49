r"""Anderson acceleration (type II, Walker & Ni 2011), batched per sample.

With history ``X_i`` (iterates) and ``F_i = T(X_i)`` for the last ``m`` steps and residuals
``R_i = F_i - X_i``, solve the small constrained least squares

.. math:: \alpha = \arg\min_{\sum_i \alpha_i = 1} \|\textstyle\sum_i \alpha_i R_i\|^2
          \;\Longleftrightarrow\; (R R^\top + \lambda I)\, w = \mathbf{1},\;
          \alpha = w / \mathbf{1}^\top w

(``lambda`` = ``ridge`` times the mean diagonal of ``R R^T``), then
``z_{k+1} = beta sum_i alpha_i F_i + (1 - beta) sum_i alpha_i X_i
= sum_i alpha_i F_i - (1 - beta) sum_i alpha_i R_i``. Each sample solves its own ``m x m``
system. ``T(z) = z - eta G(z)`` (see `eqtheory.problem`).

Cost per step beyond the one evaluation: the Gram matrix ``R R^T`` is kept and updated by one
new row (``O(m n)``, not ``O(m^2 n)``), and the histories ``F``, ``R`` are written in place when
no autograd graph runs through them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.checks import number, optional_number
from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, flat, observe, write_slot
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("anderson")
class Anderson(Solver):
    """Anderson acceleration.

    Args:
        memory: history length ``m >= 1`` (``m = 1`` is damped iteration).
        ridge: relative Tikhonov regulariser ``lambda`` of the least-squares system.
        damping: ``beta`` in (0, 1].
        step_size: ``eta`` of the map (None: 1 for fixed points, 0.1 for energies).
    """

    name = "anderson"

    def __init__(
        self,
        memory: int = 5,
        ridge: float = 1e-8,
        damping: float = 1.0,
        step_size: float | None = None,
    ) -> None:
        super().__init__()
        owner = self.name
        self.memory = number(memory, "memory", owner=owner, at_least=1, whole=True)
        self.ridge = number(ridge, "ridge", owner=owner, at_least=0)
        self.damping = number(damping, "damping", owner=owner, above=0, at_most=1)
        self.step_size = optional_number(step_size, "step_size", owner=owner, above=0)

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        state = observe(problem, z0)
        batch, n = flat(z0).shape
        eta = self.step_size_for(problem, self.step_size)
        r = -eta * flat(state["G"])  # T(z0) - z0
        F, R = z0.new_zeros(batch, self.memory, n), z0.new_zeros(batch, self.memory, n)
        gram = z0.new_zeros(batch, self.memory, self.memory)  # (B, m, m): R_i . R_j
        F[:, 0], R[:, 0], gram[:, 0, 0] = flat(z0) + r, r, (r * r).sum(dim=1)  # fresh tensors
        state.update(F=F, R=R, gram=gram)
        state["count"] = 1
        return state, 1

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        count, eta = state["count"], self.step_size_for(problem, self.step_size)
        k = min(count, self.memory)
        F, R, gram = state["F"], state["R"], state["gram"]
        eye = torch.eye(k, dtype=R.dtype, device=R.device)
        system = gram[:, :k, :k]  # (B, k, k)
        scale = system.diagonal(dim1=1, dim2=2).mean(dim=1)
        finfo = torch.finfo(R.dtype)
        ridge = max(self.ridge, 100 * finfo.eps)  # collinear residuals: solvable in float32 too
        system = system + (ridge * scale + finfo.tiny**0.5)[:, None, None] * eye
        system = torch.where(torch.isfinite(system), system, eye)
        weights, _ = torch.linalg.solve_ex(system, torch.ones_like(system[:, :, 0]))  # (B, k)
        alpha = (weights / weights.sum(dim=1, keepdim=True))[:, None, :]  # (B, 1, k)
        z_new = (alpha @ F[:, :k])[:, 0]  # (B, n)
        if self.damping != 1:
            z_new = z_new - (1 - self.damping) * (alpha @ R[:, :k])[:, 0]
        new = observe(problem, z_new.reshape(state["z"].shape), like=state)
        r = -eta * flat(new["G"])  # T(z_new) - z_new
        slot = count % self.memory
        new["F"] = write_slot(F, 1, slot, z_new + r)
        new["R"] = R = write_slot(R, 1, slot, r)
        dots = (R @ r[:, :, None])[:, :, 0]  # (B, m): R_i . r (zero rows where unused)
        new["gram"] = write_slot(write_slot(gram, 1, slot, dots), 2, slot, dots)
        new["count"] = count + 1
        return new, 1
