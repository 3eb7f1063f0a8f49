r"""``sequential``: one Gauss-Seidel sweep of a causal chain in position order.

.. math:: z_t \leftarrow g(z_{t-1}, h_t), \quad t = 0, 1, \dots, T-1

reads each updated state at the next position, so one sweep solves the chain ``z = F(z)``
exactly (the recurrence itself). It is the reference for the other chain solvers and, on one CPU
core, the fastest (``T`` small kernels of ``O(d^2)``); its depth is ``T``. A step costs one sweep
plus the residual evaluation at its result (2 map evaluations). Under ``backward="unrolled"``
its graph is backpropagation through time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.chain.problem import ChainProblem
from eqtheory.checks import optional_number
from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, observe
from eqtheory.solvers.registry import SOLVERS


def require_chain(problem: Problem, solver: str) -> ChainProblem:
    """``problem`` if it is a `ChainProblem`, else a clear error."""
    if not isinstance(problem, ChainProblem):
        raise ValueError(
            f"solver {solver!r} needs a causal chain (eqtheory.chain.solve_chain, or the "
            f"'chain' energy alone with gamma=inf in a model), not a {problem.kind} problem"
        )
    return problem


@SOLVERS.register("sequential")
class Sequential(Solver):
    """Gauss-Seidel sweep over positions.

    Args:
        step_size: accepted for the common solver signature (a model passes its ``alpha``)
            and checked (None or a finite number > 0); a sweep has no step size and does not
            read it.
    """

    name = "sequential"
    solves = frozenset({"chain"})

    def __init__(self, step_size: float | None = None) -> None:
        super().__init__()
        optional_number(step_size, "step_size", owner=self.name, above=0)

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        chain = require_chain(problem, self.name)
        previous = chain.s0.to(state["z"].dtype).expand(state["z"].shape[0], -1)  # (B, d)
        inputs = chain.cell.project(chain.h)  # (B, T, .): once for every position
        states = []
        for t in range(chain.h.shape[1]):
            previous = chain.cell.update(previous, inputs[:, t])
            states.append(previous)
        return observe(problem, torch.stack(states, dim=1)), 2
