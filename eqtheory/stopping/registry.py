"""The stopping-rule registry (filled by ``@STOPPING.register`` in each rule's file)."""

from eqtheory.registry import Registry

STOPPING: Registry = Registry("stopping rule")
