"""The loop's per-sample guarantees: statuses, NaN isolation, bitwise freezing, batch
independence."""

from __future__ import annotations

import pytest
import torch

import eqtheory as eqt
from eqtheory.stopping.base import StopRule
from tests.helpers import TargetEnergy, build_solver, solver_kinds

DIM = 4


class Recorder(StopRule):
    """Wraps a rule and keeps a copy of every iterate it checks, ``seen[k]`` after k steps."""

    name = "recorder"

    def __init__(self, rule: StopRule) -> None:
        super().__init__()
        self.rule, self.seen = rule, []

    def init(self, info):
        return self.rule.init(info)

    def check(self, info, state):
        self.seen.append(info.z.detach().clone())
        return self.rule.check(info, state)

    def budget(self):
        return self.rule.budget()


def _problem(kind, batch):
    """A strongly convex energy with per-sample targets, or a contraction with per-sample shifts;
    targets spread over three orders of magnitude so samples stop at different steps."""
    scales = torch.logspace(-3, 1, batch, dtype=torch.float64)[:, None]
    target = scales * torch.linspace(-1, 1, DIM, dtype=torch.float64)
    energy = TargetEnergy(DIM)
    W = 0.5 * torch.eye(DIM, dtype=torch.float64).roll(1, 0)

    def run(z0, rows=None, **kw):
        """Solve for samples ``rows`` (default: the first ``len(z0)``) of the family."""
        shift = target[rows if rows is not None else slice(len(z0))]
        if kind == "minimize":
            return eqt.minimize(energy, z0, context={"target": shift}, **kw)
        return eqt.fixed_point(lambda z: torch.tanh(z @ W.T + shift), z0, **kw)

    return run, target


@pytest.mark.parametrize(("name", "kind"), solver_kinds())
def test_finished_samples_are_bitwise_frozen(name, kind):
    run, _ = _problem(kind, 5)
    recorder = Recorder(eqt.stopping.parse("grad<1e-9|steps=400"))
    with torch.no_grad():
        sol = run(
            torch.zeros(5, DIM, dtype=torch.float64), solver=build_solver(name, 0.2), stop=recorder
        )
    seen = torch.stack(recorder.seen)  # (K+1, B, DIM)
    assert len(set(sol.steps.tolist())) > 1, "samples should stop at different steps"
    for i, k in enumerate(sol.steps.tolist()):
        for later in seen[k:, i]:
            assert torch.equal(later, sol.z[i])


@pytest.mark.parametrize(("name", "kind"), solver_kinds())
def test_one_sample_alone_equals_the_same_sample_in_a_batch(name, kind):
    solver = build_solver(name, 0.2)
    if not solver.deterministic:
        pytest.skip(f"{name} draws noise: its batch result depends on the batch (documented)")
    run, _ = _problem(kind, 4)
    z0 = torch.linspace(-1, 1, 4 * DIM, dtype=torch.float64).reshape(4, DIM)
    with torch.no_grad():
        batched = run(z0, solver=solver, stop="steps=25")
        for i in (0, 3):
            alone = run(
                z0[i : i + 1].clone(), rows=[i], solver=build_solver(name, 0.2), stop="steps=25"
            )
            assert torch.allclose(alone.z[0], batched.z[i], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("name", "kind"), solver_kinds())
def test_nan_in_one_start_marks_only_that_sample(name, kind):
    run, _ = _problem(kind, 3)
    z0 = torch.zeros(3, DIM, dtype=torch.float64)
    z0[1, 2] = float("nan")
    with torch.no_grad():
        sol = run(z0, solver=build_solver(name, 0.2), stop="grad<1e-8|steps=3000")
        clean = run(
            z0[[0, 2]], rows=[0, 2], solver=build_solver(name, 0.2), stop="grad<1e-8|steps=3000"
        )
    assert sol.status.tolist()[1] == eqt.Status.NONFINITE
    assert int(sol.steps[1]) == 0
    assert (sol.status[[0, 2]] == eqt.Status.CONVERGED).all()
    assert torch.isfinite(sol.z[[0, 2]]).all()
    if build_solver(name, 0.2).deterministic:
        assert torch.allclose(sol.z[[0, 2]], clean.z, atol=1e-12)


@pytest.mark.parametrize("name", [n for n, k in solver_kinds() if k == "fixed_point"])
def test_nan_during_the_solve_keeps_the_last_finite_iterate(name):
    """Sample 1's map returns NaN once its iterate gets close to the fixed point 0."""
    poisoned = torch.tensor([False, True, False])[:, None]

    def f(z):
        near = z.abs().amax(dim=1, keepdim=True) < 0.05
        return 0.5 * z + torch.where(poisoned & near, float("nan"), 0.0)

    with torch.no_grad():
        sol = eqt.fixed_point(
            f, torch.ones(3, DIM, dtype=torch.float64), solver=name, stop="grad<1e-10|steps=500"
        )
    assert sol.status.tolist() == [eqt.Status.CONVERGED, eqt.Status.NONFINITE, eqt.Status.CONVERGED]
    assert torch.isfinite(sol.z).all()
    kept = sol.z[1:2]
    assert torch.isfinite(f(torch.cat([kept, kept, kept]))).all(), (
        "kept iterate must be finite under f"
    )


