"""Property-based laws of the theory (hypothesis; ``ci`` profile by default, see conftest).

One law per test; drawn constants are recorded with ``note``. Instances come from the public
strategies in `eqtheory.testing.strategies`, computed in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import eqtheory as eqt
from eqtheory.energies import Anchor
from eqtheory.stopping import Steps
from eqtheory.testing import strategies as eqst
from eqtheory.theory import (
    DistanceTo,
    ProximalConstants,
    curvature,
    linear_rate,
    lipschitz_at,
    reference_minimiser,
    spectral_radius,
)

F64 = torch.float64
GAMMAS = st.sampled_from([0.3, 1.0, 10.0, math.inf])


def _squared_bound_holds(distance: torch.Tensor, factor: float) -> bool:
    squared = distance**2
    k = torch.arange(squared.shape[0], dtype=F64)[:, None]
    allowed = factor**k * squared[0] * (1 + 1e-9) + 1e-24 * (1 + squared[0])  # rounding
    return bool((squared <= allowed).all())


def _linear_rate_law(instance, gamma: float, fraction: float) -> None:
    constants = ProximalConstants(mu=instance.mu, L=instance.L, gamma=gamma)
    alpha = fraction * constants.max_step
    factor = constants.squared_distance_factor(alpha)
    note(
        f"dim={instance.dim} mu={instance.mu:.4g} L={instance.L:.4g} gamma={gamma} "
        f"alpha={alpha:.4g} "
        f"factor={factor:.6f}"
    )
    phi = instance.energy + Anchor(gamma=gamma)
    z0 = instance.start(2, scale=2.0)
    z_star = reference_minimiser(phi, z0, {"z0": z0})
    sol = eqt.minimize(phi, z0, solver="gd", step_size=alpha, stop=DistanceTo(z_star) | Steps(k=60))
    assert _squared_bound_holds(sol.trace["distance"], factor)


@given(eqst.strongly_convex_energies(dim=st.integers(1, 6)), GAMMAS, st.floats(0.05, 1.0))
def test_gd_obeys_the_corrected_linear_rate_bound(instance, gamma, fraction):
    """Thm. 2 (corrected):
    ||h_k - h*||^2 <= (1 - 2 a mu_Phi L_Phi/(mu_Phi+L_Phi))^k ||h_0 - h*||^2."""
    _linear_rate_law(instance, gamma, fraction)


@pytest.mark.thorough
@settings(max_examples=300)
@given(
    eqst.strongly_convex_energies(dim=st.integers(1, 10), condition=st.floats(1.0, 200.0)),
    GAMMAS,
    st.floats(0.01, 1.0),
)
def test_gd_obeys_the_corrected_linear_rate_bound_thorough(instance, gamma, fraction):
    _linear_rate_law(instance, gamma, fraction)


@given(
    eqst.convex_energies(dim=st.integers(1, 6)),
    st.sampled_from([0.3, 1.0, 10.0]),
    st.floats(0.05, 1.0),
)
def test_prior_makes_a_convex_energy_converge_linearly(instance, gamma, fraction):
    """mu = 0 for L itself; the prior alone gives mu_Phi = 1/gamma and the same bound."""
    _linear_rate_law(instance, gamma, fraction)


@given(
    st.one_of(
        eqst.spd_quadratics(dim=st.integers(1, 6)),
        eqst.strongly_convex_energies(dim=st.integers(1, 6)),
    ),
    st.floats(0.05, 1.0),
)
def test_energy_decreases_monotonically_for_steps_up_to_one_over_L(instance, fraction):
    """Descent lemma: alpha <= 1/L gives E(z_{k+1}) <= E(z_k) - alpha/2 ||grad E(z_k)||^2."""
    alpha = fraction / instance.L
    note(f"mu={instance.mu:.4g} L={instance.L:.4g} alpha={alpha:.4g}")
    sol = eqt.minimize(
        instance.energy, instance.start(3, scale=3.0), solver="gd", step_size=alpha, stop="steps=40"
    )
    energy, grad = sol.trace["energy"], sol.trace["grad_norm"]
    decrease = energy[:-1] - energy[1:]
    allowance = 1e-12 * (energy[:-1].abs() + 1)
    assert bool((decrease >= alpha / 2 * grad[:-1] ** 2 - allowance).all())


@given(
    eqst.strongly_convex_energies(dim=st.integers(1, 6)),
    st.sampled_from([0.3, 1.0, 10.0]),
    st.sampled_from(["gd", "anderson", "broyden"]),
)
def test_equilibrium_equals_scipy_argmin(instance, gamma, solver):
    """Prop. 1: the refined state is argmin Phi (scipy L-BFGS-B + Newton reference, float64)."""
    phi = instance.energy + Anchor(gamma=gamma)
    constants = ProximalConstants(mu=instance.mu, L=instance.L, gamma=gamma)
    note(f"{solver} mu_Phi={constants.mu_phi:.4g} L_Phi={constants.L_phi:.4g}")
    z0 = instance.start(2)
    sol = eqt.minimize(
        phi, z0, solver=solver, step_size=1 / constants.L_phi, stop="grad<1e-11|steps=3000"
    )
    reference = reference_minimiser(phi, z0, {"z0": z0})
    assert bool(sol.converged.all())
    assert float((sol.z - reference).abs().max()) <= 1e-8 / constants.mu_phi


@settings(max_examples=10)  # each example re-solves 2 * dim problems with scipy
@given(eqst.strongly_convex_energies(dim=st.integers(1, 3)), st.sampled_from([0.5, 1.0, 5.0]))
def test_implicit_gradient_equals_central_finite_differences(instance, gamma):
    """d loss(h*(z0)) / d z0 by the implicit backward = central differences of scipy solves."""
    phi = instance.energy + Anchor(gamma=gamma)
    constants = ProximalConstants(mu=instance.mu, L=instance.L, gamma=gamma)
    weights = torch.linspace(-1.0, 1.0, instance.dim, dtype=F64)
    z0 = instance.start(1).requires_grad_()
    sol = eqt.minimize(
        phi,
        z0,
        solver="gd",
        step_size=1 / constants.L_phi,
        backward="implicit",
        stop="grad<1e-12|steps=5000",
    )
    (implicit,) = torch.autograd.grad((sol.z * weights).sum() + (sol.z**2).sum(), z0)
    eps = 1e-5
    fd = torch.zeros(instance.dim, dtype=F64)
    for i in range(instance.dim):
        values = []
        for sign in (1.0, -1.0):
            shifted = z0.detach().clone()
            shifted[0, i] += sign * eps
            z_star = reference_minimiser(phi, shifted, {"z0": shifted})
            values.append(float((z_star * weights).sum() + (z_star**2).sum()))
        fd[i] = (values[0] - values[1]) / (2 * eps)
    note(f"implicit={implicit[0].tolist()} fd={fd.tolist()}")
    assert torch.allclose(implicit[0], fd, rtol=1e-6, atol=1e-8)


@given(eqst.analytic_eqt_energies())
def test_eqt_energy_from_random_terms_converges_linearly_once_gamma_makes_phi_strongly_convex(
    instance,
):
    """Certified law (see `EqTInstance`): random weighted {quadratic, logcosh, double_well} + the
    prior with gamma such that mu_Phi > 0; GD with alpha = 1/L_box obeys Thm. 2's bound."""
    z0 = instance.z0
    context = {"z0": z0}
    z_star = reference_minimiser(instance.phi, z0, context)
    gap = instance.phi(z0, context) - instance.phi(z_star, context)
    radius = float((2 * gap.clamp_min(0) / instance.mu_phi).sqrt().max())
    box = float(z_star.abs().max()) + radius
    L_box = instance.smoothness_on_box(box)
    alpha = 1 / L_box
    factor = 1 - 2 * alpha * instance.mu_phi * L_box / (instance.mu_phi + L_box)
    note(
        f"{instance.spec}: mu_Phi={instance.mu_phi:.4g} L_box={L_box:.4g} (R={box:.3g}) "
        f"factor={factor:.6f}"
    )
    steps = 400 if factor <= 1e-12 else min(400, int(math.log(1e-16) / math.log(factor)) + 1)
    sol = eqt.minimize(
        instance.phi, z0, solver="gd", step_size=alpha, stop=DistanceTo(z_star) | Steps(k=steps)
    )
    assert _squared_bound_holds(sol.trace["distance"], factor)


