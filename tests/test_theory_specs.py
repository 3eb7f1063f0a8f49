"""Property-based laws of the spec algebra: stopping rules and variant / energy specs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import eqtheory as eqt
from eqtheory import stopping
from eqtheory.energies import Quadratic, random_spd
from eqtheory.status import Status
from eqtheory.stopping.base import StepInfo
from eqtheory.testing import strategies as eqst
from eqtheory.variants import VariantSpec

F64 = torch.float64


@st.composite
def step_infos(draw, batch: int = 6):
    """A start ``StepInfo`` (step 0) and a later one, with random per-sample quantities."""
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)

    def values(scale: float) -> torch.Tensor:
        return scale * torch.rand(batch, generator=generator, dtype=F64) ** 4

    z0 = torch.randn(batch, 3, generator=generator, dtype=F64)
    z = z0 + 0.01 * torch.randn(batch, 3, generator=generator, dtype=F64)
    nan = torch.full((batch,), float("nan"), dtype=F64)
    energy0 = 10 * torch.randn(batch, generator=generator, dtype=F64)
    start = StepInfo(0, z0, z0, nan, nan, energy0, nan, values(1.0))
    energy = energy0 - values(1e-2)
    later = StepInfo(
        draw(st.integers(1, 60)), z, z0, values(1e-1), values(1e-2), energy, energy0, values(1e-1)
    )
    return start, later


def _fire(rule, start: StepInfo, later: StepInfo):
    state = rule.init(start)
    done, code, _ = rule.check(later, state)
    return done, code


@given(eqst.stop_specs(2), eqst.stop_specs(2), step_infos())
def test_or_fires_iff_either_part_fires_with_the_first_fired_status(a_spec, b_spec, infos):
    a, b = stopping.parse(a_spec), stopping.parse(b_spec)
    note(f"{a.spec()} | {b.spec()}")
    done_a, code_a = _fire(a, *infos)
    done_b, code_b = _fire(b, *infos)
    done, code = _fire(a | b, *infos)
    assert torch.equal(done, done_a | done_b)
    assert torch.equal(code[done], torch.where(done_a, code_a, code_b)[done])


@given(eqst.stop_specs(2), eqst.stop_specs(2), step_infos())
def test_and_fires_iff_both_parts_fire(a_spec, b_spec, infos):
    a, b = stopping.parse(a_spec), stopping.parse(b_spec)
    note(f"{a.spec()} & {b.spec()}")
    done_a, code_a = _fire(a, *infos)
    done_b, code_b = _fire(b, *infos)
    done, code = _fire(a & b, *infos)
    assert torch.equal(done, done_a & done_b)
    converged = (code_a == Status.CONVERGED) | (code_b == Status.CONVERGED)
    assert torch.equal(code[done], torch.where(converged, int(Status.CONVERGED), code_a)[done])


@given(eqst.stop_specs())
def test_stopping_spec_round_trips(spec):
    """``parse(rule.spec())`` rebuilds the same rule: printing is a fixed point."""
    rule = stopping.parse(spec)
    assert stopping.parse(rule.spec()).spec() == rule.spec()


@given(st.integers(0, 40), st.integers(0, 6), st.integers(0, 6))
def test_solver_steps_of_or_and_and_are_min_and_max(k, grad_exp, residual_exp):
    """On GD with alpha <= 1/L on a quadratic, ||grad|| and the step shrink monotonically, so
    each tolerance rule, once fired, stays fired: steps(a|b) = min and steps(a&b) = max."""
    energy = Quadratic(random_spd(4, 0.5, 2.0, seed=1), torch.ones(4, dtype=F64))
    z0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(k), dtype=F64)
    a, b = f"grad<1e-{grad_exp}", f"residual<1e-{residual_exp}|steps={k + 20}"

    def steps(spec: str) -> torch.Tensor:
        return eqt.minimize(energy, z0, solver="gd", step_size=0.5, stop=spec).steps

    steps_a, steps_b = steps(f"{a}|steps=200"), steps(b)
    assert torch.equal(steps(f"({a})|({b})"), torch.minimum(steps_a, steps_b))
    assert torch.equal(steps(f"(({a})&({b}))|steps=200"), torch.maximum(steps_a, steps_b))


@given(st.integers(0, 30))
def test_statuses_say_which_rule_stopped_a_sample(k):
    energy = Quadratic(random_spd(3, 1.0, 2.0, seed=2), torch.zeros(3, dtype=F64))
    z0 = torch.randn(2, 3, generator=torch.Generator().manual_seed(k), dtype=F64)
    budget = eqt.minimize(energy, z0, solver="gd", step_size=0.5, stop=f"steps={k}")
    assert bool((budget.status == Status.MAX_STEPS).all()) and bool((budget.steps == k).all())
    tolerance = eqt.minimize(energy, z0, solver="gd", step_size=0.5, stop="grad<1e-6|steps=500")
    assert bool((tolerance.status == Status.CONVERGED).all())


@given(eqst.variant_specs())
def test_variant_spec_round_trips(spec):
    note(spec.to_string())
    again = VariantSpec.parse(spec.to_string())
    assert again == spec and again.hash() == spec.hash()


@pytest.mark.thorough
@settings(max_examples=500)
@given(eqst.variant_specs())
def test_variant_spec_round_trips_thorough(spec):
    assert VariantSpec.parse(spec.to_string()) == spec


@given(eqst.energy_specs())
def test_energy_spec_printing_is_a_fixed_point(spec):
    """``parse(parse(s).spec())`` has the same spec as ``parse(s)`` (terms, weights, options)."""
    energy = eqt.energies.parse(spec, dim=8, vocab=3, window=4)
    printed = energy.spec()
    note(f"{spec} -> {printed}")
    assert eqt.energies.parse(printed, dim=8, vocab=3, window=4).spec() == printed
