"""The report's "Diagnostics of refinement" section (`ablations.report.section_diagnostics`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablation_fakes import fake_metrics

from ablations.config import RunConfig
from ablations.report import write_report
from ablations.store import Store
from eqtheory.variants import VariantSpec

STOPS = ("steps=0", "steps=8")


def fake_block(stop: str, seed: int) -> dict[str, Any]:
    """A ``diagnostics`` block (`ablations.evaluate` schema) with known values."""
    k = int(stop.split("=")[1])
    moved = 0.01 * k + 0.001 * seed  # seed 0, 1, 2 -> mean 0.081 at K = 8
    return {
        "displacement": {"mean": moved, "q50": moved, "q90": 2 * moved, "q99": 3 * moved,
                         "max": 4 * moved},
        "displacement_by_erm": [moved],
        "flips": {"wrong_to_right": 0.002 * k / 8, "right_to_wrong": 0.001 * k / 8,
                  "fixed": 0.01, "broken": 0.001, "changed": 0.003 * k / 8, "n": 1000},
        "grad_norm": {"z0": {"bidir": 0.5, "anchor=1": 0.0, "total": 0.5},
                      "z_star": {"bidir": 0.25, "anchor=1": 0.125, "total": 0.0625}},
        # mean 0.62 at K = 8; at K = 0 seed 2 has none (no wrong token): 0.615 over n = 2
        "energy_auroc": None if (k, seed) == (0, 2) else 0.61 + 0.01 * seed,
        "confidence_auroc": 0.9,
        "energy_mean": {"right": 1.0, "wrong": 2.0},
        "energy_tokens": 1000, "energy_nonfinite": 0, "diagnostic_sequences": 64,
        "acc_by_k": {"0": 0.75, "1": 0.76, "2": 0.77, "4": 0.78, "8": 0.79},
    }


def fill(path: Path, *, diagnostics: bool) -> None:
    with Store(path) as store:
        for seed in (0, 1, 2):
            for label, variant, stops in (("eqt", VariantSpec(), STOPS),
                                          ("baseline", VariantSpec(kind="baseline"), STOPS[:1])):
                config = RunConfig(variant=variant, eval_stops=stops, length=16, seed=seed)
                metrics = fake_metrics(config)
                if diagnostics and label == "eqt":
                    for stop, record in metrics["evals"].items():
                        record["diagnostics"] = fake_block(stop, seed)
                store.add(config, label=label)
                store.claim(config.hash())
                store.finish(config.hash(), metrics=metrics, timings={"total_s": 1.0},
                             device="cpu (test)", versions={"torch": "x"}, git_commit="abc")


def test_the_section_reports_every_diagnostic_with_its_spread(tmp_path: Path) -> None:
    fill(tmp_path / "results.sqlite", diagnostics=True)
    text = write_report(tmp_path).read_text()
    section = text[text.index("### Diagnostics of refinement (`parity`)"):]
    for heading in ("How far the latents move", "What drives the motion",
                    "error detector", "Accuracy against the step budget K"):
        assert heading in section, heading
    assert "first 64 test sequences" in section
    # displacement at K = 8: 100 * (0.080, 0.081, 0.082) -> 8.1 ± 0.1 (%), n = 3 seeds
    assert "| eqt steps=8 | 16 | 3 | 8.1 ± 0.1 | 16.2 ± 0.2 |" in section
    assert "+0.100" in section  # net flips: (0.002 - 0.001) * 100 points
    assert "| bidir | anchor=1 | total |" in section and "0.5 ± 0 → 0.25 ± 0" in section
    assert "0.62 ± 0.01 |" in section and "0.9" in section  # energy vs confidence AUROC
    assert "0.615 ± 0.00707 (n=2) |" in section  # a missing value is said
    assert "| K=0 | K=1 | K=2 | K=4 | K=8 |" in section and "75.00" in section
    assert "79.00" in section
    plot = tmp_path / "plots" / "acc_by_k_parity_eqt.png"
    assert plot.stat().st_size > 1000 and "plots/acc_by_k_parity_eqt.png" in section


def test_no_section_without_diagnostics(tmp_path: Path) -> None:
    fill(tmp_path / "results.sqlite", diagnostics=False)
    text = write_report(tmp_path).read_text()
    assert "Diagnostics of refinement" not in text
    assert not list((tmp_path / "plots").glob("acc_by_k_*.png"))
