r"""Anderson acceleration (type II, Walker & Ni 2011), batched per sample.

With history ``X_i`` (iterates) and ``F_i = T(X_i)`` for the last ``m`` steps and residuals
``R_i = F_i - X_i``, solve the small constrained least squares

.. math:: \alpha = \arg\min_{\sum_i \alpha_i = 1} \|\textstyle\sum_i \alpha_i R_i\|^2
          \;\Longleftrightarrow\; (R R^\top + \lambda I)\, w = \mathbf{1},\; \alpha = w / \mathbf{1}^\top w

(``lambda`` = ``ridge`` times the mean diagonal of ``R R^T``), then
``z_{k+1} = beta sum_i alpha_i F_i + (1 - beta) sum_i alpha_i X_i``. Each sample solves its own
``m x m`` system. ``T(z) = z - eta G(z)`` (see `eqtheory.problem`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, flat, observe
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
        if int(memory) != memory or memory < 1:
            raise ValueError(f"anderson needs a whole number memory >= 1, got {memory!r}")
        if not 0 < damping <= 1:
            raise ValueError(f"anderson needs 0 < damping <= 1, got {damping!r}")
        self.memory, self.ridge, self.damping = int(memory), float(ridge), float(damping)
        self.step_size = step_size

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        state = observe(problem, z0)
        eta = self.step_size_for(problem, self.step_size)
        z, t = flat(z0), flat(z0 - eta * state["G"])
        history = z.new_zeros(z.shape[0], self.memory, z.shape[1])
        state["X"] = history.clone().index_copy(1, _slot(0, z), z[:, None])
        state["F"] = history.index_copy(1, _slot(0, z), t[:, None])
        state["count"] = 1
        return state, 1

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        count, eta = state["count"], self.step_size_for(problem, self.step_size)
        k = min(count, self.memory)
        X, F = state["X"][:, :k], state["F"][:, :k]  # (B, k, n)
        R = F - X
        gram = R @ R.transpose(1, 2)  # (B, k, k)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1)
        eye = torch.eye(k, dtype=R.dtype, device=R.device)
        tiny = torch.finfo(R.dtype).tiny ** 0.5
        system = gram + (self.ridge * scale + tiny)[:, None, None] * eye
        system = torch.where(torch.isfinite(system), system, eye)
        weights, _ = torch.linalg.solve_ex(system, torch.ones_like(R[:, :, 0]))  # (B, k)
        alpha = weights / weights.sum(dim=1, keepdim=True)
        mixed = self.damping * F + (1 - self.damping) * X
        z_new = (alpha[:, :, None] * mixed).sum(dim=1).reshape(state["z"].shape)
        new = observe(problem, z_new)
        slot = _slot(count % self.memory, z_new)
        new["X"] = state["X"].index_copy(1, slot, flat(z_new)[:, None])
        new["F"] = state["F"].index_copy(1, slot, flat(z_new - eta * new["G"])[:, None])
        new["count"] = count + 1
        return new, 1


def _slot(i: int, like: Tensor) -> Tensor:
    return torch.tensor([i], device=like.device)
