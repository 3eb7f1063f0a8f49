r"""Claim 4 (Thm. 4, refinement helps on hard instances).

**Paper.** If refinement lowers the energy by ``Delta = L(h_0) - L(h_K)`` and the energy is
calibrated to the task loss within ``c``, then the loss drops by at least ``Delta - 2c``; the
calibration is stated one-sided (and with a strict inequality), and the proof has a sign error.

**What is true.** With *two-sided* calibration on the states visited,
``|L(h) - (loss(h) - loss*)| <= c`` for ``h in {h_0, h_K}``:
``loss(h_K) - loss* <= L(h_K) + c = L(h_0) - Delta + c <= loss(h_0) - loss* - Delta + 2c``,
so ``loss(h_0) - loss(h_K) >= Delta - 2c`` (with ``<=``). With either one-sided version alone
the conclusion fails: explicit 1-D counterexamples below.

**Checks.** (a) one-sided ``L - (loss - loss*) <= c`` (the energy may *under*-estimate the
excess loss): ``loss = h^2``, ``L = (h - 3)^2 / 2``, GD from ``h_0 = 0``; (b) one-sided
``L - (loss - loss*) >= -c``: ``loss = h^2``, ``L = 10 (h - 0.5)^2``; in both, ``c`` is the
smallest constant valid on the whole segment the solver travels, and the loss drop is below
``Delta - 2c``; (c) the two-sided statement on the same instances and on random instances
``L = loss - loss* + p`` with ``|p| <= c`` (a bounded sinusoidal perturbation), GD run with the
toolkit for a random number of steps: the slack ``(loss drop) - (Delta - 2c)`` is never negative.
"""

from __future__ import annotations

from pathlib import Path

import torch

import eqtheory as eqt
from proofs_checks.record import Record, compare

CLAIM = "4 hard instances (Thm. 4)"
F64 = torch.float64


def _one_dimensional(energy, loss, h0: float, alpha: float) -> dict[str, float]:
    """Run GD on ``energy`` from ``h0``; calibration constants over the travelled segment."""
    sol = eqt.minimize(
        lambda h: energy(h[:, 0]),
        torch.tensor([[h0]], dtype=F64),
        solver="gd",
        step_size=alpha,
        stop="grad<1e-12|steps=2000",
    )
    hk = float(sol.z[0, 0])
    segment = torch.linspace(min(h0, hk), max(h0, hk), 100001, dtype=F64)
    gap = energy(segment) - loss(segment)  # loss* = 0 in both instances
    h0_t, hk_t = torch.tensor(h0, dtype=F64), torch.tensor(hk, dtype=F64)
    return {
        "delta": float(energy(h0_t) - energy(hk_t)),
        "drop": float(loss(h0_t) - loss(hk_t)),
        "c_upper": float(gap.max().clamp_min(0)),  # L - excess <= c
        "c_lower": float((-gap).max().clamp_min(0)),  # excess - L <= c
        "c_two": float(gap.abs().max()),
        "hk": hk,
    }


@torch.no_grad()  # plain-callable energies: no parameter gradients wanted
def run(*, quick: bool, plots: Path | None) -> list[Record]:
    del plots

    def loss(h):
        return h**2

    under = _one_dimensional(lambda h: 0.5 * (h - 3) ** 2, loss, 0.0, 0.5)
    over = _one_dimensional(lambda h: 10 * (h - 0.5) ** 2, loss, 0.0, 0.05)
    records = [
        compare(
            CLAIM,
            "one-sided (L - excess <= c) counterexample: loss drop vs Delta-2c",
            under["drop"],
            "<",
            under["delta"] - 2 * under["c_upper"],
            f"loss=h^2, L=(h-3)^2/2, h: 0 -> {under['hk']:.3f}, Delta={under['delta']:.2f}, "
            f"c={under['c_upper']:.2f}: the one-sided claim FAILS",
        ),
        compare(
            CLAIM,
            "one-sided (excess - L <= c) counterexample: loss drop vs Delta-2c",
            over["drop"],
            "<",
            over["delta"] - 2 * over["c_lower"],
            f"loss=h^2, L=10(h-0.5)^2, h: 0 -> {over['hk']:.3f}, Delta={over['delta']:.2f}, "
            f"c={over['c_lower']:.2f}: the other one-sided claim FAILS",
        ),
        compare(
            CLAIM,
            "two-sided on counterexample (a): loss drop - (Delta-2c)",
            under["drop"] - (under["delta"] - 2 * under["c_two"]),
            ">=",
            0.0,
            f"c={under['c_two']:.2f}",
        ),
        compare(
            CLAIM,
            "two-sided on counterexample (b): loss drop - (Delta-2c)",
            over["drop"] - (over["delta"] - 2 * over["c_two"]),
            ">=",
            0.0,
            f"c={over['c_two']:.2f}",
        ),
    ]
    records.append(_random_two_sided(200 if quick else 2000))
    return records


def _random_two_sided(instances: int) -> Record:
    """``loss(h) = 1/2 (h - t)^T A (h - t)``, ``L = loss + c sin(w . h + phase)``:
    ``|L - loss| <= c`` everywhere."""
    generator = torch.Generator().manual_seed(4)
    dim = 3
    q, _ = torch.linalg.qr(torch.randn(instances, dim, dim, generator=generator, dtype=F64))
    eig = 0.2 + 2 * torch.rand(instances, dim, generator=generator, dtype=F64)
    matrix = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    target = torch.randn(instances, dim, generator=generator, dtype=F64)
    c = 0.5 * torch.rand(instances, generator=generator, dtype=F64)
    freq = 2 * torch.randn(instances, dim, generator=generator, dtype=F64)
    phase = 6.3 * torch.rand(instances, generator=generator, dtype=F64)

    def loss(h):
        d = h - target
        return 0.5 * torch.einsum("bi,bij,bj->b", d, matrix, d)

    def energy(h):
        return loss(h) + c * torch.sin((freq * h).sum(dim=1) + phase)

    h0 = target + 2 * torch.randn(instances, dim, generator=generator, dtype=F64)
    slack = torch.full((instances,), float("inf"), dtype=F64)
    for k in (1, 3, 10, 30):  # several refinement budgets K
        hk = eqt.minimize(energy, h0, solver="gd", step_size=0.05, stop=f"steps={k}").z
        delta = energy(h0) - energy(hk)
        drop = loss(h0) - loss(hk)
        slack = torch.minimum(slack, drop - (delta - 2 * c))
    return compare(
        CLAIM,
        "two-sided, random instances: min slack loss drop - (Delta-2c)",
        float(slack.min()),
        ">=",
        0.0,
        f"{instances} instances x K in (1,3,10,30); |L - excess| <= c globally",
    )
