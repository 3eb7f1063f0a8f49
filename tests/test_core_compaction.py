"""Compaction: a fixed point given as ``f(z, *args)`` is evaluated on the running samples only,
with the same per-sample results (statuses, steps, evaluations, iterates, trace, gradients) as
the full-batch loop over the same map written as a closure."""

from __future__ import annotations

import pytest
import torch

import eqtheory as eqt
from tests.helpers import build_solver

DIM, BATCH = 6, 9


def _family(dtype=torch.float64):
    """``f(z)_i = tanh(s_i W z_i + c_i)`` with ``W`` orthogonal: sample ``i`` contracts at rate
    about ``s_i``, spread over [0.05, 0.9], so samples stop many steps apart."""
    generator = torch.Generator().manual_seed(0)
    W, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=dtype))
    scale = torch.linspace(0.05, 0.9, BATCH, dtype=dtype)[:, None]
    shift = 0.5 * torch.randn(BATCH, DIM, generator=generator, dtype=dtype)

    def rowwise(z, s, c):
        return torch.tanh(s * (z @ W.T) + c)

    return rowwise, scale, shift


class RowCounter:
    """Counts the rows a map is evaluated on."""

    def __init__(self, f):
        self.f, self.rows, self.calls = f, 0, 0

    def __call__(self, z, *args):
        self.rows += z.shape[0]
        self.calls += 1
        return self.f(z, *args)


def _fixed_point_solvers():
    names = [n for n, cls in eqt.solvers.REGISTRY.items() if "fixed_point" in cls.solves]
    return [n for n in names if build_solver(n, 1.0).deterministic]


def _both(name, stop, scale, shift, **kw):
    rowwise, _, _ = _family()
    counted = RowCounter(rowwise)
    z0 = torch.zeros(BATCH, DIM, dtype=torch.float64)
    full = eqt.fixed_point(lambda z: rowwise(z, scale, shift), z0,
                           solver=build_solver(name, 1.0), stop=stop, **kw)
    compact = eqt.fixed_point(counted, z0, args=(scale, shift),
                              solver=build_solver(name, 1.0), stop=stop, **kw)
    return full, compact, counted


@pytest.mark.parametrize("name", _fixed_point_solvers())
@pytest.mark.parametrize("stop", ["grad<1e-9|steps=300", "stable=3&residual<1e-7|steps=300"])
def test_compacted_solve_equals_the_full_batch_solve(name, stop):
    _, scale, shift = _family()
    with torch.no_grad():
        full, compact, counted = _both(name, stop, scale, shift)
    assert len(set(full.steps.tolist())) > 2, "samples should stop at different steps"
    assert counted.rows < BATCH * counted.calls, "finished samples should not be evaluated"
    assert torch.equal(compact.status, full.status)
    assert torch.equal(compact.steps, full.steps)
    assert torch.equal(compact.fevals, full.fevals)
    assert torch.allclose(compact.z, full.z, rtol=0, atol=1e-12)
    assert compact.trace.keys() == full.trace.keys()
    for key, value in full.trace.items():
        assert compact.trace[key].shape == value.shape, key
        if value.dtype == torch.bool:
            assert torch.equal(compact.trace[key], value), key
        else:
            assert torch.allclose(compact.trace[key], value, rtol=0, atol=1e-12,
                                  equal_nan=True), key


def test_compaction_saves_evaluations_in_proportion_to_the_spread():
    _, scale, shift = _family()
    with torch.no_grad():
        full, _, counted = _both("picard", "grad<1e-9|steps=300", scale, shift)
    # Each compaction keeps at most twice the samples still running, so the rows evaluated are
    # at most twice the per-sample evaluations actually needed (plus the start).
    assert counted.rows <= 2 * int(full.steps.sum()) + BATCH
    assert full.batch_fevals == BATCH * (int(full.steps.max()) + 1)


def test_nan_in_one_sample_is_isolated_when_compacting():
    rowwise, scale, shift = _family()
    shift = shift.clone()
    shift[4, 1] = float("nan")
    z0 = torch.zeros(BATCH, DIM, dtype=torch.float64)
    with torch.no_grad():
        sol = eqt.fixed_point(rowwise, z0, args=(scale, shift), solver="anderson",
                              stop="grad<1e-9|steps=300")
        keep = [i for i in range(BATCH) if i != 4]
        clean = eqt.fixed_point(rowwise, z0[keep], args=(scale[keep], shift[keep]),
                                solver="anderson", stop="grad<1e-9|steps=300")
    assert int(sol.status[4]) == eqt.Status.NONFINITE
    assert (sol.status[keep] == eqt.Status.CONVERGED).all()
    assert torch.allclose(sol.z[keep], clean.z, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backward", ["unrolled", "implicit"])
def test_gradients_through_a_compacted_solve_match_the_full_batch(backward):
    rowwise, scale, shift = _family()
    grads = []
    for compacted in (False, True):
        c = shift.clone().requires_grad_()
        z0 = torch.zeros(BATCH, DIM, dtype=torch.float64)
        if compacted:
            sol = eqt.fixed_point(rowwise, z0, args=(scale, c), solver="anderson",
                                  stop="grad<1e-11|steps=400", backward=backward)
        else:
            sol = eqt.fixed_point(lambda z, c=c: rowwise(z, scale, c), z0, solver="anderson",
                                  stop="grad<1e-11|steps=400", backward=backward)
        (sol.z * torch.arange(DIM, dtype=torch.float64)).sum().backward()
        grads.append(c.grad)
    assert torch.isfinite(grads[1]).all()
    assert torch.allclose(grads[1], grads[0], rtol=1e-7, atol=1e-9)


def test_args_must_carry_the_batch_dimension_on_z0s_device():
    rowwise, scale, shift = _family()
    with pytest.raises(ValueError, match="batch size 9"):
        eqt.fixed_point(rowwise, torch.zeros(BATCH, DIM, dtype=torch.float64),
                        args=(scale, shift[:3]))
    with pytest.raises(ValueError, match="device"):
        eqt.fixed_point(rowwise, torch.zeros(BATCH, DIM, dtype=torch.float64),
                        args=(scale.to("meta"), shift))


def test_a_skipped_budget_part_keeps_its_state():
    """``a | steps=K`` skips the budget part before step K; a budget rule that keeps state
    still finds it afterwards."""

    class CountingSteps(eqt.stopping.Steps):
        def init(self, info):
            return {"n": torch.zeros_like(info.grad_norm)}

        def trace_values(self, state):
            return {"n": state["n"]}

    rowwise, scale, shift = _family()
    rule = eqt.stopping.parse("grad<1e-30") | CountingSteps(5)
    with torch.no_grad():
        sol = eqt.fixed_point(rowwise, torch.zeros(BATCH, DIM, dtype=torch.float64),
                              args=(scale, shift), solver="picard", stop=rule)
    assert sol.trace["n"].shape == (6, BATCH)
    assert (sol.status == eqt.Status.MAX_STEPS).all()
