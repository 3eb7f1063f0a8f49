"""Backward modes: implicit, unrolled and central finite differences agree (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import eqtheory as eqt
from eqtheory.energies import Energy
from eqtheory.energies.logcosh import log_cosh

DIM, B = 4, 3


class ParamEnergy(Energy):
    """``1/2 z^T (W W^T + I) z - b . z + 0.3 sum log cosh(z)`` with parameters W, b."""

    name = "param"
    latent_layout = "flat"

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(0.5 * torch.randn(DIM, DIM, generator=gen, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(DIM, generator=gen, dtype=torch.float64))

    def energy(self, z, context):
        A = self.W @ self.W.T + torch.eye(DIM, dtype=z.dtype)
        return 0.5 * ((z @ A) * z).sum(1) - (z * self.b).sum(1) + 0.3 * log_cosh(z).sum(1)


def _minimize_loss(energy, proposal_param, backward, steps):
    """Loss of the refined state; the proposal z0 = tanh(p) enters through the anchor term."""
    z0 = (
        torch.tanh(proposal_param).expand(B, DIM)
        * torch.arange(1, B + 1, dtype=torch.float64)[:, None]
    )
    full = energy + eqt.energies.Anchor(gamma=2.0)
    sol = eqt.minimize(
        full,
        z0,
        solver="anderson",
        step_size=0.2,
        backward=backward,
        stop=f"grad<1e-13|steps={steps}",
    )
    return (torch.sin(sol.z) * torch.linspace(1, 2, DIM, dtype=torch.float64)).sum()


def _grads(loss_fn, params):
    for p in params:
        p.grad = None
    loss_fn().backward()
    return [p.grad.clone() for p in params]


def _central_differences(loss_fn, params, h=1e-5):
    out = []
    with torch.no_grad():
        for p in params:
            g = torch.zeros_like(p)
            for idx in range(p.numel()):
                flat = p.view(-1)
                old = flat[idx].item()
                flat[idx] = old + h
                up = loss_fn()
                flat[idx] = old - h
                down = loss_fn()
                flat[idx] = old
                g.view(-1)[idx] = (up - down) / (2 * h)
            out.append(g)
    return out


def test_minimize_implicit_unrolled_and_finite_differences_agree():
    energy = ParamEnergy()
    proposal = nn.Parameter(torch.linspace(-0.5, 0.5, DIM, dtype=torch.float64))
    params = [energy.W, energy.b, proposal]
    implicit = _grads(lambda: _minimize_loss(energy, proposal, "implicit", 500), params)
    unrolled = _grads(lambda: _minimize_loss(energy, proposal, "unrolled", 500), params)
    numeric = _central_differences(
        lambda: _minimize_loss(energy, proposal, "implicit", 500), params
    )
    for gi, gu, gn in zip(implicit, unrolled, numeric):
        assert torch.allclose(gi, gn, rtol=1e-6, atol=1e-8)
        assert torch.allclose(gu, gn, rtol=1e-6, atol=1e-8)
    assert implicit[2].abs().sum() > 0.1, "the proposal (anchor) path must carry gradient"


def _fixed_point_loss(W, x, backward, solver="anderson"):
    sol = eqt.fixed_point(
        lambda z: torch.tanh(z @ W.T + x),
        torch.zeros(B, DIM, dtype=torch.float64),
        solver=solver,
        backward=backward,
        stop="grad<1e-13|steps=500",
    )
    return (sol.z**2 * torch.linspace(1, 2, DIM, dtype=torch.float64)).sum()


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_fixed_point_implicit_unrolled_and_finite_differences_agree(solver):
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
    W = nn.Parameter(0.6 * W / torch.linalg.matrix_norm(W, ord=2))
    x = nn.Parameter(torch.randn(B, DIM, generator=gen, dtype=torch.float64))
    params = [W, x]
    implicit = _grads(lambda: _fixed_point_loss(W, x, "implicit", solver), params)
    unrolled = _grads(lambda: _fixed_point_loss(W, x, "unrolled", solver), params)
    numeric = _central_differences(lambda: _fixed_point_loss(W, x, "implicit", solver), params)
    for gi, gu, gn in zip(implicit, unrolled, numeric):
        assert torch.allclose(gi, gn, rtol=1e-6, atol=1e-8)
        assert torch.allclose(gu, gn, rtol=1e-6, atol=1e-8)


def test_phantom_with_many_steps_approaches_the_implicit_gradient():
    """k damped steps from z* give the k-term Neumann series of the implicit adjoint."""
    gen = torch.Generator().manual_seed(2)
    W = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
    W = nn.Parameter(0.5 * W / torch.linalg.matrix_norm(W, ord=2))
    x = nn.Parameter(torch.randn(B, DIM, generator=gen, dtype=torch.float64))
    implicit = _grads(lambda: _fixed_point_loss(W, x, "implicit"), [W, x])
    one = _grads(lambda: _fixed_point_loss(W, x, eqt.backward.Phantom(k=1)), [W, x])
    many = _grads(lambda: _fixed_point_loss(W, x, eqt.backward.Phantom(k=60)), [W, x])
    for gi, g1, gm in zip(implicit, one, many):
        assert torch.allclose(gm, gi, rtol=1e-8, atol=1e-10)
        assert not torch.allclose(g1, gi, rtol=1e-3)


@pytest.mark.parametrize("backward", eqt.backward.names())
def test_every_backward_mode_keeps_the_forward_value(backward):
    energy = ParamEnergy()
    z0 = torch.ones(B, DIM, dtype=torch.float64)
    reference = eqt.minimize(energy, z0, solver="gd", step_size=0.1, stop="steps=30")
    sol = eqt.minimize(energy, z0, solver="gd", step_size=0.1, stop="steps=30", backward=backward)
    assert torch.allclose(sol.z, reference.z, rtol=0, atol=1e-14)
    assert sol.z.requires_grad


def _graph_size(tensor):
    """Number of autograd nodes reachable from ``tensor.grad_fn``."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("backward", eqt.backward.names())
