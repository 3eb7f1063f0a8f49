"""Variants: `VariantSpec` (what a variant is, as data) and `build` (the model it names).

The spec lives in `eqtheory.model.spec` and reads only the registries; the build in
`eqtheory.model.build` consumes it. This module is their public name
(``eqt.variants.build(energy="bidir+memory", solver="deq", stop="steps=8")``).

>>> from eqtheory.variants import VariantSpec
>>> VariantSpec.parse(VariantSpec(solver="deq").to_string()).solver
'deq'
"""

from eqtheory.model.build import build
from eqtheory.model.spec import (
    KINDS,
    PLACEMENTS,
    Kind,
    Placement,
    VariantSpec,
    component,
    construct,
    energy_terms,
)

__all__ = [
    "KINDS", "PLACEMENTS", "Kind", "Placement", "VariantSpec", "build", "component", "construct",
    "energy_terms",
]
