"""Backward (gradient) modes: how a solve is differentiated, separate from how it is solved.

A mode receives the problem, the start ``z0`` and ``run(problem, z0) -> Solution`` (the loop
with the solver and stopping rule bound) and returns the `Solution` whose ``z`` carries the
gradient. Every mode returns the same forward value ``z`` as the plain solve.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from eqtheory.problem import Problem
from eqtheory.solution import Solution

Run = Callable[[Problem, Tensor], Solution]


class BackwardMode(nn.Module):
    """Base class; subclasses set `name` and implement `solve`."""

    name: str = "backward"

    def solve(self, problem: Problem, z0: Tensor, run: Run) -> Solution:
        raise NotImplementedError
