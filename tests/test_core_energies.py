"""Contract tests over every registered energy term (a new term is tested once registered)."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import eqtheory as eqt

ENERGIES = eqt.energies.names()
B, T, DIM, VOCAB = 4, 5, 8, 5


def example(name: str, dtype=torch.float64):
    """The term built from its registered defaults, latents of its layout, and a full context."""
    torch.manual_seed(0)
    term = eqt.energies.parse(name, dim=DIM, vocab=VOCAB).to(dtype)
    shape = (B, T, DIM) if term.latent_layout == "sequence" else (B, DIM)
    z = torch.randn(shape, dtype=dtype)
    context = {
        "z0": torch.randn(shape, dtype=dtype),
        "tokens": torch.randint(0, VOCAB, (B, T)),
        "mask": torch.rand(B, T) < 0.5,
    }
    return term, z, context


@pytest.mark.parametrize("name", ENERGIES)
def test_values_are_per_sample_and_finite(name):
    term, z, context = example(name)
    value = term(z, context)
    assert value.shape == (B,)
    assert torch.isfinite(value).all()


@pytest.mark.parametrize("name", ENERGIES)
def test_sample_energy_does_not_depend_on_the_rest_of_the_batch(name):
    term, z, context = example(name)
    full = term(z, context)
    for i in range(B):
        alone = term(z[i : i + 1], {k: v[i : i + 1] for k, v in context.items()})
        assert torch.allclose(alone, full[i : i + 1], rtol=1e-12, atol=1e-12)
    perturbed = z.clone()
    perturbed[0] += 1.0
    assert torch.equal(term(perturbed, context)[1:], full[1:])


@pytest.mark.parametrize("name", ENERGIES)
def test_gradient_is_finite_and_matches_finite_differences(name):
    """The gradient solvers see is the value's (finite differences), or, for a term that
    declares ``exact_gradient = False`` (e.g. the causal chain), the field it declares."""
    term, z, context = example(name)
    g = grad(lambda x: term(x, context).sum())(z)
    assert g.shape == z.shape and torch.isfinite(g).all()
    if not getattr(term, "exact_gradient", True):
        assert torch.allclose(g, term.field(z, context), rtol=1e-12, atol=1e-12)
        return
    direction = torch.randn_like(z)
    h = 1e-6
    numeric = (term(z + h * direction, context) - term(z - h * direction, context)).sum() / (2 * h)
    assert torch.allclose((g * direction).sum(), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ENERGIES)
def test_works_under_vmap(name):
    term, z, context = example(name)
    stacked = torch.stack([z, 2 * z, -z])  # (3, B, ...)
    mapped = vmap(lambda x: term(x, context))(stacked)
    looped = torch.stack([term(x, context) for x in stacked])
    assert mapped.shape == (3, B)
    assert torch.allclose(mapped, looped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ENERGIES)
def test_float32(name):
    term, z, context = example(name, dtype=torch.float32)
    value = term(z, context)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()


@pytest.mark.parametrize("name", ENERGIES)
def test_requires_names_every_context_key_it_cannot_do_without(name):
    term, z, context = example(name)
    minimal = {k: context[k] for k in term.requires}
    assert torch.isfinite(term(z, minimal)).all()
    for key in term.requires:
        with pytest.raises(KeyError, match=key):
            term(z, {k: v for k, v in minimal.items() if k != key})


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
