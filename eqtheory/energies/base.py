"""The `Energy` protocol and its composition.

An energy maps latents ``z: [B, *S]`` (and an optional context of conditioning tensors, each with
leading batch dimension ``B`` where it is per-sample) to per-sample scalars ``E(z; x): [B]``.
Energies are pure: no in-place updates of state, no randomness, batch-independent (sample ``i``'s
energy depends only on sample ``i``), so they work under `torch.func.grad` and `torch.func.vmap`.

Composition returns an energy again: ``a + 0.1 * b`` is a `SumEnergy` whose value is
``E(z) = sum_i w_i E_i(z)``, and whose `per_term` gives each weighted contribution.

A solve evaluates one energy at many ``z`` under one context. `Energy.prepare` computes once
what a term reads that does not depend on ``z``'s values (its `invariants`: targets gathered
from the tokens, position weights, normalised buffers) and returns the context with them added;
`energy` reads them back when present (`prepared`) and computes them otherwise, so values and
gradients are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def per_sample_mean(values: Tensor) -> Tensor:
    """Mean over every dimension but the leading batch one: ``[B, ...] -> [B]``."""
    return values.reshape(values.shape[0], -1).mean(dim=1)


def per_sample_sum(values: Tensor) -> Tensor:
    """Sum over every dimension but the leading batch one: ``[B, ...] -> [B]``."""
    return values.reshape(values.shape[0], -1).sum(dim=1)


class Energy(nn.Module):
    """Base class of energy terms: ``forward(z, context) -> [B]``.

    Subclasses implement `energy` and set `name`. `requires` lists the context keys they read;
    `latent_layout` says which latents the term is built for: ``"sequence"`` (``[B, T, dim]``,
    the model's latents) or ``"flat"`` (``[B, dim]``, analytic energies over a feature vector).
    """

    name: str = "energy"
    requires: tuple[str, ...] = ()
    latent_layout: str = "sequence"

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

    def prepare(self, z: Tensor, context: Context | None) -> Context | None:
        """``context`` plus this term's `invariants`, under keys of this instance; valid while
        what they read stays unchanged (one solve)."""
        values = self.invariants(z, context)
        if not values:
            return context
        return {**(context or {}), **{self._key(n): v for n, v in values.items()}}

    def prepared(self, z: Tensor, context: Context | None) -> dict[str, Tensor]:
        """The `invariants`: read back from a `prepare`-d context, else computed now."""
        prefix = self._key("")
        found = {k[len(prefix):]: v for k, v in (context or {}).items() if k.startswith(prefix)}
        return found or self.invariants(z, context)

    def _key(self, name: str) -> str:
        return f"{self.name}@{id(self):x}.{name}"

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
        # left to right as before, without the multiplies by 1 and the leading 0 + (exact)
        values = [t(z, context) if w == 1.0 else w * t(z, context)
                  for w, t in zip(self.weights, self.terms)]
        return sum(values[1:], values[0])

    def prepare(self, z: Tensor, context: Context | None) -> Context | None:
        for term in self.terms:
            context = term.prepare(z, context)
        return context

    def per_term(self, z: Tensor, context: Context | None = None) -> dict[str, Tensor]:
        return {label: w * t(z, context) for label, w, t in self._labelled()}

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
    "SumEnergy",
    "as_energy",
    "check_per_sample",
    "per_sample_mean",
    "per_sample_sum",
    "require",
]
