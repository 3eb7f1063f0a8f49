"""`benchmarks.gpu_check`: the one-command GPU check, exercised on CPU before a GPU is lent.

The default suite runs the quick pipeline's measuring sections (steps, ensembles, sweep) and
the extrapolation; the whole pipeline (CUDA tests, compile, scan as well) is ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check, grid_extrapolation

LABELS = {"baseline", "eqt", "aux-only", "compute-matched"}


def test_cuda_asked_for_but_missing_fails_loudly_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    assert gpu_check.main(["--out", str(out)]) == 2  # --device cuda is the default
    assert "--device cuda was asked for but torch sees no CUDA device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--sections", "steps,sweeps"], "did you mean 'sweep'"),
    (["--budget-s", "0"], "--budget-s must be > 0"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_bad_options_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--out", str(tmp_path), "--device", "cpu", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_time_guard_leaves_sections_out_and_still_writes(tmp_path: Path) -> None:
    assert gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick",
                           "--budget-s", "5"]) == 3
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [item.split(" ")[0] for item in payload["left_out"]] == list(gpu_check.SECTIONS)
    assert "## outcome" in (tmp_path / "gpu_check.md").read_text()


def test_interpolation_is_piecewise_linear_and_extends_beyond_the_points() -> None:
    points = [(8, 1.0), (64, 2.0), (256, 6.0)]
    assert grid_extrapolation.at_length(8, points) == 1.0
    assert grid_extrapolation.at_length(36, points) == pytest.approx(1.5)
    assert grid_extrapolation.at_length(160, points) == pytest.approx(4.0)
    assert grid_extrapolation.at_length(512, points) == pytest.approx(6.0 + 4.0 * 256 / 192)
    assert grid_extrapolation.at_length(0, [(8, 1.0), (16, 3.0)]) == 0.0  # never below 0
    assert grid_extrapolation.at_length(100, [(8, 2.5)]) == 2.5


def _check_measured(payload: dict) -> None:
    steps, ensembles = payload["steps"]["rows"], payload["ensembles"]["rows"]
    cells = {(r["label"], r["T"]) for r in steps}
    assert cells == {(label, t) for label in LABELS for t in gpu_check.QUICK_LENGTHS}
    assert all(r["step_s"] > 0 and r["eval_s"] > 0 and r["members"] == 1 for r in steps)
    assert {(r["label"], r["T"]) for r in ensembles} == cells
    assert all(1 <= r["members"] <= 5 and "eval_s" not in r for r in ensembles)
    assert any(r["members"] > 1 for r in ensembles)  # tiny models: every seed fits
    grid = payload["extrapolation"]
    assert grid["complete"] and grid["runs"] == 180 and grid["train_steps"] == 3200
    assert grid["sequential_min"] > 0 and grid["ensembles_min"] > 0
    assert {r["label"] for r in grid["labels"]} == LABELS
    _check_sweep(payload["sweep"], workers=1)


def _check_sweep(sweep: dict, *, workers: int) -> None:
    """Baseline and EqT at each of the sweep's lengths, all done, with `workers` workers."""
    labels = sorted(["baseline", "eqt"] * len(gpu_check.SWEEP_LENGTHS))
    assert sweep["rc"] == 0 and sorted(r["label"] for r in sweep["runs"]) == labels
    assert {r["status"] for r in sweep["runs"]} == {"done"} and sweep["workers"] == workers


def test_quick_cpu_pipeline_measures_extrapolates_and_runs_a_sweep(tmp_path: Path) -> None:
    code = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick",
                           "--sections", "steps,ensembles,sweep", "--budget-s", "400"])
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    assert payload["failures"] == [] and payload["left_out"] == []
    assert code == 0
    _check_measured(payload)
    text = (tmp_path / "gpu_check.md").read_text()
    assert "## paper grid, extrapolated" in text and "| **total** |" in text
    # the two reports on top, the sections' files below (a device returns few files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md",
                                                         "scratch"]
    # paths under --out written from DIR: the reports are read where they are copied to
    raw = (tmp_path / "gpu_check.json").read_text()
    assert str(tmp_path) not in raw and str(tmp_path) not in text
    assert payload["command"].split("--out ")[1].startswith("DIR ")


