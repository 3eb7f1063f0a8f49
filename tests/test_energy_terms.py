"""Term-specific behaviour of the learned energy terms (bidir, consist, mask, confidence, memory)
and of the worked example `smooth`. The registry-wide contract lives in its own test file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

import eqtheory as eqt
from eqtheory.energies import (
    Bidir,
    Confidence,
    Consist,
    Mask,
    Memory,
    Smooth,
    random_mask,
)
from eqtheory.energies.bidir import window_index

ROOT = Path(__file__).resolve().parents[1]
LEARNED = ("bidir", "consist", "mask", "confidence", "memory", "smooth")


def context(batch: int = 3, length: int = 5, dim: int = 8, vocab: int = 5, *, seed: int = 0,
            dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "z0": torch.randn(batch, length, dim, generator=generator, dtype=dtype),
        "tokens": torch.randint(0, vocab, (batch, length), generator=generator),
        "mask": torch.rand(batch, length, generator=generator) < 0.5,
    }


def build(name: str, dtype: torch.dtype = torch.float64, **dims: int) -> eqt.energies.Energy:
    torch.manual_seed(0)
    return eqt.energies.parse(name, dim=dims.get("dim", 8), vocab=dims.get("vocab", 5)).to(dtype)


# --- bidir -------------------------------------------------------------------------------------


def test_window_index_marks_predecessors():
    index, valid = window_index(4, 3)
    for t in range(4):
        for w in range(1, 4):
            assert bool(valid[t, w - 1]) == (t - w >= 0)
            if t - w >= 0:
                assert int(index[t, w - 1]) == t - w


def test_bidir_equals_hand_computed_cross_entropy():
    torch.manual_seed(1)
    term = Bidir(dim=3, vocab=4, window=2, hidden=5).double()
    z = torch.randn(2, 4, 3, dtype=torch.float64)
    tokens = torch.tensor([[0, 3, 1, 2], [2, 2, 0, 1]])
    logits = term.predictor(z).reshape(2, 4, 2, 4)  # (B, T, W, V)
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for t in range(4):
            back = [w for w in (1, 2) if t - w >= 0]
            for w in back:
                target = tokens[b, t - w].reshape(1)
                nll = nn.functional.cross_entropy(logits[b, t, w - 1].reshape(1, 4), target)
                expected[b] += nll / len(back)
    actual = term(z, {"tokens": tokens})
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_bidir_first_position_and_last_token_do_not_count():
    term = build("bidir")
    ctx = context()
    z = torch.randn(3, 5, 8, dtype=torch.float64)
    gradient = grad(lambda z: term(z, ctx).sum())(z)
    assert torch.equal(gradient[:, 0], torch.zeros_like(gradient[:, 0]))  # no predecessors
    assert gradient[:, 1:].abs().sum() > 0
    later = dict(ctx, tokens=ctx["tokens"].clone())
    later["tokens"][:, -1] = (later["tokens"][:, -1] + 1) % 5  # nothing predicts the last token
    torch.testing.assert_close(term(z, later), term(z, ctx), rtol=0, atol=0)
    single = term(z[:, :1], {"tokens": ctx["tokens"][:, :1]})
    assert torch.equal(single, torch.zeros(3, dtype=torch.float64))


def test_bidir_latent_target_is_windowed_mse():
    torch.manual_seed(2)
    term = Bidir(dim=3, vocab=4, window=3, hidden=5, target="latents").double()
    assert term.requires == ("z0",) and Bidir.requires == ("tokens",)
    z = torch.randn(2, 4, 3, dtype=torch.float64)
    z0 = torch.randn(2, 4, 3, dtype=torch.float64)
    prediction = term.predictor(z).reshape(2, 4, 3, 3)  # (B, T, W, d)
    expected = torch.zeros(2, dtype=torch.float64)
    for t in range(4):
        back = [w for w in (1, 2, 3) if t - w >= 0]
        for w in back:
            expected += ((prediction[:, t, w - 1] - z0[:, t - w]) ** 2).mean(dim=1) / len(back)
    torch.testing.assert_close(term(z, {"z0": z0}), expected, rtol=1e-12, atol=1e-12)
    assert term.spec() == "bidir(target=latents)"


def test_bidir_rejects_bad_options():
    with pytest.raises(ValueError, match="tokens, latents"):
        Bidir(dim=2, vocab=2, target="latent")
    with pytest.raises(ValueError, match="window"):
        Bidir(dim=2, vocab=2, window=0)
    with pytest.raises(KeyError, match="'bidir' needs context\\['tokens'\\]"):
        Bidir(dim=2, vocab=2)(torch.zeros(1, 3, 2), {"z0": torch.zeros(1, 3, 2)})


# --- consist -----------------------------------------------------------------------------------


def _identity_mlp(mlp: nn.Sequential, dim: int) -> None:
    """Set ``Linear(d, 2d) -> GELU -> Linear(2d, d)`` to the identity: gelu(x) - gelu(-x) = x."""
    eye = torch.eye(dim, dtype=mlp[0].weight.dtype)
    with torch.no_grad():
        mlp[0].weight.copy_(torch.cat([eye, -eye]))
        mlp[2].weight.copy_(torch.cat([eye, -eye], dim=1))
        mlp[0].bias.zero_()
        mlp[2].bias.zero_()


def test_consist_is_zero_for_an_identity_round_trip():
    term = Consist(dim=4, hidden=8).double()
    _identity_mlp(term.forward_map, 4)
    _identity_mlp(term.inverse_map, 4)
    z = 3 * torch.randn(2, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(term(z), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-20)


def test_consist_equals_squared_round_trip_error():
    torch.manual_seed(3)
    term = Consist(dim=4, hidden=6).double()
    z = torch.randn(2, 5, 4, dtype=torch.float64)
    round_trip = term.inverse_map(term.forward_map(z))
    expected = torch.stack([((z[b] - round_trip[b]) ** 2).sum() for b in range(2)])
    torch.testing.assert_close(term(z), expected)
    assert (expected > 0).all()


# --- mask --------------------------------------------------------------------------------------


def test_mask_counts_only_masked_positions():
    torch.manual_seed(4)
    term = Mask(dim=4, vocab=3, hidden=6).double()
    z = torch.randn(2, 5, 4, dtype=torch.float64)
    tokens = torch.tensor([[0, 1, 2, 1, 0], [2, 2, 1, 0, 1]])
    mask = torch.tensor([[True, False, False, True, False], [False, False, False, False, True]])
    logits = term.head(z)
    nll = nn.functional.cross_entropy(logits.reshape(-1, 3), tokens.reshape(-1), reduction="none")
    expected = (nll.reshape(2, 5) * mask).sum(dim=1)
    ctx = {"tokens": tokens, "mask": mask}
    torch.testing.assert_close(term(z, ctx), expected, rtol=1e-12, atol=1e-12)
    moved = z.clone()
    moved[~mask] += 5.0  # unmasked latents and tokens do not matter
    other_tokens = torch.where(mask, tokens, (tokens + 1) % 3)
    torch.testing.assert_close(term(moved, {"tokens": other_tokens, "mask": mask}), expected)
    all_positions = nll.reshape(2, 5).sum(dim=1)  # no mask in the context: every position
    torch.testing.assert_close(term(z, {"tokens": tokens}), all_positions)


def test_random_mask_rate_and_reproducibility():
    tokens = torch.zeros(64, 64, dtype=torch.long)
    first = random_mask(tokens, rate=0.15, generator=torch.Generator().manual_seed(7))
    again = random_mask(tokens, rate=0.15, generator=torch.Generator().manual_seed(7))
    assert first.dtype == torch.bool and first.shape == tokens.shape
    assert torch.equal(first, again)
    # 4096 Bernoulli(0.15) draws: the mean is within 5 standard deviations (0.028) of 0.15
    assert abs(first.double().mean().item() - 0.15) < 5 * math.sqrt(0.15 * 0.85 / 4096)
    with pytest.raises(ValueError, match="rate"):
        random_mask(tokens, rate=1.5)


# --- confidence --------------------------------------------------------------------------------


def test_confidence_is_entropy_plus_top_nll():
    torch.manual_seed(5)
    term = Confidence(dim=4, vocab=3).double()
    z = torch.randn(2, 5, 4, dtype=torch.float64)
    probs = torch.softmax(term.head(z), dim=-1)
    entropy = -(probs * probs.log()).sum(dim=-1)
    top = -probs.max(dim=-1).values.log()
    torch.testing.assert_close(term(z), (entropy + top).sum(dim=1), rtol=1e-12, atol=1e-12)


def test_confidence_gradient_flows_through_the_argmax_probability():
    torch.manual_seed(6)
    term = Confidence(dim=3, vocab=4).double()
    z = torch.randn(1, 2, 3, dtype=torch.float64)
    gradient = grad(lambda z: term(z).sum())(z)
    logits = term.head(z).detach()
    index = logits.argmax(dim=-1, keepdim=True)  # held fixed, as the gradient holds it

    def by_hand(z):
        log_probs = torch.log_softmax(term.head(z), dim=-1)
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
        return (entropy - log_probs.gather(-1, index).squeeze(-1)).sum()

    torch.testing.assert_close(gradient, grad(by_hand)(z))


def test_confidence_is_zero_only_for_a_confident_readout():
    term = Confidence(dim=2, vocab=3).double()
    with torch.no_grad():
        term.head.weight.copy_(torch.tensor([[100.0, 0.0], [0.0, 0.0], [-100.0, 0.0]]))
        term.head.bias.zero_()
    confident = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    unsure = torch.zeros(1, 1, 2, dtype=torch.float64)
    assert term(confident).item() < 1e-40
    torch.testing.assert_close(term(unsure), torch.tensor([2 * math.log(3)], dtype=torch.float64))


def test_confidence_borrows_a_shared_head():
    head = nn.Linear(4, 3).double()
    term = Confidence(head=head, dim=4, vocab=3)
    assert list(term.parameters()) == [] and term.head is head
    model = nn.ModuleDict({"lm_head": head, "energy": term})
    assert len(list(model.parameters())) == 2 and set(model.state_dict()) == {
        "lm_head.weight", "lm_head.bias"
    }
    z = torch.randn(2, 3, 4, dtype=torch.float64)
    term(z).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="dim and vocab"):
        Confidence(dim=4)


# --- memory ------------------------------------------------------------------------------------


def _orthonormal_memory(slots: int, dim: int, tau: float) -> Memory:
    term = Memory(dim=dim, slots=slots, tau=tau).double()
    with torch.no_grad():
        term.bank.copy_(torch.eye(dim, dtype=torch.float64)[:slots])
    return term


def test_memory_equals_hand_computed_soft_max():
    term = Memory(dim=4, slots=5, tau=0.3).double()
    z = torch.randn(2, 3, 4, dtype=torch.float64)
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for t in range(3):
            total = 0.0
            for i in range(5):
                cosine = torch.cosine_similarity(z[b, t], term.bank[i], dim=0)
                total = total + torch.exp(cosine / 0.3) / 5  # uniform r_i = 1/5
            expected[b] += -0.3 * torch.log(total)
    torch.testing.assert_close(term(z), expected, rtol=1e-12, atol=1e-12)
    assert term.spec() == "memory(slots=5,tau=0.3)"


def test_memory_energy_decreases_as_z_moves_toward_a_slot():
    term = _orthonormal_memory(3, 5, tau=0.1)  # slots e1, e2, e3
    e1, e4 = torch.eye(5, dtype=torch.float64)[[0, 3]]
    path = [((1 - s) * e4 + s * e1).reshape(1, 1, 5) for s in torch.linspace(0, 1, 11)]
    energies = torch.cat([term(z) for z in path])
    assert (energies[1:] < energies[:-1]).all()  # cos(z_s, e1) grows, the others stay 0
    at_slot = -0.1 * math.log((math.exp(1 / 0.1) + 2) / 3)  # cos = 1, 0, 0 with r = 1/3
    assert math.isclose(energies[-1].item(), at_slot, rel_tol=1e-12)


def test_memory_update_moves_the_nearest_slot_by_the_ema():
    term = _orthonormal_memory(4, 4, tau=0.1)
    before = term.bank.clone()
    a = torch.tensor([2.0, 0.5, 0.0, 0.0], dtype=torch.float64)  # nearest e1
    b = torch.tensor([1.0, 0.0, 0.3, 0.0], dtype=torch.float64)  # nearest e1
    c = torch.tensor([0.1, 0.0, 3.0, 0.2], dtype=torch.float64)  # nearest e3
    z = torch.stack([a, c, b]).reshape(1, 3, 4)
    energy_before = term(z)
    assert torch.equal(term.bank, before)  # forward is pure
    nearest = term.update(z, momentum=0.9)
    assert nearest.tolist() == [0, 2, 0]
    torch.testing.assert_close(term.bank[0], 0.9 * before[0] + 0.1 * (a + b) / 2)
    torch.testing.assert_close(term.bank[2], 0.9 * before[2] + 0.1 * c)
    assert torch.equal(term.bank[[1, 3]], before[[1, 3]])  # slots nobody picked stay put
    assert (term(z) < energy_before).all()  # the hit slots now point more like their latents
    term.update(z, momentum=1.0)
    torch.testing.assert_close(term.bank[0], 0.9 * before[0] + 0.1 * (a + b) / 2)
    with pytest.raises(ValueError, match="momentum"):
        term.update(z, momentum=1.5)


def test_memory_bank_is_seeded_and_unit_norm():
    first, again, other = Memory(dim=6, seed=1), Memory(dim=6, seed=1), Memory(dim=6, seed=2)
    assert first.bank.shape == (64, 6)
    assert torch.equal(first.bank, again.bank) and not torch.equal(first.bank, other.bank)
    torch.testing.assert_close(first.bank.norm(dim=1), torch.ones(64))
    assert torch.equal(first.weights, torch.ones(64))  # uniform r_i = 1/M
    with pytest.raises(ValueError, match="tau > 0"):
        Memory(dim=6, tau=0.0)


# --- smooth (the worked example of docs/energies.md) ---------------------------------------------


def test_smooth_is_sum_of_squared_steps():
    z = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]], dtype=torch.float64)
    torch.testing.assert_close(Smooth()(z), torch.tensor([1.0 + 4.0], dtype=torch.float64))
    assert torch.equal(Smooth()(z[:, :1]), torch.zeros(1, dtype=torch.float64))
    assert eqt.energies.get("smooth") is Smooth


def test_docs_example_is_the_real_smooth_file():
    page = (ROOT / "docs" / "energies.md").read_text()
    source = (ROOT / "eqtheory" / "energies" / "smooth.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert source in blocks


# --- all terms: composition, dtypes, torch.func ------------------------------------------------


def test_parse_composes_every_learned_term():
    energy = eqt.energies.parse(
        "bidir+0.1*memory+mask+confidence+consist+anchor=2", dim=8, vocab=2
    )
    ctx = context(batch=4, length=6, vocab=2, dtype=torch.float32)
    z = torch.randn(4, 6, 8)
    value = energy(z, ctx)
    assert value.shape == (4,) and torch.isfinite(value).all()
    parts = energy.per_term(z, ctx)
    assert list(parts) == [
        "bidir", "0.1*memory(slots=64,tau=0.1)", "mask", "confidence", "consist", "anchor=2"
    ]
    torch.testing.assert_close(sum(parts.values()), value)
    assert energy.requires == ("tokens", "z0")
    again = eqt.energies.parse(energy.spec(), dim=8, vocab=2)
    assert again.spec() == energy.spec()


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_term_works_under_vmap_and_grad(name, dtype):
    term = build(name, dtype)
    ctx = context(dtype=dtype)
    z = torch.randn(4, 3, 5, 8, dtype=dtype)  # (S, B, T, d)
    stacked = vmap(lambda z: term(z, ctx))(z)
    looped = torch.stack([term(sample, ctx) for sample in z])
    assert stacked.dtype == dtype and stacked.shape == (4, 3)
    torch.testing.assert_close(stacked, looped)
    gradient = grad(lambda z: term(z, ctx).sum())(z[0])
    assert gradient.shape == z[0].shape and torch.isfinite(gradient).all()
    assert gradient.abs().sum() > 0
    one = term(z[0, 1:2], {key: value[1:2] for key, value in ctx.items()})
    torch.testing.assert_close(one, looped[0, 1:2])  # batch-independent


@pytest.mark.parametrize("spec", [
    "bidir", "bidir(target=latents,window=2)", "anchor=2", "memory",
    "bidir+0.1*memory+mask+confidence+consist",
    "bidir+bidir(window=2)+anchor=0.5+2*anchor=3",  # same-kind terms keep their own values
])
def test_prepared_context_gives_the_same_values_and_gradients(spec):
    energy = build(spec)
    ctx = context()
    z = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    prepared = energy.prepare(z.detach(), ctx)
    assert set(prepared) == set(ctx) and all(prepared[k] is v for k, v in ctx.items())
    nodes = [prepared, *getattr(prepared, "parts", ())]
    assert any(node.own for node in nodes)  # something was prepared
    plain, cached = energy(z, ctx), energy(z, prepared)
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    (g_plain,) = torch.autograd.grad(plain.sum(), z)
    (g_cached,) = torch.autograd.grad(cached.sum(), z)
    torch.testing.assert_close(g_cached, g_plain, rtol=0, atol=0)


@pytest.mark.parametrize("name", LEARNED)
def test_term_accepts_a_single_position(name):
    term = build(name)
    ctx = context(length=1)
    value = term(torch.randn(3, 1, 8, dtype=torch.float64), ctx)
    assert value.shape == (3,) and torch.isfinite(value).all()


def test_docs_paper_mapping_specs_build():
    page = (ROOT / "docs" / "energies.md").read_text()
    specs = re.findall(r"^\| (?:Sec|parity).*\| `([^`]+)`", page, flags=re.MULTILINE)
    assert len(specs) == 3
    ctx = context(batch=2, length=4, vocab=2, dtype=torch.float32)
    for spec in specs:
        energy = eqt.energies.parse(spec, dim=8, vocab=2)
        assert energy(torch.randn(2, 4, 8), ctx).shape == (2,)
