"""Parallel sweeps claim the largest runs first (`ablations.run.longest_first`)."""

from __future__ import annotations

import dataclasses

from ablations.config import RunConfig
from ablations.run import longest_first
from eqtheory.variants import VariantSpec


def test_longest_first_orders_by_estimated_compute_and_keeps_seeds_together():
    def run(kind: str, length: int, seed: int) -> tuple[str, RunConfig]:
        return kind, RunConfig(variant=VariantSpec(kind=kind), length=length, seed=seed)

    plan = [run(kind, length, seed) for length in (8, 32) for kind in ("baseline", "eqt")
            for seed in (0, 1)]
    order = longest_first(plan)
    hashes = {config.hash(): (label, config.length, config.seed) for label, config in plan}
    assert [hashes[h] for h in order] == [
        ("eqt", 32, 0), ("eqt", 32, 1), ("baseline", 32, 0), ("baseline", 32, 1),
        ("eqt", 8, 0), ("eqt", 8, 1), ("baseline", 8, 0), ("baseline", 8, 1),
    ]
    assert sorted(order) == sorted(hashes)
    longer = dataclasses.replace(plan[0][1], train_steps=plan[0][1].train_steps * 100)
    assert longest_first([plan[-1], ("baseline", longer)])[0] == longer.hash()
