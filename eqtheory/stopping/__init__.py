"""Stopping rules: per-sample, composable with ``|`` and ``&``, each setting a status.

>>> from eqtheory import stopping
>>> stopping.parse("residual<1e-4|steps=50").spec()
'residual<0.0001|steps=50'
"""

from eqtheory.stopping import (  # noqa: F401  (registration side effects)
    adaptive,
    energy,
    grad,
    halt,
    plateau,
    residual,
    stable,
    steps,
)
from eqtheory.stopping.adaptive import AdaptiveBudget
from eqtheory.stopping.base import AllRule, AnyRule, StepInfo, StopRule
from eqtheory.stopping.energy import EnergyBelow
from eqtheory.stopping.grad import GradNorm
from eqtheory.stopping.halt import Halt, halting_distribution, ponder_regulariser
from eqtheory.stopping.parse import parse, resolve
from eqtheory.stopping.plateau import Plateau
from eqtheory.stopping.registry import STOPPING
from eqtheory.stopping.residual import Residual
from eqtheory.stopping.stable import Stable
from eqtheory.stopping.steps import Steps

REGISTRY = STOPPING


def get(name: str) -> type[StopRule]:
    """The rule class registered as `name`."""
    return STOPPING.get(name)


def names() -> list[str]:
    return STOPPING.names()


__all__ = [
    "REGISTRY", "AdaptiveBudget", "AllRule", "AnyRule", "EnergyBelow", "GradNorm", "Halt",
    "Plateau", "Residual", "Stable", "StepInfo", "StopRule", "Steps", "get", "halting_distribution",
    "names", "parse", "ponder_regulariser", "resolve",
]
