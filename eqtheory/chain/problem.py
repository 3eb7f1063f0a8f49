r"""`ChainProblem`: the fixed point ``z = F(z)``, ``F(z)_t = g(z_{t-1}, h_t)``, ``z_{-1} = s_0``.

Its optimality residual is ``G(z) = z - F(z)`` (as for every fixed point), and it exposes the
chain's structure to the solvers that use it (``sequential``, ``newton``, ``quasi_newton``,
which declare ``solves = {"chain"}``): `shifted` (the previous states), `linearise` (``F(z)`` and
the Jacobians ``J_t = dg/ds`` at ``(z_{t-1}, h_t)``) and `solve_adjoint`. Generic fixed-point
solvers (``picard``, ``anderson``, ...) solve the same map through
``eqt.fixed_point(problem.map_rows, z0, args=(h,))``.

Implicit gradients: at ``z*``, ``dG/dz = I - N`` with ``N`` block-subdiagonal (``N[t, t-1] =
J_t``), so the adjoint system ``(I - N)^T w = dL/dz*`` is the reverse recurrence
``w_t = dL/dz*_t + J_{t+1}^T w_{t+1}`` (`reverse_linear_recurrence`): exact in one reverse
scan, memory independent of the solver's iterations. The ``implicit`` backward mode calls
`solve_adjoint` when a problem has it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from eqtheory.chain.cells import ChainCell
from eqtheory.chain.scan import Method, reverse_linear_recurrence
from eqtheory.problem import Evaluation, Problem
from eqtheory.solution import Solution


class ChainProblem(Problem):
    """A causal chain over ``h: [B, T, d]`` with cell ``g`` and initial state ``s0: [d]``.

    Args:
        cell: the cell ``g(s, h)``.
        h: ``[B, T, d]`` proposals (per sample: the loop may restrict to running samples).
        s0: ``[d]`` initial state, shared by every sample.
        adjoint: how `solve_adjoint` runs the reverse recurrence (``scan`` or ``sequential``).
    """

    kind = "chain"
    default_step_size = 1.0
    restrictable = True

    def __init__(
        self, cell: ChainCell, h: Tensor, s0: Tensor, *, adjoint: Method = "sequential"
    ) -> None:
        if h.dim() != 3 or h.shape[-1] != cell.dim:
            raise ValueError(
                f"a chain over a cell of dim {cell.dim} needs h of shape [B, T, {cell.dim}], "
                f"got {list(h.shape)}"
            )
        if s0.shape != (cell.dim,):
            raise ValueError(f"s0 must have shape [{cell.dim}], got {list(s0.shape)}")
        self.cell, self.h, self.s0, self.adjoint = cell, h, s0, adjoint

    def shifted(self, z: Tensor) -> Tensor:
        """``[B, T, d]`` previous states ``(s_0, z_0, ..., z_{T-2})``."""
        start = self.s0.to(z.dtype).expand(z.shape[0], 1, z.shape[-1])
        return torch.cat([start, z[:, :-1]], dim=1)

    def map(self, z: Tensor) -> Tensor:
        """``F(z): [B, T, d]``."""
        return self.cell(self.shifted(z), self.h)

    def map_rows(self, z: Tensor, h: Tensor) -> Tensor:
        """``F`` as a row-wise map of ``(z, h)`` for `eqtheory.fixed_point` with ``args=(h,)``."""
        return self.cell(self.shifted(z), h)

    def evaluate(self, z: Tensor) -> Evaluation:
        with torch.set_grad_enabled(self.create_graph and torch.is_grad_enabled()):
            return Evaluation(optimality=z - self.map(z), energy=None)

    def has_trainable(self) -> bool:
        tensors = [*self.cell.parameters(), self.h, self.s0]
        return any(t.requires_grad for t in tensors)

    def restrict(self, rows: Tensor) -> ChainProblem:
        restricted = ChainProblem(
            self.cell, self.h.index_select(0, rows), self.s0, adjoint=self.adjoint
        )
        restricted.create_graph = self.create_graph
        return restricted

    def linearise(self, z: Tensor, *, diagonal: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """At ``z: [B, T, d]``: ``F(z)``, the previous states, and ``J [B, T, d, d]``
        (``diagonal``: its diagonals ``[B, T, d]``), ``J_t = dg/ds (z_{t-1}, h_t)``."""
        previous = self.shifted(z)
        fz = self.cell(previous, self.h)
        with torch.no_grad():
            if diagonal:
                jac = self.cell.jacobian_diagonal(previous, self.h)
            else:
                jac = self.cell.jacobian(previous, self.h)
        return fz, previous, jac

    def solve_adjoint(self, z_star: Tensor, v: Tensor) -> Tensor:
        """``w`` with ``(dG/dz)^T w = v`` at ``z_star``: one reverse recurrence,
        ``w_t = v_t + J_{t+1}^T w_{t+1}``; ``sequential``: matrix-free products
        (`ChainCell.transposed_jacobian`), ``scan``: dense Jacobians and a reverse scan."""
        with torch.no_grad():
            previous = self.shifted(z_star)
            if self.adjoint == "scan":
                jac = self.cell.jacobian(previous, self.h)
                return reverse_linear_recurrence(jac.to(v.dtype), v, method="scan")
            product = self.cell.transposed_jacobian(previous, self.h)
            w = [v[:, -1]]
            for t in range(v.shape[1] - 2, -1, -1):
                w.append(v[:, t] + product(w[-1], t + 1))
            return torch.stack(w[::-1], dim=1)


def solve_chain(
    cell: ChainCell,
    h: Tensor,
    s0: Tensor,
    *,
    z0: Tensor | None = None,
    solver: Any = "newton",
    stop: Any = "residual<1e-5|steps=100",
    backward: Any = "implicit",
    readout: Callable[[Tensor], Tensor] | None = None,
    **solver_options: Any,
) -> Solution:
    """Solve the chain ``z = F(z)`` over ``h: [B, T, d]`` from ``z0`` (default: every state at
    the centre of the cell's range, ``cell.centre``, i.e. ``0``).

    The fixed point is unique, so the start changes only the iterations, but for Newton-type
    solvers it decides them. Newton linearises the cell at its iterate; where the iterate is
    saturated (a gate or ``tanh`` near its bound, as the proposals ``h`` and every Picard iterate
    of a trained cell are) the Jacobians vanish, and a wrong state is corrected one position per
    iteration, as by Picard (a bistable cell such as parity keeps a wrong sign until the iterate
    reaches it). At the centre the Jacobians are large and carry the signs along the whole
    sequence in one scan, and clamping to the range turns the first step into nearly the fixed
    point (`tests/test_chain.py` builds a parity GRU: 3 Newton steps from the centre at every
    ``L``, ``L``-bound from saturated starts; ``python -m benchmarks --only chain`` measures
    trained models).

    ``solver`` is a chain solver (``sequential``, ``newton``, ``quasi_newton``) or any
    fixed-point solver (``picard``, ``anderson``, ...: the map is then solved row by row through
    `eqtheory.fixed_point`). Returns the `Solution` (``status``, ``steps``: ``[B]``, per sequence).

    Example:
        >>> import torch
        >>> from eqtheory.chain import GRUCell
        >>> cell = GRUCell(4).double(); h = torch.randn(2, 7, 4, dtype=torch.float64)
        >>> sol = solve_chain(cell, h, torch.zeros(4, dtype=torch.float64), solver="sequential",
        ...                   stop="steps=1")
        >>> problem = ChainProblem(cell, h, torch.zeros(4, dtype=torch.float64))
        >>> bool(torch.allclose(sol.z, problem.map(sol.z), atol=1e-12))
        True
    """
    from eqtheory import solvers
    from eqtheory.api import fixed_point, solve

    start = torch.full_like(h, cell.centre) if z0 is None else z0
    problem = ChainProblem(cell, h, s0)
    solver_obj = solvers.resolve(solver, **solver_options)
    if "chain" not in solver_obj.solves:
        return fixed_point(
            problem.map_rows, start, args=(h,), solver=solver_obj, stop=stop,
            backward=backward, readout=readout,
        )
    return solve(problem, start, solver=solver_obj, stop=stop, backward=backward, readout=readout)
