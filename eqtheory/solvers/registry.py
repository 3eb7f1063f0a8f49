"""The solver registry (filled by ``@SOLVERS.register`` in each solver's file)."""

from eqtheory.registry import Registry

SOLVERS: Registry = Registry("solver")
