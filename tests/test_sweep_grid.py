"""`python -m benchmarks.sweep --grid`: its options are checked before any run starts."""

from __future__ import annotations

import pytest

from benchmarks import sweep


@pytest.mark.parametrize("argv", [["--jobs", "bogus"], ["--jobs", ","], ["--workers", "0"]])
def test_grid_rejects_bad_options_before_running(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--grid", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert "--" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def _job(folder, run_totals):
    """A grid job's database with done runs whose timings total ``run_totals`` seconds."""
    from ablations.config import RunConfig
    from ablations.store import Store

    folder.mkdir(parents=True)
    with Store(folder / "results.sqlite") as store:
        for seed, total in enumerate(run_totals):
            config = RunConfig(seed=seed)
            store.add(config, label="baseline")
            assert store.claim(config.hash())
            store.finish(config.hash(), metrics={}, timings={
                "train_s": total - 1.0, "eval_s": 1.0, "total_s": total}, device="cpu",
                versions={}, git_commit=None)


def test_summarise_adds_core_seconds_and_the_packing_floor(tmp_path, capsys):
    import json

    _job(tmp_path / "pool", [30.0, 50.0, 20.0])
    _job(tmp_path / "sequential-at-abc123", [40.0])
    _job(tmp_path / "ensemble", [])  # started, nothing finished
    (tmp_path / "grid.json").write_text(json.dumps({"runs": {
        "pool": {"command": "-m ablations.run --preset cpu --workers 2", "seconds": 80.0},
        "sequential@abc123": {"command": "-m ablations.run --preset cpu", "seconds": 44.0},
        "ensemble": {"command": "-m ablations.run --ensemble auto", "seconds": 3.0},
        "killed": {"command": "-m ablations.run --preset cpu", "seconds": 1.0},  # no database
    }}))
    assert sweep.main(["--summarise", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "grid.json").read_text())["runs"]
    assert runs["pool"]["run_seconds"] == {"train": 97.0, "eval": 3.0, "total": 100.0,
                                           "runs": 3.0}
    assert runs["pool"]["packing"] == {"processes": 2, "floor_s": 50.0,
                                       "wall_over_floor": 1.6}
    assert runs["sequential@abc123"]["packing"]["floor_s"] == 40.0
    assert runs["ensemble"]["packing"] == {"processes": 1, "floor_s": 0.0,
                                           "wall_over_floor": None}
    assert "packing" not in runs["killed"] and not (tmp_path / "killed").exists()
    printed = capsys.readouterr().out
    assert "floor on 2 process(es) 50 s" in printed and "killed: no results database" in printed
