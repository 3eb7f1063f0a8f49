"""Sweep presets: named defaults for the grid (lengths, seeds, controls) and the run config.

Every preset is overridable flag by flag (``python -m ablations.run --preset cpu --lengths 32``);
``--set key=value`` overrides any `RunConfig` field. Wall times are measured, see
``docs/ablations.md``.

- ``smoke``: a one-minute check on 2 CPU cores that the whole pipeline works (tiny model, a few
  dozen steps, lengths 8 and 16, one seed, baseline + EqT).
- ``cpu``: a small model on lengths 16, 32, 64 with 3 seeds and all controls (tens of minutes on
  2 cores): enough for confidence intervals on short lengths.
- ``recurrence``: the variant whose fixed point carries the sequence (the ``chain`` energy alone,
  no prior, solved by a sequential sweep, implicit gradients) beside every control including a
  GRU (``rnn``), trained at L = 64 and evaluated at 64, 128, 256 and 512 (length
  generalisation), 5 seeds.
- ``paper``: the paper's parity experiment (6 layers, width 256, 8 heads; AdamW 3e-4, wd 0.01,
  cosine, batch 256, clip 1.0, 25 epochs over 32,768 sequences = 3,200 steps, 4,096 test
  sequences; lengths 8..256; K = 2 train, 8 and 32 eval) with 5 seeds and all controls: a GPU job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eqtheory.registry import did_you_mean


@dataclass(frozen=True)
class Preset:
    """Defaults for one sweep.

    Attributes:
        name: the ``--preset`` value.
        description: one line for ``--help``.
        lengths, seeds: the grid's lengths and seeds.
        controls: the control runs added beside every EqT run, from ``CONTROLS``.
        stops: evaluation stopping rules of EqT runs (``steps=0``, the K = 0 control, is added).
        stop_train: the EqT training stopping rule.
        config: `RunConfig` field values (model size, data, optimiser, schedule).
        eval_lengths: further test lengths every model is evaluated at (length generalisation).
        variant: defaults of the variant flags (``energy``, ``solver``, ``alpha``, ``gamma``,
            ``backward``, ...; the rest: `VariantSpec`'s defaults).
    """

    name: str
    description: str
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    controls: tuple[str, ...]
    stops: tuple[str, ...]
    stop_train: str
    config: dict[str, Any] = field(default_factory=dict)
    eval_lengths: tuple[int, ...] = ()
    variant: dict[str, Any] = field(default_factory=dict)


CONTROLS = ("baseline", "aux-only", "compute-matched")
ALL_CONTROLS = (*CONTROLS, "rnn")
PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="about a minute on 2 CPU cores: lengths 8,16, 1 seed, baseline + EqT",
        lengths=(8, 16),
        seeds=(0,),
        controls=("baseline",),
        stops=("steps=8",),
        stop_train="steps=2",
        config=dict(
            layers=2, width=32, heads=2, train_size=2048, test_size=512, train_steps=600,
            batch_size=64, lr=3e-3, warmup_steps=20, checkpoint_every=200, eval_batch_size=512,
        ),
    ),
    "cpu": Preset(
        name="cpu",
        description="small model, lengths 16,32,64, 3 seeds, all controls: ~20 min on 2 cores",
        lengths=(16, 32, 64),
        seeds=(0, 1, 2),
        controls=CONTROLS,
        stops=("steps=8", "steps=32"),
        stop_train="steps=2",
        config=dict(
            layers=2, width=64, heads=4, train_size=4096, test_size=1024, train_steps=300,
            batch_size=64, lr=3e-3, warmup_steps=20, checkpoint_every=100, eval_batch_size=512,
        ),
    ),
    "paper": Preset(
        name="paper",
        description="the paper's model, optimiser and data, lengths 8..256, 5 seeds: a GPU job",
        lengths=(8, 16, 32, 48, 64, 96, 128, 192, 256),
        seeds=(0, 1, 2, 3, 4),
        controls=CONTROLS,
        stops=("steps=8", "steps=32"),
        stop_train="steps=2",
        config=dict(
            layers=6, width=256, heads=8, train_size=32_768, test_size=4_096,
            train_steps=3_200, batch_size=256, lr=3e-4, weight_decay=0.01, grad_clip=1.0,
            warmup_steps=0, amp=True, checkpoint_every=200, eval_batch_size=1024,
        ),
    ),
    "recurrence": Preset(
        name="recurrence",
        description="the chain EqT (the fixed point carries the sequence) against every "
        "control, trained at L=64, evaluated at 64,128,256,512, 5 seeds: ~15 min on 2 cores",
        lengths=(64,),
        seeds=(0, 1, 2, 3, 4),
        controls=ALL_CONTROLS,
        stops=("steps=1",),
        stop_train="steps=1",
        eval_lengths=(64, 128, 256, 512),
        variant=dict(
            energy="chain", solver="sequential", alpha=1.0, gamma=float("inf"),
            backward="implicit",
        ),
        config=dict(
            layers=1, width=32, heads=2, train_size=4096, test_size=512, train_steps=400,
            batch_size=64, lr=3e-3, warmup_steps=20, checkpoint_every=100, eval_batch_size=256,
        ),
    ),
}


def get(name: str) -> Preset:
    """The preset called `name` (did-you-mean error if unknown)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(did_you_mean(name, list(PRESETS), kind="preset")) from None
