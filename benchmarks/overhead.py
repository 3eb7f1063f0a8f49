"""Refinement overhead: train-step and inference time of EqT vs the baseline, as ratios.

Both models come from ``eqtheory.variants.build`` at two model sizes: the ``cpu`` preset's
(``ablations/presets.py``; its batch, length 32) and the ``paper`` preset's (6 layers, width
256, 8 heads) at a CPU-sized batch and length (`PAPER_BATCH`, `PAPER_LENGTH`: the preset's batch
256 is a GPU job). The train step is what ``ablations/train.py`` does per step (forward with the
``mask`` context, NLL + beta * energy, backward, grad clip, AdamW), with EqT refining
``steps=2``; inference is a no-grad forward with ``steps=8`` and ``steps=32``. Each ratio (EqT
time / baseline time, medians, timed round-robin) sits beside the paper's figures (+15% training
at K = 2, ~3x inference at K = 8, for its 6-layer width-256 model) and the FLOP-count ratio of
``ablations/flops.py`` (backbone + (K + 1) energy evaluations; for the train step the same
forward ratio is used, since backward roughly scales forward for both models).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.nn import functional as F

from ablations import presets, tasks
from ablations.config import RunConfig
from ablations.flops import backbone_flops, flops_per_token
from benchmarks.common import Report, interleaved_medians, pin_threads
from eqtheory.context import MASK_RATE
from eqtheory.energies.mask import random_mask
from eqtheory.variants import VariantSpec, build

PAPER = {"train K=2": 1.15, "eval K=8": 3.0, "eval K=32": None}
TARGET_OF_BOUND = 1.25
CPU_LENGTH = 32
PAPER_BATCH, PAPER_LENGTH = 16, 64
"""The ``paper``-size rows' batch and length: the paper model's per-step cost on one CPU thread
in well under a minute for the whole table."""
QUICK = {
    "cpu": dict(layers=1, width=16, heads=2, batch_size=8, length=8),
    "paper": dict(layers=2, width=32, heads=2, batch_size=4, length=8),
}


def _models(config: RunConfig):
    task = tasks.get(config.task)
    made = {}
    for kind in ("baseline", "eqt"):
        torch.manual_seed(0)
        made[kind] = build(
            dataclasses.replace(config.variant, kind=kind), vocab=task.vocab, width=config.width,
            layers=config.layers, heads=config.heads, max_len=config.length,
        )
    return task, made


def _config(size: str, quick: bool) -> RunConfig:
    """The `RunConfig` of one model size: the preset's model and optimiser, our batch/length."""
    values: dict[str, Any] = dict(presets.get(size).config)
    if size == "cpu":
        values.update(length=CPU_LENGTH)
    else:
        values.update(batch_size=PAPER_BATCH, length=PAPER_LENGTH)
    if quick:
        values.update(QUICK[size])
    return RunConfig(**{**values, "variant": VariantSpec()})


def _measure(size: str, config: RunConfig, repeats: int) -> list[dict[str, Any]]:
    """The three rows (train K=2, eval K=8, eval K=32) of one model size."""
    length = config.length
    task, models = _models(config)
    gen = torch.Generator().manual_seed(0)
    batch = task.sample(config.batch_size, length, gen)
    inputs, targets = batch.inputs, batch.targets
    scored = task.scored(length)
    mask = random_mask(inputs, MASK_RATE, generator=torch.Generator().manual_seed(1))
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=config.lr) for k, m in models.items()}

    def train_step(kind: str):
        model, with_energy = models[kind], kind == "eqt"

        def step() -> float:
            out = model(inputs, context={"mask": mask} if with_energy else None,
                        with_energy=with_energy, stop="steps=2" if with_energy else None)
            logits = out.logits[:, scored]  # (B, S, V)
            loss = F.cross_entropy(logits.flatten(0, 1), targets[:, scored].flatten())
            if out.energy is not None:
                loss = loss + config.variant.beta * (out.energy / length).mean()
            optimizers[kind].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizers[kind].step()
            return float(loss.detach())

        return step

    def infer(kind: str, k: int):
        model = models[kind]

        def forward() -> float:
            with torch.no_grad():
                out = model(inputs, stop=f"steps={k}" if kind == "eqt" else None,
                            with_energy=False)
            return float(out.logits.float().abs().mean())

        return forward

    for model in models.values():
        model.train()
    train = interleaved_medians(
        {"baseline": train_step("baseline"), "eqt": train_step("eqt")}, repeats=repeats)
    for model in models.values():
        model.eval()
    evals = {k: interleaved_medians(
        {"baseline": infer("baseline", k), "eqt": infer("eqt", k)}, repeats=repeats)
        for k in (8, 32)}

    eqt_model = models["eqt"]
    base_flops = backbone_flops(models["baseline"], length)
    rows = []
    measured = [("train K=2", train, 2)] + [(f"eval K={k}", evals[k], k) for k in (8, 32)]
    for name, timed, k in measured:
        ratio = timed["eqt"][0] / timed["baseline"][0]
        flop = flops_per_token(eqt_model, length, (k + 1) * len(eqt_model.erms)) / base_flops
        rows.append({
            "model": size, "measure": name, "eqt/baseline time": ratio, "FLOP bound": flop,
            "of bound": ratio / flop, "paper": PAPER[name],
            "finite": all(torch.isfinite(torch.tensor(v[1])).item() for v in timed.values()),
        })
    return rows


def run(*, quick: bool = False) -> Report:
    pin_threads()
    repeats = 1 if quick else 7
    report = Report("overhead", ["model", "measure", "eqt/baseline time", "FLOP bound",
                                 "of bound", "paper", "finite"])
    variant = VariantSpec()
    for size in ("cpu", "paper"):
        config = _config(size, quick)
        rows = _measure(size, config, repeats)
        report.rows += rows
        report.notes.append(
            f"{size} model{' (quick: tiny)' if quick else ''}: layers {config.layers}, width "
            f"{config.width}, heads {config.heads}, batch {config.batch_size}, length "
            f"{config.length}.")
        report.targets[f"{size} model: within {TARGET_OF_BOUND}x of the FLOP bound"] = {
            "met": all(r["of bound"] <= TARGET_OF_BOUND for r in rows),
            "detail": ", ".join(f"{r['measure']}: {r['of bound']:.2f}x" for r in rows),
        }
        k8 = next(r for r in rows if r["measure"] == "eval K=8")
        report.targets[f"{size} model: below the paper's 3x at K = 8"] = {
            "met": k8["eqt/baseline time"] < 3.0,
            "detail": f"{k8['eqt/baseline time']:.2f}x",
        }
    report.notes += [
        f"Variant {variant.energy!r}, solver {variant.solver!r}, backward {variant.backward!r}, "
        f"placement {variant.placement!r}; float32 on CPU; median of {repeats} (round-robin, "
        "warm-up excluded). The paper model's rows use batch "
        f"{PAPER_BATCH} and length {PAPER_LENGTH} (its preset trains at batch 256 on a GPU).",
        "FLOP bound = ablations.flops.flops_per_token(EqT, K + 1 evaluations) / backbone_flops "
        "(an estimate: it counts matrix products, not memory traffic or Python overhead).",
    ]
    return report
