"""eqtheory: closed-loop (equilibrium) transformers — energies, solvers, stopping rules.

>>> import torch, eqtheory as eqt
>>> energy = eqt.energies.parse("quadratic", dim=4, mu=1.0, L=4.0)
>>> sol = eqt.minimize(energy, torch.zeros(2, 4), solver="anderson", stop="grad<1e-9|steps=200")
>>> bool(torch.allclose(sol.z, energy.minimiser(2), atol=1e-6))
True
"""

from eqtheory import backward, energies, solvers, stopping, variants
from eqtheory.api import DEFAULT_STOP, fixed_point, minimize
from eqtheory.problem import FixedPointProblem, MinimizeProblem, Problem
from eqtheory.registry import UnknownNameError, UnknownOptionError
from eqtheory.solution import Solution
from eqtheory.spec import SpecError
from eqtheory.status import Status

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STOP", "FixedPointProblem", "MinimizeProblem", "Problem", "Solution", "SpecError",
    "Status", "UnknownNameError", "UnknownOptionError", "backward", "energies", "fixed_point",
    "minimize", "solvers", "stopping", "variants",
]
