"""``deq``: the default deep-equilibrium solver, Anderson acceleration with memory 5.

Registered separately so that a variant can say "a DEQ solver" without committing to one
method; ``solvers.get("deq")`` is `Anderson` with these defaults.
"""

from __future__ import annotations

from eqtheory.solvers.anderson import Anderson
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("deq")
class DEQ(Anderson):
    """Anderson acceleration with DEQ defaults (``memory=5``, ``ridge=1e-8``, no damping)."""

    name = "deq"
