"""The ``paper`` grid's wall time on one device, extrapolated from timed cells
(`benchmarks.gpu_check`): one run at a time, seed ensembles, several ensembles at once, and
captured steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TARGET_MIN = 60.0
"""The issue's target for the whole grid on one H100, minutes."""


def at_length(length: int, points: list[tuple[int, float]]) -> float:
    """Piecewise-linear in T through the measured ``(T, value)`` points, extended linearly
    beyond them (one point: that value); never below 0."""
    points = sorted(points)
    if len(points) == 1:
        return points[0][1]
    index = 0
    while index < len(points) - 2 and length > points[index + 1][0]:
        index += 1
    (t0, v0), (t1, v1) = points[index], points[index + 1]
    return max(0.0, v0 + (v1 - v0) * (length - t0) / (t1 - t0))


def extrapolate(steps: dict[str, Any], ensembles: dict[str, Any] | None,
                concurrency: dict[str, Any] | None = None,
                graphs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The paper grid's wall time on this device from the measured cells (see
    `benchmarks.gpu_check`'s docstring); minutes, per label and in total: sequential, with
    seed ensembles, with several seed ensembles at once (``concurrency["processes"]``) and
    with captured steps.

    A run costs ``setup + train_steps x step + eval`` (checkpoints and process start are not
    counted). With ensembles, a seed's training costs its share of the measured ensemble step
    (``step / members``, at the width ``--ensemble auto`` takes), so 5 seeds at width 2 count
    as 2.5 ensemble steps where three groups (2, 2, 1) take 2 + one single step. Packed, every
    part of a seed's cost is multiplied by the slowdown the ``concurrency`` section measured for
    its label (linear in T between the measured lengths, held flat beyond them) and the sum
    divided by the number of processes: the device is
    assumed busy with that many ensembles throughout (no tail where fewer are left). Graphed,
    a run's training steps are divided by the speed-up the ``graphs`` section measured for its
    label (linear in T, held flat beyond the measured lengths); setup and evaluation unchanged."""
    from ablations import presets

    paper = presets.get("paper")
    seeds, train_steps = len(paper.seeds), paper.config["train_steps"]
    single = {r["label"]: [] for r in steps["rows"]}
    for row in steps["rows"]:
        single[row["label"]].append(row)
    joint = {}  # per label: (T, seconds per member per step) of the measured ensembles
    for row in (ensembles or {}).get("rows", []):
        joint.setdefault(row["label"], []).append((row["T"], row["step_s"] / row["members"]))
    slowdown = {}  # per label: (T, packed step per member / alone step per member)
    for row in (concurrency or {}).get("rows", []):
        slowdown.setdefault(row["label"], []).append((row["T"], row["slowdown"]))
    processes = (concurrency or {}).get("processes", 1)
    speedup = {}  # per label: (T, eager step / graphed step)
    for row in (graphs or {}).get("rows", []):
        speedup.setdefault(row["label"], []).append((row["T"], row["speedup"]))
    labels, total, total_joint, total_packed, total_graphed = [], 0.0, 0.0, 0.0, 0.0
    for label, rows in single.items():
        def fit(key: str, rows=rows) -> Callable[[int], float]:
            return lambda length: at_length(length, [(r["T"], r[key]) for r in rows])

        setup, step, evaluate = fit("setup_s"), fit("step_s"), fit("eval_s")
        alone = sum(seeds * (setup(t) + train_steps * step(t) + evaluate(t))
                    for t in paper.lengths)
        together = packed = None
        if label in joint:
            per_length = {t: seeds * (setup(t) + evaluate(t)
                                      + train_steps * at_length(t, joint[label]))
                          for t in paper.lengths}
            together = sum(per_length.values())
            total_joint += together
            if label in slowdown:
                packed = sum(cost * held_flat(t, slowdown[label])
                             for t, cost in per_length.items()) / processes
                total_packed += packed
        graphed = None
        if label in speedup:
            graphed = sum(seeds * (setup(t) + evaluate(t) + train_steps * step(t) / held_flat(
                t, speedup[label])) for t in paper.lengths)
            total_graphed += graphed
        total += alone
        labels.append({"label": label, "sequential_min": alone / 60,
                       "ensembles_min": None if together is None else together / 60,
                       "packed_min": None if packed is None else packed / 60,
                       "graphed_min": None if graphed is None else graphed / 60})
    complete = len(single) == 4 and all(len(rows) >= 2 for rows in single.values())
    return {"labels": labels, "sequential_min": total / 60,
            "ensembles_min": total_joint / 60 if len(joint) == len(single) else None,
            "packed_min": total_packed / 60 if len(slowdown) == len(single) else None,
            "graphed_min": total_graphed / 60 if len(speedup) == len(single) else None,
            "processes": processes,
            "runs": seeds * len(paper.lengths) * len(single), "train_steps": train_steps,
            "lengths": list(paper.lengths), "complete": complete}


def held_flat(length: int, points: list[tuple[int, float]]) -> float:
    """A measured ratio at `length`: linear between the ``(T, ratio)`` points, held flat
    beyond them (a ratio extended linearly could turn negative)."""
    low, high = min(points)[0], max(points)[0]
    return at_length(min(max(length, low), high), points)
