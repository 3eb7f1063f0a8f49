"""Energy terms: each one file, registered; compose with ``+`` and scalar weights.

>>> from eqtheory import energies
>>> energies.parse("quadratic+0.5*anchor=2", dim=4).spec()
'quadratic+0.5*anchor=2'
"""

from __future__ import annotations

from eqtheory.energies.anchor import Anchor
from eqtheory.energies.base import (
    Context,
    Energy,
    EnergyLike,
    FunctionEnergy,
    SumEnergy,
    as_energy,
)
from eqtheory.energies.bidir import Bidir
from eqtheory.energies.chain import Chain
from eqtheory.energies.confidence import Confidence
from eqtheory.energies.consist import Consist
from eqtheory.energies.double_well import DoubleWell
from eqtheory.energies.logcosh import LogCosh
from eqtheory.energies.mask import Mask, random_mask
from eqtheory.energies.memory import Memory
from eqtheory.energies.parse import parse
from eqtheory.energies.quadratic import Quadratic, random_spd
from eqtheory.energies.registry import ENERGIES
from eqtheory.energies.smooth import Smooth
from eqtheory.registry import import_modules

import_modules(__name__, __path__)  # every term's file registers itself on import

REGISTRY = ENERGIES
get = ENERGIES.get  # the energy class registered as a name (did-you-mean error if unknown)
names = ENERGIES.names


__all__ = [
    "REGISTRY", "Anchor", "Bidir", "Chain", "Confidence", "Consist", "Context", "DoubleWell",
    "Energy", "EnergyLike", "FunctionEnergy", "LogCosh", "Mask", "Memory", "Quadratic", "Smooth",
    "SumEnergy", "as_energy", "get", "names", "parse", "random_mask", "random_spd",
]
