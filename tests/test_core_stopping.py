"""Each stopping rule fires when its docs say, with its status, per sample."""

from __future__ import annotations

import math

import pytest
import torch

import eqtheory as eqt
from eqtheory.stopping import halting_distribution, ponder_regulariser

Status = eqt.Status


def _quadratic(curvature):
    c = torch.as_tensor(curvature, dtype=torch.float64)[:, None]
    return lambda z: 0.5 * (c * z**2).sum(1)


def _solve(stop, curvature=(1.0, 4.0), **kw):
    z0 = torch.ones(len(curvature), 3, dtype=torch.float64)
    with torch.no_grad():
        return eqt.minimize(_quadratic(curvature), z0, stop=stop, step_size=0.1, **kw)


def test_residual_absolute_and_relative():
    sol = _solve("residual<1e-3|steps=500")
    res = sol.trace["residual"]
    for i, k in enumerate(sol.steps.tolist()):
        assert res[k, i] < 1e-3 and (res[1:k, i] >= 1e-3).all()
    rel = _solve("residual(tol=1e-2,relative=true)|steps=500")
    assert (rel.status == Status.CONVERGED).all()
    # GD on c/2 z^2 shrinks z by (1 - 0.1 c) per step: relative change 0.1 c, constant
    never = _solve("residual(tol=0.05,relative=true)|steps=20", curvature=(1.0,))
    assert never.status.tolist() == [Status.MAX_STEPS]


def test_grad_energy_and_plateau():
    sol = _solve("grad<1e-4|steps=500")
    g = sol.trace["grad_norm"]
    for i, k in enumerate(sol.steps.tolist()):
        assert g[k, i] < 1e-4 and (g[:k, i] >= 1e-4).all()
    energy = _solve("energy<0.01|steps=500")
    e = energy.trace["energy"]
    for i, k in enumerate(energy.steps.tolist()):
        assert e[k, i] < 0.01 and (e[:k, i] >= 0.01).all()
    plateau = _solve("plateau<1e-6|steps=500")
    e = plateau.trace["energy"]
    for i, k in enumerate(plateau.steps.tolist()):
        assert e[k - 1, i] - e[k, i] < 1e-6


def test_fixed_point_problems_never_fire_energy_rules():
    with torch.no_grad():
        sol = eqt.fixed_point(lambda z: 0.5 * z, torch.ones(2, 3), stop="energy<1|steps=4")
    assert sol.status.tolist() == [Status.MAX_STEPS] * 2


def test_stable_counts_unchanged_predictions():
    # argmax over the last dim of z: a sample whose largest coordinate never changes stops at n
    z0 = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        sol = eqt.minimize(
            lambda z: 0.5 * (z**2).sum(1), z0, stop="stable=3|steps=100", step_size=0.1
        )
    assert sol.status.tolist() == [Status.CONVERGED] and sol.steps.tolist() == [3]
    def readout(z):  # argmax flips where z[:, 0] crosses 1
        return torch.stack([z[:, 0] - 1.0, -z[:, 0] + 1.0], dim=-1)

    with torch.no_grad():
        flip = eqt.minimize(
            lambda z: 0.5 * (z**2).sum(1),
            0.4 * z0,
            stop="stable=2|steps=100",
            step_size=0.2,
            readout=readout,
        )
    # z[:, 0] = 1.2 * 0.8^k crosses 1 at k = 1; unchanged at k = 2 and 3: stops at 3
    assert flip.steps.tolist() == [3]


def test_adaptive_budget_by_entropy():
    confident = torch.tensor([[10.0, -10.0]], dtype=torch.float64)
    uncertain = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    z0 = torch.cat([confident, uncertain])
    with torch.no_grad():
        sol = eqt.minimize(
            lambda z: 0.0 * z.sum(1), z0, stop="adaptive(low=8,high=32,threshold=0.5)"
        )
    assert sol.steps.tolist() == [8, 32]
    assert (sol.status == Status.MAX_STEPS).all()
    assert sol.trace["budget"][0].tolist() == [8.0, 32.0]


def test_halt_stops_when_the_halting_mass_reaches_the_threshold():
    rule = eqt.stopping.Halt(threshold=0.5)
    rule.head = torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        rule.head.weight.zero_()
        rule.head.bias.fill_(math.log(0.2 / 0.8))  # lambda = 0.2 every step
    sol = _solve(rule | eqt.stopping.Steps(50))
    # decisions at k = 0, 1, ...: mass after step k = 1 - 0.8^(k+1) >= 0.5 first at k = 3
    assert sol.steps.tolist() == [3, 3]
    assert (sol.status == Status.HALTED).all()
    lambdas = sol.trace["halt_lambda"][:4]
    assert torch.allclose(lambdas, torch.full_like(lambdas, 0.2))


def test_halting_distribution_sums_to_one_and_regulariser_is_zero_at_the_prior():
    lambdas = torch.full((200, 2), 0.3, dtype=torch.float64)
    p = halting_distribution(lambdas)
    assert torch.allclose(p.sum(0), torch.ones(2, dtype=torch.float64))
    assert float(ponder_regulariser(lambdas, prior=0.3).abs().max()) < 1e-10
    assert (ponder_regulariser(lambdas, prior=0.05) > 0.1).all()


@pytest.mark.parametrize(
    "spec",
    [
        "steps=5",
        "residual<0.0001|steps=50",
        "(residual<0.0001&grad<1e-05)|steps=50",
        "adaptive(low=2,high=4,threshold=0.5)",
        "residual(tol=0.001,relative=1)|stable=2",
        "energy<-1|plateau<1e-06|halt=0.5",
    ],
)
def test_spec_round_trip(spec):
    rule = eqt.stopping.parse(spec)
    assert eqt.stopping.parse(rule.spec()).spec() == rule.spec()


def test_and_reports_converged_when_a_tolerance_part_fired():
    sol = _solve("(grad<10&steps=3)|steps=50")
    assert sol.steps.tolist() == [3, 3]
    assert (sol.status == Status.CONVERGED).all()
