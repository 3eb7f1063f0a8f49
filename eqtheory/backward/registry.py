"""The backward-mode registry (filled by ``@BACKWARD.register`` in each mode's file)."""

from eqtheory.registry import Registry

BACKWARD: Registry = Registry("backward mode")
