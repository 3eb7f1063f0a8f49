"""The stopping-rule registry (filled by ``@STOPPING.register`` in each rule's file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eqtheory.registry import Registry

if TYPE_CHECKING:
    from eqtheory.stopping.base import StopRule

STOPPING: Registry[type[StopRule]] = Registry("stopping rule")
