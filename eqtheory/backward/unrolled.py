"""``unrolled``: backpropagate through every solver step (second order for gradient solvers).

Memory grows linearly with the number of steps; exact gradient of the truncated computation
(what the paper uses for K <= 16). No graph is built when gradients are off or nothing the
solve reads requires a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.backward.base import BackwardMode, Run
from eqtheory.backward.registry import BACKWARD
from eqtheory.problem import Problem
from eqtheory.solution import Solution


@BACKWARD.register("unrolled")
class Unrolled(BackwardMode):
    """Differentiate through the loop as it ran."""

    name = "unrolled"

    def solve(self, problem: Problem, z0: Tensor, run: Run) -> Solution:
        problem.create_graph = torch.is_grad_enabled() and (
            z0.requires_grad or problem.has_trainable()
        )
        return run(problem, z0)
