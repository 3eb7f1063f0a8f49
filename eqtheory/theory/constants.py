r"""Thm. 2's constants: the paper's rate formula and the correct bound for the proximal energy.

The refined state minimises ``Phi(z) = L(z) + ||z - z0||^2 / (2 gamma)``. If ``L`` is
``mu``-strongly convex (``mu >= 0``: convex suffices) and ``L``-smooth, then ``Phi`` is
``mu_Phi = mu + 1/gamma`` strongly convex and ``L_Phi = L + 1/gamma`` smooth, and gradient descent
``z_{k+1} = z_k - alpha grad Phi(z_k)`` with ``0 < alpha <= 2 / (mu_Phi + L_Phi)`` satisfies
(Nesterov 2004, Thm. 2.1.15)

.. math:: \|z_k - z^*\|^2 \le \Big(1 - \frac{2 \alpha \mu_\Phi L_\Phi}{\mu_\Phi + L_\Phi}\Big)^k
          \|z_0 - z^*\|^2 .

The exact worst case over energies with Hessian spectrum in ``[mu_Phi, L_Phi]`` (attained by
quadratics) is the distance factor ``max(|1 - alpha mu_Phi|, |1 - alpha L_Phi|)`` per step,
valid for ``0 < alpha < 2 / L_Phi``.

The paper's Thm. 2 states ``rho = 1 - 2 alpha mu / (1 + kappa)``, ``kappa = L / mu``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def paper_rate(alpha: float, mu: float, L: float) -> float:  # noqa: N803
    """The paper's Thm. 2 formula ``1 - 2 alpha mu / (1 + L / mu)`` (as printed).

    Example:
        >>> round(paper_rate(0.1, 0.1, 10.0), 6)  # the paper's worked example claims ~0.8
        0.999802
    """
    return 1 - 2 * alpha * mu / (1 + L / mu)


@dataclass(frozen=True)
class ProximalConstants:
    """Constants of ``Phi = L + ||z - z0||^2 / (2 gamma)`` for ``mu``-convex, ``L``-smooth ``L``.

    Example:
        >>> c = ProximalConstants(mu=0.1, L=10.0, gamma=1.0)
        >>> round(c.mu_phi, 6), round(c.L_phi, 6), round(c.squared_distance_factor(0.1), 6)
        (1.1, 11.0, 0.8)
    """

    mu: float
    L: float  # noqa: N815
    gamma: float

    @property
    def mu_phi(self) -> float:
        return self.mu + (0.0 if math.isinf(self.gamma) else 1 / self.gamma)

    @property
    def L_phi(self) -> float:  # noqa: N802
        return self.L + (0.0 if math.isinf(self.gamma) else 1 / self.gamma)

    @property
    def max_step(self) -> float:
        """``2 / (mu_Phi + L_Phi)``, the largest step the bound covers."""
        return 2 / (self.mu_phi + self.L_phi)

    def squared_distance_factor(self, alpha: float) -> float:
        """``1 - 2 alpha mu_Phi L_Phi / (mu_Phi + L_Phi)`` for ``0 < alpha <= max_step``."""
        if not 0 < alpha <= self.max_step * (1 + 1e-12):
            raise ValueError(f"the bound needs 0 < alpha <= {self.max_step:.6g}, got {alpha!r}")
        return 1 - 2 * alpha * self.mu_phi * self.L_phi / (self.mu_phi + self.L_phi)

    def worst_case_distance_factor(self, alpha: float) -> float:
        """``max(|1 - alpha mu_Phi|, |1 - alpha L_Phi|)``: tight per-step distance factor."""
        return max(abs(1 - alpha * self.mu_phi), abs(1 - alpha * self.L_phi))
