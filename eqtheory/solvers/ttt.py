r"""Test-time training: gradient steps on per-sample fast weights, then latents from them.

The latents are produced from the proposal by a low-rank adapter with per-sample fast weights
``theta = (U, V, b)``, acting on the last (feature) dimension ``d``:

.. math:: z(\theta) = z_0 + (\hat z_0 U) V + b, \quad U: [d, r],\; V: [r, d],\; b: [d],
          \quad \hat z_0 = z_0 / \|z_0\|_{\text{token}}

(the adapter reads unit-norm token features, so its curvature does not scale with
``||z_0||^2``), and each step is one gradient step on the weights,
``theta <- theta - alpha grad_theta E(z(theta))`` (chain rule: ``grad_b = sum_pos g``,
``grad_V = (hat z_0 U)^T g``, ``grad_U = hat z_0^T (g V^T)`` with ``g = grad_z E``). The problem
in ``theta`` is bilinear, hence nonconvex: stability needs ``alpha (1 + ||U||^2 + ||V||^2) L < 2``
roughly, which the default ``init_scale`` keeps for ``alpha <= 1/L``. ``U`` starts at
``init_scale * I[:, :r]``, ``V`` and ``b`` at 0, so the first latents are ``z_0`` exactly (no
refinement at K = 0) and the start is batch-independent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.checks import number
from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, observe
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("ttt")
class TestTimeTraining(Solver):
    """Test-time training of a low-rank-plus-bias adapter.

    Args:
        rank: ``r >= 0`` (``r = 0``: bias only, which is plain gradient descent on ``z``).
        step_size: ``alpha > 0`` of the inner gradient steps on the fast weights.
        init_scale: scale of ``U``'s initial value.
    """

    name = "ttt"
    __test__ = False  # not a pytest class despite its name
    solves = frozenset({"minimize"})

    def __init__(self, rank: int = 4, step_size: float = 0.1, init_scale: float = 0.1) -> None:
        super().__init__()
        self.rank = number(rank, "rank", owner="ttt", at_least=0, whole=True)
        self.step_size = number(step_size, "step_size", owner="ttt", above=0)
        self.init_scale = number(init_scale, "init_scale", owner="ttt")

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        batch, d = z0.shape[0], z0.shape[-1]
        rank = min(self.rank, d)
        eye = torch.eye(d, rank, dtype=z0.dtype, device=z0.device)
        state = observe(problem, z0)
        state["z0"] = z0
        state["U"] = (self.init_scale * eye).expand(batch, d, rank).clone()
        state["V"] = z0.new_zeros(batch, rank, d)
        state["b"] = z0.new_zeros(batch, d)
        return state, 1

    @staticmethod
    def features(z0: Tensor) -> Tensor:
        """Unit-norm token features ``hat z0: [B, N, d]`` of ``z0: [B, *S, d]``."""
        tokens = z0.reshape(z0.shape[0], -1, z0.shape[-1])  # (B, N, d)
        return tokens / (torch.linalg.vector_norm(tokens, dim=-1, keepdim=True) + 1e-12)

    @classmethod
    def latents(cls, z0: Tensor, U: Tensor, V: Tensor, b: Tensor) -> Tensor:
        """``z(theta) = z0 + (hat z0 U) V + b`` for ``z0: [B, *S, d]``."""
        z = z0.reshape(z0.shape[0], -1, z0.shape[-1]) + (cls.features(z0) @ U) @ V + b[:, None, :]
        return z.reshape(z0.shape)

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        z0, U, V, b = state["z0"], state["U"], state["V"], state["b"]
        tokens = self.features(z0)  # (B, N, d)
        g = state["G"].reshape(tokens.shape)  # (B, N, d)
        projected = tokens @ U  # (B, N, r)
        grad_b = g.sum(dim=1)
        grad_V = projected.transpose(1, 2) @ g
        grad_U = tokens.transpose(1, 2) @ (g @ V.transpose(1, 2))
        rate = self.step_size
        U, V, b = U - rate * grad_U, V - rate * grad_V, b - rate * grad_b
        new = observe(problem, self.latents(z0, U, V, b))
        new.update(z0=z0, U=U, V=V, b=b)
        return new, 1
