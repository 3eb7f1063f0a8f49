"""The `Energy` protocol and its composition.

An energy maps latents ``z: [B, *S]`` (and an optional context of conditioning tensors, each with
leading batch dimension ``B`` where it is per-sample) to per-sample scalars ``E(z; x): [B]``.
Energies are pure: no in-place updates of state, no randomness, batch-independent (sample ``i``'s
energy depends only on sample ``i``), so they work under `torch.func.grad` and `torch.func.vmap`.

Composition returns an energy again: ``a + 0.1 * b`` is a `SumEnergy` whose value is
``E(z) = sum_i w_i E_i(z)``, and whose `per_term` gives each weighted contribution.

A solve evaluates one energy at many ``z`` under one context. `Energy.prepare` computes once
what a term reads that does not depend on ``z``'s values (its `invariants`: targets gathered
from the tokens, position weights, normalised buffers) and returns them explicitly, as a
`Prepared` context that evaluation takes in place of the context; a term reads its own back
(`prepared`) and computes them when given a plain context, so values and gradients are the
same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Union

from torch import Tensor, nn

Context = Mapping[str, Tensor]
EnergyLike = Union["Energy", Callable[[Tensor], Tensor]]


def require(context: Context | None, key: str, *, term: str) -> Tensor:
    """Return ``context[key]`` or raise a `KeyError` that names the term and the keys present."""
    if context is None or key not in context:
        present = sorted(context) if context else []
        raise KeyError(
            f"energy term {term!r} needs context[{key!r}]; context has: {present or '(nothing)'}"
        )
    return context[key]


def per_sample_sum(values: Tensor) -> Tensor:
    """Sum over every dimension but the leading batch one: ``[B, ...] -> [B]``."""
    return values.reshape(values.shape[0], -1).sum(dim=1)


class Prepared(Mapping[str, Tensor]):
    """A context with an energy's `invariants`: what `Energy.prepare` returns.

    It reads like the context it was made from (``prepared["tokens"]``); `own` holds the
    invariants of the energy it was prepared for (an energy of class `kind`) and `parts` the
    `Prepared` of a `SumEnergy`'s terms, in their order, so a term finds its invariants by its
    place in the energy, never by a key. Valid while what the invariants read stays unchanged
    (one solve).
    """

    def __init__(
        self,
        context: Context | None,
        own: dict[str, Tensor],
        *,
        kind: type[Energy],
        parts: tuple[Prepared, ...] = (),
    ) -> None:
        self.context: Context = dict(context.context if isinstance(context, Prepared)
                                     else context or {})
        self.own, self.kind, self.parts = own, kind, parts

    def __getitem__(self, key: str) -> Tensor:
        return self.context[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.context)

    def __len__(self) -> int:
        return len(self.context)

    def with_context(self, context: Context) -> Prepared:
        """The same invariants over another context (e.g. with a default added)."""
        parts = tuple(part.with_context(context) for part in self.parts)
        return Prepared(context, self.own, kind=self.kind, parts=parts)


class Energy(nn.Module):
    """Base class of energy terms: ``forward(z, context) -> [B]``.

    Subclasses implement `energy` and set `name`. `requires` lists the context keys they read;
    `latent_layout` says which latents the term is built for: ``"sequence"`` (``[B, T, dim]``,
    the model's latents) or ``"flat"`` (``[B, dim]``, analytic energies over a feature vector).
    `primary` names the option that ``name=value`` sets (None: the term takes only
    ``name(key=value)``); `exact_gradient` is False for a term whose `gradient` is a field that
    is not ``dE/dz`` (the causal chain field); `couples_positions` is True for a term whose
    value at position ``t`` reads other positions' latents (the ERM then solves per sequence).
    """

    name: str = "energy"
    requires: tuple[str, ...] = ()
    latent_layout: str = "sequence"
    primary: str | None = None
    exact_gradient: bool = True
    couples_positions: bool = False

    def forward(self, z: Tensor, context: Context | None = None) -> Tensor:
        return self.energy(z, context)

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        raise NotImplementedError

    def invariants(self, z: Tensor, context: Context | None) -> dict[str, Tensor]:
        """``{name: value}`` that `energy` reads and that do not depend on ``z``'s values (only
        on the context, the parameters and buffers, and ``z``'s shape, dtype and device). The
        default has none."""
        del z, context
        return {}

    def prepare(self, z: Tensor, context: Context | None) -> Prepared:
        """This energy's `invariants` at ``z``'s shape, dtype and device, with ``context``: a
        `Prepared` to evaluate with in place of ``context`` while they stay valid (one solve)."""
        return Prepared(context, self.invariants(z, context), kind=type(self))

    def prepared(self, z: Tensor, context: Context | None) -> dict[str, Tensor]:
        """The `invariants`: this energy's own from a `Prepared` made for its class, else
        computed now."""
        if isinstance(context, Prepared) and context.kind is type(self) and context.own:
            return context.own
        return self.invariants(z, context)

    def per_term(self, z: Tensor, context: Context | None = None) -> dict[str, Tensor]:
        """Each weighted term's contribution ``{label: [B]}``; they sum to ``self(z, context)``."""
        return {self.name: self(z, context)}

    def spec(self) -> str:
        """The spec string that `energies.parse` turns back into an energy of this structure."""
        return self.name

    def __add__(self, other: Energy) -> SumEnergy:
        return SumEnergy([*_as_terms(self), *_as_terms(other)])

    def __mul__(self, weight: float) -> SumEnergy:
        return SumEnergy([(w * float(weight), t) for w, t in _as_terms(self)])

    __rmul__ = __mul__


def _as_terms(energy: Energy) -> list[tuple[float, Energy]]:
    if isinstance(energy, SumEnergy):
        return list(zip(energy.weights, energy.terms))
    if not isinstance(energy, Energy):
        raise TypeError(f"can only add energies, got {type(energy).__name__}")
    return [(1.0, energy)]


class SumEnergy(Energy):
    """Weighted sum ``E(z) = sum_i w_i E_i(z)`` of energy terms.

    Args:
        terms: ``(weight, term)`` pairs; weights are plain floats (fixed, not learned).
    """

    name = "sum"

    def __init__(self, terms: list[tuple[float, Energy]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a SumEnergy needs at least one term")
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList([t for _, t in terms])

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(sorted({k for t in self.terms for k in t.requires}))

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        # left to right, weights of 1 not multiplied, no leading 0 + (exact)
        values = [t(z, c) if w == 1.0 else w * t(z, c)
                  for w, t, c in zip(self.weights, self.terms, self._contexts(context))]
        return sum(values[1:], values[0])

    def prepare(self, z: Tensor, context: Context | None) -> Prepared:
        """No invariants of its own; each term's, in order, in `Prepared.parts`."""
        parts = tuple(term.prepare(z, context) for term in self.terms)
        return Prepared(context, {}, kind=type(self), parts=parts)

    def _contexts(self, context: Context | None) -> list[Context | None]:
        """The context each term evaluates with: its part of a `Prepared` made for this sum's
        structure, else ``context`` itself."""
        if (isinstance(context, Prepared) and context.kind is type(self)
                and len(context.parts) == len(self.terms)):
            return list(context.parts)
        return [context] * len(self.terms)

    def per_term(self, z: Tensor, context: Context | None = None) -> dict[str, Tensor]:
        return {label: w * t(z, c)
                for (label, w, t), c in zip(self._labelled(), self._contexts(context))}

    def _labelled(self) -> list[tuple[str, float, Energy]]:
        out, seen = [], {}
        for w, t in zip(self.weights, self.terms):
            label = t.spec() if w == 1.0 else f"{w:g}*{t.spec()}"
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label}#{seen[label]}"
            out.append((label, w, t))
        return out

    def spec(self) -> str:
        return "+".join(label.split("#")[0] for label, _, _ in self._labelled())


class FunctionEnergy(Energy):
    """Wrap a plain callable ``fn(z) -> [B]`` (the context is not passed to it)."""

    name = "function"

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        del context
        return self.fn(z)


def as_energy(energy: EnergyLike) -> Energy:
    """Return `energy` as an `Energy` (plain callables are wrapped)."""
    if isinstance(energy, Energy):
        return energy
    if callable(energy):
        return FunctionEnergy(energy)
    raise TypeError(f"an energy must be an Energy or a callable z -> [B], got {type(energy)!r}")


def check_per_sample(value: Tensor, z: Tensor, *, what: str) -> Tensor:
    """Raise a clear error unless `value` is a floating-point tensor of shape ``[B]`` for
    ``z: [B, ...]`` (a `TypeError` for a Python number or an integer tensor, whose gradient
    would be missing or zero)."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        got = f"a {value.dtype} tensor" if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(
            f"{what} must return a floating-point tensor of shape [{z.shape[0]}] (one value per "
            f"sample), got {got}"
        )
    if value.shape != (z.shape[0],):
        raise ValueError(
            f"{what} must return one value per sample, shape [{z.shape[0]}], "
            f"got shape {list(value.shape)} for z of shape {list(z.shape)}"
        )
    return value


__all__ = [
    "Context",
    "Energy",
    "EnergyLike",
    "FunctionEnergy",
    "Prepared",
    "SumEnergy",
    "as_energy",
    "check_per_sample",
    "per_sample_sum",
    "require",
]
