"""Energy composition and context handling (every registered term's contract:
`eqtheory.testing.contracts`, run by tests/test_contracts.py)."""

from __future__ import annotations

import pytest
import torch

import eqtheory as eqt


def test_composition_is_an_energy_with_weighted_terms():
    energy = eqt.energies.parse("quadratic+0.5*anchor=2", dim=4)
    assert isinstance(energy, eqt.energies.SumEnergy)
    z, z0 = torch.randn(3, 4, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64)
    terms = energy.per_term(z, {"z0": z0})
    assert list(terms) == ["quadratic", "0.5*anchor=2"]
    assert torch.allclose(sum(terms.values()), energy(z, {"z0": z0}))
    assert torch.allclose(terms["0.5*anchor=2"], 0.5 * (z**2).sum(1) / 4)
    again = eqt.energies.parse(energy.spec(), dim=4)
    assert again.spec() == energy.spec()
    summed = eqt.energies.Quadratic(dim=4) + 0.5 * eqt.energies.Anchor(gamma=2.0)
    assert torch.allclose(summed(z, {"z0": z0}), energy(z, {"z0": z0}))


def test_anchor_with_infinite_gamma_is_zero_but_keeps_the_graph():
    z = torch.randn(2, 3, requires_grad=True)
    value = eqt.energies.Anchor(gamma=float("inf"))(z, {"z0": torch.zeros(2, 3)})
    assert torch.equal(value, torch.zeros(2))
    value.sum().backward()
    assert torch.equal(z.grad, torch.zeros(2, 3))


def test_missing_context_names_the_term_and_the_key():
    with pytest.raises(KeyError, match="anchor.*'z0'"):
        eqt.energies.Anchor()(torch.zeros(1, 2), {})


def test_per_term_trace_is_recorded():
    energy = eqt.energies.parse("quadratic+anchor=1", dim=3)
    sol = eqt.minimize(
        energy, torch.ones(2, 3, dtype=torch.float64), stop="steps=3", record_terms=True
    )
    assert set(sol.trace) >= {"term:quadratic", "term:anchor=1"}
    total = sol.trace["term:quadratic"] + sol.trace["term:anchor=1"]
    assert torch.allclose(total, sol.trace["energy"])
