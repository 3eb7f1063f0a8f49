r"""``newton``: Newton's method over the whole sequence (DEER, Lim et al. 2024).

Linearise the cell at the iterate, ``g(s, h_t) ~ g(z_{t-1}, h_t) + J_t (s - z_{t-1})`` with
``J_t = dg/ds (z_{t-1}, h_t)``; the Newton step for ``G(z) = z - F(z) = 0`` is the solution of the
linear recurrence

.. math:: \hat z_t = J_t \hat z_{t-1} + \big(F(z)_t - J_t z_{t-1}\big), \qquad \hat z_{-1} = s_0,

computed by an associative scan (`eqtheory.chain.scan`, depth ``O(log T)``). Near the solution it
converges quadratically; from far away plain Newton overshoots (products of Jacobians), so the
step is safeguarded:

* ``clip``: the candidate is clamped to the cell's range (``[-1, 1]^d``, where the fixed point
  lies, see `eqtheory.chain.cells`);
* ``backtrack``: a sample whose residual ``||G||`` did not decrease takes the half step
  ``z + (z_hat - z) / 2`` instead (one more evaluation for that sample);
* ``step_size``: a damping ``eta`` in ``(0, 1]``, ``z + eta (z_hat - z)``.

What decides the iterations on saturating cells is the start and ``clip`` together: from
saturated iterates the Jacobians vanish and Newton moves a wrong state one position per step (as
Picard); from the centre of the cell's range (where `eqtheory.chain.solve_chain` starts) the
Jacobian products carry the signs along the sequence but grow like ``|J|^T``, and the clamp
turns them into states in the range (without it the first step diverges).

After ``k`` undamped steps the first ``k`` positions are exact (as for Picard), so ``T`` steps
always suffice. ``diagonal=True`` keeps only the Jacobians' diagonals (quasi-Newton, see
``quasi_newton``). Unrolled backward treats ``J`` as constant; train with ``implicit``.
A step costs one linearisation (a map evaluation and the Jacobians), the scan, and the
residual evaluation (2 map evaluations, 3 for a backtracking sample).
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.chain.scan import apply_jacobian, linear_recurrence
from eqtheory.problem import Problem
from eqtheory.solvers.base import Solver, State, observe
from eqtheory.solvers.registry import SOLVERS
from eqtheory.solvers.sequential import require_chain


@SOLVERS.register("newton")
class Newton(Solver):
    """Newton over the sequence with a scan.

    Args:
        step_size: damping ``eta`` in (0, 1] (None: 1, the full Newton step).
        clip: clamp the candidate to the cell's range.
        backtrack: half step for samples whose residual did not decrease.
        scan: ``"scan"`` (parallel, ``log2 T`` rounds) or ``"sequential"`` (the plain loop).
    """

    name = "newton"
    solves = frozenset({"chain"})
    diagonal = False

    def __init__(
        self,
        step_size: float | None = None,
        clip: bool = True,
        backtrack: bool = True,
        scan: str = "scan",
    ) -> None:
        super().__init__()
        eta = 1.0 if step_size is None else step_size
        if not (isinstance(eta, (int, float)) and 0 < eta <= 1):
            raise ValueError(f"{self.name} needs 0 < step_size <= 1, got {step_size!r}")
        if scan not in ("scan", "sequential"):
            raise ValueError(f"{self.name} scan must be 'scan' or 'sequential', got {scan!r}")
        for flag, value in (("clip", clip), ("backtrack", backtrack)):
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} {flag} must be True or False, got {value!r}")
        self.eta, self.clip, self.backtrack, self.scan = float(eta), clip, backtrack, scan

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        chain = require_chain(problem, self.name)
        z = state["z"]
        fz, previous, jac = chain.linearise(z, diagonal=self.diagonal)
        jac = jac.to(z.dtype)
        affine = fz - apply_jacobian(jac, previous)  # c_t = F(z)_t - J_t z_{t-1}
        s0 = chain.s0.to(z.dtype).expand(z.shape[0], -1)
        target = linear_recurrence(jac, affine, s0, method=self.scan)  # (B, T, d)
        if self.clip:
            low, high = chain.cell.range
            target = target.clamp(low, high)
        candidate = target if self.eta == 1 else z + self.eta * (target - z)
        new = observe(problem, candidate)
        if not self.backtrack:
            return new, 2
        worse = ~(new["grad_norm"] < state["grad_norm"])  # (B,), NaN counts as worse
        if not bool(worse.any()):
            return new, 2
        half = torch.where(worse.view(-1, 1, 1), z + 0.5 * (candidate - z), candidate)
        return observe(problem, half), 2 + worse.long()
