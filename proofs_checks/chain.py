r"""Claim 9 (causal chains: the fixed point that carries the sequence).

**Statement.** For the chain ``z = F(z)``, ``F(z)_t = g(z_{t-1}, h_t)``, ``z_{-1} = s_0``
(`eqtheory.chain`): (a) ``F``'s Jacobian is nilpotent, so Picard iteration from any start is
exact on positions ``< k`` after ``k`` steps and reaches the fixed point after ``T`` steps, a
bound attained in the worst case (the last position can still be wrong one step before); (b)
Newton over the sequence (DEER) converges locally quadratically; (c) the implicit gradient at
the fixed point (the adjoint solved by one reverse recurrence) equals backpropagation through
the sequential recurrence (BPTT).

**Assumptions.** GRU cells with weights drawn at 2x PyTorch's default scale (so the chains are
not trivially contractive), float64, proposals ``h ~ N(0, 1)``, ``s_0 = 0``. (b) starts Newton
(no clip, no backtracking: the plain iteration) at the exact solution plus ``N(0, 0.05^2)``
noise and measures the order ``p = log(e_{k+1}/e_k) / log(e_k/e_{k-1})`` of the residual
``e_k = ||z_k - F(z_k)||`` on the steps with ``e_{k+1} > 1e-13``.

**Checks.** (a) max error after ``T`` Picard steps ``<= 1e-12``, on positions ``< k`` after
``k`` steps ``<= 1e-12``, and (max over chains) at the last position after ``T - 1`` steps
``> 1e-6``; (b) the median measured order ``>= 1.8`` (steps with ``e_k < 1e-2`` and
``e_{k+1} > 1e-11``); (c) max relative difference of the gradients (cell parameters and ``h``)
``<= 1e-10``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from eqtheory.chain import GRUCell
from eqtheory.chain.problem import solve_chain
from proofs_checks.record import Record, compare

CLAIM = "9 chain (causal recurrence)"
F64 = torch.float64


def _chain(seed: int, batch: int, length: int, dim: int) -> tuple[GRUCell, torch.Tensor]:
    torch.manual_seed(seed)
    cell = GRUCell(dim).double()
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.mul_(2.0)
    return cell, torch.randn(batch, length, dim, dtype=F64)


def _exact(cell: GRUCell, h: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return solve_chain(cell, h, s0, solver="sequential", stop="steps=1").z


def _picard(instances: list[tuple[GRUCell, torch.Tensor]]) -> list[Record]:
    after_t = prefix = 0.0
    before_last = 0.0
    for cell, h in instances:
        s0 = torch.zeros(h.shape[-1], dtype=F64)
        exact, length = _exact(cell, h, s0), h.shape[1]
        for k in (1, length // 2, length - 1, length):
            with torch.no_grad():
                z = solve_chain(cell, h, s0, solver="picard", stop=f"steps={k}").z
            prefix = max(prefix, float((z[:, :k] - exact[:, :k]).abs().max()))
            if k == length:
                after_t = max(after_t, float((z - exact).abs().max()))
            if k == length - 1:
                before_last = max(before_last, float((z[:, -1] - exact[:, -1]).abs().max()))
    note = f"{len(instances)} GRU chains, T in {sorted({h.shape[1] for _, h in instances})}"
    return [
        compare(CLAIM, "Picard: max error after T steps", after_t, "<=", 1e-12, note),
        compare(CLAIM, "Picard: max error on positions < k after k steps", prefix, "<=", 1e-12,
                "k in 1, T/2, T-1, T"),
        compare(CLAIM, "Picard: max error at position T-1 after T-1 steps", before_last, ">",
                1e-6, "T steps are needed in the worst case (contractive chains get close "
                "sooner)"),
    ]


def _newton_order(instances: list[tuple[GRUCell, torch.Tensor]]) -> Record:
    orders = []
    for index, (cell, h) in enumerate(instances):
        s0 = torch.zeros(h.shape[-1], dtype=F64)
        exact = _exact(cell, h, s0)
        noise = torch.randn(exact.shape, generator=torch.Generator().manual_seed(index),
                            dtype=F64)
        with torch.no_grad():
            sol = solve_chain(cell, h, s0, z0=exact + 0.05 * noise, solver="newton", clip=False,
                              backtrack=False, stop="grad<1e-14|steps=12")
        for residual in sol.trace["grad_norm"].T:  # per sequence, (K+1,)
            e = [float(v) for v in residual if v == v]
            for k in range(1, len(e) - 1):
                if e[k + 1] > 1e-11 and e[k] < 1e-2:  # the local regime, above rounding
                    orders.append(math.log(e[k + 1] / e[k]) / math.log(e[k] / e[k - 1]))
    orders.sort()
    return compare(CLAIM, "Newton: median local order of convergence", orders[len(orders) // 2],
                   ">=", 1.8, f"{len(orders)} steps with 1e-11 < e_k+1, e_k < 1e-2; range "
                   f"{orders[0]:.2f}-{orders[-1]:.2f} (2: quadratic, 1: linear)")


def _gradients(instances: list[tuple[GRUCell, torch.Tensor]]) -> Record:
    worst = 0.0
    for cell, h in instances:
        s0 = torch.zeros(h.shape[-1], dtype=F64)
        weights = torch.randn(h.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
        grads = []
        for solver, stop, backward in (("sequential", "steps=1", "unrolled"),
                                       ("newton", "grad<1e-13|steps=60", "implicit")):
            x = h.clone().requires_grad_()
            sol = solve_chain(cell, x, s0, solver=solver, stop=stop, backward=backward)
            grads.append(torch.autograd.grad((sol.z * weights).sum(), [x, *cell.parameters()]))
        for a, b in zip(*grads):
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
    return compare(CLAIM, "implicit (reverse scan) vs BPTT: max relative gradient difference",
                   worst, "<=", 1e-10, "Newton to 1e-13, gradients of cell weights and h")


def run(*, quick: bool, plots: Path | None) -> list[Record]:
    del plots
    lengths = (8, 32) if quick else (8, 32, 128, 256)
    instances = [_chain(seed, 3, length, 6) for seed, length in enumerate(lengths)]
    return [*_picard(instances), _newton_order(instances), _gradients(instances)]
