"""`python -m ablations.run`: flag checking, the grid, resume after a kill, retries, a real run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ablation_fakes import fake_train

from ablations.run import build_parser, main, split_values
from ablations.store import Store

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--solver", "andersn"], "did you mean 'anderson'?"),
        (["--energy", "bidr+mask"], "did you mean 'bidir'?"),
        (["--stop", "residul<1e-3|steps=8"], "did you mean 'residual'?"),
        (["--stop-train", "stepz=2"], "did you mean 'steps'?"),
        (["--backward", "implicitt"], "did you mean 'implicit'?"),
        (["--placement", "evry"], "did you mean 'every'?"),
        (["--task", "parity_fnal"], "did you mean 'parity_final'?"),
        (["--preset", "smok"], "did you mean 'smoke'?"),
        (["--set", "train_step=5"], "did you mean 'train_steps'?"),
        (["--set", "length=5"], "has its own flag, --lengths"),
        (["--set", "lr=fast"], "lr takes a float"),
        (["--set", "amp=1"], "amp takes a bool"),
        (["--lengths", "8,x"], "--lengths"),
        (["--seeds", "0-x"], "--seeds"),
        (["--gamma", "0"], "gamma must be > 0"),
        (["--device", "tpu"], "invalid choice"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_before_anything_runs(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), *flags], train_fn=fake_train)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_help_gives_every_flag_a_default() -> None:
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "default" in action.help, action.option_strings


def test_split_values_keeps_commas_inside_parentheses() -> None:
    assert split_values("gd(momentum=0.9,noise=0),anderson") == ["gd(momentum=0.9,noise=0)",
                                                                  "anderson"]


def test_dry_run_prints_the_grid_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), "--dry-run", "--energy", "mask,bidir", "--solver", "gd,anderson",
            "--lengths", "8,16", "--seeds", "0-2", "--controls"]
    assert main(argv, train_fn=fake_train) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()[:-1]
    labels = [line.split()[2] for line in lines]
    # 4 EqT variants x 2 lengths x 3 seeds; per (length, seed): one baseline, one aux-only per
    # energy (the solver does not matter without refinement), one compute-matched baseline per
    # distinct matched depth (the energies differ in size)
    assert labels.count("eqt") == 24 and labels.count("baseline") == 6
    assert labels.count("aux-only") == 12 and 6 <= labels.count("compute-matched") <= 24
    assert printed.splitlines()[-1].startswith(f"{len(lines)} runs, 0 already done")
    assert len({line.split()[0] for line in lines}) == len(lines)  # unique hashes
    assert not out.exists()


def test_failed_runs_are_retried_and_divergence_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), "--lengths", "8", "--no-controls", "--no-report"]
    monkeypatch.setenv("EQT_FAKE_FAIL_ONCE", "1")
    assert main([*argv, "--retries", "0"], train_fn=fake_train) == 1
    with Store(out / "results.sqlite") as store:
        (row,) = store.rows()
        assert (row.status, row.attempts) == ("failed", 1) and "fake failure" in row.error
    assert main([*argv, "--retries", "1"], train_fn=fake_train) == 0  # re-queued, now passes
    with Store(out / "results.sqlite") as store:
        (row,) = store.rows()
        assert (row.status, row.attempts, row.error) == ("done", 2, None)

    monkeypatch.delenv("EQT_FAKE_FAIL_ONCE")
    monkeypatch.setenv("EQT_FAKE_DIVERGE", "1")
    argv = ["--out", str(out), "--lengths", "16", "--no-controls", "--no-report", "--retries", "3"]
    assert main(argv, train_fn=fake_train) == 1
    assert main(argv, train_fn=fake_train) == 1  # deterministic: recorded, not retried
    with Store(out / "results.sqlite") as store:
        (row,) = [r for r in store.rows() if r.length == 16]
        assert (row.status, row.attempts) == ("failed", 1)
        assert row.error.startswith("TrainingDiverged")


SWEEP = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from ablation_fakes import fake_train
    from ablations.run import main
    sys.exit(main(sys.argv[1:], train_fn=fake_train))
""")


