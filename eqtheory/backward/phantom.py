r"""``phantom``: truncated ("phantom" / Jacobian-free) gradients from k steps at the solution.

Solve without a graph, then take ``k`` damped map steps from ``stopgrad(z*)`` with a graph,
``z <- z - beta eta G(z)``, and backpropagate through those only (k = 1 is the Jacobian-free
backward of Fung et al. 2022). The output keeps the value ``z*`` exactly
(``z* + (z_k - stopgrad z_k)``); its gradient is that of the k steps. Memory is flat in K.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from eqtheory.backward.base import BackwardMode, Run, solve_without_graph
from eqtheory.backward.registry import BACKWARD
from eqtheory.checks import number, optional_number
from eqtheory.problem import Problem
from eqtheory.solution import Solution


@BACKWARD.register("phantom")
class Phantom(BackwardMode):
    """Truncated backward through ``k`` steps.

    Args:
        k: steps to differentiate through (``k >= 1``).
        damping: ``beta`` in (0, 1].
        step_size: ``eta`` (None: 1 for fixed points, 0.1 for energies).
    """

    name = "phantom"

    def __init__(self, k: int = 1, damping: float = 1.0, step_size: float | None = None) -> None:
        super().__init__()
        self.k = number(k, "k", owner="phantom", at_least=1, whole=True)
        self.damping = number(damping, "damping", owner="phantom", above=0, at_most=1)
        self.step_size = optional_number(step_size, "step_size", owner="phantom", above=0)

    def solve(self, problem: Problem, z0: Tensor, run: Run) -> Solution:
        solution, recording = solve_without_graph(problem, z0, run)
        if recording is None:
            return solution
        eta = problem.default_step_size if self.step_size is None else self.step_size
        z_star = solution.z.detach()
        z = z_star
        with torch.enable_grad():
            for _ in range(self.k):
                z = z - self.damping * eta * recording.evaluate(z).optimality
        return replace(solution, z=z_star + (z - z.detach()))
