"""The results database: life cycle, atomic claims across processes, stale-run recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ablations.config import RunConfig
from ablations.store import Store
from eqtheory.variants import VariantSpec

ROOT = Path(__file__).resolve().parent.parent


def configs(count: int) -> list[RunConfig]:
    return [RunConfig(variant=VariantSpec(kind="baseline"), length=8, seed=s) for s in range(count)]


def test_life_cycle(tmp_path: Path) -> None:
    config = configs(1)[0]
    with Store(tmp_path / "r.sqlite") as store:
        assert store.add(config, label="baseline")
        assert not store.add(config, label="baseline")  # same hash: one row
        assert store.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0}
        assert store.claim(config.hash())
        assert not store.claim(config.hash())  # already running
        store.finish(config.hash(), metrics={"evals": {}}, timings={"total_s": 1.5},
                     device="cpu", versions={"python": "3"}, git_commit=None)
        row = store.get(config.hash())
    assert row is not None and row.status == "done" and row.attempts == 1
    assert row.config == config and row.timings == {"total_s": 1.5}
    assert row.started_at is not None and row.finished_at >= row.started_at


def test_fail_requeue_and_release(tmp_path: Path) -> None:
    first, second = configs(2)
    with Store(tmp_path / "r.sqlite") as store:
        store.add(first, label="baseline")
        store.add(second, label="baseline")
        store.claim(first.hash())
        store.fail(first.hash(), error="boom", requeue=True)
        assert store.get(first.hash()).status == "pending"
        store.claim(first.hash())
        store.fail(first.hash(), error="boom again", requeue=False)
        row = store.get(first.hash())
        assert (row.status, row.attempts, row.error) == ("failed", 2, "boom again")
        assert store.requeue_failed([first.hash()], max_attempts=2) == []
        assert store.requeue_failed([first.hash()], max_attempts=3) == [first.hash()]
        store.claim(second.hash())
        store.release(second.hash())  # interrupted: back to pending, attempt not counted
        row = store.get(second.hash())
        assert (row.status, row.attempts) == ("pending", 0)


def test_reset_stale_dead_pid_and_expired_lease(tmp_path: Path) -> None:
    dead, silent, alive = configs(3)
    path = tmp_path / "r.sqlite"
    with Store(path) as store:
        for config in (dead, silent, alive):
            store.add(config, label="baseline")
            store.claim(config.hash())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE runs SET pid = ? WHERE hash = ?", (int(gone.stdout), dead.hash()))
        db.execute("UPDATE runs SET host = 'elsewhere', heartbeat_at = ? WHERE hash = ?",
                   (time.time() - 3600, silent.hash()))
    db.close()
    with Store(path) as store:
        reset = store.reset_stale(lease_s=600)
        assert sorted(reset) == sorted([dead.hash(), silent.hash()])
        assert store.get(alive.hash()).status == "running"  # this live process owns it
        assert store.get(dead.hash()).status == "pending"


CLAIMER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from ablations.store import Store
    path, go, hashes = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    store = Store(path)
    Path(f"{go}.ready.{os.getpid()}").write_text("")
    while not go.exists():
        time.sleep(0.01)
    claimed = []
    while (run_hash := store.claim_next(hashes)) is not None:
        claimed.append(run_hash)
        time.sleep(0.002)  # a little work, so that the two processes interleave
        store.finish(run_hash, metrics={"by": os.getpid()}, timings={}, device="cpu",
                     versions={}, git_commit=None)
    print(json.dumps(claimed))
""")


def test_two_processes_never_claim_the_same_run(tmp_path: Path) -> None:
    path, go = tmp_path / "r.sqlite", tmp_path / "go"
    runs = configs(100)
    with Store(path) as store:
        for config in runs:
            store.add(config, label="baseline")
    hashes = json.dumps([c.hash() for c in runs])
    workers = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, str(path), str(go), hashes],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)  # both processes imported and connected: start them together
    go.write_text("")
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    claimed = [json.loads(stdout) for stdout, _ in outputs]
    everything = claimed[0] + claimed[1]
    assert sorted(everything) == sorted(c.hash() for c in runs)  # all, each exactly once
    with Store(path) as store:
        rows = store.rows()
        assert {row.status for row in rows} == {"done"}
        assert {row.attempts for row in rows} == {1}
        owners = {row.metrics["by"] for row in rows}
    assert len(owners) == 2  # both processes claimed runs: the claims did interleave


def test_claim_next_follows_the_order_it_is_given(tmp_path: Path) -> None:
    runs = configs(4)
    with Store(tmp_path / "r.sqlite") as store:
        for config in runs:
            store.add(config, label="baseline")
        order = [runs[i].hash() for i in (2, 0, 3, 1)]
        claimed = [store.claim_next(order) for _ in runs]
        assert claimed == order and store.claim_next(order) is None
