"""`eqtheory.diagnostics` and the ``diagnostics`` block of `ablations.evaluate`."""

from __future__ import annotations

import contextlib
import doctest
import itertools
import math

import pytest
import torch

import eqtheory.diagnostics as diagnostics_module
from ablations import tasks
from ablations.config import RunConfig
from ablations.evaluate import evaluate_all, step_cap
from eqtheory import energies
from eqtheory.diagnostics import (
    auroc,
    flip_rates,
    k_grid,
    leaf_terms,
    per_token_energy,
    relative_displacement,
    term_grad_norms,
)
from eqtheory.energies import Anchor
from eqtheory.variants import VariantSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")


def test_doctests() -> None:
    assert doctest.testmod(diagnostics_module).failed == 0


def brute_force_auroc(scores: list[float], labels: list[bool]) -> float:
    """P(s+ > s-) + P(s+ = s-) / 2 over every (positive, negative) pair."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_the_pair_count_with_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 60, (1,), generator=gen))
    scores = torch.randint(0, 5, (n,), generator=gen).double()  # many ties
    labels = torch.rand(n, generator=gen) < 0.4
    labels[0], labels[1] = True, False  # both classes present
    expected = brute_force_auroc(scores.tolist(), labels.tolist())
    assert auroc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_auroc_edge_cases() -> None:
    labels = torch.tensor([False, False, True, True])
    assert auroc(torch.tensor([0.0, 1.0, 2.0, 3.0]), labels) == 1.0  # perfect
    assert auroc(torch.tensor([3.0, 2.0, 1.0, 0.0]), labels) == 0.0  # inverted
    assert auroc(torch.ones(4), labels) == 0.5  # all tied
    assert auroc(torch.arange(4.0), torch.zeros(4, dtype=torch.bool)) is None  # one class
    with pytest.raises(ValueError, match="finite"):
        auroc(torch.tensor([0.0, math.nan]), torch.tensor([True, False]))


def test_flips_on_a_hand_example() -> None:
    before = torch.tensor([[True, True, True, False], [False, False, True, True]])
    after = torch.tensor([[True, False, True, True], [False, True, True, False]])
    # wrong->right: (0,3), (1,1); right->wrong: (0,1), (1,3); 3 wrong and 5 right before
    assert flip_rates(before, after) == {
        "wrong_to_right": 2 / 8, "right_to_wrong": 2 / 8, "fixed": 2 / 3, "broken": 2 / 5,
        "changed": 4 / 8, "n": 8,
    }
    same = flip_rates(before, before)
    assert same["changed"] == 0 and same["fixed"] == 0 and same["broken"] == 0
    assert flip_rates(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool))[
        "fixed"] is None  # nothing was wrong
    with pytest.raises(ValueError, match="shape"):
        flip_rates(before, after[:1])


def test_displacement() -> None:
    z0 = torch.randn(3, 5, 4, dtype=torch.float64)
    assert torch.equal(relative_displacement(z0.clone(), z0), torch.zeros(3, 5, dtype=z0.dtype))
    moved = relative_displacement(2 * z0, z0)
    assert moved.shape == (3, 5) and torch.allclose(moved, torch.ones_like(moved))
    with pytest.raises(ValueError, match=r"\[B, T, d\]"):
        relative_displacement(z0[0], z0[0])


def test_k_grid() -> None:
    assert k_grid(32) == [0, 1, 2, 4, 8, 16, 32]
    assert k_grid(1) == [0, 1] and k_grid(3) == [0, 1, 2, 3]
    assert step_cap(["steps=0", "steps=8", "residual<1e-4|steps=50"]) == 50
    assert step_cap(["residual<1e-4"]) == 0


def sequence_energy(dim: int = 6) -> energies.Energy:
    torch.manual_seed(0)
    return energies.parse("bidir+0.5*mask+confidence", dim=dim, vocab=2).double()


def test_per_token_energy_sums_to_the_energy_and_is_local_for_per_position_terms() -> None:
    energy = sequence_energy()
    z = torch.randn(3, 7, 6, dtype=torch.float64)
    context = {"tokens": torch.randint(0, 2, (3, 7))}
    per_token = per_token_energy(energy, z, context)  # (B, T)
    assert per_token.shape == (3, 7)
    torch.testing.assert_close(per_token.sum(dim=1), energy(z, context))
    # moving position 4 changes only e_4 (every term reads z_t and tokens <= t)
    moved = z.clone()
    moved[:, 4] += 1.0
    change = per_token_energy(energy, moved, context) - per_token
    assert torch.all(change[:, [0, 1, 2, 3, 5, 6]].abs() < 1e-12)
    assert torch.all(change[:, 4].abs() > 0)


def test_term_grad_norms() -> None:
    energy = sequence_energy() + Anchor(gamma=0.5)
    assert [label for label, _, _ in leaf_terms(energy)] == [
        "bidir", "0.5*mask", "confidence", "anchor=0.5"]
    z0 = torch.randn(2, 5, 6, dtype=torch.float64)
    context = {"tokens": torch.randint(0, 2, (2, 5)), "z0": z0}
    at_z0 = term_grad_norms(energy, z0, context)
    assert set(at_z0) == {"bidir", "0.5*mask", "confidence", "anchor=0.5", "total"}
    assert all(value.shape == (2, 5) for value in at_z0.values())
    assert torch.equal(at_z0["anchor=0.5"], torch.zeros(2, 5, dtype=z0.dtype))
    z = z0 + 0.1 * torch.randn_like(z0)
    at_z = term_grad_norms(energy, z, context)
    point = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(point, context).sum(), point)
    torch.testing.assert_close(at_z["total"], grad.norm(dim=-1))
    torch.testing.assert_close(at_z["anchor=0.5"], ((z - z0) / 0.5).norm(dim=-1))
    with torch.no_grad():  # usable inside evaluation code
        assert torch.equal(term_grad_norms(energy, z, context)["total"], at_z["total"])


@pytest.mark.parametrize("placement", ["last", "every"])
def test_a_tiny_eqt_model_gives_finite_diagnostics_of_the_right_shapes(placement: str) -> None:
    torch.manual_seed(0)
    spec = VariantSpec(placement=placement, gamma=1.0 if placement == "last" else math.inf)
    model = build(spec, vocab=2, width=16, layers=2, heads=2, max_len=8)
    tokens = torch.randint(0, 2, (4, 8))
    with torch.no_grad():
        k0 = model(tokens, stop="steps=0", with_energy=False)
        k4 = model(tokens, stop="steps=4", with_energy=False)
    assert len(k0.proposals) == len(k0.latents) == len(model.erms)
    for z, z0 in zip(k0.latents, k0.proposals):
        assert torch.equal(relative_displacement(z, z0), torch.zeros(4, 8))  # K = 0
    moved = torch.stack([relative_displacement(z, z0) for z, z0 in zip(k4.latents, k4.proposals)])
    assert moved.shape == (len(model.erms), 4, 8) and bool(torch.isfinite(moved).all())
    assert bool((moved > 0).any())

    task = tasks.get("parity")
    _, test = tasks.datasets(task, length=8, seed=0, train_size=0, test_size=40)
    config = RunConfig(variant=spec, length=8, layers=2, width=16, heads=2, test_size=40,
                       eval_stops=("steps=0", "steps=4"), eval_batch_size=16)
    evals = evaluate_all(model, test, task, config, device=torch.device("cpu"),
                         autocast=contextlib.nullcontext(), diagnostic_size=20)
    k0_block, k4_block = evals["steps=0"]["diagnostics"], evals["steps=4"]["diagnostics"]
    assert k0_block["displacement"]["max"] == 0.0
    assert k0_block["flips"]["changed"] == 0.0 and k0_block["flips"]["n"] == 40 * 8
    assert k4_block["displacement"]["mean"] > 0
    assert len(k4_block["displacement_by_erm"]) == len(model.erms)
    assert k4_block["diagnostic_sequences"] == 20 and k4_block["energy_tokens"] == 20 * 8
    assert set(k4_block["acc_by_k"]) == {"0", "1", "2", "4"}
    assert k4_block["acc_by_k"]["4"] == evals["steps=4"]["acc"]
    assert k4_block["acc_by_k"]["0"] == evals["steps=0"]["acc"]
    anchor = "anchor=1" if placement == "last" else "anchor=inf"
    assert k0_block["grad_norm"]["z0"][anchor] == 0.0
    assert set(k4_block["grad_norm"]["z_star"]) == {
        "bidir", "mask", "confidence", anchor, "total"}
    for block in (k0_block, k4_block):
        for value in (block["energy_auroc"], block["confidence_auroc"]):
            assert value is None or 0.0 <= value <= 1.0
        numbers = [*block["displacement"].values(), *block["flips"].values(),
                   *block["grad_norm"]["z0"].values(), *block["grad_norm"]["z_star"].values()]
        assert all(v is None or math.isfinite(v) for v in numbers)
    off = evaluate_all(model, test, task, config, device=torch.device("cpu"),
                       autocast=contextlib.nullcontext(), diagnostics=False)
    assert "diagnostics" not in off["steps=4"]
    assert off["steps=4"]["acc"] == evals["steps=4"]["acc"]


def test_a_sequence_coupled_energy_gives_finite_diagnostics() -> None:
    """A ``chain`` ERM solves per sequence (statuses ``[B]``); the diagnostics read latents."""
    torch.manual_seed(0)
    spec = VariantSpec(energy="chain+bidir", gamma=1.0, placement="last")
    model = build(spec, vocab=2, width=16, layers=1, heads=2, max_len=8)
    task = tasks.get("parity")
    _, test = tasks.datasets(task, length=8, seed=0, train_size=0, test_size=24)
    config = RunConfig(variant=spec, length=8, layers=1, width=16, heads=2, test_size=24,
                       eval_stops=("steps=0", "steps=2"), eval_batch_size=8)
    evals = evaluate_all(model, test, task, config, device=torch.device("cpu"),
                         autocast=contextlib.nullcontext(), diagnostic_size=12)
    block = evals["steps=2"]["diagnostics"]
    assert block["displacement"]["mean"] > 0 and block["energy_tokens"] == 12 * 8
    assert {"chain", "bidir", "anchor=1", "total"} == set(block["grad_norm"]["z_star"])
    assert set(block["acc_by_k"]) == {"0", "1", "2"}
    numbers = [*block["displacement"].values(), *block["grad_norm"]["z_star"].values()]
    assert all(math.isfinite(v) for v in numbers)
