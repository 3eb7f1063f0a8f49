"""Contract tests over every registered solver (a new solver is tested once registered)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import eqtheory as eqt
from tests.helpers import build_solver

SOLVERS = eqt.solvers.names()


@pytest.mark.parametrize("name", SOLVERS)
@settings(max_examples=6)
@given(
    dim=st.integers(1, 6),
    condition=st.floats(1.0, 20.0),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 4),
)
def test_converges_to_the_closed_form_minimiser_of_spd_quadratics(
    name, dim, condition, seed, batch
):
    """float64, random SPD A with cond(A) = condition: z* = A^{-1} b to 1e-8."""
    if "minimize" not in eqt.solvers.get(name).solves:
        pytest.skip(f"{name} does not minimise energies")
    mu, L = 1.0, condition
    energy = eqt.energies.Quadratic(dim=dim, mu=mu, L=L, seed=seed)
    z0 = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    note(f"mu={mu} L={L} dim={dim}")
    with torch.no_grad():
        sol = eqt.minimize(
            energy, z0, solver=build_solver(name, 1.0 / (L + mu)), stop="grad<1e-11|steps=20000"
        )
    assert sol.counts() == {"converged": batch}, sol.messages()
    assert torch.allclose(sol.z, energy.minimiser(batch), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", [n for n in SOLVERS if "fixed_point" in eqt.solvers.get(n).solves])
@settings(max_examples=6)
@given(lipschitz=st.floats(0.1, 0.9), dim=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_fixed_point_solvers_solve_contractions(name, lipschitz, dim, seed):
    """z = c tanh(W z + x) with ||W||_2 = 1 is a c-contraction; residual ||f(z) - z|| < 1e-10."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    W = W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(3, dim, generator=gen, dtype=torch.float64)

    def f(z):
        return lipschitz * torch.tanh(z @ W.T + x)

    with torch.no_grad():
        sol = eqt.fixed_point(
            f, torch.zeros(3, dim, dtype=torch.float64), solver=name, stop="grad<1e-12|steps=2000"
        )
    assert sol.counts() == {"converged": 3}, sol.messages()
    assert float((f(sol.z) - sol.z).abs().max()) < 1e-10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", SOLVERS)
def test_runs_on_cuda(name):
    if "minimize" not in eqt.solvers.get(name).solves:
        pytest.skip(f"{name} does not minimise energies")
    energy = eqt.energies.Quadratic(dim=4, mu=1.0, L=4.0).cuda()
    z0 = torch.zeros(2, 4, dtype=torch.float64, device="cuda")
    sol = eqt.minimize(energy, z0, solver=build_solver(name, 0.2), stop="grad<1e-8|steps=5000")
    assert sol.z.is_cuda and sol.counts() == {"converged": 2}
    assert torch.allclose(sol.z, energy.minimiser(2), atol=1e-6)


@pytest.mark.parametrize("name", [n for n in SOLVERS if "fixed_point" in eqt.solvers.get(n).solves])
def test_float32_fixed_point_with_collinear_residuals(name):
    """Identical coordinates make every residual history collinear (a singular Gram matrix)."""
    with torch.no_grad():
        sol = eqt.fixed_point(
            lambda z: 0.5 * torch.tanh(z) + 1,
            torch.zeros(3, 5),
            solver=name,
            stop="residual<1e-6|steps=100",
        )
    assert sol.counts() == {"converged": 3}, sol.messages()




def test_write_slot_out_of_place_keeps_the_buffers_dtype_and_its_other_slots():
    """The path that records a graph (a one-hot mask, no index tensor) writes like the in-place
    path's ``copy_``: the buffer's dtype, only the slot changed, gradients to both inputs."""
    from eqtheory.solvers.base import write_slot

    buffer = torch.zeros(2, 3, 4, requires_grad=True)
    value = torch.arange(8, dtype=torch.float64).reshape(2, 4).requires_grad_()
    written = write_slot(buffer, 1, 2, value)
    assert written.dtype == torch.float32 and written.shape == (2, 3, 4)
    assert torch.equal(written[:, 2], value.float()) and not written[:, :2].any()
    written.sum().backward()
    assert buffer.grad[:, 2].eq(0).all() and buffer.grad[:, :2].eq(1).all()
    assert value.grad.eq(1).all()
