"""A fixed results database for report tests: every label, two variants of EqT and of aux-only
(so series carry tags),
rules with and without a plain step budget, two tasks, evaluated lengths, diagnostics and a
failed run; timestamps and hosts pinned so that the rendered report is a fixed text
(``tests/data/report_golden.md``, rendered by the report code before its series became typed
records)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ablation_fakes import fake_eval, fake_metrics

from ablations.config import RunConfig
from ablations.store import Row, Store
from eqtheory.variants import VariantSpec

STOPS = ("steps=0", "steps=8", "residual<0.001|steps=32")
VARIANTS = {
    "eqt": [VariantSpec(), VariantSpec(energy="bidir+mask")],
    "baseline": [VariantSpec(kind="baseline")],
    "aux-only": [VariantSpec(aux_losses_only=True), VariantSpec(aux_losses_only=True, beta=0.1)],
    "compute-matched": [VariantSpec(kind="baseline")],
    "rnn": [VariantSpec(kind="rnn")],
}


def _block(stop: str, seed: int) -> dict:
    k = 32 if "|" in stop else int(stop.split("=")[1])
    moved = 0.01 * k + 0.001 * seed
    return {
        "displacement": {"mean": moved, "q50": moved, "q90": 2 * moved, "q99": 3 * moved,
                         "max": 4 * moved},
        "displacement_by_erm": [moved],
        "flips": {"wrong_to_right": 0.002, "right_to_wrong": 0.001, "fixed": 0.01,
                  "broken": 0.001, "changed": 0.003, "n": 1000},
        "grad_norm": {"z0": {"bidir": 0.5, "total": 0.5}, "z_star": {"bidir": 0.25, "total": 0.1}},
        "energy_auroc": 0.6 + 0.01 * seed, "confidence_auroc": 0.9,
        "energy_mean": {"right": 1.0, "wrong": 2.0},
        "energy_tokens": 1000, "energy_nonfinite": 0, "diagnostic_sequences": 64,
        "acc_by_k": {"0": 0.75, "1": 0.76, "8": 0.79},
    }


def fill(path: Path) -> None:
    with Store(path) as store:
        for task in ("parity", "parity_final"):
            for label, variants in VARIANTS.items():
                for variant in variants:
                    for length in (8, 16):
                        for seed in (0, 1):
                            stops = STOPS if label == "eqt" else ("steps=0",)
                            layers = 4 if label == "compute-matched" else 2
                            config = RunConfig(variant=variant, task=task, eval_stops=stops,
                                               length=length, seed=seed, layers=layers,
                                               eval_lengths=(8, 32))
                            metrics = fake_metrics(config)
                            if label == "eqt":
                                for stop, record in metrics["evals"].items():
                                    record["diagnostics"] = _block(stop, seed)
                            metrics["evals_by_length"] = {
                                "8": metrics["evals"],
                                "32": {s: {**fake_eval(config, s), "acc": 0.7 + 0.01 * seed}
                                       for s in stops},
                            }
                            store.add(config, label=label)
                            store.claim(config.hash())
                            store.finish(config.hash(), metrics=metrics,
                                         timings={"train_s": 1.0, "eval_s": 0.5, "total_s": 1.5},
                                         device="cpu (test)", versions={"torch": "x"},
                                         git_commit="abc")
        failed = RunConfig(length=8, seed=99)
        store.add(failed, label="eqt")
        store.claim(failed.hash())
        store.fail(failed.hash(), error="Traceback...\nTrainingDiverged: nan at step 3",
                   requeue=False)


def pinned_rows(path: Path) -> list[Row]:
    """The database's rows with start, finish and host pinned (they vary between fills)."""
    with Store(path) as store:
        rows = store.rows()
    return [dataclasses.replace(row, started_at=100.0 + i, finished_at=101.0 + i, host="host")
            for i, row in enumerate(rows)]
