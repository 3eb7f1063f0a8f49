"""`RunConfig`: one training run, frozen; its hash keys the results database.

Fields in `EXECUTION_FIELDS` say *where/how* a run executes, not *what* it computes, and are
left out of the hash (the same run on CPU or GPU is the same row).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from eqtheory.plugins import load_records
from eqtheory.registry import check_fields, did_you_mean
from eqtheory.variants import VariantSpec

Task = Literal["parity", "parity_final"]
TASKS = ("parity", "parity_final")
EXECUTION_FIELDS = frozenset({"device", "amp", "compile", "checkpoint_every", "eval_batch_size"})
DEVICES = ("auto", "cpu", "cuda")
# field: (smallest value, type); float fields must also be finite
LIMITS: dict[str, tuple[float, type]] = {
    "length": (1, int), "seed": (0, int), "layers": (1, int), "width": (1, int),
    "heads": (1, int), "train_size": (1, int), "test_size": (1, int), "train_steps": (0, int),
    "batch_size": (1, int), "lr": (0, float), "weight_decay": (0, float),
    "warmup_steps": (0, int), "checkpoint_every": (0, int), "eval_batch_size": (1, int),
}
POSITIVE = frozenset({"lr"})  # float fields that must be > 0, not >= 0


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
        eval_lengths: further test lengths (length generalisation): the trained model is also
            evaluated on a test set of each of these lengths (``metrics["evals_by_length"]``).
        device: ``auto``, ``cpu`` or ``cuda``; ``amp``: bf16 autocast on CUDA; ``compile``:
            ``torch.compile`` the backbone blocks and the refinement step (energy value and
            gradient), on CPU or CUDA (`ablations.compile`).
        checkpoint_every: optimizer steps between checkpoints (0: only at the end).
        plugins: the plugin modules whose components the variant may name, as
            `eqtheory.plugins.Plugin.record` strings (``"<file>@sha256:<hex>"``); their sha256s
            are part of the hash (a changed plugin is a different run), and `from_dict` loads
            them (checking the hashes) before it reads the variant.

    Every value is checked when the config is made (`ValueError` naming the field): sizes are
    whole numbers >= 1 (``train_steps``, ``warmup_steps``, ``checkpoint_every``, ``seed``:
    >= 0), ``width`` divisible by ``heads``, ``train_size >= batch_size`` (unless
    ``fresh_sampling``), ``lr`` finite and > 0, ``weight_decay`` finite and >= 0,
    ``grad_clip`` > 0 (inf: no clipping). What a config costs is checked by the runner
    (`ablations.validate`).
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
    eval_lengths: tuple[int, ...] = ()
    device: str = "cpu"
    amp: bool = False
    compile: bool = False
    checkpoint_every: int = 100
    eval_batch_size: int = 512
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.variant, VariantSpec):
            raise TypeError(f"variant must be a VariantSpec, got {type(self.variant).__name__}")
        if self.task not in TASKS:
            raise ValueError(did_you_mean(self.task, list(TASKS), kind="task"))
        for name, (low, kind) in LIMITS.items():
            value = getattr(self, name)
            if kind is int and (type(value) is not int or value < low):
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
            if kind is float and not (
                type(value) in (int, float) and math.isfinite(value)
                and (value > low if name in POSITIVE else value >= low)
            ):
                bound = "> 0" if name in POSITIVE else f">= {low}"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        if type(self.grad_clip) not in (int, float) or not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 (inf: no clipping), got {self.grad_clip!r}")
        for name in ("fresh_sampling", "amp", "compile"):
            if type(getattr(self, name)) is not bool:
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.width % self.heads:
            raise ValueError(
                f"width {self.width} must be divisible by heads {self.heads} "
                f"(each head gets width / heads dims)"
            )
        if not self.fresh_sampling and self.train_size < self.batch_size:
            raise ValueError(
                f"train_size {self.train_size} < batch_size {self.batch_size}: a batch needs "
                "that many training sequences (or set fresh_sampling)"
            )
        if self.device not in DEVICES:
            raise ValueError(did_you_mean(str(self.device), list(DEVICES), kind="device"))
        if not self.eval_stops or any(
            not isinstance(rule, str) or not rule.strip() for rule in self.eval_stops
        ):
            raise ValueError(f"eval_stops must be non-empty rule strings, got {self.eval_stops!r}")
        if any(type(n) is not int or n < 1 for n in self.eval_lengths):
            raise ValueError(f"eval_lengths must be whole numbers >= 1, got {self.eval_lengths!r}")
        if any(not isinstance(p, str) or "@sha256:" not in p for p in self.plugins):
            raise ValueError(
                f"plugins must be '<source>@sha256:<hex>' records, got {self.plugins!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["eval_stops"] = list(self.eval_stops)
        values["eval_lengths"] = list(self.eval_lengths)
        values["plugins"] = list(self.plugins)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a dict (as stored in the database); unknown keys are rejected. The
        recorded plugins are loaded first (their hashes checked), so that the variant may name
        their components."""
        check_fields(cls, values, kind="run config field")
        values = dict(values)
        load_records(values.get("plugins", ()))
        if isinstance(values.get("variant"), dict):
            values["variant"] = VariantSpec.from_dict(values["variant"])
        for key in ("eval_stops", "eval_lengths", "plugins"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def ensemble_key(self) -> str:
        """What runs that may train as one seed ensemble share: the canonical JSON of every
        field but ``seed`` (equal keys: the runs differ only in their seed)."""
        values = self.as_dict()
        del values["seed"]
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of the non-execution fields
        (``eval_lengths`` and ``plugins`` only when given, so that configs without them keep
        their hash; of a plugin only its file's sha256 counts, not where the file lies)."""
        values = {k: v for k, v in self.as_dict().items() if k not in EXECUTION_FIELDS}
        if not self.eval_lengths:
            del values["eval_lengths"]
        values["plugins"] = sorted(p.rpartition("@sha256:")[2] for p in self.plugins)
        if not self.plugins:
            del values["plugins"]
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
