"""The solver registry (filled by ``@SOLVERS.register`` in each solver's file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eqtheory.registry import Registry

if TYPE_CHECKING:
    from eqtheory.solvers.base import Solver

SOLVERS: Registry[type[Solver]] = Registry("solver")
