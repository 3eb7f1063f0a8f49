"""The energy-term registry (filled by ``@ENERGIES.register`` in each term's file)."""

from eqtheory.registry import Registry

ENERGIES: Registry = Registry("energy term")