@given(eqst.spd_quadratics(dim=st.integers(1, 10)))
def test_lanczos_recovers_the_spectrum_ends_of_quadratics(instance):
    est = curvature(instance.energy, instance.start(2), iters=instance.dim)
    note(f"mu={instance.mu} L={instance.L} est={est.mu.tolist()} {est.L.tolist()}")
    assert torch.allclose(est.mu, torch.full_like(est.mu, instance.mu), rtol=1e-8)
    assert torch.allclose(est.L, torch.full_like(est.L, instance.L), rtol=1e-8)


@given(eqst.contractive_maps(dim=st.integers(1, 8)))
def test_contraction_estimates_respect_the_lipschitz_bound(f):
    """rho(J) <= ||J||_2 <= c at any point, and Picard converges at most at rate c."""
    z = torch.randn(2, f.weight.shape[0], generator=torch.Generator().manual_seed(0), dtype=F64)
    rho, norm = spectral_radius(f, z, iters=80), lipschitz_at(f, z, iters=60)
    note(f"c={f.lipschitz:.4g} rho={rho.tolist()} norm={norm.tolist()}")
    assert bool((rho <= norm * (1 + 1e-3) + 1e-12).all())
    assert bool((norm <= f.lipschitz * (1 + 1e-9)).all())
    sol = eqt.fixed_point(f, z, solver="picard", stop="steps=30")
    residual = sol.trace["residual"][1:]
    assert bool((residual[1:] <= f.lipschitz * residual[:-1] * (1 + 1e-9) + 1e-15).all())


