"""Memory of the backward modes: bytes saved for backward by ``implicit`` vs ``unrolled``.

Problem: ``f(z) = tanh(W z + U x)`` (an ``nn.Module`` with trainable ``W, U``), solved for a fixed
``K`` steps (``stop="steps=K"``, Picard) with gradients on. Measure: the total bytes of the
distinct tensors autograd saves for backward while the solve runs, counted with
``torch.autograd.graph.saved_tensors_hooks`` (deterministic, device-independent; a tensor saved
twice is counted once). This is the memory a backward pass must keep alive, the part that grows
with ``K`` when unrolling; the implicit mode's adjoint solve runs during backward and keeps only
one step's graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import eqtheory as eqt
from benchmarks.common import Report, pin_threads

FLAT_WITHIN = 0.10  # the target: implicit stays within 10% of its K = 4 value


class _TanhLayer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.W = nn.Linear(width, width, bias=False)
        self.U = nn.Linear(width, width)
        with torch.no_grad():
            self.W.weight.mul_(0.5 / torch.linalg.matrix_norm(self.W.weight, ord=2))
        self.x: Tensor | None = None

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(self.W(z) + self.U(self.x))


def saved_bytes(backward: str, steps: int, *, width: int, batch: int) -> tuple[int, bool]:
    """Bytes of distinct tensors saved for backward during one solve, and whether the gradient
    of a loss on the result reached the parameters (a check that the graph is real)."""
    torch.manual_seed(0)
    layer = _TanhLayer(width)
    layer.x = torch.randn(batch, width)
    seen: dict[tuple[int, int, tuple[int, ...]], int] = {}

    def pack(t: Tensor) -> Tensor:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sol = eqt.fixed_point(layer, torch.zeros(batch, width), solver="picard",
                              stop=f"steps={steps}", backward=backward)
    sol.z.square().sum().backward()
    reached = layer.W.weight.grad is not None and bool(torch.isfinite(layer.W.weight.grad).all())
    storages = {key[0]: size for key, size in seen.items()}  # one count per storage
    return sum(storages.values()), reached


def run(*, quick: bool = False) -> Report:
    pin_threads()
    width, batch = (16, 4) if quick else (256, 64)
    ks = (4, 8, 16) if quick else (4, 8, 16, 32, 64)
    report = Report("memory", ["K", "implicit_bytes", "unrolled_bytes", "unrolled/implicit",
                               "grads_ok"])
    for k in ks:
        implicit, ok_i = saved_bytes("implicit", k, width=width, batch=batch)
        unrolled, ok_u = saved_bytes("unrolled", k, width=width, batch=batch)
        report.rows.append({
            "K": k, "implicit_bytes": implicit, "unrolled_bytes": unrolled,
            "unrolled/implicit": unrolled / implicit, "grads_ok": ok_i and ok_u,
        })
    first, last = report.rows[0], report.rows[-1]
    spread = max(r["implicit_bytes"] for r in report.rows) / min(
        r["implicit_bytes"] for r in report.rows) - 1
    growth = last["unrolled_bytes"] / first["unrolled_bytes"]
    report.notes += [
        f"fixed point of tanh(W z + U x), width {width}, batch {batch}, float32, Picard, "
        "stop='steps=K'; bytes of distinct storages saved for backward "
        "(torch.autograd.graph.saved_tensors_hooks) during the solve.",
    ]
    report.targets[f"implicit flat within {FLAT_WITHIN:.0%} while unrolled grows"] = {
        "met": spread <= FLAT_WITHIN and growth > 1 + FLAT_WITHIN,
        "detail": f"implicit varies by {spread:.1%} over K={ks[0]}..{ks[-1]}; unrolled grows "
                  f"{growth:.1f}x",
    }
    return report
