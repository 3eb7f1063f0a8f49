r"""Claim 3 (Thm. 3, local convergence on nonconvex energies).

**Paper.** Near a non-degenerate local minimum ``h*`` of ``Phi``, gradient descent converges
linearly.

**What is true.** If ``H = nabla^2 Phi(h*)`` has eigenvalues in ``[m, M]``, ``m > 0``, and
``0 < alpha < 2 / M``, then GD started close enough to ``h*`` converges to it with asymptotic
distance factor ``max(|1 - alpha m|, |1 - alpha M|)`` per step (the spectral radius of
``I - alpha H``). Nothing is promised for starts outside the basin: a start at a stationary point
that is not a minimum stays there, a start in another basin goes to another minimum, and a step
above ``2 / M`` is unstable even at ``h*``.

**Checks.** ``Phi`` = tilted double well + a weak prior (``1/gamma`` below the wells' negative
curvature, so ``Phi`` is nonconvex). ``H`` at the scipy minimiser from Lanczos (`torch.func`
Hessian-vector products, exact at this size); predicted rate vs the Theil-Sen fit of the toolkit's
GD distance trace (asymptotic regime: distances in [1e-13, 1e-8]) for starts inside the
basin; starts outside do not reach ``h*``.
"""

from __future__ import annotations

from pathlib import Path

import torch

import eqtheory as eqt
from eqtheory.energies import Anchor, DoubleWell
from eqtheory.stopping import Steps
from eqtheory.theory import DistanceTo, curvature, linear_rate, reference_minimiser
from proofs_checks.record import Record, compare

CLAIM = "3 local rate (Thm. 3)"
F64 = torch.float64


def run(*, quick: bool, plots: Path | None) -> list[Record]:
    del plots
    dim = 4
    generator = torch.Generator().manual_seed(3)
    phi = DoubleWell(scale=1.0, tilt=0.2) + Anchor(gamma=5.0)
    proposal = 0.3 * torch.randn(1, dim, generator=generator, dtype=F64)
    context = {"z0": proposal}
    target = torch.tensor([[0.9, -0.9, 0.9, 0.9]], dtype=F64)  # one chosen basin per coordinate
    z_star = reference_minimiser(phi, target, context)
    hessian = curvature(phi, z_star, context, iters=dim)
    m, M = float(hessian.mu[0]), float(hessian.L[0])
    records = [
        compare(
            CLAIM,
            "local minimum non-degenerate: lambda_min(H)",
            m,
            ">",
            0.0,
            f"Lanczos on torch.func HVPs; spectrum [{m:.4f}, {M:.4f}]",
        )
    ]
    starts = 16 if quick else 128
    over, attained = -1.0, 0.0
    for alpha in (1.0 / M, 1.5 / M):
        predicted = max(abs(1 - alpha * m), abs(1 - alpha * M))
        direction = torch.randn(starts, dim, generator=generator, dtype=F64)
        z0 = z_star + 0.1 * direction / direction.norm(dim=1, keepdim=True)
        ctx = {"z0": proposal.expand(starts, dim)}
        sol = eqt.minimize(
            phi,
            z0,
            solver="gd",
            step_size=alpha,
            context=ctx,
            stop=DistanceTo(z_star) | Steps(k=300),
        )
        distance = sol.trace["distance"]
        local = torch.where(distance < 1e-8, distance, torch.nan)  # the asymptotic regime
        fitted = linear_rate(local, floor=1e-13)
        over = max(over, float((fitted - predicted).max()))
        attained = max(attained, abs(float(fitted.max()) - predicted))
        records.append(
            compare(
                CLAIM,
                f"inside basin, alpha={alpha * M:.1f}/M: max final distance",
                float(distance[-1].max()),
                "<=",
                1e-9,
                f"{starts} starts at distance 0.1 from h*",
            )
        )
    records.append(
        compare(
            CLAIM,
            "inside basin: max over starts (fitted rate - predicted)",
            over,
            "<=",
            1e-2,
            "predicted = max|1 - alpha lambda(H)| from the local Hessian, both steps",
        )
    )
    records.append(
        compare(
            CLAIM,
            "inside basin: |slowest fitted rate - predicted|",
            attained,
            "<=",
            1e-2,
            "the prediction is attained (starts with a component on the slow mode)",
        )
    )
    records += _outside(phi, proposal, z_star, M)
    return records


def _outside(phi, proposal: torch.Tensor, z_star: torch.Tensor, M: float) -> list[Record]:
    """Starts that do not converge to ``h*``."""
    ctx = {"z0": proposal}
    stationary = reference_minimiser(
        lambda z: 0.5 * _grad_sq(phi, z, ctx), torch.zeros_like(z_star)
    )
    sol = eqt.minimize(
        phi, stationary, solver="gd", step_size=1.0 / M, context=ctx, stop="steps=300"
    )
    other = -z_star  # the mirrored basin
    sol_other = eqt.minimize(
        phi, other, solver="gd", step_size=1.0 / M, context=ctx, stop="steps=300"
    )
    near = z_star + 1e-3
    sol_big = eqt.minimize(phi, near, solver="gd", step_size=2.2 / M, context=ctx, stop="steps=200")

    def gap(z: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(z - z_star))

    return [
        compare(
            CLAIM,
            "start at a non-minimum stationary point: distance to h* after 300 steps",
            gap(sol.z),
            ">",
            0.5,
            "gradient zero there: GD never moves",
        ),
        compare(
            CLAIM,
            "start in the mirrored basin: distance to h* after 300 steps",
            gap(sol_other.z),
            ">",
            0.5,
            "converges to a different local minimum",
        ),
        compare(
            CLAIM,
            "step 2.2/M from 1e-3 of h*: distance to h* after 200 steps",
            gap(sol_big.z),
            ">",
            1e-3,
            "alpha > 2/M: h* is an unstable fixed point of GD",
        ),
    ]


def _grad_sq(phi, z: torch.Tensor, context) -> torch.Tensor:
    """``||grad Phi(z)||^2`` per sample (its minimisers at value 0 are the stationary points)."""
    with torch.enable_grad():
        x = z if z.requires_grad else z.requires_grad_()
        (grad,) = torch.autograd.grad(phi(x, context).sum(), x, create_graph=True)
    return (grad**2).sum(dim=1)
