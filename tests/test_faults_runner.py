"""The runner under faults: dead, zombie and reused owners, leases, rows taken over, unreadable
checkpoints and databases, signals, log output, and the kernel environment of every row."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from ablation_fakes import fake_train
from test_runner import SWEEP, TESTS, start_sweep, wait_for

from ablations import report
from ablations.config import RunConfig
from ablations.run import build_parser, main, plan
from ablations.store import HEARTBEAT_S, Store, UnreadableStore, pid_alive
from ablations.train import CHECKPOINT, train_run
from eqtheory.variants import VariantSpec

ARGV = ["--lengths", "8,16", "--no-controls", "--no-report"]


def config(seed: int = 0) -> RunConfig:
    return RunConfig(variant=VariantSpec(kind="baseline"), length=8, seed=seed)


# -- owners: dead, zombie, reused pid ------------------------------------------------------------


def test_a_zombie_or_reused_pid_is_a_dead_owner(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(child.pid).create_time()
        assert pid_alive(child.pid, started)
        child.kill()
        deadline = time.time() + 10  # the child is dead but not reaped: a zombie
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline
            time.sleep(0.01)
        assert not pid_alive(child.pid, started)
        assert not pid_alive(child.pid)  # even without a start time
        zombie, reused, live = config(0), config(1), config(2)
        path = tmp_path / "r.sqlite"
        with Store(path) as store:
            for run in (zombie, reused, live):
                store.add(run, label="baseline")
                store.claim(run.hash())
        db = sqlite3.connect(path)
        with db:
            db.execute("UPDATE runs SET pid = ?, pid_started = ? WHERE hash = ?",
                       (child.pid, started, zombie.hash()))
            db.execute("UPDATE runs SET pid_started = pid_started - 1000 WHERE hash = ?",
                       (reused.hash(),))  # this live pid, but started after the owner
        db.close()
        with Store(path) as store:
            assert sorted(store.reset_stale()) == sorted([zombie.hash(), reused.hash()])
            assert store.get(live.hash()).status == "running"
            assert "died" in store.get(zombie.hash()).error
    finally:
        child.wait()


def test_a_killed_unreaped_sweep_is_taken_back_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), *ARGV]
    sweep = start_sweep(argv, {"EQT_FAKE_DELAY": "30"})
    database = out / "results.sqlite"
    try:
        wait_for(database, lambda rows: any(r.status == "running" for r in rows))
        sweep.kill()  # not waited for: the owner is a zombie while we re-run
        killed = time.time()
        while psutil.Process(sweep.pid).status() != psutil.STATUS_ZOMBIE:  # SIGKILL lands
            assert time.time() - killed < 10, "the killed sweep did not die"
            time.sleep(0.01)
        monkeypatch.setenv("EQT_FAKE_DELAY", "0")
        assert main(argv, train_fn=fake_train) == 0
        rerun_s = time.time() - killed
        assert psutil.Process(sweep.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        sweep.wait()
        sweep.stdout.close()
    printed = capsys.readouterr().out
    assert "(1 reset from a dead runner" in printed and "0 running elsewhere" in printed
    with Store(database) as store:
        assert {row.status for row in store.rows()} == {"done"}
    assert rerun_s < 60  # not the 900 s lease


def test_a_lease_shorter_than_two_heartbeats_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "o"), "--lease", str(2 * HEARTBEAT_S - 1), *ARGV],
             train_fn=fake_train)
    assert exit_info.value.code == 2
    assert "twice the heartbeat" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with Store(tmp_path / "r.sqlite") as store, pytest.raises(ValueError, match="heartbeat"):
        store.reset_stale(lease_s=float("nan"))


def test_a_row_taken_over_is_dropped_with_one_line_and_the_sweep_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    database = out / "results.sqlite"
    taken: list[str] = []

    def slow_then_taken_over(run: RunConfig, **kwargs: object):  # noqa: ANN202
        if not taken:  # another runner resets our first row after our lease and claims it
            taken.append(run.hash())
            db = sqlite3.connect(database)
            with db:
                db.execute("UPDATE runs SET host = 'other-host', pid = 4242 WHERE hash = ?",
                           (run.hash(),))
            db.close()
        return fake_train(run, **kwargs)

    assert main(["--out", str(out), *ARGV], train_fn=slow_then_taken_over) == 0
    captured = capsys.readouterr()
    lost = [line for line in captured.out.splitlines() if line.startswith("[lost]")]
    assert len(lost) == 1 and "other-host:4242" in lost[0] and "result dropped" in lost[0]
    assert "Traceback" not in captured.out + captured.err
    with Store(database) as store:
        rows = {row.hash: row for row in store.rows()}
    assert rows[taken[0]].status == "running" and rows[taken[0]].metrics is None  # untouched
    assert [row.status for h, row in rows.items() if h != taken[0]] == ["done"]


# -- checkpoints -----------------------------------------------------------------------------------


TINY = RunConfig(
    variant=VariantSpec(kind="baseline"), length=8, layers=1, width=16, heads=2,
    train_size=64, test_size=32, train_steps=4, batch_size=16, warmup_steps=1,
    eval_stops=("steps=0",), checkpoint_every=2,
)


class Payload:
    """Pickles as a call of os.mkdir: loading it unsafely would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, bytes]:
    """An uninterrupted run's metrics and the bytes of its final checkpoint."""
    workdir = tmp_path_factory.mktemp("whole")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = train_run(TINY, workdir=workdir).metrics
    finally:
        torch.set_num_threads(threads)
    return metrics, (workdir / CHECKPOINT).read_bytes()


