"""One sample's NaN mid-solve does not poison the batch's gradients under ``backward="unrolled"``
(issue 9, item 1): the loop evaluates rejected and stopped samples at their last finite iterate,
detached (the double-``where`` pattern), so their branch of the graph carries no NaN."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import eqtheory as eqt
from eqtheory.energies import Energy
from tests.helpers import solver_kinds

DIM = 4
F64 = torch.float64
KINDS = [(name, kind) for name, kind in solver_kinds() if kind in ("minimize", "fixed_point")]
GOOD = torch.tensor([[0.3, -0.2, 0.1, 0.0], [-0.4, 0.2, 0.0, 0.3]], dtype=F64)
BAD = torch.tensor([[6.0, 0.0, 0.0, 0.0]], dtype=F64)  # drives z_0 past 3: sqrt(3 - z_0) is NaN
BENIGN = torch.tensor([[0.1, 0.1, -0.1, 0.2]], dtype=F64)


class BarrierEnergy(Energy):
    """``1/2 z^T (W W^T + I) z - (t_i + b) . z - 0.1 sqrt(3 - z_0)``: smooth where ``z_0 < 3``,
    NaN beyond; the target ``t_i`` is ``context["target"]``."""

    name = "barrier"
    latent_layout = "flat"

    def __init__(self, W: Tensor, b: Tensor) -> None:
        super().__init__()
        self.W, self.b = W, b

    def energy(self, z, context):
        A = self.W @ self.W.T + torch.eye(DIM, dtype=z.dtype)
        shift = context["target"] + self.b
        return 0.5 * ((z @ A) * z).sum(1) - (shift * z).sum(1) - 0.1 * torch.sqrt(3 - z[:, 0])


def _parameters():
    gen = torch.Generator().manual_seed(0)
    W = nn.Parameter(0.3 * torch.randn(DIM, DIM, generator=gen, dtype=F64))
    b = nn.Parameter(0.1 * torch.randn(DIM, generator=gen, dtype=F64))
    return W, b


def _solver(name):
    options = {"step_size": 0.25}
    if name == "diffusion":
        options["sigma_max"] = 0.05
    return eqt.solvers.REGISTRY.build(name, **options)


def _solve(name, kind, targets, W, b):
    z0 = torch.full((targets.shape[0], DIM), 0.1, dtype=F64)
    stop = "grad<1e-12|steps=40"
    if kind == "minimize":
        return eqt.minimize(
            BarrierEnergy(W, b), z0, context={"target": targets}, solver=_solver(name),
            stop=stop,
        )

    def f(z, t):
        return 0.6 * z + 0.3 * torch.tanh(z @ W.T + b) + t - 0.05 * torch.sqrt(3 - z[:, :1])

    return eqt.fixed_point(f, z0, args=(targets,), solver=_solver(name), stop=stop)


def _gradients(name, kind, targets, keep):
    """``d/d(W, b)`` of a loss that reads only the samples ``keep`` of the solution."""
    W, b = _parameters()
    solution = _solve(name, kind, targets, W, b)
    weights = torch.linspace(1, 2, DIM, dtype=F64)
    loss = (torch.sin(solution.z[keep]) * weights).sum()
    loss.backward()
    return solution, W.grad, b.grad


@pytest.mark.parametrize(("name", "kind"), KINDS)
def test_a_masked_nan_sample_leaves_the_other_samples_gradients_exact(name, kind):
    with_bad = torch.cat([GOOD[:1], BAD, GOOD[1:]])
    solution, W_grad, b_grad = _gradients(name, kind, with_bad, [0, 2])
    assert int(solution.status[1]) == eqt.Status.NONFINITE, solution.messages()
    assert int(solution.steps[1]) >= 1, "the bad sample must turn non-finite mid-solve"
    assert torch.isfinite(solution.z).all()
    if _solver(name).deterministic:  # the batch without the bad sample
        _, W_ref, b_ref = _gradients(name, kind, GOOD, [0, 1])
    else:  # noise draws depend on the batch's shape: replace the bad sample instead
        _, W_ref, b_ref = _gradients(name, kind, torch.cat([GOOD[:1], BENIGN, GOOD[1:]]), [0, 2])
    assert torch.isfinite(W_grad).all() and torch.isfinite(b_grad).all(), (W_grad, b_grad)
    torch.testing.assert_close(W_grad, W_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b_grad, b_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backward", ["implicit", "phantom"])
def test_implicit_and_phantom_isolate_the_nan_sample_too(backward):
    W, b = _parameters()
    targets = torch.cat([GOOD[:1], BAD, GOOD[1:]])
    z0 = torch.full((3, DIM), 0.1, dtype=F64)
    solution = eqt.minimize(
        BarrierEnergy(W, b), z0, context={"target": targets}, solver="gd", step_size=0.25,
        stop="grad<1e-12|steps=200", backward=backward,
    )
    (torch.sin(solution.z[[0, 2]])).sum().backward()
    assert int(solution.status[1]) == eqt.Status.NONFINITE
    assert torch.isfinite(W.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.parametrize(("name", "kind"), [("gd", "minimize"), ("picard", "fixed_point")])
def test_the_budget_path_flags_and_freezes_the_nan_sample_like_the_checked_loop(name, kind):
    """``steps=K`` reads nothing back to the host, so the graph guard cannot evaluate a sample
    again at the step where it turns non-finite (`eqtheory.problem.Guard`, ``recheck=False``):
    the forward result (statuses, steps, every iterate) is that of the checked loop; that
    step's evaluation stays in the graph, so the parameters' gradients may not be finite
    (docs/reliability.md)."""
    targets = torch.cat([GOOD[:1], BAD, GOOD[1:]])
    W, b = _parameters()
    budget = _solve_with(name, kind, targets, W, b, stop="steps=40")
    checked = _solve_with(name, kind, targets, W, b, stop="grad<1e-300|steps=40")
    for field in ("z", "status", "steps", "fevals"):
        assert torch.equal(getattr(budget, field), getattr(checked, field)), field
    assert int(budget.status[1]) == eqt.Status.NONFINITE and int(budget.steps[1]) >= 1


def _solve_with(name, kind, targets, W, b, *, stop):
    z0 = torch.full((targets.shape[0], DIM), 0.1, dtype=F64)
    if kind == "minimize":
        return eqt.minimize(BarrierEnergy(W, b), z0, context={"target": targets},
                            solver=_solver(name), stop=stop)
    return eqt.fixed_point(
        lambda z, t: 0.6 * z + 0.3 * torch.tanh(z @ W.T + b) + t - 0.05 * torch.sqrt(3 - z[:, :1]),
        z0, args=(targets,), solver=_solver(name), stop=stop,
    )