def test_only_unrolled_keeps_a_graph_that_grows_with_the_steps(backward):
    energy = ParamEnergy()
    z0 = torch.ones(B, DIM, dtype=torch.float64)
    sizes = [
        _graph_size(
            eqt.minimize(
                energy, z0, solver="gd", step_size=0.1, stop=f"steps={k}", backward=backward
            ).z
        )
        for k in (5, 50)
    ]
    if backward == "unrolled":
        assert sizes[1] > 5 * sizes[0]
    else:
        assert sizes[0] == sizes[1]


def test_fixed_point_adjoint_accuracy_does_not_depend_on_other_samples():
    """Sample 1's loss is 1e-4 times sample 0's; its implicit gradient must stay as accurate."""
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
    W = 0.9 * W / torch.linalg.matrix_norm(W, ord=2)
    b = nn.Parameter(torch.randn(2, DIM, generator=gen, dtype=torch.float64))
    weights = torch.tensor([[1.0], [1e-4]], dtype=torch.float64)

    def loss(mode):
        sol = eqt.fixed_point(lambda z: z @ W.T + b, torch.zeros(2, DIM, dtype=torch.float64),
                              backward=mode, stop="grad<1e-14|steps=500")
        return (weights * sol.z**2).sum()

    (implicit,) = _grads(lambda: loss("implicit"), [b])
    exact_z = torch.linalg.solve(torch.eye(DIM, dtype=torch.float64) - W, b.detach().T).T
    eye = torch.eye(DIM, dtype=torch.float64)
    exact = torch.linalg.solve(eye - W.T, (2 * weights * exact_z).T).T
    relative = (implicit - exact).norm(dim=1) / exact.norm(dim=1)
    assert (relative < 1e-8).all(), relative


@pytest.mark.parametrize("mode", ["unrolled", "implicit", "phantom"])
@pytest.mark.parametrize("kind", ["minimize", "fixed_point"])
def test_a_backward_mode_wraps_the_solve_and_changes_nothing_it_was_given(mode, kind):
    """The mode runs the problem, or a copy of it that records a graph; the problem keeps its
    ``create_graph`` and guard, and the solution the solve returned keeps its ``z``."""
    from eqtheory.loop import iterate
    from eqtheory.problem import FixedPointProblem, MinimizeProblem

    energy = ParamEnergy()
    z0 = torch.zeros(B, DIM, dtype=torch.float64)
    problem = (MinimizeProblem(energy, {"z0": z0}) if kind == "minimize"
               else FixedPointProblem(lambda z: 0.5 * torch.tanh(z @ energy.W) + energy.b))
    solver, rule = eqt.solvers.resolve("picard", step_size=0.1), eqt.stopping.parse("steps=5")
    inner = []

    def run(p, start):
        solution = iterate(p, solver, rule, start)
        inner.append((p, solution, solution.z))
        return solution

    out = eqt.backward.resolve(mode).solve(problem, z0, run)
    (ran_on, solution, z_returned), = inner
    assert problem.create_graph is False and problem.guard is None
    assert solution.z is z_returned and ran_on.create_graph == (mode == "unrolled")
    assert out.z.requires_grad and torch.equal(out.z.detach(), z_returned.detach())
    assert (out is solution) == (mode == "unrolled")
