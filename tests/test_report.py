"""`ablations.report`: the Markdown report and plots from a database of a few rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablation_fakes import fake_metrics

from ablations.config import RunConfig
from ablations.report import Cell, main, paired, summary_table, write_report
from ablations.store import Store
from eqtheory.variants import VariantSpec

EQT = VariantSpec()
RUNS = {
    "baseline": (VariantSpec(kind="baseline"), ("steps=0",), 2),
    "eqt": (EQT, ("steps=0", "steps=8"), 2),
    "aux-only": (VariantSpec(aux_losses_only=True), ("steps=0",), 2),
    "compute-matched": (VariantSpec(kind="baseline"), ("steps=0",), 5),
}


def fill(path: Path, *, lengths: tuple[int, ...], seeds: tuple[int, ...]) -> list[RunConfig]:
    configs = []
    with Store(path) as store:
        for (label, (variant, stops, layers)), length, seed in (
            (item, length, seed) for item in RUNS.items() for length in lengths for seed in seeds
        ):
            config = RunConfig(variant=variant, eval_stops=stops, layers=layers, length=length,
                               seed=seed)
            store.add(config, label=label)
            store.claim(config.hash())
            store.finish(config.hash(), metrics=fake_metrics(config),
                         timings={"train_s": 1.0, "eval_s": 0.5, "total_s": 1.5},
                         device="cpu (2 threads, test)", versions={"torch": "x"}, git_commit="abc")
            configs.append(config)
        failed = RunConfig(variant=EQT, length=lengths[0], seed=99)
        store.add(failed, label="eqt")
        store.claim(failed.hash())
        store.fail(failed.hash(), error="Traceback...\nTrainingDiverged: nan at step 3",
                   requeue=False)
    return configs


def test_report_from_database(tmp_path: Path) -> None:
    fill(tmp_path / "results.sqlite", lengths=(16, 64), seeds=(0, 1, 2))
    path = write_report(tmp_path)
    text = path.read_text()
    assert path == tmp_path / "report.md"
    for heading in ("Per-token accuracy", "Difference to the baseline", "by difficulty bucket",
                    "convergence traces", "compute per token", "Table 2"):
        assert heading in text, heading
    assert "(sd " in text and "n=3)" in text  # spread and n per cell
    assert "seeds: [0, 1, 2]" in text and "cpu (2 threads, test)" in text
    assert "Wilcoxon cannot reach p<0.05" in text  # n = 3 is said to be too small
    assert "88.15" in text and "92.81" in text  # the paper's L=64 cells
    assert "eqt steps=0" in text and "compute-matched" in text and "aux-only" in text
    assert "TrainingDiverged: nan at step 3" in text  # failed runs are listed
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == ["accuracy_parity.png", "steps_parity_eqt_steps_8.png",
                     "traces_parity_eqt_steps_8.png"]
    assert all((tmp_path / "plots" / name).stat().st_size > 1000 for name in plots)
    for name in plots:
        assert f"plots/{name}" in text


def test_one_seed_says_n1_and_gives_no_interval(tmp_path: Path) -> None:
    fill(tmp_path / "results.sqlite", lengths=(8,), seeds=(0,))
    text = write_report(tmp_path).read_text()
    assert "(n=1)" in text and "n=1: no test" in text
    with Store(tmp_path / "results.sqlite") as store:
        summary = summary_table(store.rows())
    assert "baseline" in summary and "eqt steps=8" in summary and "(n=1)" in summary


def test_statistics() -> None:
    cell = Cell((1.0, 2.0, 3.0))
    assert cell.mean == 2.0 and cell.sd == pytest.approx(1.0)
    assert cell.ci == pytest.approx(4.302653 / 3**0.5, rel=1e-5)  # t_{0.975, 2} * sd / sqrt(n)
    result = paired({0: 3.0, 1: 5.0, 2: 4.0, 3: 6.0}, {0: 1.0, 1: 2.0, 2: 2.5, 3: 3.0, 9: 0.0})
    assert result["n"] == 4 and result["mean"] == pytest.approx(2.375)
    assert 0 < result["t_p"] < 0.05


def test_cli_without_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no results database" in capsys.readouterr().err


def test_runs_differing_beyond_the_cell_are_separate_series(tmp_path: Path) -> None:
    with Store(tmp_path / "results.sqlite") as store:
        for steps in (50, 300):
            config = RunConfig(variant=EQT, eval_stops=("steps=0", "steps=8"), length=8,
                               train_steps=steps)
            store.add(config, label="eqt")
            store.claim(config.hash())
            store.finish(config.hash(), metrics=fake_metrics(config), timings={"total_s": 1.0},
                         device="cpu", versions={}, git_commit=None)
        rows = store.rows()
    summary = summary_table(rows)
    assert "eqt[train_steps=50] steps=8" in summary and "eqt[train_steps=300] steps=8" in summary
