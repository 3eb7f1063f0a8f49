"""Fast stand-ins for `ablations.train.train_run` (imported explicitly by the ablation tests).

`fake_train` honours the `train_run` contract (same signature, a `RunResult` with the metrics
schema, a checkpoint file in ``workdir``) without training, so runner, store, report and Ray
tests run in seconds. Its behaviour is set by environment variables, so it works the same in
subprocesses and Ray workers:

- ``EQT_FAKE_DELAY``: seconds each run takes (default 0);
- ``EQT_FAKE_JOURNAL``: a file; each call appends ``"<hash> start|resume"`` (resume: a
  checkpoint from an earlier attempt was there);
- ``EQT_FAKE_FAIL_ONCE``: the first attempt of every run raises `RuntimeError`;
- ``EQT_FAKE_DIVERGE``: every run raises `TrainingDiverged`.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from ablations.config import RunConfig
from ablations.train import RunResult, TrainingDiverged


def _noise(*tags: object) -> float:
    """A deterministic number in [0, 1) from `tags`."""
    digest = hashlib.sha256(":".join(map(str, tags)).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def fake_eval(config: RunConfig, stop: str) -> dict[str, Any]:
    k = int(stop.split("=")[1]) if stop.startswith("steps=") else 8
    base = 1.0 - 0.004 * config.length + 0.02 * _noise(config.hash(), "acc")
    gain = 0.01 * min(k, 8) / 8 if config.variant.kind == "eqt" else 0.0
    acc = max(0.5, min(1.0, base + gain))
    steps = max(k, 1)
    return {
        "acc": acc, "acc_final": acc - 0.01,
        "acc_by_position": {q: acc - 0.01 * i for i, q in enumerate(("q1", "q2", "q3", "q4"))},
        "acc_by_difficulty": {
            "hard": acc - 0.1 + gain, "medium": acc, "easy": min(1.0, acc + 0.05),
        },
        "steps_mean": float(k), "steps_hist": {str(k): 100 * config.length},
        "status_counts": {"max_steps": 100 * config.length},
        "fevals_per_token": float(k + 1 if k else 0),
        "flops_per_token": 1e5 * config.layers + 2e4 * k,
        "trace": {"residual": [0.5**i for i in range(steps + 1)],
                  "energy": [1.0 + 0.5**i for i in range(steps + 1)]},
    }


def fake_metrics(config: RunConfig) -> dict[str, Any]:
    return {
        "params": 1000 * config.layers, "train_loss": 0.4, "train_nll": 0.3,
        "steps": config.train_steps,
        "evals": {stop: fake_eval(config, stop) for stop in config.eval_stops},
    }


def fake_train(
    config: RunConfig, *, workdir: Path, progress: bool = False, log: Any = None
) -> RunResult:
    del progress, log
    workdir = Path(workdir)
    checkpoint = workdir / "checkpoint.pt"
    resumed = checkpoint.exists()
    journal = os.environ.get("EQT_FAKE_JOURNAL")
    if journal:
        with open(journal, "a") as handle:
            handle.write(f"{config.hash()} {'resume' if resumed else 'start'}\n")
    checkpoint.write_text("fake checkpoint")
    if os.environ.get("EQT_FAKE_DIVERGE"):
        raise TrainingDiverged("non-finite training loss at step 3 (fake)")
    failed_once = workdir / "failed-once"
    if os.environ.get("EQT_FAKE_FAIL_ONCE") and not failed_once.exists():
        failed_once.write_text("")
        raise RuntimeError("fake failure on the first attempt")
    started = time.perf_counter()
    time.sleep(float(os.environ.get("EQT_FAKE_DELAY", "0")))
    elapsed = time.perf_counter() - started
    return RunResult(
        metrics=fake_metrics(config),
        timings={"train_s": elapsed, "eval_s": 0.0, "total_s": elapsed},
    )
