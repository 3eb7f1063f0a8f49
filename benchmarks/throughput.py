"""Sweep throughput: runs per hour of the ``cpu`` preset on this machine.

The grid comes from ``ablations.run.plan`` (``--preset cpu``: lengths x seeds x EqT and its
controls). One run of each label (EqT, baseline, aux-only, compute-matched) at the middle length,
seed 0, is trained and evaluated for real with ``ablations.train.train_run``; the grid's wall
time is estimated as ``sum over labels (runs of that label x measured time)`` (an estimate: it
takes the middle length as the average cost). ``--quick`` shrinks the runs to a few steps.
The paper-preset GPU target (the full grid within 1 hour on one H100) is not measurable here.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import Counter
from pathlib import Path

from ablations.run import build_parser, plan
from ablations.train import train_run
from benchmarks.common import Report, pin_threads


def run(*, quick: bool = False) -> Report:
    pin_threads()
    grid = plan(build_parser().parse_args(["--preset", "cpu"]))
    labels = Counter(label for label, _ in grid.runs)
    lengths = sorted({config.length for _, config in grid.runs})
    middle = lengths[len(lengths) // 2]
    report = Report("throughput", ["label", "runs in grid", "seconds per run", "finite loss"])
    total = 0.0
    for label in labels:
        config = next(c for lab, c in grid.runs if lab == label and c.length == middle
                      and c.seed == grid.runs[0][1].seed)
        if quick:
            config = dataclasses.replace(config, train_steps=3, test_size=64, train_size=128,
                                         width=16, heads=2, warmup_steps=1)
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            result = train_run(config, workdir=Path(workdir))
            seconds = time.perf_counter() - start
        loss = result.metrics["train_loss"]
        report.rows.append({
            "label": label, "runs in grid": labels[label], "seconds per run": seconds,
            "finite loss": loss is not None and loss == loss and abs(loss) != float("inf"),
        })
        total += labels[label] * seconds
    runs = sum(labels.values())
    report.rows.append({"label": "grid (estimate)", "runs in grid": runs,
                        "seconds per run": total / runs, "finite loss": None})
    report.notes += [
        f"cpu preset grid: lengths {lengths}, {len({c.seed for _, c in grid.runs})} seeds, "
        f"labels {dict(labels)}; one real run per label at length {middle}"
        + (" (quick: 3 steps, tiny model)" if quick else "") + ".",
        f"estimated grid wall time {total / 60:.1f} min = {3600 * runs / total:.1f} runs/hour "
        "(runs executed one after another on this machine).",
    ]
    report.targets["paper grid within 1 hour on one H100"] = {
        "met": None, "detail": "no GPU in this session"}
    return report
