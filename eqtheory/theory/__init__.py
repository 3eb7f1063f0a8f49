"""Theory estimators shared by `proofs_checks` and diagnostics.

Each file holds one estimator and states its math:

* `curvature`: strong convexity ``mu`` and smoothness ``L`` of an energy at a point
  (Hessian-vector products with `torch.func`, batched Lanczos).
* `contraction`: Lipschitz constant ``||J||_2`` and spectral radius ``rho(J)`` of a map at a
  point (power iteration with `torch.func.jvp` / `torch.func.vjp`).
* `rate`: the empirical linear rate of a trace (robust Theil-Sen fit of ``log value`` vs step).
* `reference`: a scipy (float64, L-BFGS-B, analytic gradient) reference minimiser.
* `trace`: `DistanceTo`, a never-firing stopping rule that traces ``||z_k - z_ref||``.
* `constants`: the paper's Thm. 2 rate formula and the correct bound for the proximal energy.

>>> import torch, eqtheory as eqt
>>> from eqtheory import theory
>>> energy = eqt.energies.parse("quadratic(mu=0.5,L=8.0)", dim=5)
>>> c = theory.curvature(energy, torch.zeros(2, 5, dtype=torch.float64))
>>> [round(float(c.mu[0]), 6), round(float(c.L[0]), 6)]
[0.5, 8.0]
"""

from eqtheory.theory.constants import ProximalConstants, paper_rate
from eqtheory.theory.contraction import lipschitz_at, power_iteration, spectral_radius
from eqtheory.theory.curvature import Curvature, curvature, hessian_vector_product, lanczos
from eqtheory.theory.rate import linear_rate
from eqtheory.theory.reference import reference_minimiser
from eqtheory.theory.trace import DistanceTo

__all__ = [
    "Curvature",
    "DistanceTo",
    "ProximalConstants",
    "curvature",
    "hessian_vector_product",
    "lanczos",
    "linear_rate",
    "lipschitz_at",
    "paper_rate",
    "power_iteration",
    "reference_minimiser",
    "spectral_radius",
]
