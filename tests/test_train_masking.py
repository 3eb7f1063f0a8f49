"""The training step leaves sequences that a solve rejected out of the loss, and counts them."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import eqtheory as eqt
from ablations.train import clip_per_member, kept_samples, masked_loss


def test_kept_samples_groups_per_position_statuses_by_sequence():
    per_position = eqt.Solution(
        z=torch.zeros(6, 2), status=torch.tensor([0, 1, 1, 1, int(eqt.Status.NONFINITE), 1]),
        steps=torch.zeros(6, dtype=torch.int64), fevals=torch.zeros(6, dtype=torch.int64),
        batch_fevals=0, trace={},
    )
    per_sequence = eqt.Solution(
        z=torch.zeros(3, 2), status=torch.tensor([int(eqt.Status.DIVERGED), 0, 0]),
        steps=torch.zeros(3, dtype=torch.int64), fevals=torch.zeros(3, dtype=torch.int64),
        batch_fevals=0, trace={},
    )
    keep = kept_samples([per_position, per_sequence], 3, torch.device("cpu"))
    assert keep.tolist() == [False, True, False]


def test_masked_loss_ignores_a_nan_sequence_and_equals_the_plain_mean_without_one():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 2, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 2, (4, 5))
    energy = torch.rand(4, dtype=torch.float64)
    every = torch.ones(4, dtype=torch.bool)
    nll, loss = masked_loss(
        logits, targets, energy, every, scored=torch.ones(5, dtype=torch.bool), beta=0.3, length=5
    )
    plain = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(nll, plain, rtol=1e-14)
    assert torch.allclose(loss, plain + 0.3 * (energy / 5).mean(), rtol=1e-14)

    poisoned = logits.detach().clone()
    poisoned[2] = float("nan")
    poisoned.requires_grad_()
    bad_energy = energy.clone()
    bad_energy[2] = float("nan")
    keep = torch.tensor([True, True, False, True])
    nll, loss = masked_loss(
        poisoned, targets, bad_energy, keep, scored=torch.ones(5, dtype=torch.bool), beta=0.3,
        length=5,
    )
    rows = [0, 1, 3]
    expected = F.cross_entropy(logits[rows].flatten(0, 1), targets[rows].flatten())
    assert torch.allclose(nll, expected, rtol=1e-14) and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(poisoned.grad).all() and (poisoned.grad[2] == 0).all()


@pytest.mark.parametrize("members", [1, 3])
def test_a_nonfinite_gradient_is_zeroed_for_its_member_only(members):
    """`clip_per_member`: the member whose gradient holds a NaN gets a zero gradient (and is
    reported); every other member is clipped exactly as without it."""
    torch.manual_seed(0)
    shape = (members, 4, 3) if members > 1 else (4, 3)
    params = [torch.nn.Parameter(torch.randn(shape)), torch.nn.Parameter(torch.randn(shape[:-1]))]
    clean = [10 * torch.randn_like(p) for p in params]
    for p, g in zip(params, clean):
        p.grad = g.clone()
    assert not clip_per_member(params, 1.0, members).any()
    expected = [p.grad.clone() for p in params]
    for p, g in zip(params, clean):
        p.grad = g.clone()
        (p.grad[0] if members > 1 else p.grad).view(-1)[0] = float("nan")
    zeroed = clip_per_member(params, 1.0, members)
    assert zeroed.tolist() == [True] + [False] * (members - 1)
    for p, want in zip(params, expected):
        first = p.grad[0] if members > 1 else p.grad
        assert (first == 0).all()
        if members > 1:
            assert torch.equal(p.grad[1:], want[1:])


@pytest.mark.parametrize("mixed", [False, True], ids=["float64", "with-float32"])
@pytest.mark.parametrize("members", [1, 3])
def test_each_member_is_clipped_as_clip_grad_norm_clips_it_alone(members, mixed):
    """`clip_per_member` against `torch.nn.utils.clip_grad_norm_` on each member's own slices
    (float64 to 1e-12), with a parameter that has no gradient, and (``mixed``) one float32
    gradient among them (then to float32's precision, which the norm then carries)."""
    generator = torch.Generator().manual_seed(3)
    lead = (members,) if members > 1 else ()
    shapes = [(4, 3), (5,), (2, 2, 2)]
    params = [torch.nn.Parameter(torch.zeros(*lead, *s, dtype=torch.float64)) for s in shapes]
    if mixed:
        params.append(torch.nn.Parameter(torch.zeros(*lead, 3)))  # float32
    params.append(torch.nn.Parameter(torch.zeros(*lead, 2, dtype=torch.float64)))  # no grad
    for p in params[:-1]:
        p.grad = 3 * torch.randn(p.shape, generator=generator, dtype=p.dtype)
    for n in range(members):  # the reference: each member alone
        alone = [torch.nn.Parameter((p[n] if members > 1 else p).detach().clone())
                 for p in params[:-1]]
        for a, p in zip(alone, params[:-1]):
            a.grad = (p.grad[n] if members > 1 else p.grad).clone()
        torch.nn.utils.clip_grad_norm_(alone, 1.0)
        if n == 0:
            expected = [[] for _ in alone]
        for slot, a in zip(expected, alone):
            slot.append(a.grad)
    assert not clip_per_member(params, 1.0, members).any()
    for p, want in zip(params[:-1], expected):
        got = [p.grad[n] for n in range(members)] if members > 1 else [p.grad]
        for g, w in zip(got, want):
            tolerance = 1e-6 if mixed else 1e-12
            torch.testing.assert_close(g, w, rtol=tolerance, atol=tolerance)
    assert params[-1].grad is None
    none = [torch.nn.Parameter(torch.zeros(2))]
    assert clip_per_member(none, 1.0, 1).tolist() == [False]  # no gradient at all
    elsewhere = [torch.nn.Parameter(torch.zeros(3, 2, device="meta"))]
    assert clip_per_member(elsewhere, 1.0, 3).device.type == "meta"  # the parameters' device
