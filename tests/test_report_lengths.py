"""Length generalisation in the summary and the report; traces without energies plot."""

from __future__ import annotations

from pathlib import Path

from ablation_fakes import fake_eval, fake_metrics

from ablations.config import RunConfig
from ablations.report import _mean_trace, summary_table, write_report
from ablations.store import Store
from eqtheory.variants import VariantSpec

CHAIN = VariantSpec(energy="chain", solver="sequential", gamma=float("inf"), alpha=1.0,
                    stop_train="steps=1", stop_eval="steps=1")


def test_evaluated_lengths_are_tabled_per_series_and_plotted(tmp_path: Path) -> None:
    with Store(tmp_path / "results.sqlite") as store:
        for label, variant, stops in (("eqt", CHAIN, ("steps=0", "steps=1")),
                                      ("rnn", VariantSpec(kind="rnn"), ("steps=0",))):
            for seed in (0, 1):
                config = RunConfig(variant=variant, eval_stops=stops, length=8, seed=seed,
                                   eval_lengths=(8, 32))
                metrics = fake_metrics(config)
                metrics["evals_by_length"] = {
                    "8": metrics["evals"],
                    "32": {stop: {**fake_eval(config, stop), "acc": 0.75} for stop in stops},
                }
                store.add(config, label=label)
                store.claim(config.hash())
                store.finish(config.hash(), metrics=metrics,
                             timings={"train_s": 1.0, "eval_s": 0.5, "total_s": 1.5},
                             device="cpu", versions={"torch": "x"}, git_commit="abc")
        rows = store.rows()
    summary = summary_table(rows)
    assert "length generalisation" in summary
    line = next(row for row in summary.splitlines() if row.startswith("rnn (train L=8)"))
    assert "75.00 ± 0.00 (n=2)" in line
    text = write_report(tmp_path).read_text()
    assert "### Length generalisation (parity)" in text and "| L=32 |" in text
    assert (tmp_path / "plots" / "lengths-parity.png").stat().st_size > 1000


def test_mean_trace_skips_steps_without_values() -> None:
    by_seed = {0: {"trace": {"energy": [None, None], "residual": [1.0, 0.5]}},
               1: {"trace": {"energy": [None, None], "residual": [3.0, 1.5]}}}
    assert _mean_trace(by_seed, "energy") == []
    assert _mean_trace(by_seed, "residual") == [2.0, 1.0]
