"""Linear recurrences ``x_t = J_t x_{t-1} + c_t``: our doubling scan, the plain loop, and
PyTorch's private ``torch._higher_order_ops.associative_scan`` (eager), on one thread.

Random contractive ``J`` (dense ``d x d``, spectral scale 0.9) and ``c``, batch 8, ``d = 16``,
``T`` in 64 ... 1,024 (``--quick``: 16, 32; on CUDA, `run(device="cuda")` as
`benchmarks.gpu_check` calls it, up to 16,384 to find where the scan's ``log2 T`` depth beats the
loop's ``T`` launches); median of 5 round-robin calls each (on CUDA each call ends with a
synchronisation); the error is the max absolute difference to the loop. PyTorch's scan is a
prototype API without a documented contract; it is measured only if it imports and runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.common import Report, interleaved_medians, pin_threads
from eqtheory.chain.scan import linear_recurrence


def torch_scan(J: torch.Tensor, c: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The recurrence through ``torch._higher_order_ops.associative_scan`` (prototype)."""
    from torch._higher_order_ops import associative_scan

    def combine(left, right):
        (J1, c1), (J2, c2) = left, right
        return J2 @ J1, (J2 @ c1.unsqueeze(-1)).squeeze(-1) + c2

    first = (J[:, 0] @ x0.unsqueeze(-1)).squeeze(-1) + c[:, 0]
    c = torch.cat([first.unsqueeze(1), c[:, 1:]], dim=1)
    _, x = associative_scan(combine, (J, c), dim=1, combine_mode="generic")
    return x


Call = Callable[[], torch.Tensor]


def synchronised(fn: Call, device: torch.device) -> Call:
    """``fn`` followed by a CUDA synchronisation when ``device`` is CUDA (so a timer sees the
    kernels, not their launch)."""
    if device.type != "cuda":
        return fn

    def call() -> torch.Tensor:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def lengths(*, quick: bool, device: torch.device) -> list[int]:
    """The ``T`` measured: tiny for ``quick``, 64 ... 1,024 on CPU, 64 ... 16,384 on CUDA."""
    if quick:
        return [16, 32]
    return [64, 256, 1024] + ([4096, 16384] if device.type == "cuda" else [])


def run(*, quick: bool = False, device: str = "cpu") -> Report:
    pin_threads()
    where = torch.device(device)
    report = Report("scan", ["T", "method", "ms", "max error"])
    batch, dim = 8, 16
    generator = torch.Generator().manual_seed(0)
    for length in lengths(quick=quick, device=where):
        J = torch.randn(batch, length, dim, dim, generator=generator) * 0.9 / dim**0.5
        c = torch.randn(batch, length, dim, generator=generator)
        J, c, x0 = J.to(where), c.to(where), torch.zeros(batch, dim, device=where)
        contenders = {
            "loop": lambda J=J, c=c, x0=x0: linear_recurrence(J, c, x0, method="sequential"),
            "doubling scan (ours)": lambda J=J, c=c, x0=x0: linear_recurrence(
                J, c, x0, method="scan"
            ),
        }
        try:
            torch_scan(J[:, :4], c[:, :4], x0)
            contenders["torch associative_scan (eager)"] = (
                lambda J=J, c=c, x0=x0: torch_scan(J, c, x0)
            )
        except Exception as error:  # a prototype API: report why it did not run
            report.notes.append(f"torch associative_scan did not run: {error!r}"[:200])
        timed = interleaved_medians(
            {name: synchronised(fn, where) for name, fn in contenders.items()}, repeats=5
        )
        reference = timed["loop"][1]
        for name, (seconds, x) in timed.items():
            report.rows.append({"T": length, "method": name, "ms": 1000 * seconds,
                                "max error": float((x - reference).abs().max())})
    report.notes.append(
        f"float32, batch {batch}, d {dim}, device {where}, one CPU thread; the doubling scan's "
        "work is "
        "O(T log T d^3) against the loop's O(T d^2), its depth log2 T against T: its depth can "
        "only pay where kernel launches dominate (a GPU)."
    )
    return report