def _other_model(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["model"] = {name: torch.zeros(3) for name in state["model"]}
    torch.save(state, path)


BAD = {
    "garbled": lambda path, good: path.write_bytes(bytes(range(256)) * 8),
    "truncated": lambda path, good: path.write_bytes(good[: len(good) // 2]),
    "empty": lambda path, good: path.write_bytes(b""),
    "wrong keys": lambda path, good: torch.save({"weights": torch.ones(2)}, path),
    "other shapes": lambda path, good: (path.write_bytes(good), _other_model(path)),
}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", list(BAD))
def test_an_unreadable_checkpoint_is_moved_aside_and_the_run_restarts(
    tmp_path: Path, whole: tuple[dict, bytes], kind: str
) -> None:
    metrics, good = whole
    path = tmp_path / CHECKPOINT
    BAD[kind](path, good)
    bad = path.read_bytes()
    with pytest.warns(RuntimeWarning, match="moved to .*restarts from step 0"):
        result = train_run(TINY, workdir=tmp_path)
    assert result.metrics == metrics  # from scratch: the same as an uninterrupted run
    (aside,) = tmp_path.glob(f"{CHECKPOINT}.unreadable-*")
    assert aside.read_bytes() == bad
    assert torch.load(path, weights_only=True)["step"] == TINY.train_steps  # a fresh one


@pytest.mark.usefixtures("one_thread")
def test_a_checkpoint_refused_by_weights_only_is_kept_aside_and_never_loaded(
    tmp_path: Path, whole: tuple[dict, bytes]
) -> None:
    metrics, _ = whole
    marker = tmp_path / "payload-ran"
    path = tmp_path / CHECKPOINT
    torch.save({"config_hash": TINY.hash(), "model": Payload(marker)}, path)
    bad = path.read_bytes()
    with pytest.warns(RuntimeWarning, match="refused by torch.load.*not loaded"):
        result = train_run(TINY, workdir=tmp_path)
    assert not marker.exists()
    (aside,) = tmp_path.glob(f"{CHECKPOINT}.refused-*")
    assert aside.read_bytes() == bad
    assert result.metrics == metrics


def test_an_unreadable_checkpoint_costs_the_runner_no_attempt(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), "--lengths", "8", "--no-controls", "--no-report",
            "--retries", "0"]
    for field in ("train_steps=2", "train_size=32", "test_size=16", "batch_size=16", "width=16",
                  "heads=2", "layers=1", "eval_batch_size=16"):
        argv += ["--set", field]
    ((_, run),) = plan(build_parser().parse_args(argv)).runs
    workdir = out / "runs" / run.hash()
    workdir.mkdir(parents=True)
    (workdir / CHECKPOINT).write_bytes(b"\x00garbage")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert main(argv) == 0
    with Store(out / "results.sqlite") as store:
        (row,) = store.rows()
    assert (row.status, row.attempts) == ("done", 1)


# -- the results database ---------------------------------------------------------------------


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()


def _truncated(path: Path) -> None:
    with Store(path) as store:
        for seed in range(200):
            store.add(config(seed), label="baseline")
    data = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(data[: len(data) // 2])


BAD_DATABASES = {
    "garbage": lambda path: path.write_bytes(b"not a database\n" * 100),
    "truncated": _truncated,
    "another program's": _foreign,
}


@pytest.mark.parametrize("kind", list(BAD_DATABASES))
def test_an_unreadable_database_exits_2_with_one_line_and_is_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    database = out / "results.sqlite"
    BAD_DATABASES[kind](database)
    before = database.read_bytes()
    with pytest.raises(UnreadableStore):
        Store(database)
    for argv, entry in (([*ARGV], main), ([*ARGV, "--dry-run"], main), ([], report.main)):
        capsys.readouterr()
        assert entry(["--out", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert str(database) in err and f"mv {database} {database}.bad" in err
        assert database.read_bytes() == before


def test_a_locked_database_is_reported_without_advice_to_move_it(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)  # a rollback journal, not WAL
    holder.execute("CREATE TABLE runs (hash TEXT, status TEXT, config TEXT, heartbeat_at REAL)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UnreadableStore, match="cannot open .*locked") as error_info:
            Store(path, timeout_s=0.2)
        assert "mv " not in str(error_info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# -- signals and output ---------------------------------------------------------------------------


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` does in a non-interactive shell


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_a_background_runner_with_130_and_a_consistent_database(
    tmp_path: Path, presses: int
) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), *ARGV]
    database = out / "results.sqlite"
    sweep = subprocess.Popen(
        [sys.executable, "-c", SWEEP.format(tests=str(TESTS)), *argv], cwd=TESTS.parent,
        env={**os.environ, "EQT_FAKE_DELAY": "30"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=_ignore_sigint,
    )
    wait_for(database, lambda rows: sum(r.status == "running" for r in rows) == 1
             and all(r.status != "running" or r.pid == sweep.pid for r in rows))
    for _ in range(presses):
        sweep.send_signal(signal.SIGINT)
        time.sleep(0.05)
    output, _ = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, output
    assert "Traceback" not in output
    db = sqlite3.connect(database)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Store(database) as store:
        assert {row.status for row in store.rows()} <= {"pending", "running"}
    assert main(argv, train_fn=fake_train) == 0  # resumes: nothing is lost
    with Store(database) as store:
        rows = store.rows()
    assert {row.status for row in rows} == {"done"} and len(rows) == 2


SLOW_CLEANUP = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # started in the background
from ablations.run import _Interrupts
with _Interrupts().installed():
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        time.sleep(60)  # a clean-up that hangs: the second Ctrl-C must not wait for it
sys.exit(0)
"""


def test_a_second_ctrl_c_during_clean_up_exits_130_at_once() -> None:
    child = subprocess.Popen([sys.executable, "-c", SLOW_CLEANUP], cwd=TESTS.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "cleaning up"
        pressed = time.time()
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 130
        assert time.time() - pressed < 10
        assert "again: exiting now" in child.stderr.read()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()


def test_result_lines_are_whole_lines_in_a_log(tmp_path: Path) -> None:
    sweep = start_sweep(["--out", str(tmp_path / "out"), "--lengths", "8,16,32",
                         "--no-controls", "--no-report"], {"EQT_FAKE_DELAY": "0.2"})
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, output
    assert "\r" not in output  # no progress-bar redraws in a log
    lines = output.splitlines()
    assert sum(line.startswith("[done] eqt parity L=") for line in lines) == 3


# -- reproducibility: what decides the kernels ----------------------------------------------------


def test_every_row_and_the_report_record_what_decides_the_kernels(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--out", str(out), "--lengths", "8", "--no-controls", "--threads", "1"],
                train_fn=fake_train) == 0
    with Store(out / "results.sqlite") as store:
        (row,) = store.rows()
    env = row.environment
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch"] == torch.__version__ and env["threads"] == 1
    assert {"cpu_model", "deterministic", "interop_threads"} <= set(env)
    if torch.backends.mkldnn.is_available():
        assert env["onednn"]
    text = (out / "report.md").read_text()
    assert "kernels:" in text and env["cpu_capability"] in text


def test_old_databases_gain_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE runs (hash TEXT PRIMARY KEY, status TEXT NOT NULL, config TEXT"
                   " NOT NULL, variant_hash TEXT NOT NULL, label TEXT NOT NULL, task TEXT NOT"
                   " NULL, length INTEGER NOT NULL, seed INTEGER NOT NULL, versions TEXT,"
                   " git_commit TEXT, device TEXT, host TEXT, pid INTEGER, timings TEXT,"
                   " metrics TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, created_at"
                   " REAL NOT NULL, started_at REAL, finished_at REAL, heartbeat_at REAL)")
    db.close()
    run = dataclasses.replace(config(), seed=3)
    with Store(path) as store:
        assert store.add(run, label="baseline") and store.claim(run.hash())
        assert store.finish(run.hash(), metrics={}, timings={}, device="cpu", versions={},
                            git_commit=None, environment={"threads": 1})
        assert store.get(run.hash()).environment == {"threads": 1}


def test_on_cuda_the_environment_names_the_gpu_cuda_cudnn_and_tf32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ablations import environment

    assert "gpu" not in environment.capture("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    env = environment.capture("cuda")
    assert env["gpu"] == "Fake GPU" and env["gpu_capability"] == "9.0"
    assert env["cudnn"] == 90100 and {"cuda", "tf32_matmul", "tf32_cudnn"} <= set(env)
    text = environment.describe(env)
    assert "Fake GPU (sm 9.0)" in text and "cuDNN 90100" in text and "TF32" in text
    assert environment.describe(None) == "not recorded"
