"""Count host synchronisations: operations that read a tensor's values back to the host.

On an accelerator a read such as ``bool(active.any())`` or ``int(n.sum())`` makes the CPU wait
until every queued kernel has run, so the CPU's dispatch and the device's kernels stop
overlapping; under `torch.func.vmap` the same Python control flow on a batched tensor raises.
`count_syncs` counts them, on any device:

* **CPU** (nothing waits there, so the reads are found where Python makes them): it patches the
  value-reading entry points, ``Tensor.item``, ``__bool__``, ``__int__``, ``__float__``,
  ``__index__``, ``tolist`` and ``numpy``, the data-dependent shapes ``nonzero``,
  ``masked_select`` and ``unique`` (method and ``torch.`` function), and boolean-mask indexing
  ``x[mask]`` / ``x[mask] = v``. A read made inside another counted one counts once.
* **CUDA**: it also sets ``torch.cuda.set_sync_debug_mode("warn")`` and counts the warnings it
  raises (every synchronising CUDA call, including those made in C++); the patches then count
  CPU tensors only, so a CUDA read counts once.

Example:
    >>> import torch
    >>> from eqtheory.testing.syncs import count_syncs
    >>> x = torch.ones(3)
    >>> with count_syncs() as syncs:
    ...     y = torch.where(x > 0, x, 0)  # stays on the device: no sync
    ...     flag = bool((y > 0).all())  # a read
    >>> syncs.count, syncs.sites
    (1, ['Tensor.__bool__'])
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy")
"""``Tensor`` methods that return a tensor's values to Python."""
SHAPES = ("nonzero", "masked_select", "unique")
"""Operations whose output shape depends on values (``Tensor`` method and ``torch.`` function)."""


@dataclass
class Syncs:
    """What `count_syncs` saw: ``count`` host synchronisations, each named in ``sites`` (e.g.
    ``"Tensor.__bool__"``, ``"torch.nonzero"``, ``"cuda (loop.py:212)"`` for a CUDA sync-debug
    warning, with the file and line of the Python call that made it)."""

    sites: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.sites)


def _is_mask(index: object) -> bool:
    """Whether an indexing key holds a boolean tensor (a gather whose size depends on values)."""
    keys = index if isinstance(index, tuple) else (index,)
    return any(isinstance(k, Tensor) and k.dtype == torch.bool for k in keys)


def _on_cuda(args: tuple[Any, ...]) -> bool:
    """Whether the call's first tensor argument lives on CUDA (counted by the debug mode)."""
    return bool(args) and isinstance(args[0], Tensor) and args[0].device.type == "cuda"


class _Patcher:
    """Installs counting wrappers on ``torch.Tensor`` and ``torch`` and removes them again."""

    def __init__(self, syncs: Syncs) -> None:
        self.syncs, self.depth = syncs, 0
        self.saved: list[tuple[object, str, bool, object]] = []

    def wrap(self, owner: object, name: str, label: str,
             counts: Callable[[tuple[Any, ...]], bool] = lambda args: True) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.depth == 0 and counts(args) and not _on_cuda(args):
                self.syncs.sites.append(label)
            self.depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1

        self.saved.append((owner, name, name in vars(owner), original))
        setattr(owner, name, counted)

    def install(self) -> None:
        for name in READS:
            self.wrap(Tensor, name, f"Tensor.{name}")
        for name in SHAPES:
            self.wrap(Tensor, name, f"Tensor.{name}")
            self.wrap(torch, name, f"torch.{name}")
        self.wrap(Tensor, "__getitem__", "Tensor[mask]", lambda args: _is_mask(args[1]))
        self.wrap(Tensor, "__setitem__", "Tensor[mask] =", lambda args: _is_mask(args[1]))

    def remove(self) -> None:
        for owner, name, owned, original in reversed(self.saved):
            if owned:
                setattr(owner, name, original)
            else:  # inherited (from torch._C.TensorBase): inherit it again
                delattr(owner, name)
        self.saved.clear()


SYNC_WARNING = "called a synchronizing CUDA operation"
"""What ``torch.cuda.set_sync_debug_mode("warn")`` warns at each synchronising CUDA call."""


def is_sync_warning(message: str) -> bool:
    """Whether a warning's text is the sync-debug mode's report of a sync (not, say, the notice
    ``"Synchronization debug mode is a prototype feature ..."`` that the first
    ``set_sync_debug_mode`` of a process emits, which is no sync)."""
    return SYNC_WARNING in message


@contextmanager
def count_syncs() -> Iterator[Syncs]:
    """Count the host synchronisations made inside the ``with`` block (see the module docstring).

    Yields:
        A `Syncs` record, filled while the block runs.
    """
    syncs = Syncs()
    patcher = _Patcher(syncs)
    cuda = torch.cuda.is_available()
    previous = torch.cuda.get_sync_debug_mode() if cuda else 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patcher.install()
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield syncs
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(previous)
            patcher.remove()
    for warning in caught:  # the debug mode's warnings counted, any other passed on
        if is_sync_warning(str(warning.message)):  # named by the Python line that made it
            syncs.sites.append(f"cuda ({os.path.basename(warning.filename)}:{warning.lineno})")
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


__all__ = ["READS", "SHAPES", "SYNC_WARNING", "Syncs", "count_syncs", "is_sync_warning"]
