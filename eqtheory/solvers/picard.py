r"""Damped fixed-point (Picard / Krasnoselskii-Mann) iteration.

.. math:: z_{k+1} = (1 - \beta) z_k + \beta\, T(z_k), \qquad T(z) = z - \eta\, G(z)

For a fixed point ``T = f`` (``eta = 1``); for an energy ``T`` is a gradient step, so damped
iteration on it is gradient descent with step ``beta * eta``. Converges linearly when ``T`` is a
contraction (rate ``1 - beta + beta * Lip(T)``).
"""

from __future__ import annotations

from torch import Tensor

from eqtheory.checks import number, optional_number
from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, observe
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("picard")
class Picard(Solver):
    """Damped iteration.

    Args:
        damping: ``beta`` in (0, 1].
        step_size: ``eta`` of the map (None: 1 for fixed points, 0.1 for energies).
    """

    name = "picard"

    def __init__(self, damping: float = 1.0, step_size: float | None = None) -> None:
        super().__init__()
        self.damping = number(damping, "damping", owner="picard", above=0, at_most=1)
        self.step_size = optional_number(step_size, "step_size", owner="picard", above=0)

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        scale = self.damping * self.step_size_for(problem, self.step_size)
        step = state["G"] if scale == 1 else scale * state["G"]  # one op fewer for plain f(z)
        return observe(problem, state["z"] - step, like=state), 1
