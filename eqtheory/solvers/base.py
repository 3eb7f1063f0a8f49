"""The solver protocol: ``init(problem, z0)`` and ``step(problem, state)``; no loops, no statuses.

A solver's state is a dict. Tensors in it with leading dimension ``B`` are per-sample; the loop
freezes ``z``, ``G``, ``energy`` and ``grad_norm`` of a sample once it stops, and the rest of a
stopped sample's state is scratch (it never resumes). Any other value (Python numbers,
generators, 0-d tensors) is shared; a shared tensor must therefore not have the batch size as
its first dimension (when the loop compacts the batch of a `fixed_point(..., args=)` solve, the
batch size shrinks, and every tensor whose first dimension equals it is gathered). Every state
holds ``z`` (the iterate), ``energy`` (``[B]``, NaN for fixed-point problems) and ``grad_norm``
(``[B]``, ``||G(z)||``) at the current iterate, so one evaluation per step serves both the update
and the stopping rules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from eqtheory.problem import Problem, batch_norm, in_transform

State = dict[str, Any]


def observe(problem: Problem, z: Tensor, like: State | None = None) -> State:
    """Evaluate `problem` at ``z``: ``{"z", "G", "energy", "grad_norm"}`` (through the loop's
    `Guard` while it records a graph). ``like``: the state this step started from (same
    problem, same batch), whose all-NaN ``energy`` a problem without an energy reuses."""
    guard = getattr(problem, "guard", None)
    evaluation = problem.evaluate(z) if guard is None else guard.evaluate(problem, z)
    energy = evaluation.energy
    if energy is None:  # a problem without an energy (the loop does not freeze it): NaN
        energy = like["energy"] if like is not None else z.new_full((z.shape[0],), float("nan"))
    return {
        "z": z,
        "G": evaluation.optimality,
        "energy": energy,
        "grad_norm": batch_norm(evaluation.optimality),
    }


class Solver(nn.Module):
    """Base class. `solves` names the problem kinds a solver handles; `deterministic` is False
    for solvers that draw noise (their batch results then depend on the batch's composition)."""

    name: str = "solver"
    solves: frozenset[str] = frozenset({"minimize", "fixed_point"})

    @property
    def deterministic(self) -> bool:
        return True

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        """Return the state at ``z0`` and the evaluations spent (per sample)."""
        return observe(problem, z0), 1

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        """One iteration: the new state and the evaluations spent on each sample."""
        raise NotImplementedError

    def step_size_for(self, problem: Problem, step_size: float | None) -> float:
        """``eta`` of the map ``T(z) = z - eta G(z)``: the given one, else the problem's default
        (1 for fixed points, the paper's alpha = 0.1 for energies)."""
        return problem.default_step_size if step_size is None else float(step_size)


def flat(x: Tensor) -> Tensor:
    """``[B, *S] -> [B, n]``."""
    return x.reshape(x.shape[0], -1)


def write_slot(buffer: Tensor, dim: int, slot: int, value: Tensor) -> Tensor:
    """``buffer`` with index ``slot`` of dimension ``dim`` (>= 1) replaced by ``value``.

    In place when no autograd graph is recorded through either tensor (a history buffer is then
    scratch nobody else holds), else out of place so that unrolled backward stays correct (and
    inside a `torch.func` transform, where ``requires_grad`` cannot tell).
    """
    if buffer.requires_grad or value.requires_grad or in_transform():
        # a one-hot mask made on the device: an index tensor built from ``slot`` would be a
        # host-to-device copy, a sync on CUDA (`select_scatter` has none, but its gradient under
        # vmap came out wrong with torch 2.13: tests/test_core_syncs.py's vmap test)
        shape = [1] * buffer.dim()
        shape[dim] = buffer.shape[dim]
        here = (torch.arange(buffer.shape[dim], device=buffer.device) == slot).view(shape)
        return torch.where(here, value.unsqueeze(dim).to(buffer.dtype), buffer)  # as copy_
    buffer.select(dim, slot).copy_(value)
    return buffer


def bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product of ``[B, n]`` tensors: ``[B]``."""
    return (a * b).sum(dim=-1)
