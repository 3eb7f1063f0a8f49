r"""``implicit``: implicit-function-theorem gradients through the optimality condition.

At a solution ``G(z*; theta) = 0`` (``G = grad E`` for energies, ``z - f(z)`` for fixed points),

.. math:: \frac{dz^*}{d\theta} = -\Big(\frac{\partial G}{\partial z}\Big)^{-1}
          \frac{\partial G}{\partial \theta},
          \qquad \frac{dL}{d\theta} = -w^\top \frac{\partial G}{\partial\theta},\;
          \Big(\frac{\partial G}{\partial z}\Big)^{\!\top} w = \frac{dL}{dz^*}.

``theta`` is everything ``G`` reads with a gradient: parameters and the context, including the
proposal ``z0`` through the anchor term (the d f / d theta path the paper's Eq. 19 drops). The
solve runs without a graph (memory flat in K); the output is
``z* - (G(z*) - stopgrad G(z*))`` (value exactly ``z*``) with a hook that replaces the incoming
gradient by the adjoint solution ``w``. The adjoint is solved by conjugate gradients
(``∂G/∂z`` is the Hessian, symmetric) or by Anderson on ``w = w - (A w - v)``; a problem that
solves its own adjoint system (``problem.solve_adjoint(z*, v)``, e.g. a causal chain's reverse
recurrence, `eqtheory.chain.ChainProblem`) is used instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from eqtheory.backward.base import BackwardMode, Run, solve_without_graph
from eqtheory.backward.linear import conjugate_gradient, fixed_point_adjoint
from eqtheory.backward.registry import BACKWARD
from eqtheory.checks import number, optional_number
from eqtheory.problem import Problem
from eqtheory.solution import Solution


@BACKWARD.register("implicit")
class Implicit(BackwardMode):
    """Implicit differentiation.

    Args:
        adjoint: ``"auto"`` (CG for energies, fixed-point iteration for maps), ``"cg"`` or
            ``"fixed_point"``.
        tol: the adjoint solve's relative tolerance (None: ``eps ** 0.75`` of the dtype, about
            2e-12 in float64 and 6e-6 in float32).
        max_iter: the adjoint solve's iteration cap.
    """

    name = "implicit"

    def __init__(
        self,
        adjoint: Literal["auto", "cg", "fixed_point"] = "auto",
        tol: float | None = None,
        max_iter: int = 200,
    ) -> None:
        super().__init__()
        if adjoint not in ("auto", "cg", "fixed_point"):
            raise ValueError(f"adjoint must be 'auto', 'cg' or 'fixed_point', got {adjoint!r}")
        self.adjoint = adjoint
        self.tol = optional_number(tol, "tol", owner="implicit", above=0)
        self.max_iter = number(max_iter, "max_iter", owner="implicit", at_least=1, whole=True)

    def solve(self, problem: Problem, z0: Tensor, run: Run) -> Solution:
        solution, recording = solve_without_graph(problem, z0, run)
        if recording is None:
            return solution
        z_star = solution.z.detach().requires_grad_()
        with torch.enable_grad():
            optimality = recording.evaluate(z_star).optimality
        if not optimality.requires_grad:
            return solution
        method = self.adjoint
        if method == "auto":
            method = "cg" if problem.kind == "minimize" else "fixed_point"
        linear_solve = conjugate_gradient if method == "cg" else fixed_point_adjoint

        def transposed_jacobian(u: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(optimality, z_star, u, retain_graph=True)
            return vjp

        tol = self.tol if self.tol is not None else torch.finfo(z_star.dtype).eps ** 0.75

        structured = getattr(problem, "solve_adjoint", None)  # e.g. a chain's reverse scan

        def adjoint_hook(grad: Tensor) -> Tensor:
            if structured is not None:
                return structured(z_star.detach(), grad)
            return linear_solve(transposed_jacobian, grad, tol=tol, max_iter=self.max_iter)

        z_out = z_star - (optimality - optimality.detach())
        z_out.register_hook(adjoint_hook)
        return replace(solution, z=z_out)
