"""Backward modes: ``unrolled``, ``implicit`` (IFT), ``phantom`` (truncated)."""

from __future__ import annotations

from eqtheory.backward.base import BackwardMode
from eqtheory.backward.implicit import Implicit
from eqtheory.backward.linear import conjugate_gradient, fixed_point_adjoint
from eqtheory.backward.phantom import Phantom
from eqtheory.backward.registry import BACKWARD
from eqtheory.backward.unrolled import Unrolled
from eqtheory.registry import import_modules

import_modules(__name__, __path__)  # every mode's file registers itself on import

REGISTRY = BACKWARD
get = BACKWARD.get  # the mode class registered as a name (did-you-mean error if unknown)
names = BACKWARD.names


def resolve(backward: str | BackwardMode) -> BackwardMode:
    """A backward-mode object from a registered name (default options) or the object itself."""
    if isinstance(backward, BackwardMode):
        return backward
    if isinstance(backward, str):
        return BACKWARD.build(backward)
    raise TypeError(f"backward must be a name or a BackwardMode, got {type(backward).__name__}")


def shared(backward: str | BackwardMode) -> BackwardMode:
    """`resolve`, sharing the instance built for a name between solves
    (`eqtheory.registry.Registry.shared`: never one that holds parameters or buffers)."""
    if isinstance(backward, str):
        return BACKWARD.shared(backward)
    return resolve(backward)


__all__ = [
    "REGISTRY", "BackwardMode", "Implicit", "Phantom", "Unrolled", "conjugate_gradient",
    "fixed_point_adjoint", "get", "names", "resolve", "shared",
]