def start_sweep(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SWEEP.format(tests=str(TESTS)), *argv], cwd=ROOT,
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(path: Path, predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            with Store(path) as store:
                if predicate(store.rows()):
                    return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting on {path}")


def test_kill_and_rerun_loses_nothing_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, journal = tmp_path / "out", tmp_path / "journal"
    argv = ["--out", str(out), "--lengths", "8,16,32", "--seeds", "0,1", "--no-controls",
            "--no-report"]
    sweep = start_sweep(argv, {"EQT_FAKE_DELAY": "0.7", "EQT_FAKE_JOURNAL": str(journal)})
    database = out / "results.sqlite"
    # kill while a run is in flight, after at least two have finished
    wait_for(database, lambda rows: sum(r.status == "done" for r in rows) >= 2
             and any(r.status == "running" for r in rows))
    sweep.send_signal(signal.SIGKILL)
    sweep.wait(timeout=30)
    with Store(database) as store:
        before = {row.hash: row for row in store.rows()}
    done_before = {h for h, row in before.items() if row.status == "done"}
    killed = {h for h, row in before.items() if row.status == "running"}
    assert len(before) == 6 and len(done_before) >= 2 and len(killed) == 1

    monkeypatch.setenv("EQT_FAKE_JOURNAL", str(journal))
    assert main(argv, train_fn=fake_train) == 0
    with Store(database) as store:
        after = {row.hash: row for row in store.rows()}
    assert {row.status for row in after.values()} == {"done"}
    for run_hash in done_before:  # finished runs untouched
        assert after[run_hash].started_at == before[run_hash].started_at
        assert after[run_hash].finished_at == before[run_hash].finished_at
        assert after[run_hash].attempts == 1
    calls = [line.split() for line in journal.read_text().splitlines()]
    started = [h for h, kind in calls if kind == "start"]
    assert sorted(started) == sorted(after)  # every run started exactly once
    assert [h for h, kind in calls if kind == "resume"] == list(killed)  # from its checkpoint


def test_sigterm_gives_the_running_row_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), "--lengths", "8,16", "--no-controls", "--no-report"]
    sweep = start_sweep(argv, {"EQT_FAKE_DELAY": "30"})
    database = out / "results.sqlite"
    wait_for(database, lambda rows: any(r.status == "running" for r in rows))
    sweep.send_signal(signal.SIGTERM)
    output, _ = sweep.communicate(timeout=30)
    assert sweep.returncode == 128 + signal.SIGTERM, output
    with Store(database) as store:
        rows = store.rows()
    assert {row.status for row in rows} == {"pending"}
    assert {row.attempts for row in rows} == {0}


def test_cli_entry_point_reports_bad_specs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ablations.run", "--out", str(tmp_path / "o"), "--solver",
         "andersn"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "did you mean 'anderson'?" in result.stderr and "valid: anderson" in result.stderr
    assert not (tmp_path / "o").exists()


def test_smoke_run_trains_end_to_end_and_writes_a_done_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    tiny = ["train_steps=4", "train_size=64", "test_size=32", "batch_size=16", "width=16",
            "heads=2", "layers=1", "checkpoint_every=2", "eval_batch_size=32"]
    argv = ["--out", str(out), "--lengths", "8", "--k-eval", "2"]
    for item in tiny:
        argv += ["--set", item]
    assert main(argv) == 0  # the real ablations.train.train_run
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    with Store(out / "results.sqlite") as store:
        rows = {row.label: row for row in store.rows()}
    assert set(rows) == {"baseline", "eqt"}
    for row in rows.values():
        assert row.status == "done" and row.attempts == 1
        assert row.metrics["steps"] == 4 and row.versions["torch"]
        assert set(row.timings) == {"train_s", "eval_s", "total_s"}
        assert (out / "runs" / row.hash / "checkpoint.pt").exists()
    assert set(rows["eqt"].metrics["evals"]) == {"steps=0", "steps=2"}
    assert set(rows["baseline"].metrics["evals"]) == {"steps=0"}
    assert 0.0 <= rows["eqt"].metrics["evals"]["steps=2"]["acc"] <= 1.0


def test_the_compute_matched_depth_uses_the_rule_s_own_budget() -> None:
    """``steps=8|steps=32`` stops at 8 (the first budget that fires), so the matched baseline
    is matched at K = 8, not at the largest number written in the rule."""
    from ablations.config import RunConfig
    from ablations.flops import matched_layers
    from ablations.run import _matched_layers
    from eqtheory.variants import VariantSpec

    config = RunConfig(variant=VariantSpec(stop_eval="steps=8|steps=32"), length=16)
    assert matched_layers(config, 8) != matched_layers(config, 32)
    assert _matched_layers(config) == matched_layers(config, 8)
    both = RunConfig(variant=VariantSpec(stop_eval="(residual<1e-3|steps=8)&steps=32"), length=16)
    assert _matched_layers(both) == matched_layers(both, 32)
