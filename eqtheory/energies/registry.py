"""The energy-term registry (filled by ``@ENERGIES.register`` in each term's file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eqtheory.registry import Registry

if TYPE_CHECKING:
    from eqtheory.energies.base import Energy

ENERGIES: Registry[type[Energy]] = Registry("energy term")
