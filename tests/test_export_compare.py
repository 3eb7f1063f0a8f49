"""Results out of the database: the CSV export and the comparison of two databases."""

from __future__ import annotations

import copy
import csv
import json
import sqlite3
from pathlib import Path

import pytest
from ablation_fakes import fake_eval
from test_report import fill

from ablations import compare, export
from ablations.report import main
from ablations.store import Store


def test_csv_has_one_line_per_run_rule_and_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = fill(tmp_path / "results.sqlite", lengths=(16, 64), seeds=(0, 1))
    # one EqT run was also evaluated at other lengths (the key the length sweep adds)
    eqt = next(c for c in configs if c.variant.kind == "eqt" and c.length == 16)
    with Store(tmp_path / "results.sqlite") as store:
        metrics = copy.deepcopy(store.get(eqt.hash()).metrics)
    metrics["evals_by_length"] = {
        str(length): {stop: fake_eval(eqt, stop) for stop in eqt.eval_stops}
        for length in (16, 32, 48)
    }
    metrics["masked_sequences"] = 3  # a run-level scalar: a column of its own
    db = sqlite3.connect(tmp_path / "results.sqlite")
    with db:
        db.execute("UPDATE runs SET metrics = ? WHERE hash = ?",
                   (json.dumps(metrics), eqt.hash()))
    db.close()

    assert main(["--out", str(tmp_path), "--csv"]) == 0
    assert "csv:" in capsys.readouterr().out
    with open(tmp_path / "results.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    expected = sum(len(c.eval_stops) * (3 if c == eqt else 1) for c in configs)
    assert len(lines) == expected  # the failed run has no line
    keys = {(line["hash"], line["rule"], line["eval_length"]) for line in lines}
    assert len(keys) == len(lines)
    assert {line["eval_length"] for line in lines if line["hash"] == eqt.hash()} == {
        "16", "32", "48"}
    first = lines[0]
    for column in ("label", "task", "length", "seed", "layers", "lr", "variant.energy",
                   "variant.solver", "rule", "acc", "acc_by_position.q1", "flops_per_token",
                   "params", "trained_steps", "total_s", "device", "git_commit"):
        assert column in first, column
    assert "trace" not in first and "steps_hist" not in first
    assert {line["masked_sequences"] for line in lines if line["hash"] == eqt.hash()} == {"3"}
    assert {line["masked_sequences"] for line in lines if line["hash"] != eqt.hash()} == {""}

    assert main(["--out", str(tmp_path), "--csv", "-"]) == 0
    assert capsys.readouterr().out == (tmp_path / "results.csv").read_text()


def test_pandas_reads_the_csv(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    configs = fill(tmp_path / "results.sqlite", lengths=(16,), seeds=(0, 1))
    assert main(["--out", str(tmp_path), "--csv"]) == 0
    frame = pandas.read_csv(tmp_path / "results.csv")
    assert len(frame) == sum(len(c.eval_stops) for c in configs)
    assert frame["acc"].between(0, 1).all() and frame["length"].dtype.kind == "i"
    assert set(frame["rule"]) == {"steps=0", "steps=8"}


def _shift(path: Path, label: str, length: int, by: dict[int, float]) -> None:
    """Add by[seed] to the accuracy of every rule of `label` runs at `length`."""
    with Store(path) as store:
        rows = [r for r in store.rows() if r.label == label and r.length == length]
    db = sqlite3.connect(path)
    with db:
        for row in rows:
            metrics = copy.deepcopy(row.metrics)
            for evaluation in metrics["evals"].values():
                evaluation["acc"] += by[row.seed]
            db.execute("UPDATE runs SET metrics = ? WHERE hash = ?",
                       (json.dumps(metrics), row.hash))
    db.close()


def test_compare_gives_per_cell_differences_with_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for side in (a, b):
        side.mkdir()
        fill(side / "results.sqlite", lengths=(16, 64), seeds=(0, 1, 2))
    with Store(a / "results.sqlite", readonly=True) as store:
        rows_a = store.rows()
    with Store(b / "results.sqlite", readonly=True) as store:
        rows_b = store.rows()
    same = compare.compare(rows_a, rows_b)
    assert same and all(c["identical"] == c["common"] == 3 for c in same)
    assert all(c["diff"]["mean"] == 0 for c in same)

    _shift(b / "results.sqlite", "baseline", 16, {0: 0.01, 1: 0.02, 2: 0.03})  # +1, +2, +3 %
    with Store(b / "results.sqlite", readonly=True) as store:
        rows_b = store.rows()
    cells = {(c["series"], c["length"]): c for c in compare.compare(rows_a, rows_b)}
    moved = cells[("baseline", 16)]
    assert moved["identical"] == 0
    assert moved["diff"]["mean"] == pytest.approx(2.0)
    assert moved["diff"]["ci"] == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-3)  # t(2) sd/sqrt n
    assert cells[("baseline", 64)]["identical"] == 3

    assert main(["--compare", str(a), str(b / "results.sqlite")]) == 0
    text = capsys.readouterr().out
    assert "| parity | baseline | 16 |" in text and "+2.00 ± 2.48 (n=3)" in text
    assert "kernels:" in text
    assert f"{len(cells) - 1} of {len(cells)} cells agree bitwise" in text


def test_compare_and_csv_refuse_a_missing_or_unreadable_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.sqlite").write_bytes(b"garbage" * 100)
    fill(tmp_path / "results.sqlite", lengths=(16,), seeds=(0,))
    assert main(["--compare", str(tmp_path), str(tmp_path / "bad.sqlite")]) == 2
    assert "bad.sqlite is not a readable results database" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--compare", str(tmp_path), str(tmp_path / "absent.sqlite")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "absent.sqlite").exists()
    with pytest.raises(SystemExit):
        main(["--csv"])  # no --out
    assert export.to_csv([]).strip() == ",".join(
        [*export.RUN_COLUMNS, *export.RUN_METRICS.values(), *export.EVAL_COLUMNS,
         *export.TAIL_COLUMNS])
