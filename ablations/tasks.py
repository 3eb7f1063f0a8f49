r"""Tasks (a registry): sequence -> per-position targets, and which positions are scored.

* ``parity`` (cumulative parity, the paper's task): bits ``b_1..b_n``, target at every position
  ``y_t = b_1 xor ... xor b_t``; every position is scored (per-token accuracy).
* ``parity_final``: the same sequences, only the final bit ``y_n`` is scored.

Generation is vectorised: ``y = cumsum(b) mod 2``. Datasets are drawn from a `torch.Generator`
seeded from ``(seed, length, split)`` (`derive_seed`), so a run's train and test sets are fixed
by its seed, and the same for every variant (and both parity tasks) at that seed. Short lengths
have fewer distinct sequences
(``2^n``) than the paper's set sizes, so train and test overlap there, as in the paper.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from eqtheory.registry import Registry

TASKS: Registry = Registry("task")


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed from ``seed`` and tags (stable across processes and platforms)."""
    text = ":".join(str(part) for part in (seed, *tags))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator(seed: int, *tags: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with ``derive_seed(seed, *tags)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *tags))


@dataclass(frozen=True)
class Batch:
    """``inputs [N, T]`` int64 bits, ``targets [N, T]`` int64 classes."""

    inputs: Tensor
    targets: Tensor


class Task:
    """Base class: `sample` sequences and say which positions count (`scored`)."""

    name: str = "task"
    vocab: int = 2

    def sample(self, count: int, length: int, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def scored(self, length: int) -> Tensor:
        """``[T]`` bool: the positions whose prediction is scored (loss and accuracy)."""
        raise NotImplementedError


def cumulative_parity(bits: Tensor) -> Tensor:
    """``bits [N, T]`` in {0, 1} -> ``[N, T]``, ``y_t = b_1 xor ... xor b_t``.

    Example:
        >>> cumulative_parity(torch.tensor([[1, 0, 1, 1]])).tolist()
        [[1, 1, 0, 1]]
    """
    return bits.cumsum(dim=1) % 2


def random_bits(count: int, length: int, gen: torch.Generator) -> Tensor:
    """``[count, length]`` uniform bits (int64) on the generator's device."""
    return torch.randint(0, 2, (count, length), generator=gen, device=gen.device)


@TASKS.register("parity")
class Parity(Task):
    """Cumulative parity; every position scored."""

    name = "parity"

    def sample(self, count: int, length: int, gen: torch.Generator) -> Batch:
        bits = random_bits(count, length, gen)
        return Batch(inputs=bits, targets=cumulative_parity(bits))

    def scored(self, length: int) -> Tensor:
        return torch.ones(length, dtype=torch.bool)


@TASKS.register("parity_final")
class ParityFinal(Parity):
    """Parity of the whole sequence; only the final position scored."""

    name = "parity_final"

    def scored(self, length: int) -> Tensor:
        return torch.arange(length) == length - 1


def get(name: str) -> Task:
    """An instance of the task registered as `name` (did-you-mean error if unknown)."""
    return TASKS.get(name)()


def names() -> list[str]:
    return TASKS.names()


def datasets(
    task: Task, *, length: int, seed: int, train_size: int, test_size: int
) -> tuple[Batch, Batch]:
    """The run's fixed train and test sets (on CPU), drawn from independent seeded streams."""
    train = task.sample(train_size, length, generator(seed, "bits", length, "train"))
    test = task.sample(test_size, length, generator(seed, "bits", length, "test"))
    return train, test
