r"""Claim 8 (contraction of ``deq`` maps predicts their convergence rate).

**Statement.** For a map ``f`` with fixed point ``z*`` and Jacobian ``J = df/dz (z*)``, Picard
iteration ``z_{k+1} = f(z_k)`` converges locally with asymptotic rate ``rho(J)`` (spectral
radius) and, when ``f`` is globally ``c``-Lipschitz with ``c < 1``, globally with
``||z_k - z*|| <= c^k ||z_0 - z*||``; ``rho(J) <= ||J||_2 <= c``.

**Assumptions.** ``f(z) = c tanh(W z + b)`` with ``||W||_2 = 1``, so ``Lip(f) <= c`` (tanh is
1-Lipschitz). ``rho(J)`` and ``||J||_2`` are estimated at ``z*`` by power iteration with
`torch.func.jvp` / `torch.func.vjp` (`eqtheory.theory.contraction`), and checked against dense
``torch.autograd.functional.jacobian`` eigenvalues. The rate is the Theil-Sen fit of the
toolkit's Picard residual trace ``||z_k - z_{k-1}||`` in ``[1e-12, 1e-4]``.

**Checks.** Per map: the estimated ``rho`` equals the dense spectral radius; the fitted rate is
within 0.02 of ``rho(J)`` (asymptotic) and below ``c``; ``||J||_2 <= c``.
"""

from __future__ import annotations

from pathlib import Path

import torch

import eqtheory as eqt
from eqtheory.testing.strategies import ContractiveMap
from eqtheory.theory import linear_rate, lipschitz_at, spectral_radius
from proofs_checks.record import Record, compare

CLAIM = "8 contraction (deq)"
F64 = torch.float64


def run(*, quick: bool, plots: Path | None) -> list[Record]:
    del plots
    maps = 4 if quick else 16
    dim = 8
    generator = torch.Generator().manual_seed(8)
    estimator_error, rate_error, above_c, norm_over = 0.0, 0.0, -1.0, -1.0
    rows = []
    for i in range(maps):
        c = 0.5 + 0.45 * i / max(maps - 1, 1)
        f = ContractiveMap(
            torch.randn(dim, dim, generator=generator, dtype=F64),
            0.1 * torch.randn(dim, generator=generator, dtype=F64),
            c,
        )
        start = torch.randn(1, dim, generator=generator, dtype=F64)
        sol = eqt.fixed_point(f, start, solver="picard", stop="residual<1e-13|steps=2000")
        z_star = sol.z
        rho = float(spectral_radius(f, z_star, iters=400 if quick else 2000)[0])
        norm = float(lipschitz_at(f, z_star, iters=200)[0])
        jacobian = torch.autograd.functional.jacobian(lambda z, f=f: f(z[None])[0], z_star[0])
        dense = float(torch.linalg.eigvals(jacobian).abs().max())
        residual = sol.trace["residual"][1:, 0]
        asymptotic = torch.where(residual < 1e-4, residual, torch.nan)  # the linearised regime
        fitted = float(linear_rate(asymptotic, floor=1e-12))
        fitted = fitted if fitted == fitted else float("inf")  # too few points counts as failure
        estimator_error = max(estimator_error, abs(rho - dense))
        rate_error = max(rate_error, abs(fitted - dense))
        above_c = max(above_c, fitted - c)
        norm_over = max(norm_over, norm - c)
        rows.append(f"c={c:.2f}: rho={dense:.3f}, fit={fitted:.3f}")
    return [
        compare(
            CLAIM,
            "|power-iteration rho(J*) - dense eigenvalue rho|",
            estimator_error,
            "<=",
            1e-3,
            f"{maps} maps f = c tanh(Wz+b), c in [0.5, 0.95], dim {dim}",
        ),
        compare(
            CLAIM, "max |fitted Picard rate - rho(J*)|", rate_error, "<=", 0.02, "; ".join(rows[:3])
        ),
        compare(
            CLAIM,
            "max (fitted rate - Lipschitz bound c)",
            above_c,
            "<=",
            0.0,
            "global contraction bound",
        ),
        compare(
            CLAIM, "max (||J*||_2 - c)", norm_over, "<=", 1e-9, "local Lipschitz <= global bound"
        ),
    ]
