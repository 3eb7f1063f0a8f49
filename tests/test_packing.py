"""Several runs per device: ``--workers N`` (local processes) and ``--gpus-per-run`` (Ray).

The pool tests spawn real worker processes running `ablation_fakes.fake_train` (wrapped to
record the worker's pid); the driver (this process) claims and writes every row.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from ablation_fakes import fake_train

from ablations.executors import check_gpus_per_run
from ablations.run import main
from ablations.store import Store

ARGV = ["--lengths", "8", "--seeds", "0", "--no-report", "--workers", "2"]
"""Two runs (EqT and the baseline at L = 8) on two workers: every process spawned costs a torch
import, so the tests keep to a few."""


def pid_train(config, *, workdir: Path, progress: bool = False, log=None):  # noqa: ANN001, ANN201
    """`fake_train`, after writing the worker's pid to ``workdir/pid``."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "pid").write_text(str(os.getpid()))
    return fake_train(config, workdir=workdir, progress=progress, log=log)


def die_once_train(config, *, workdir: Path, progress: bool = False, log=None):  # noqa: ANN001, ANN201
    """Kills its worker process on a run's first attempt (as an out-of-memory kill would)."""
    marker = Path(workdir) / "died-once"
    if not marker.exists():
        Path(workdir).mkdir(parents=True, exist_ok=True)
        marker.write_text("")
        os._exit(9)
    return fake_train(config, workdir=workdir, progress=progress, log=log)


def test_workers_run_in_their_own_processes_retry_resume_and_the_driver_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal"
    monkeypatch.setenv("EQT_FAKE_JOURNAL", str(journal))
    monkeypatch.setenv("EQT_FAKE_FAIL_ONCE", "1")  # every run's first attempt raises
    out = tmp_path / "out"
    argv = ["--out", str(out), *ARGV, "--retries", "1"]
    assert main(argv, train_fn=pid_train) == 0
    with Store(out / "results.sqlite") as store:
        rows = store.rows()
    assert len(rows) == 2 and {row.status for row in rows} == {"done"}
    assert {row.attempts for row in rows} == {2}
    assert {row.pid for row in rows} == {os.getpid()}  # the driver is the only writer
    workers = {int((out / "runs" / row.hash / "pid").read_text()) for row in rows}
    assert os.getpid() not in workers
    # the second attempt of every run found the first one's checkpoint (resume)
    calls = sorted(tuple(line.split()) for line in journal.read_text().splitlines())
    assert calls == sorted([(row.hash, "start") for row in rows]
                           + [(row.hash, "resume") for row in rows])
    # a rerun finds everything done and starts no worker
    assert main(argv, train_fn=pid_train) == 0
    assert len(journal.read_text().splitlines()) == 4


def test_a_dead_worker_fails_only_its_own_run_retryably_and_the_sweep_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), *ARGV, "--retries", "1", "--no-controls"]  # one run: EqT
    assert main(argv, train_fn=die_once_train) == 0
    with Store(out / "results.sqlite") as store:
        (row,) = store.rows()
    assert row.status == "done" and row.attempts == 2  # the death counted as one failure
    assert capsys.readouterr().out.count("error: worker process died") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0"], "--workers must be in 1..256, got 0"),
    (["--workers", "2", "--executor", "ray"], "--workers is for --executor local"),
    (["--gpus-per-run", "0"], "--gpus-per-run: GPUs per run must be a fraction in (0, 1]"),
    (["--gpus-per-run", "1.5"], "whole number of GPUs, got 1.5"),
    (["--gpus-per-run", "nan"], "got nan"),
])
def test_bad_packing_options_exit_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "out"), "--dry-run", *argv], train_fn=fake_train)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("share", [0.25, 1, 1.0, 2, 4.0])
def test_valid_gpu_shares_are_accepted(share: float) -> None:
    assert check_gpus_per_run(share) == float(share)


@pytest.mark.parametrize("share", [0, -0.5, 1.5, float("inf"), True, "0.5"])
def test_invalid_gpu_shares_are_refused(share: object) -> None:
    with pytest.raises(ValueError, match="GPUs per run"):
        check_gpus_per_run(share)


class _Ref:
    """A finished task's object ref (hashed by identity, as Ray's are)."""

    def __init__(self, value: object) -> None:
        self.value = value


class _FakeRay:
    """The part of Ray's API `run_ray` uses, run synchronously, on a 'cluster' with GPUs;
    records the options every task was submitted with."""

    def __init__(self) -> None:
        self.options: list[dict[str, object]] = []
        self.exceptions = SimpleNamespace(RayError=RuntimeError)

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "GPU": 1.0}

    def remote(self, fn):  # noqa: ANN001, ANN201
        fake = self

        class Task:
            def options(self, **options: object) -> Task:
                fake.options.append(options)
                return self

            def remote(self, *args: object) -> _Ref:
                return _Ref(fn(*args))

        return Task()

    def wait(self, refs: list[object], num_returns: int) -> tuple[list[object], list[object]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: _Ref) -> object:
        return ref.value


def test_ray_packs_runs_with_a_fractional_gpu_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--executor", "ray", "--gpus-per-run", "0.25", "--lengths", "8",
            "--seeds", "0", "--no-report"]
    assert main(argv, train_fn=fake_train) == 0
    assert fake.options and {o["num_gpus"] for o in fake.options} == {0.25}
    with Store(out / "results.sqlite") as store:
        assert {row.status for row in store.rows()} == {"done"}