@given(st.floats(0.01, 0.99), st.integers(3, 60), st.floats(0.1, 10.0))
def test_linear_rate_recovers_a_geometric_trace(q, length, scale):
    trace = scale * q ** torch.arange(length, dtype=F64)
    assert abs(float(linear_rate(trace)) - q) <= 1e-9


@settings(max_examples=5)
@given(eqst.energy_specs(eqst.variational_terms(), anchor=False), st.integers(0, 2**16))
def test_learned_terms_plus_a_dominant_prior_converge_linearly(spec, seed):
    """Measured, not certified. Random weighted subsets of the registered sequence terms
    (bidir, mask, confidence, memory, ...), freshly initialised; ``H`` = the largest |Hessian
    eigenvalue| of their sum at the proposal (Lanczos). With ``1/gamma = 4H + 1`` the prior
    dominates there, and GD with ``alpha = 1 / (1/gamma + H)`` must converge linearly with a
    gradient-norm rate no worse than the one those local constants predict,
    ``1 - alpha (1/gamma - H)``, plus 0.05 (the curvature is estimated at one point, not
    bounded globally)."""
    torch.manual_seed(seed)
    batch, length, dim, vocab = 2, 5, 8, 3
    learned = eqt.energies.parse(spec, dim=dim, vocab=vocab, window=3).double()
    generator = torch.Generator().manual_seed(seed)
    z0 = torch.randn(batch, length, dim, generator=generator, dtype=F64)
    context = {
        "z0": z0,
        "tokens": torch.randint(0, vocab, (batch, length), generator=generator),
        "mask": torch.rand(batch, length, generator=generator) < 0.3,
    }
    est = curvature(learned, z0, context, iters=20)
    H = float(torch.maximum(est.mu.abs(), est.L.abs()).max())
    gamma = 1 / (4 * H + 1)
    alpha = 1 / (1 / gamma + H)
    predicted = 1 - alpha * (1 / gamma - H)
    phi = learned + Anchor(gamma=gamma)
    sol = eqt.minimize(phi, z0, solver="gd", step_size=alpha, context=context, stop="steps=80")
    grad = sol.trace["grad_norm"]
    rate = linear_rate(grad, floor=1e-12 * float(grad[0].max()))
    note(f"{spec}: H={H:.4g} gamma={gamma:.4g} predicted={predicted:.4f} fitted={rate.tolist()}")
    assert bool((grad[-1] <= 1e-9 * grad[0] + 1e-12).all())
    assert bool((rate <= predicted + 0.05).all())


@pytest.mark.thorough
@settings(max_examples=300)
@given(eqst.analytic_eqt_energies(dim=st.integers(1, 8), batch=st.integers(1, 4)))
def test_eqt_energy_from_random_terms_converges_linearly_thorough(instance):
    test_eqt_energy_from_random_terms_converges_linearly_once_gamma_makes_phi_strongly_convex.hypothesis.inner_test(
        instance
    )
