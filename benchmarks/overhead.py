"""Refinement overhead: train-step and inference time of EqT vs the baseline, as ratios.

Both models come from ``eqtheory.variants.build`` with the ``cpu`` preset's model size
(``ablations/presets.py``) at one sequence length; the train step is what ``ablations/train.py``
does per step (forward with the ``mask`` context, NLL + beta * energy, backward, grad clip,
AdamW), with EqT refining ``steps=2``; inference is a no-grad forward with ``steps=8`` and
``steps=32``. Each ratio (EqT time / baseline time, medians, timed round-robin) sits beside the
paper's figures (+15% training at K = 2, ~3x inference at K = 8) and the FLOP-count ratio of
``ablations/flops.py`` (backbone + (K + 1) energy evaluations; for the train step the same
forward ratio is used, since backward roughly scales forward for both models).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from ablations import presets, tasks
from ablations.config import RunConfig
from ablations.flops import backbone_flops, flops_per_token
from ablations.train import MASK_RATE
from benchmarks.common import Report, interleaved_medians, pin_threads
from eqtheory.energies.mask import random_mask
from eqtheory.variants import VariantSpec, build

PAPER = {"train K=2": 1.15, "eval K=8": 3.0, "eval K=32": None}
TARGET_OF_BOUND = 1.25


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


def run(*, quick: bool = False) -> Report:
    pin_threads()
    preset = presets.get("cpu")
    values = dict(preset.config)
    length = 32
    if quick:
        values.update(layers=1, width=16, heads=2, batch_size=8)
        length = 8
    config = RunConfig(**{**values, "length": length, "variant": VariantSpec()})
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
            out = model(inputs, mask=mask if with_energy else None, with_energy=with_energy,
                        stop="steps=2" if with_energy else None)
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

    repeats = 1 if quick else 7
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

    def bound(k: int) -> float:
        return flops_per_token(eqt_model, length, (k + 1) * len(eqt_model.erms)) / base_flops

    report = Report("overhead", ["measure", "eqt/baseline time", "FLOP bound", "of bound",
                                 "paper", "finite"])
    measured = [("train K=2", train, 2)] + [(f"eval K={k}", evals[k], k) for k in (8, 32)]
    for name, timed, k in measured:
        ratio = timed["eqt"][0] / timed["baseline"][0]
        flop = bound(k)
        report.rows.append({
            "measure": name, "eqt/baseline time": ratio, "FLOP bound": flop,
            "of bound": ratio / flop, "paper": PAPER[name],
            "finite": all(torch.isfinite(torch.tensor(v[1])).item() for v in timed.values()),
        })
    report.notes += [
        f"cpu preset model: layers {config.layers}, width {config.width}, heads {config.heads}, "
        f"batch {config.batch_size}, length {length}; variant {config.variant.energy!r}, solver "
        f"{config.variant.solver!r}, backward {config.variant.backward!r}, placement "
        f"{config.variant.placement!r}; median of {repeats} (round-robin, warm-up excluded).",
        "FLOP bound = ablations.flops.flops_per_token(EqT, K + 1 evaluations) / backbone_flops "
        "(an estimate: it counts matrix products, not memory traffic or Python overhead).",
    ]
    rows = {row["measure"]: row for row in report.rows}
    report.targets[f"within {TARGET_OF_BOUND}x of the FLOP bound"] = {
        "met": all(r["of bound"] <= TARGET_OF_BOUND for r in report.rows),
        "detail": ", ".join(f"{r['measure']}: {r['of bound']:.2f}x" for r in report.rows),
    }
    report.targets["below the paper's 3x at K = 8"] = {
        "met": rows["eval K=8"]["eqt/baseline time"] < 3.0,
        "detail": f"{rows['eval K=8']['eqt/baseline time']:.2f}x",
    }
    return report
