"""Compiled steps (``--compile``, `ablations.compile`): eager vs compiled time per step.

At the ``cpu`` preset's model size (its batch, length 32, as `benchmarks.overhead`), for the
baseline and EqT: the training step (`ablations.train.training_step`: forward with the
``mask`` context, NLL + beta * energy, backward, clipping, AdamW; EqT refines ``steps=2``
with unrolled gradients, so the compiled pull-back's own backward runs) and, for EqT, a
no-grad evaluation forward at ``steps=8``. Eager and compiled models start from the same
weights; times are medians, timed round-robin after warm-up rounds that hold the compilation
(its time is the first compiled call's, reported apart). ``--quick`` uses a tiny model and the
``aot_eager`` backend (the same graphs without code generation: seconds, not minutes).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch

from ablations import tasks
from ablations.compile import compile_model
from ablations.train import make_optimizer, training_step
from benchmarks.common import Report, interleaved_medians, pin_threads
from benchmarks.overhead import _config
from eqtheory.context import MASK_RATE
from eqtheory.energies.mask import random_mask
from eqtheory.variants import build


def _contenders(config, kind: str, backend: str) -> dict[str, Any]:
    """``{"eager": model, "compiled": model}`` of `kind` with equal weights."""
    task = tasks.get(config.task)
    torch.manual_seed(0)
    eager = build(dataclasses.replace(config.variant, kind=kind), vocab=task.vocab,
                  width=config.width, layers=config.layers, heads=config.heads,
                  max_len=config.length)
    return {"eager": eager, "compiled": compile_model(copy.deepcopy(eager), backend=backend)}


def _measure(config, kind: str, backend: str, repeats: int) -> list[dict[str, Any]]:
    task, length, batch = tasks.get(config.task), config.length, config.batch_size
    models = _contenders(config, kind, backend)
    sample = task.sample(batch, length, torch.Generator().manual_seed(0))
    inputs, targets = sample.inputs.view(1, batch, length), sample.targets.view(1, batch, length)
    with_energy = kind == "eqt"
    mask = random_mask(sample.inputs, MASK_RATE, generator=torch.Generator().manual_seed(1)) \
        if with_energy else None
    scored = task.scored(length)
    optimizers = {name: make_optimizer(m, config, device=torch.device("cpu"))
                  for name, m in models.items()}

    context = {} if mask is None else {"mask": mask}

    def train(name: str):
        def step() -> float:
            loss, *_ = training_step(
                models[name], optimizers[name], inputs, targets, context, scored=scored,
                beta=config.variant.beta, grad_clip=config.grad_clip, with_energy=with_energy)
            return float(loss.sum())
        return step

    def infer(name: str):
        def forward() -> float:
            with torch.no_grad():
                return float(models[name](sample.inputs, stop="steps=8",
                                          with_energy=False).logits.abs().mean())
        return forward

    train("eager")()  # both take one step first: the weights stay equal
    started = time.perf_counter()
    train("compiled")()  # the first call compiles
    compile_train = time.perf_counter() - started
    measures = [("train K=2" if with_energy else "train", train, compile_train)]
    if with_energy:
        for model in models.values():
            model.eval()
        started = time.perf_counter()
        infer("compiled")()
        measures.append(("eval K=8", infer, time.perf_counter() - started))
    rows = []
    for name, make, compile_s in measures:
        for model in models.values():
            model.train(name.startswith("train"))
        timed = interleaved_medians({n: make(n) for n in models}, repeats=repeats, warmup=2)
        eager_s, compiled_s = timed["eager"][0], timed["compiled"][0]
        rows.append({"model": kind, "measure": name, "eager ms": 1e3 * eager_s,
                     "compiled ms": 1e3 * compiled_s, "speed-up": eager_s / compiled_s,
                     "compile s": compile_s})
    return rows


def run(*, quick: bool = False) -> Report:
    pin_threads()
    backend, repeats = ("aot_eager", 2) if quick else ("inductor", 7)
    config = _config("cpu", quick)
    report = Report("compile", ["model", "measure", "eager ms", "compiled ms", "speed-up",
                                "compile s"])
    for kind in ("baseline", "eqt"):
        report.rows += _measure(config, kind, backend, repeats)
    report.notes += [
        f"cpu model{' (quick: tiny)' if quick else ''}: layers {config.layers}, width "
        f"{config.width}, heads {config.heads}, batch {config.batch_size}, length "
        f"{config.length}; backend {backend}; float32 on CPU; median of {repeats} "
        "(round-robin, after 2 warm-up rounds).",
        "compile s: the first compiled call (tracing and code generation, plus one step); "
        "later shapes (other batch sizes or lengths) compile again once.",
    ]
    return report
