"""Executable versions of the paper's theory: one module per claim, each returning `Record` s.

Every module exposes ``CLAIM`` (its label) and ``run(*, quick, plots) -> list[Record]``; its
docstring states the claim as the paper gives it, what is actually true, and the assumptions.
``python -m proofs_checks [--quick] [--plots DIR] [--only NAME]`` prints one table and exits
non-zero on any failure.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from proofs_checks.record import Record, compare, table

CHECKS = (
    "map",
    "linear_convergence",
    "local_convergence",
    "hard_instances",
    "adaptive_k",
    "special_cases",
    "implicit_gradients",
    "contraction",
    "chain",
)


def load(name: str) -> ModuleType:
    """The check module called `name` (one of `CHECKS`)."""
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; valid: {', '.join(CHECKS)}")
    return importlib.import_module(f"proofs_checks.{name}")


__all__ = ["CHECKS", "Record", "compare", "load", "table"]
