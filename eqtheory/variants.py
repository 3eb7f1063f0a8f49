"""Variants are data: a frozen `VariantSpec` names every part of an EqT variant.

``VariantSpec.hash()`` is stable across processes and versions of Python (sha256 of the
canonical JSON of the fields); ``VariantSpec.parse(spec.to_string()) == spec``.
`build` turns a spec into a model (`eqtheory.model`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from eqtheory.registry import UnknownOptionError, did_you_mean

Kind = Literal["baseline", "eqt"]
Placement = Literal["last", "every"]
KINDS = ("baseline", "eqt")
PLACEMENTS = ("last", "every")


@dataclass(frozen=True)
class VariantSpec:
    """Every choice that defines a variant (model-size and training choices live in the run).

    Attributes:
        kind: ``"baseline"`` (open-loop transformer) or ``"eqt"`` (with refinement).
        energy: energy spec (``eqtheory.energies.parse``); the paper's parity energy is
            ``bidir+mask+confidence``. The proximal prior is added from ``gamma``.
        solver: solver name; ``alpha`` is its step size.
        stop_train / stop_eval: stopping rules for training and evaluation (paper: K = 2 / 8).
        backward: ``unrolled``, ``implicit`` or ``phantom``.
        placement: ``last`` (one shared ERM after the final block) or ``every`` (in every block).
        gamma: the prior's ``gamma`` (inf = no prior); ``gamma_start``: anneal from this value
            to ``gamma`` over the first ``anneal_fraction`` of training (None: no annealing).
        beta: weight of the energy in the loss, ``NLL + beta * E``.
        layernorm: LayerNorm after refinement (as in the paper).
        aux_losses_only: train with the energy terms as auxiliary losses but never refine
            (the control for "is it the refinement or the extra training signal?").
    """

    kind: Kind = "eqt"
    energy: str = "bidir+mask+confidence"
    solver: str = "gd"
    alpha: float = 0.1
    stop_train: str = "steps=2"
    stop_eval: str = "steps=8"
    backward: str = "unrolled"
    placement: Placement = "last"
    gamma: float = 1.0
    gamma_start: float | None = None
    anneal_fraction: float = 0.3
    beta: float = 0.3
    layernorm: bool = True
    aux_losses_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(did_you_mean(self.kind, list(KINDS), kind="variant kind"))
        if self.placement not in PLACEMENTS:
            raise ValueError(did_you_mean(self.placement, list(PLACEMENTS), kind="placement"))
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (inf: no prior), got {self.gamma!r}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VariantSpec:
        """Build from a dict; unknown keys are rejected with the valid ones listed."""
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                raise UnknownOptionError(did_you_mean(key, valid, kind="variant field"))
        return cls(**values)

    def hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON of the fields."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_string(self) -> str:
        """``key=value;key=value`` over the fields that differ from the defaults."""
        default = VariantSpec()
        parts = [
            f"{f.name}={json.dumps(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ";".join(parts) or "eqt"

    @classmethod
    def parse(cls, text: str) -> VariantSpec:
        """Inverse of `to_string`."""
        if text.strip() in ("", "eqt"):
            return cls()
        values: dict[str, Any] = {}
        for part in text.split(";"):
            key, sep, raw = part.partition("=")
            if not sep:
                raise ValueError(f"variant field {part!r} has no '=' in {text!r}")
            values[key.strip()] = json.loads(raw)
        return cls.from_dict(values)