@pytest.mark.slow
def test_whole_quick_cpu_pipeline(tmp_path: Path) -> None:
    """Every section, as the GPU run will do them (compile with aot_eager, CUDA tests skip)."""
    code = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick",
                           "--budget-s", "900"])
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    assert payload["failures"] == [] and payload["left_out"] == [] and code == 0
    _check_measured(payload)
    graphs = payload["graphs"]["rows"]
    assert len(graphs) == len(LABELS) * len(gpu_check.QUICK_LENGTHS)
    assert all(not r["captured"] and r["drift_max"] == 0 for r in graphs)  # CPU: eager
    assert payload["extrapolation"]["graphed_min"] > 0
    rows = payload["concurrency"]["rows"]
    assert {(r["label"], r["T"]) for r in rows} == {(label, t) for label in LABELS
                                                    for t in gpu_check.QUICK_LENGTHS}
    assert all(r["slowdown"] > 0 and r["processes"] == gpu_check.PROCESSES for r in rows)
    assert payload["extrapolation"]["packed_min"] > 0
    _check_sweep(payload["packing"], workers=gpu_check.PACKED_WORKERS)
    assert payload["packing"]["speedup_vs_sweep"] > 0
    assert payload["tests"]["rc"] == 0 and "skipped" in payload["tests"]["summary"]
    timings = payload["compile"]["timings"]
    assert timings["eager"]["step_s"] > 0 and timings["compiled"]["step_s"] > 0
    assert payload["scan"]["report"]["rows"]


