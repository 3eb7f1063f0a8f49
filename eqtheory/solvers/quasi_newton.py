r"""``quasi_newton``: Newton over the sequence with diagonal Jacobians (quasi-DEER, Gonzalez et
al. 2024).

The step of ``newton`` with ``J_t`` replaced by its diagonal: the scan multiplies vectors instead of
``d x d`` matrices (``O(T d)`` work per round instead of ``O(T d^3)``), at the price of more
iterations (the neglected off-diagonal coupling converges like Picard). Same safeguards
(``clip``, ``backtrack``, damping) and the same exact-prefix guarantee as ``newton``.
"""

from __future__ import annotations

from eqtheory.solvers.newton import Newton
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("quasi_newton")
class QuasiNewton(Newton):
    """Diagonal-Jacobian Newton over the sequence (options as ``newton``)."""

    name = "quasi_newton"
    diagonal = True
