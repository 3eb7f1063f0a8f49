"""Stopping rules: per-sample, composable with ``|`` and ``&``, each setting a status.

>>> from eqtheory import stopping
>>> stopping.parse("residual<1e-4|steps=50").spec()
'residual<0.0001|steps=50'
"""

from eqtheory.registry import import_modules
from eqtheory.stopping.adaptive import AdaptiveBudget
from eqtheory.stopping.base import AllRule, AnyRule, StepInfo, StopRule
from eqtheory.stopping.energy import EnergyBelow
from eqtheory.stopping.grad import GradNorm
from eqtheory.stopping.halt import Halt, halting_distribution, ponder_regulariser
from eqtheory.stopping.parse import parse, resolve, shared
from eqtheory.stopping.plateau import Plateau
from eqtheory.stopping.registry import STOPPING
from eqtheory.stopping.residual import Residual
from eqtheory.stopping.stable import Stable
from eqtheory.stopping.steps import Steps

import_modules(__name__, __path__)  # every rule's file registers itself on import

REGISTRY = STOPPING
get = STOPPING.get  # the rule class registered as a name (did-you-mean error if unknown)
names = STOPPING.names


__all__ = [
    "REGISTRY", "AdaptiveBudget", "AllRule", "AnyRule", "EnergyBelow", "GradNorm", "Halt",
    "Plateau", "Residual", "Stable", "StepInfo", "StopRule", "Steps", "get", "halting_distribution",
    "names", "parse", "ponder_regulariser", "resolve", "shared",
]