def test_an_ensemble_that_runs_out_of_memory_is_halved_down_to_two_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The out-of-memory path of the ensembles section, without a GPU: a fake `time_run` fails
    above 2 members (and always for the compute-matched control), so each cell is retried at
    half the width and the compute-matched cells are reported as failures."""
    widths = []

    def fake_time_run(config, device, *, members=1, evaluate=True, compile_backend=None):
        widths.append(members)
        if members > 2 or config.layers > 1:
            raise torch.OutOfMemoryError("fake: out of memory")
        return {"setup_s": 0.1, "warmup_s": 0.1, "step_s": 0.01 * members, "params": 1}

    monkeypatch.setattr(gpu_check, "time_run", fake_time_run)
    check = gpu_check.Check(out=tmp_path, device="cpu", quick=True, command="test")
    part = gpu_check.section_steps(check, gpu_check.Guard(60), ensembles=True)
    assert {r["label"] for r in part["rows"]} == LABELS - {"compute-matched"}
    assert {r["members"] for r in part["rows"]} == {2}
    assert len(check.failures) == len(gpu_check.QUICK_LENGTHS)
    assert all("compute-matched" in f and "out of memory with 2" in f for f in check.failures)
    assert widths[:2] == [5, 2]  # auto's width (every seed fits a tiny model), then halved


def test_packed_extrapolation_scales_the_ensembles_by_the_slowdown_over_the_processes() -> None:
    """A slowdown of 2 measured at T = 8 and 64 for every label, 4 processes: each label's
    packed minutes are its ensemble minutes x 2 / 4, the ratio held flat up to T = 256."""
    cells = [(label, t) for label in sorted(LABELS) for t in (8, 64)]
    steps = {"rows": [{"label": label, "T": t, "setup_s": 1.0, "step_s": 0.01 * t,
                       "eval_s": 2.0} for label, t in cells]}
    ensembles = {"rows": [{"label": label, "T": t, "members": 5, "step_s": 0.02 * t}
                          for label, t in cells]}
    concurrency = {"processes": 4, "rows": [{"label": label, "T": t, "slowdown": 2.0}
                                            for label, t in cells]}
    grid = grid_extrapolation.extrapolate(steps, ensembles, concurrency)
    assert grid["processes"] == 4 and grid["complete"]
    for row in grid["labels"]:
        assert row["packed_min"] == pytest.approx(row["ensembles_min"] * 2 / 4)
        assert row["ensembles_min"] < row["sequential_min"]  # 0.02 t per 5 members < 0.01 t
    assert grid["packed_min"] == pytest.approx(grid["ensembles_min"] / 2)
    concurrency["rows"] = [dict(r, slowdown=1.0 if r["T"] == 8 else 3.0)
                           for r in concurrency["rows"]]
    flat = grid_extrapolation.extrapolate(steps, ensembles, concurrency)
    assert flat["packed_min"] < flat["ensembles_min"] * 3 / 4  # not extended past 3 at 256
    assert grid_extrapolation.extrapolate(steps, ensembles)["packed_min"] is None  # not measured


def test_graphed_speedups_are_taken_per_label_and_held_flat_beyond_the_measured_lengths(
) -> None:
    """Speed-ups measured at T = 8 and 64 only, 2 and 4 for EqT, 1 for the others: EqT's
    steps at T >= 64 (64 ... 256) count a quarter, at 8 a half, at 16-48 in between; the other
    labels' minutes are the sequential ones."""
    cells = [(label, t) for label in sorted(LABELS) for t in (8, 64)]
    steps = {"rows": [{"label": label, "T": t, "setup_s": 0.0, "step_s": 0.01, "eval_s": 0.0}
                      for label, t in cells]}
    graphs = {"rows": [{"label": label, "T": t, "speedup": (2.0 if t == 8 else 4.0)
                        if label == "eqt" else 1.0} for label, t in cells]}
    grid = grid_extrapolation.extrapolate(steps, None, None, graphs)
    rows = {r["label"]: r for r in grid["labels"]}
    for label in LABELS - {"eqt"}:
        assert rows[label]["graphed_min"] == pytest.approx(rows[label]["sequential_min"])
    per_length = 5 * 3200 * 0.01 / 60  # minutes of one length's 5 seeds, sequentially
    quarter = [64, 96, 128, 192, 256]  # flat at 4 beyond 64, not extended
    between = {16: 2 + 2 * 8 / 56, 32: 2 + 2 * 24 / 56, 48: 2 + 2 * 40 / 56}
    expected = per_length * (1 / 2 + sum(1 / s for s in between.values()) + len(quarter) / 4)
    assert rows["eqt"]["graphed_min"] == pytest.approx(expected)


def test_graphed_extrapolation_divides_the_training_steps_by_the_measured_speedup() -> None:
    """A speed-up of 4 at every measured cell: each label's training minutes fall 4-fold,
    its setup and evaluation stay."""
    cells = [(label, t) for label in sorted(LABELS) for t in (8, 64, 256)]
    steps = {"rows": [{"label": label, "T": t, "setup_s": 0.0, "step_s": 0.02, "eval_s": 0.0}
                      for label, t in cells]}
    graphs = {"rows": [{"label": label, "T": t, "speedup": 4.0} for label, t in cells]}
    grid = grid_extrapolation.extrapolate(steps, None, None, graphs)
    assert grid["graphed_min"] == pytest.approx(grid["sequential_min"] / 4)
    steps["rows"] = [dict(r, eval_s=1.0) for r in steps["rows"]]
    with_eval = grid_extrapolation.extrapolate(steps, None, None, graphs)
    evaluations = 180 * 1.0 / 60  # one evaluation per run, not sped up
    assert with_eval["graphed_min"] == pytest.approx(grid["graphed_min"] + evaluations)


