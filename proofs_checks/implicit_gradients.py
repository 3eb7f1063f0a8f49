r"""Claim 7 (Eq. 19, implicit gradients of the refined state).

**Paper.** For large K, train with implicit differentiation:
``dloss/dtheta = -(dloss/dh*) H^{-1} d^2 Phi / (dh dtheta)`` with ``H = nabla^2_h Phi(h*)``,
computed by conjugate gradients. The formula differentiates ``Phi`` only through the energy's
own parameters.

**What is true.** ``h*(theta)`` solves ``G(h*, theta) = grad_h Phi = 0``, and ``Phi`` depends on
``theta`` twice: through the learned energy *and* through the proposal ``f = f_theta(x)`` in the
prior ``||h - f||^2 / (2 gamma)``. The implicit-function theorem gives
``dh*/dtheta = -H^{-1} (d_theta G)`` with ``d_theta G`` including
``-(1/gamma) df/dtheta``; Eq. 19 drops that path, so the gradient of every backbone parameter
that reaches the loss only through ``f`` is lost (zero), and shared parameters get a wrong one.

**Checks.** ``Phi = L_phi + ||h - f_W(x)||^2 / (2 gamma)`` with learned ``L_phi`` (shift and
centre parameters) and a backbone ``f_W(x) = tanh(x W^T)``; loss ``||h* - y||^2``. Compared:
``backward="implicit"``, ``backward="unrolled"`` at convergence, central finite differences
(each perturbed problem re-solved by scipy + Newton in float64), and Eq. 19 (implicit with the
proposal detached in the prior). Also a DEQ map: implicit vs finite differences of a plain
fixed-point loop.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

import eqtheory as eqt
from eqtheory.energies import Anchor, Energy, random_spd
from eqtheory.energies.logcosh import log_cosh
from eqtheory.theory import reference_minimiser
from proofs_checks.record import Record, compare

CLAIM = "7 implicit grads (Eq. 19)"
F64 = torch.float64


class _LearnedEnergy(Energy):
    """``1/2 z^T A z - b^T z + sum log cosh(z - c)`` with learned ``b``, ``c``: ``mu >= 0.5``."""

    name = "learned"

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("matrix", random_spd(dim, 0.5, 3.0, seed=12))
        self.shift = nn.Parameter(torch.randn(dim, generator=generator, dtype=F64))
        self.center = nn.Parameter(torch.randn(dim, generator=generator, dtype=F64))

    def energy(self, z: Tensor, context) -> Tensor:
        del context
        quadratic = 0.5 * ((z @ self.matrix) * z).sum(1) - (z * self.shift).sum(1)
        return quadratic + log_cosh(z - self.center).sum(1)


def _flat(grads) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _relative(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def run(*, quick: bool, plots: Path | None) -> list[Record]:
    del plots, quick
    generator = torch.Generator().manual_seed(13)
    dim, inputs, batch, gamma = 4, 3, 3, 1.0
    energy = _LearnedEnergy(dim, generator)
    backbone = nn.Parameter(torch.randn(dim, inputs, generator=generator, dtype=F64))
    x = torch.randn(batch, inputs, generator=generator, dtype=F64)
    y = torch.randn(batch, dim, generator=generator, dtype=F64)
    params = [backbone, energy.shift, energy.center]
    phi = energy + Anchor(gamma=gamma)
    step = 1 / (3.0 + 1.0 + 1 / gamma)

    def loss_of(z: Tensor) -> Tensor:
        return ((z - y) ** 2).sum()

    def toolkit_grad(backward: str, detach_proposal: bool = False) -> Tensor:
        proposal = torch.tanh(x @ backbone.T)
        context = {"z0": proposal.detach()} if detach_proposal else None
        sol = eqt.minimize(
            phi,
            proposal,
            solver="gd",
            step_size=step,
            backward=backward,
            context=context,
            stop="grad<1e-13|steps=3000",
        )
        return _flat(
            torch.autograd.grad(loss_of(sol.z), params, allow_unused=True, materialize_grads=True)
        )

    implicit, unrolled = toolkit_grad("implicit"), toolkit_grad("unrolled")
    eq19 = toolkit_grad("implicit", detach_proposal=True)
    reference = _finite_differences(phi, params, lambda: torch.tanh(x @ backbone.T), loss_of)
    n_backbone = backbone.numel()
    records = [
        compare(
            CLAIM,
            "implicit vs central finite differences (relative)",
            _relative(implicit, reference),
            "<=",
            1e-6,
            f"{reference.numel()} parameters (backbone W + energy b, c); FD re-solved by scipy",
        ),
        compare(
            CLAIM,
            "unrolled at convergence vs finite differences",
            _relative(unrolled, reference),
            "<=",
            1e-6,
            "GD to ||grad|| < 1e-13, backprop through every step",
        ),
        compare(
            CLAIM, "implicit vs unrolled (relative)", _relative(implicit, unrolled), "<=", 1e-8, ""
        ),
        compare(
            CLAIM,
            "Eq. 19 (drops df/dtheta) vs finite differences",
            _relative(eq19, reference),
            ">=",
            0.1,
            f"measurably wrong: backbone gradient norm {float(eq19[:n_backbone].norm()):.3g} "
            f"vs true {float(reference[:n_backbone].norm()):.3g}",
        ),
        compare(
            CLAIM,
            "Eq. 19 on the energy's own parameters vs FD",
            _relative(eq19[n_backbone:], reference[n_backbone:]),
            "<=",
            1e-6,
            "the part Eq. 19 keeps is right",
        ),
    ]
    records.append(_deq_map(generator))
    return records


def _finite_differences(phi, params, proposal_fn, loss_of, eps: float = 1e-5) -> Tensor:
    """Central differences of ``loss(argmin Phi)``, each argmin from scipy + Newton (float64)."""
    grads = []
    with torch.no_grad():
        for param in params:
            flat = param.view(-1)
            for i in range(flat.numel()):
                values = []
                for sign in (1.0, -1.0):
                    original = float(flat[i])
                    flat[i] = original + sign * eps
                    proposal = proposal_fn()
                    z_star = reference_minimiser(phi, proposal, {"z0": proposal})
                    values.append(float(loss_of(z_star)))
                    flat[i] = original
                grads.append((values[0] - values[1]) / (2 * eps))
    return torch.tensor(grads, dtype=F64)


def _deq_map(generator: torch.Generator) -> Record:
    """``f(z) = 0.6 tanh(W z + U x)``: implicit gradient wrt ``U`` vs FD of a plain loop."""
    dim, inputs, batch = 5, 3, 2
    weight = torch.randn(dim, dim, generator=generator, dtype=F64)
    weight = 0.6 * weight / torch.linalg.matrix_norm(weight, ord=2)
    inject = nn.Parameter(torch.randn(dim, inputs, generator=generator, dtype=F64))
    x = torch.randn(batch, inputs, generator=generator, dtype=F64)

    def f(z: Tensor) -> Tensor:
        return torch.tanh(z @ weight.T + x @ inject.T)

    def loop_loss() -> float:
        z = torch.zeros(batch, dim, dtype=F64)
        for _ in range(200):  # 0.6^200: converged to rounding
            z = f(z)
        return float((z**2).sum())

    sol = eqt.fixed_point(
        f,
        torch.zeros(batch, dim, dtype=F64),
        solver="anderson",
        backward="implicit",
        stop="residual<1e-14|steps=300",
    )
    (implicit,) = torch.autograd.grad((sol.z**2).sum(), [inject])
    fd = torch.zeros_like(implicit)
    with torch.no_grad():
        flat = inject.view(-1)
        for i in range(flat.numel()):
            original = float(flat[i])
            flat[i] = original + 1e-6
            plus = loop_loss()
            flat[i] = original - 1e-6
            minus = loop_loss()
            flat[i] = original
            fd.view(-1)[i] = (plus - minus) / 2e-6
    return compare(
        CLAIM,
        "DEQ map: implicit vs FD of a plain fixed-point loop",
        _relative(implicit.reshape(-1), fd.reshape(-1)),
        "<=",
        1e-6,
        "f = tanh(Wz + Ux), ||W|| = 0.6; gradient wrt U",
    )
