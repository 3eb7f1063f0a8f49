"""The backward-mode registry (filled by ``@BACKWARD.register`` in each mode's file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eqtheory.registry import Registry

if TYPE_CHECKING:
    from eqtheory.backward.base import BackwardMode

BACKWARD: Registry[type[BackwardMode]] = Registry("backward mode")
