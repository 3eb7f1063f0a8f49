"""`--executor ray` on a local Ray instance: runs as tasks, the driver writes, failures retried."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'eqtheory[ray]')")

from ablation_fakes import fake_train  # noqa: E402

from ablations.run import main  # noqa: E402
from ablations.store import Store  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def local_ray(tmp_path: Path):  # noqa: ANN201
    journal = tmp_path / "journal"
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "EQT_FAKE_JOURNAL": str(journal),
        "EQT_FAKE_FAIL_ONCE": "1",  # every run's first attempt raises
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": env})
    yield journal
    ray.shutdown()


def test_ray_runs_the_grid_retries_failures_and_the_driver_writes(
    tmp_path: Path, local_ray: Path
) -> None:
    out = tmp_path / "out"
    argv = ["--out", str(out), "--executor", "ray", "--lengths", "8,16", "--seeds", "0,1",
            "--no-controls", "--no-report", "--retries", "1"]
    assert main(argv, train_fn=fake_train) == 0
    with Store(out / "results.sqlite") as store:
        rows = store.rows()
    assert len(rows) == 4
    assert {row.status for row in rows} == {"done"}
    assert {row.attempts for row in rows} == {2}  # failed once, resubmitted by the driver
    assert {row.pid for row in rows} == {os.getpid()}  # the driver is the only writer
    calls = [line.split() for line in local_ray.read_text().splitlines()]
    assert sorted(h for h, _ in calls) == sorted(2 * [row.hash for row in rows])
    # a rerun finds everything done and submits nothing
    assert main(argv, train_fn=fake_train) == 0
    assert len(local_ray.read_text().splitlines()) == 8