def test_divergence_is_detected_per_sample():
    curvature = torch.tensor([1.0, 30.0, 2.0], dtype=torch.float64)[:, None]
    with torch.no_grad():
        sol = eqt.minimize(
            lambda z: 0.5 * (curvature * z**2).sum(1),
            torch.ones(3, DIM, dtype=torch.float64),
            solver="gd",
            step_size=0.1,
            stop="grad<1e-10|steps=2000",
        )
    assert sol.status.tolist() == [eqt.Status.CONVERGED, eqt.Status.DIVERGED, eqt.Status.CONVERGED]
    assert "diverged" in sol.messages()[1]


def test_stopping_rule_sets_the_status_of_the_rule_that_fired():
    energy = TargetEnergy(DIM)
    target = torch.stack([torch.zeros(DIM), 10 * torch.ones(DIM)]).double()
    with torch.no_grad():
        sol = eqt.minimize(
            energy,
            torch.zeros(2, DIM, dtype=torch.float64),
            context={"target": target},
            stop="residual<1e-12|steps=3",
            step_size=0.2,
        )
    # sample 0 starts near its minimiser? no: both run out of the 3-step budget
    assert sol.status.tolist() == [eqt.Status.MAX_STEPS, eqt.Status.MAX_STEPS]
    with torch.no_grad():
        sol = eqt.minimize(
            energy,
            torch.zeros(2, DIM, dtype=torch.float64),
            context={"target": target},
            stop="residual<1e-3|steps=1000",
            step_size=0.2,
        )
    assert (sol.status == eqt.Status.CONVERGED).all()
    assert (sol.trace["residual"][sol.steps[0], 0] < 1e-3).item()


def test_max_steps_cap_applies_when_the_rule_has_no_budget():
    with torch.no_grad():
        sol = eqt.minimize(
            lambda z: (z**2).sum(1),
            torch.ones(1, 2),
            stop="grad<1e-30",
            max_steps=7,
            step_size=1e-3,
        )
    assert sol.status.tolist() == [eqt.Status.MAX_STEPS] and sol.steps.tolist() == [7]


def test_steps_zero_returns_the_start():
    z0 = torch.randn(3, DIM)
    sol = eqt.minimize(lambda z: (z**2).sum(1), z0, stop="steps=0")
    assert torch.equal(sol.z, z0) and sol.steps.tolist() == [0, 0, 0]


def test_an_explicit_step_budget_overrides_the_default_cap():
    with torch.no_grad():
        sol = eqt.minimize(
            lambda z: (z**2).sum(1), torch.ones(1, 2), stop="steps=1500", step_size=1e-4
        )
    assert sol.steps.tolist() == [1500]


def test_the_residual_is_the_step_actually_taken():
    """``residual`` is ``||z_k - z_{k-1}||`` as computed from the iterates (damped Picard), so
    an iterate that rounding can no longer move has residual 0 and converges under
    ``residual<tol``, though the step it would take, ``beta * eta * ||G||``, is not 0."""
    with torch.no_grad():
        sol = eqt.fixed_point(lambda z: 0.5 * z + 1.3, torch.zeros(3, 4, dtype=torch.float64),
                              solver="picard", damping=0.5, stop="steps=6")
    iterates = [torch.zeros(3, 4, dtype=torch.float64)]
    for _ in range(6):
        previous = iterates[-1]
        iterates.append(previous - 0.5 * (previous - (0.5 * previous + 1.3)))
    steps = torch.stack([torch.linalg.vector_norm(b - a, dim=1)
                         for a, b in zip(iterates, iterates[1:])])
    assert torch.equal(sol.trace["residual"][1:], steps)
    target = torch.full((2, 8), 123.4)  # float32: the iterate stalls one ulp short
    stalled = eqt.minimize(lambda z: 0.5 * ((z - target) ** 2).sum(1), torch.zeros(2, 8),
                           solver="picard", stop="residual<1e-6|steps=1000")
    assert stalled.status.tolist() == [eqt.Status.CONVERGED] * 2
    assert stalled.steps.max() < 1000


def test_a_sample_rejected_while_every_sample_runs_leaves_the_others_and_stateful_rules_alone():
    """In a full working batch the rule judges the new states before the freeze: a sample whose
    step turns non-finite stops NONFINITE at its last finite iterate, and the rest (and the
    `stable` rule's per-sample state) run as they do without it."""

    def f(z, a):  # sample with a = 1 heads for 2 and turns infinite once past 1.5
        blown = z.abs().amax(dim=1, keepdim=True) > 1.5
        return torch.where(blown, torch.inf, 0.5 * z + a)

    a = torch.tensor([[0.5], [1.0], [0.25]], dtype=torch.float64).expand(3, DIM).contiguous()
    z0 = torch.zeros(3, DIM, dtype=torch.float64)
    rule = "stable=6|grad<1e-9|steps=200"
    readout = lambda z: torch.stack([z, 1 - z], dim=-1)  # noqa: E731 - two "tokens" per entry
    with torch.no_grad():
        sol = eqt.fixed_point(f, z0, args=(a,), solver="picard", stop=rule, readout=readout)
        clean = eqt.fixed_point(f, z0[[0, 2]], args=(a[[0, 2]],), solver="picard", stop=rule,
                                readout=readout)
    assert sol.status.tolist()[1] == eqt.Status.NONFINITE
    assert sol.steps[1] == 2 and clean.steps.min() > 3  # rejected at step 3, all running
    assert torch.isfinite(sol.z[1]).all() and sol.z[1].abs().max() <= 1.5
    assert torch.equal(sol.z[[0, 2]], clean.z)
    assert sol.status[[0, 2]].tolist() == clean.status.tolist()
    assert sol.steps[[0, 2]].tolist() == clean.steps.tolist()
