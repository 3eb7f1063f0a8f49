"""Variants are data: a frozen `VariantSpec` names every part of an EqT variant.

This module reads only the registries (it builds no model); `eqtheory.model.build` consumes a
spec, and `eqtheory.variants` is the public name of both.

``VariantSpec.hash()`` is stable across processes and versions of Python (sha256 of the
canonical JSON of the fields); ``VariantSpec.parse(spec.to_string()) == spec``. A spec checks
its values and component names when it is made (bad ones raise with the valid ones listed):
numbers are finite where they must be, the solver (with step size ``alpha``) and the backward
mode are constructed once so that their constructors check their options, the stopping rules
are parsed and the energy's terms, options and weights are checked (the energy itself needs the
model's sizes and is built by `eqtheory.model.build`).

Component fields are spec strings: ``solver="gd(momentum=0.9)"``, ``backward="phantom(k=2)"``,
``stop_eval="residual<1e-4|steps=32"``, ``energy="bidir=8+0.5*mask"``. The solver's step size
is ``alpha``, never an option of ``solver``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from eqtheory import stopping
from eqtheory.backward.registry import BACKWARD
from eqtheory.energies.parse import check_option_types, parse_terms
from eqtheory.registry import Registry, check_fields, check_options, did_you_mean
from eqtheory.solvers.registry import SOLVERS
from eqtheory.spec import SpecError, Tokens

Kind = Literal["baseline", "eqt", "rnn"]
Placement = Literal["last", "every"]
KINDS = ("baseline", "eqt", "rnn")
PLACEMENTS = ("last", "every")


@dataclass(frozen=True)
class VariantSpec:
    """Every choice that defines a variant (model-size and training choices live in the run).

    Attributes:
        kind: ``"baseline"`` (open-loop transformer), ``"eqt"`` (with refinement) or
            ``"rnn"`` (a recurrent control outside the EqT family: one GRU layer of the model's
            width, `eqtheory.model.RecurrentBaseline`; the other fields are not read).
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
        for name in ("alpha", "gamma", "anneal_fraction", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.kind not in KINDS:
            raise ValueError(did_you_mean(self.kind, list(KINDS), kind="variant kind"))
        if self.placement not in PLACEMENTS:
            raise ValueError(did_you_mean(self.placement, list(PLACEMENTS), kind="placement"))
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (inf: no prior), got {self.gamma!r}")
        if self.gamma_start is not None and not (0 < self.gamma_start < math.inf):
            raise ValueError(
                f"gamma_start must be finite and > 0 (or None), got {self.gamma_start!r}"
            )
        if self.gamma_start is not None and math.isinf(self.gamma):
            raise ValueError("gamma_start anneals towards a finite gamma; gamma is inf")
        if not 0 < self.anneal_fraction <= 1:
            raise ValueError(f"anneal_fraction must be in (0, 1], got {self.anneal_fraction!r}")
        if not 0 < self.alpha < math.inf:
            raise ValueError(
                f"alpha (the solver's step size) must be finite and > 0, got {self.alpha!r}"
            )
        if not 0 <= self.beta < math.inf:
            raise ValueError(
                f"beta (the energy's weight in the loss) must be finite and >= 0, "
                f"got {self.beta!r}"
            )
        if self.kind != "eqt" and self.aux_losses_only:
            raise ValueError(
                "aux_losses_only needs kind='eqt': it trains the variant's energy as an auxiliary "
                f"loss on the un-refined state (kind={self.kind!r} has no energy)"
            )
        solver_cls, options = component(self.solver, SOLVERS)
        if "step_size" in options:
            raise ValueError(f"give the solver's step size as alpha, not in solver={self.solver!r}")
        construct(f"solver {self.solver!r}", solver_cls, step_size=self.alpha, **options)
        backward_cls, options = component(self.backward, BACKWARD)
        construct(f"backward mode {self.backward!r}", backward_cls, **options)
        for rule in (self.stop_train, self.stop_eval):
            stopping.parse(rule)
        energy_terms(self.energy)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VariantSpec:
        """Build from a dict; unknown keys are rejected with the valid ones listed."""
        check_fields(cls, values, kind="variant field")
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


def component(text: str, registry: Registry) -> tuple[type, dict[str, Any]]:
    """Read ``name`` or ``name(key=value,...)`` against `registry`: the class and its options.

    Unknown names and options raise with the valid ones listed.
    """
    tokens = Tokens(text)
    term = tokens.term()
    tokens.done()
    if term.comparator is not None:
        raise SpecError(f"write {registry.kind} options as {term.name}(key=value), not {text!r}")
    cls = registry.get(term.name, context=text)
    check_options(cls, term.options, kind=registry.kind, name=term.name)
    check_option_types(cls, term.options, kind=registry.kind, name=term.name)
    return cls, dict(term.options)


def construct(what: str, cls: type, **options: Any) -> Any:
    """``cls(**options)``, its constructor's checks reported as a `ValueError` naming `what`."""
    try:
        return cls(**options)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"{what}: {error}") from None


def energy_terms(text: str) -> list[type]:
    """The classes of the terms of an energy spec (``"bidir+0.1*memory"``), checked without
    building them: names, options and the ``name=value`` primary option."""
    return [cls for _, cls, _ in parse_terms(text)]
