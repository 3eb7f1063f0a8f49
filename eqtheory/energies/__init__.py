"""Energy terms: each one file, registered; compose with ``+`` and scalar weights.

>>> from eqtheory import energies
>>> energies.parse("quadratic+0.5*anchor=2", dim=4).spec()
'quadratic+0.5*anchor=2'
"""

from __future__ import annotations

from eqtheory.energies import (  # noqa: F401  (importing a term's file registers it)
    anchor,
    bidir,
    chain,
    confidence,
    consist,
    double_well,
    logcosh,
    mask,
    memory,
    quadratic,
    smooth,
)
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

REGISTRY = ENERGIES


def get(name: str) -> type[Energy]:
    """The energy class registered as `name` (did-you-mean error if unknown)."""
    return ENERGIES.get(name)


def names() -> list[str]:
    return ENERGIES.names()


__all__ = [
    "REGISTRY", "Anchor", "Bidir", "Chain", "Confidence", "Consist", "Context", "DoubleWell",
    "Energy", "EnergyLike", "FunctionEnergy", "LogCosh", "Mask", "Memory", "Quadratic", "Smooth",
    "SumEnergy", "as_energy", "get", "names", "parse", "random_mask", "random_spd",
]
