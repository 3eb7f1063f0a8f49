"""``unrolled``: backpropagate through every solver step (second order for gradient solvers).

Memory grows linearly with the number of steps; exact gradient of the truncated computation
(what the paper uses for K <= 16). No graph is built when gradients are off or nothing the
solve reads requires a gradient (`Problem.needs_graph`; a plain callable is probed once at
``z0``): the loop then keeps nothing across steps and returns a plain tensor.
"""

from __future__ import annotations

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
        return run(problem.recording(problem.needs_graph(z0)), z0)