def test_a_graphed_step_on_cpu_runs_eagerly_and_matches_the_eager_copy() -> None:
    from benchmarks import graphed_step

    config = next(c for label, c in gpu_check.plan_configs("cpu", True, (8,)) if label == "eqt")
    result = graphed_step.measure(config, torch.device("cpu"))
    assert result["captured"] is False and result["drift_max"] == 0.0
    assert result["eager_step_s"] > 0 and result["graphed_step_s"] > 0


def _concurrency_with(timer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`section_concurrency` of the quick plan in 2 processes on CPU with a fake `timer` (from
    `tests.concurrency_fakes`, whose one failure is marked by a file in `tmp_path`);
    ``(check, guard, section)``."""
    from tests.concurrency_fakes import FAIL_ONCE

    monkeypatch.setenv(FAIL_ONCE, str(tmp_path / "failed-once"))
    monkeypatch.setattr(gpu_check, "PROCESSES", 2)
    check = gpu_check.Check(out=tmp_path, device="cpu", quick=True, command="test")
    check.results["ensembles"] = {"rows": [
        {"label": label, "T": t, "members": 1, "step_s": 1e-3 * t}
        for label in LABELS for t in gpu_check.QUICK_LENGTHS]}
    guard = gpu_check.Guard(600)
    return check, guard, gpu_check.section_concurrency(check, guard, timer=timer)


def test_a_cell_that_fails_in_one_concurrent_process_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process runs out of memory at the first length-16 cell while its peers wait at that
    cell's barrier: that cell is reported failed, every later cell is still timed by every
    process (each cell has its own barrier), and the messages add up (one per process and
    cell, so the parent does not wait for the time guard)."""
    from tests.concurrency_fakes import fake_time_run

    check, guard, part = _concurrency_with(fake_time_run, tmp_path, monkeypatch)
    assert len(check.failures) == 1 and "T=16" in check.failures[0]
    assert "OutOfMemoryError: fake: out of memory" in check.failures[0]  # not the peers' report
    measured = {(r["label"], r["T"]) for r in part["rows"]}
    assert len(measured) == len(LABELS) * len(gpu_check.QUICK_LENGTHS) - 1
    assert all(r["processes"] == 2 and r["slowdown"] > 0 for r in part["rows"])
    assert guard.elapsed() < 120  # ended on its messages, not on a barrier's or guard's timeout


def test_drift_is_zero_for_equal_training_and_one_for_a_copy_that_did_not_move() -> None:
    from benchmarks.graphed_step import drift

    start = [torch.zeros(3), torch.ones(2)]
    eager = [torch.tensor([1.0, 2.0, 2.0]), torch.tensor([1.0, 4.0])]
    assert drift(start, eager, eager) == [0.0, 0.0]
    assert drift(start, eager, start) == pytest.approx([1.0, 1.0])  # replays did nothing
    assert drift(start, start, start) == [0.0, 0.0]  # neither moved


def test_a_concurrent_process_that_dies_fails_its_cells_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process exits without a word at the first length-16 cell while its peers wait at
    that cell's barrier: the parent notices the exit code, breaks the barriers, and reports that
    cell and every later one (no barrier can fill any more) as the dead process's, within
    seconds rather than a barrier timeout per cell; the cells before it stay measured."""
    from tests.concurrency_fakes import dying_time_run

    check, guard, part = _concurrency_with(dying_time_run, tmp_path, monkeypatch)
    assert {r["T"] for r in part["rows"]} == {8}  # cells before the death
    # the first T = 16 cell and every later one fail; so may the cell just before, whose
    # message the dead process may not have flushed (os._exit does not)
    failed = {f.split(": ")[1] for f in check.failures}
    assert {f"{label} T={t}" for label in LABELS for t in (16, 32)} <= failed
    assert len(failed) <= 2 * len(LABELS) + 1 and len(part["rows"]) + len(failed) == 12
    assert all("process" in f and "died (exit code 3)" in f for f in check.failures)
    assert guard.elapsed() < 60
