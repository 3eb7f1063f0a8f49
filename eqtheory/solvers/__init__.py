"""Solvers: one protocol (``init``/``step``); `eqtheory.loop` owns stopping and statuses.

>>> from eqtheory import solvers
>>> solvers.names()  # doctest: +NORMALIZE_WHITESPACE
['anderson', 'broyden', 'deq', 'diffusion', 'gd', 'newton', 'picard', 'quasi_newton',
 'sequential', 'ttt']
"""

from __future__ import annotations

from typing import Any

from eqtheory.registry import import_modules
from eqtheory.solvers.anderson import Anderson
from eqtheory.solvers.base import Solver, State, observe
from eqtheory.solvers.broyden import Broyden
from eqtheory.solvers.deq import DEQ
from eqtheory.solvers.diffusion import Diffusion
from eqtheory.solvers.gd import GradientDescent
from eqtheory.solvers.picard import Picard
from eqtheory.solvers.registry import SOLVERS
from eqtheory.solvers.ttt import TestTimeTraining

import_modules(__name__, __path__)  # every solver's file registers itself on import

REGISTRY = SOLVERS
get = SOLVERS.get  # the solver class registered as a name (did-you-mean error if unknown)
names = SOLVERS.names


def resolve(solver: str | Solver, **options: Any) -> Solver:
    """A solver object from a registered name and keyword options, or the object itself."""
    if isinstance(solver, Solver):
        if options:
            raise TypeError(
                f"options {sorted(options)} were given with a solver object; "
                "set them on the object instead"
            )
        return solver
    if isinstance(solver, str):
        return SOLVERS.build(solver, **options)
    raise TypeError(f"solver must be a name or a Solver, got {type(solver).__name__}")


def shared(solver: str | Solver, **options: Any) -> Solver:
    """`resolve`, sharing the instance built for a name and options between solves
    (`eqtheory.registry.Registry.shared`: never one that holds parameters or buffers)."""
    if isinstance(solver, str):
        return SOLVERS.shared(solver, **options)
    return resolve(solver, **options)


__all__ = [
    "DEQ", "REGISTRY", "Anderson", "Broyden", "Diffusion", "GradientDescent", "Picard", "Solver",
    "State", "TestTimeTraining", "get", "names", "observe", "resolve", "shared",
]
