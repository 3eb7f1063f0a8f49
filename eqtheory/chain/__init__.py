r"""Causal chains: equilibria that carry information along the sequence.

A chain is the fixed point of a causal recurrence over positions ``t = 0..T-1``,

.. math:: z_t = g(z_{t-1}, h_t), \qquad z_{-1} = s_0,

i.e. ``z = F(z)`` with ``F(z)_t = g(z_{t-1}, h_t)``: ``h: [B, T, d]`` are the proposals, ``g`` a
small gated cell (`cells`), ``s_0`` a learned initial state. ``F``'s Jacobian is
block-lower-bidiagonal and nilpotent, so Picard iteration is exact after ``T`` steps, a sweep in
position order (`sequential`) after one, and Newton's linear systems are linear recurrences
solved by an associative scan (`scan`) in ``O(log T)`` depth (DEER, Lim et al. 2024).

* `cells`: the cells ``g`` (``gru``, ``tanh``) with their Jacobians ``dg/ds``;
* `scan`: linear recurrences ``x_t = J_t x_{t-1} + c_t`` (and the reverse, adjoint one) by a
  doubling scan or sequentially;
* `problem`: `ChainProblem`, the fixed point the chain solvers (``sequential``, ``newton``,
  ``quasi_newton``) work on, with its adjoint solved by a reverse recurrence;
* `solve_chain`: the entry point.
"""

from typing import Any

from eqtheory.chain.cells import CELLS, ChainCell, GRUCell, TanhCell
from eqtheory.chain.scan import linear_recurrence, reverse_linear_recurrence


def __getattr__(name: str) -> Any:
    # `problem` imports eqtheory.problem, which imports the energies (and so the chain energy,
    # which imports the cells above): loaded on first use to keep the import order acyclic
    if name in ("ChainProblem", "solve_chain"):
        from eqtheory.chain import problem

        return getattr(problem, name)
    raise AttributeError(f"module 'eqtheory.chain' has no attribute {name!r}")


__all__ = [
    "CELLS", "ChainCell", "ChainProblem", "GRUCell", "TanhCell", "linear_recurrence",
    "reverse_linear_recurrence", "solve_chain",
]
