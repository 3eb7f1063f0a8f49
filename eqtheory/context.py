"""Context keys: what an energy term reads besides the latents, and how each value is made.

A term lists the keys it needs in `Energy.requires` (and may read optional ones, e.g. ``mask``).
Every key the model's energies may read is registered here once, as a `ContextKey`:

- ``example(batch, length, vocab) -> [batch, length]``: a value for the contract laws
  (`eqtheory.testing.contracts`), drawn from torch's global generator;
- ``draw(tokens, generator) -> [B, T]`` (or None): how training makes the key for each step
  from the batch's ``tokens`` (`ablations.train` seeds ``generator`` from the run's seed, the key's
  name and the step); None for a key that the model itself supplies (``tokens``).

`EqT.forward(tokens, context=...)` passes ``{"tokens": tokens, **context}`` to its energies. So a
new key is one `register` call, in the module of the term that reads it or in a plugin: the
contract helper, the model and training read this registry. ``z0`` (the one-shot latent) is not a
context key of this kind: the ERM supplies it with the latents' shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from eqtheory.energies.mask import MASK_RATE, random_mask


@dataclass(frozen=True)
class ContextKey:
    """One context entry: its ``name``, what it holds (``doc``), an ``example`` for the
    contract laws and, when training makes it per step, ``draw``."""

    name: str
    doc: str
    example: Callable[[int, int, int], Tensor]
    draw: Callable[[Tensor, torch.Generator], Tensor] | None = None


CONTEXT_KEYS: dict[str, ContextKey] = {}
"""Every registered key by name, in registration order."""


def register(key: ContextKey) -> ContextKey:
    """Add ``key``; a second key of the same name is refused."""
    if key.name in CONTEXT_KEYS:
        raise ValueError(f"context key {key.name!r} is already registered")
    CONTEXT_KEYS[key.name] = key
    return key


def drawn() -> list[ContextKey]:
    """The keys training draws per step (those with a ``draw``), in registration order."""
    return [key for key in CONTEXT_KEYS.values() if key.draw is not None]


register(ContextKey(
    "tokens", "[B, T] int64: the input tokens (the model supplies them)",
    example=lambda batch, length, vocab: torch.randint(0, vocab, (batch, length)),
))
register(ContextKey(
    "mask", f"[B, T] bool: the `mask` term's positions, {MASK_RATE:.0%} drawn per training step",
    example=lambda batch, length, vocab: torch.rand(batch, length) < 0.5,
    draw=lambda tokens, generator: random_mask(tokens, MASK_RATE, generator=generator),
))
