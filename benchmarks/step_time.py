"""Where a training step's time goes on this machine: the `cpu` preset's runs, by operator kind.

For each label the ``cpu`` preset trains (baseline, EqT, aux-only, compute-matched) at its
longest length, one run's training step (`ablations.train.training_step`, as the runner takes
it, one thread) is profiled over a few steps after warm-up, and every ``aten::`` operator's
self CPU time (its own, without the operators it calls) is summed into a kind:

- ``matmul``: ``mm``, ``addmm``, ``bmm``, ``baddbmm``; with the profiler's FLOP count of those,
  ``matmul GFLOP/s``, the rate they ran at;
- ``attention``: the fused scaled-dot-product attention kernels, forward and backward;
- ``gelu``, ``layer norm``, ``softmax + loss`` (log-softmax, NLL and their backward),
  ``optimizer`` (the fused AdamW), ``copies`` (``copy_``, ``to``, ``clone``, ``cat``, ``stack``);
- ``other``: every other operator (element-wise arithmetic, reductions, ``where``, views).

``ops`` counts the ``aten::`` operators a step dispatches (nested ones included). ``step ms``
is the wall time per step without the profiler, ``profiled ms`` with it (the
profiler's cost per operator falls mostly on the many small ones, so the kinds' times are read
as shares of what the profiler saw, ``matmul share`` for the first). The shares say what
a faster step would have to cut: on a CPU the matrix products and attention are arithmetic that
packing or stacking runs does not remove (docs/performance.md section 4).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ablations import presets
from benchmarks.common import Report, pin_threads
from benchmarks.training_setup import planned_runs, training_setup

KINDS: dict[str, tuple[str, ...]] = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                  "aten::_scaled_dot_product_efficient_attention",
                  "aten::_scaled_dot_product_efficient_attention_backward",
                  "aten::_scaled_dot_product_flash_attention",
                  "aten::_scaled_dot_product_flash_attention_backward"),
    "gelu": ("aten::gelu", "aten::gelu_backward"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "softmax + loss": ("aten::_log_softmax", "aten::_log_softmax_backward_data",
                       "aten::nll_loss_forward", "aten::nll_loss_backward",
                       "aten::nll_loss2d_forward", "aten::nll_loss2d_backward"),
    "optimizer": ("aten::_fused_adamw_",),
    "copies": ("aten::copy_", "aten::to", "aten::_to_copy", "aten::clone", "aten::cat",
               "aten::stack"),
}
KIND_OF = {name: kind for kind, names in KINDS.items() for name in names}
QUICK_SETTINGS = {"layers": 1, "width": 16, "heads": 2, "batch_size": 8}


def kind_of(operator: str) -> str:
    """The kind (a `KINDS` key, else ``other``) of an ``aten::`` operator's name."""
    return KIND_OF.get(operator, "other")


def _seconds(step: Any, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def breakdown(step: Any, steps: int) -> dict[str, float]:
    """Time ``steps`` calls of ``step()``, then profile as many: ``{"step ms", "profiled ms",
    "ops", "<kind> ms" for every kind and other, "matmul GFLOP/s"}``, per step (``ops``: the
    ``aten::`` operators dispatched, nested ones included; the times: their self CPU time)."""
    plain = _seconds(step, steps)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        seconds = _seconds(step, steps)
    times = dict.fromkeys([*KINDS, "other"], 0.0)
    matmul_flops, operators = 0.0, 0
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        operators += event.count
        kind = kind_of(event.key)
        times[kind] += event.self_cpu_time_total / 1e3  # us -> ms
        if kind == "matmul":
            matmul_flops += event.flops or 0
    out = {"step ms": 1e3 * plain / steps, "profiled ms": 1e3 * seconds / steps,
           "ops": operators / steps}
    out.update({f"{kind} ms": value / steps for kind, value in times.items()})
    out["matmul GFLOP/s"] = matmul_flops / (times["matmul"] * 1e6) if times["matmul"] else 0.0
    return out


def run(*, quick: bool = False) -> Report:
    pin_threads()
    length = max(presets.get("cpu").lengths)
    settings = QUICK_SETTINGS if quick else None
    kinds = [f"{kind} ms" for kind in [*KINDS, "other"]]
    columns = ["label", "length", "step ms", "profiled ms", "ops", *kinds, "matmul share",
               "matmul GFLOP/s"]
    report = Report("step_time", columns)
    for label, config in planned_runs("cpu", (8 if quick else length,), settings, preset="cpu"):
        setup = training_setup(config, torch.device("cpu"))
        step = setup.stepper()
        for _ in range(2):  # warm-up: allocator, first-call paths
            step()
        row = breakdown(step, 2 if quick else 5)
        accounted = sum(row[kind] for kind in kinds)
        report.rows.append({"label": label, "length": config.length, **row,
                            "matmul share": row["matmul ms"] / accounted if accounted else 0.0})
    report.notes += [
        "One run's training step of each label of the cpu preset (python -m ablations.run "
        "--preset cpu), one thread, after 2 warm-up steps; <kind> ms: self CPU time of that "
        "kind's aten operators per step; matmul GFLOP/s: the profiler's FLOP count of the "
        "matrix products over their time.",
    ]
    return report
