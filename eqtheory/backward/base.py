"""Backward (gradient) modes: how a solve is differentiated, separate from how it is solved.

A mode wraps the solve: it receives the problem, the start ``z0`` and
``run(problem, z0) -> Solution`` (the loop with the solver and stopping rule bound) and returns
a new `Solution` whose ``z`` carries the gradient. It never changes the problem (it runs a copy
that records a graph or not, `Problem.recording`) nor the solution ``run`` returned. Every mode
returns the same forward value ``z`` as the plain solve.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from eqtheory.problem import Problem
from eqtheory.solution import Solution

Run = Callable[[Problem, Tensor], Solution]


class BackwardMode(nn.Module):
    """Base class; subclasses set `name` and implement `solve`."""

    name: str = "backward"

    def solve(self, problem: Problem, z0: Tensor, run: Run) -> Solution:
        raise NotImplementedError


def solve_without_graph(problem: Problem, z0: Tensor, run: Run) -> tuple[Solution, Problem | None]:
    """The solve of the modes that differentiate at the solution only (``implicit``,
    ``phantom``): no graph (memory flat in K), from ``z0.detach()``.

    Returns:
        The solution, and the problem recording a graph for the mode's backward, or None when
        nothing the solve reads needs a gradient (the solution is then the answer).
    """
    with torch.no_grad():
        solution = run(problem.recording(False), z0.detach())
    return solution, (problem.recording(True) if problem.needs_graph(z0) else None)
