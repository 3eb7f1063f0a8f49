"""`RunConfig`: one training run, frozen; its hash keys the results database.

Fields in `EXECUTION_FIELDS` say *where/how* a run executes, not *what* it computes, and are
left out of the hash (the same run on CPU or GPU is the same row).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from eqtheory.registry import UnknownOptionError, did_you_mean
from eqtheory.variants import VariantSpec

Task = Literal["parity", "parity_final"]
TASKS = ("parity", "parity_final")
EXECUTION_FIELDS = frozenset({"device", "amp", "compile", "checkpoint_every", "eval_batch_size"})


@dataclass(frozen=True)
class RunConfig:
    """One run: a variant trained on one task at one length with one seed.

    Attributes:
        variant: the `VariantSpec`.
        task: ``parity`` (cumulative, target at every position) or ``parity_final`` (last bit).
        length: sequence length n.
        seed: seeds data generation, initialisation and batching.
        layers, width, heads: backbone size (paper: 6, 256, 8).
        train_size, test_size: fixed sets generated from the seed (paper: 32,768 / 4,096);
            ``fresh_sampling`` draws new training sequences every step instead.
        train_steps, batch_size, lr, weight_decay, grad_clip, warmup_steps: AdamW with a cosine
            schedule after a linear warm-up (paper: lr 3e-4, wd 0.01, batch 256, clip 1.0).
        eval_stops: stopping rules evaluated at test time for EqT (``steps=0`` is the K = 0
            control: same model, no refinement); baselines evaluate once.
        device: ``auto``, ``cpu`` or ``cuda``; ``amp``: bf16 autocast on CUDA; ``compile``:
            ``torch.compile`` the backbone.
        checkpoint_every: optimizer steps between checkpoints.
    """

    variant: VariantSpec = field(default_factory=VariantSpec)
    task: Task = "parity"
    length: int = 16
    seed: int = 0
    layers: int = 2
    width: int = 64
    heads: int = 4
    train_size: int = 4096
    test_size: int = 1024
    fresh_sampling: bool = False
    train_steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 20
    eval_stops: tuple[str, ...] = ("steps=0", "steps=8", "steps=32")
    device: str = "cpu"
    amp: bool = False
    compile: bool = False
    checkpoint_every: int = 100
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(did_you_mean(self.task, list(TASKS), kind="task"))
        if self.length < 1 or self.train_steps < 0 or self.batch_size < 1:
            raise ValueError("length and batch_size must be >= 1 and train_steps >= 0")

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["eval_stops"] = list(self.eval_stops)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a dict (as stored in the database); unknown keys are rejected."""
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                raise UnknownOptionError(did_you_mean(key, valid, kind="run config field"))
        values = dict(values)
        if isinstance(values.get("variant"), dict):
            values["variant"] = VariantSpec.from_dict(values["variant"])
        if "eval_stops" in values:
            values["eval_stops"] = tuple(values["eval_stops"])
        return cls(**values)

    def hash(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of the non-execution fields."""
        values = {k: v for k, v in self.as_dict().items() if k not in EXECUTION_FIELDS}
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
