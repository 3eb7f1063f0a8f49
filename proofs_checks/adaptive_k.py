r"""Claim 5 (Cor. 5, adaptive K: stop at the first step whose energy is below ``tau``).

**Paper.** With ``K = min{k : L(h_k) < tau}`` (capped at ``K_max``) easy inputs stop early and
hard inputs use more steps; with a linear rate the number of steps is logarithmic in
``L(h_0) / tau``.

**What is true.** For GD on ``E(z) = lambda ||z||^2 / 2`` with step ``alpha`` the energy
contracts exactly, ``E(z_k) = q^{2k} E(z_0)``, ``q = |1 - alpha lambda|``, so
``K = min(K_max, ceil(log(tau / E_0) / (2 log q)))`` per sample and, for ``z_0 ~ N(0, s^2 I_d)``
(``2 E_0 / (lambda s^2) ~ chi^2_d``), the expected number of steps is

.. math:: \mathbb E[K] = \sum_{k=0}^{K_{\max}-1} P(E(z_k) \ge \tau)
          = \sum_{k=0}^{K_{\max}-1} \bar F_{\chi^2_d}\!\Big(\frac{2\tau}{\lambda s^2 q^{2k}}\Big).

For a general ``mu_Phi``-strongly convex, ``L_Phi``-smooth energy the corrected Thm. 2 bounds each
sample: ``E(z_k) - E* <= (L_Phi / 2) rho^k ||z_0 - z*||^2``, ``rho`` the squared-distance factor,
so ``K <= ceil(log(2 (tau - E*) / (L_Phi ||z_0 - z*||^2)) / log rho)``.

**Checks.** The toolkit's ``energy<tau|steps=K_max`` rule: Monte Carlo mean of ``solution.steps``
against the formula (within 4 standard errors); per-sample steps against the exact formula; the
per-sample Thm. 2 bound on an anisotropic quadratic (``E*`` in closed form).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import chi2

import eqtheory as eqt
from eqtheory.energies import Quadratic, random_spd
from eqtheory.theory import ProximalConstants
from proofs_checks.record import Record, compare

CLAIM = "5 adaptive K (Cor. 5)"
F64 = torch.float64


@torch.no_grad()  # plain-callable energies: no parameter gradients wanted
def run(*, quick: bool, plots: Path | None) -> list[Record]:
    del plots
    samples = 4000 if quick else 40000
    dim, lam, alpha, scale, tau, k_max = 4, 1.0, 0.1, 1.0, 0.05, 40
    q = abs(1 - alpha * lam)
    generator = torch.Generator().manual_seed(5)
    z0 = scale * torch.randn(samples, dim, generator=generator, dtype=F64)
    sol = eqt.minimize(
        lambda z: 0.5 * lam * (z**2).sum(1),
        z0,
        solver="gd",
        step_size=alpha,
        stop=f"energy<{tau}|steps={k_max}",
    )
    steps = sol.steps.numpy().astype(float)
    k = np.arange(k_max)
    expected = float(chi2.sf(2 * tau / (lam * scale**2 * q ** (2 * k)), dim).sum())
    stderr = float(steps.std(ddof=1) / math.sqrt(samples))
    energy0 = 0.5 * lam * (z0**2).sum(1).numpy()
    exact = np.minimum(k_max, np.maximum(0, np.ceil(np.log(tau / energy0) / (2 * math.log(q)))))
    records = [
        compare(
            CLAIM,
            "|MC mean steps - formula| / standard error",
            abs(steps.mean() - expected) / stderr,
            "<=",
            4.0,
            f"{samples} samples: MC {steps.mean():.4f} vs formula {expected:.4f} (SE {stderr:.4f})",
        ),
        compare(
            CLAIM,
            "samples whose steps differ from the per-sample formula",
            float((steps != exact).sum()),
            "<=",
            0.0,
            "K = min(K_max, ceil(log(tau/E0) / (2 log q)))",
        ),
    ]
    records.append(_thm2_bound(quick))
    return records


def _thm2_bound(quick: bool) -> Record:
    dim, batch = 6, 500 if quick else 5000
    mu, L_l = 0.5, 8.0
    generator = torch.Generator().manual_seed(6)
    energy = Quadratic(
        random_spd(dim, mu, L_l, seed=6), torch.randn(dim, generator=generator, dtype=F64)
    )
    z_star = energy.minimiser(1)
    e_star = float(energy(z_star))
    c = ProximalConstants(mu=mu, L=L_l, gamma=math.inf)
    alpha = 1 / L_l
    rho = c.squared_distance_factor(alpha)
    tau = e_star + 1e-3
    z0 = z_star + 2 * torch.randn(batch, dim, generator=generator, dtype=F64)
    sol = eqt.minimize(energy, z0, solver="gd", step_size=alpha, stop=f"energy<{tau!r}|steps=2000")
    d0 = (z0 - z_star).pow(2).sum(1)
    bound = torch.ceil(torch.log(2 * (tau - e_star) / (L_l * d0)) / math.log(rho)).clamp_min(0)
    excess = float((sol.steps.to(F64) - bound).max())
    return compare(
        CLAIM,
        "max over samples (steps - Thm. 2 step bound)",
        excess,
        "<=",
        0.0,
        f"{batch} samples, anisotropic quadratic mu=0.5, L=8, alpha=1/L",
    )
