"""Problems a solver works on, written through their optimality condition ``G(z) = 0``.

* `MinimizeProblem`: ``z* = argmin_z E(z; x)``, ``G(z) = grad_z E(z; x)``.
* `FixedPointProblem`: ``z* = f(z*)``, ``G(z) = z - f(z)``.

Both expose the same map ``T(z) = z - eta * G(z)`` (for a fixed point with ``eta = 1`` this is
``f``; for an energy it is one gradient step), so every fixed-point solver also minimises
energies "through the gradient map", and one implicit backward serves both problem kinds.
"""

from __future__ import annotations

import copy as _copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from eqtheory.energies.base import Context, Energy, FunctionEnergy, check_per_sample

ProblemKind = Literal["minimize", "fixed_point"]


@dataclass
class Evaluation:
    """One evaluation of a problem at ``z: [B, *S]``.

    Attributes:
        optimality: ``G(z)``, same shape as ``z`` (zero at a solution).
        energy: ``[B]`` energy, or ``None`` for a fixed-point problem.
    """

    optimality: Tensor
    energy: Tensor | None


def in_transform() -> bool:
    """Whether a `torch.func` transform (``vmap``, ``grad``, ...) is running. Inside one a
    tensor cannot be made to require a gradient, and ``requires_grad`` does not say whether the
    tensors it wraps do: a problem then differentiates with `torch.func` and records a graph
    whenever grad mode is on."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def batch_norm(x: Tensor) -> Tensor:
    """Per-sample Euclidean norm over every non-batch dimension: ``[B, ...] -> [B]``."""
    return torch.linalg.vector_norm(x if x.dim() == 2 else x.reshape(x.shape[0], -1), dim=1)


def row_view(values: Tensor, like: Tensor) -> Tensor:
    """``[B]`` per-sample values viewed as ``[B, 1, ..., 1]``, to broadcast against
    ``like: [B, *S]`` (a 0-d or ``[1]`` value broadcasts to every sample)."""
    return values.view((-1,) + (1,) * (like.dim() - 1))


class Guard:
    """Keeps samples whose evaluation is not finite out of a recorded graph (the double-``where``
    pattern); the loop installs one as `Problem.guard` for each step that records a graph.

    A sample evaluated at a non-finite point, or whose energy or ``G`` comes out non-finite,
    would carry NaN into autograd even though the loop rejects its step (``where`` sends it a
    zero gradient, but ``0 * NaN`` is NaN in the backward of the batched evaluation, and every
    parameter's gradient sums over the batch). So `evaluate` evaluates such a sample at its
    ``safe`` iterate instead, detached (the loop's last accepted iterate, whose evaluation was
    finite), and marks it in `flagged`; the loop rejects flagged samples (``NONFINITE``) and
    freezes them with a second ``where``. Samples in ``skip`` (rejected at an earlier step: they
    never resume, and their steps are discarded) are always evaluated at ``safe``. Samples that
    stopped otherwise are evaluated where their solver puts them, as without a guard, so the
    values of a problem whose samples interact (a sequence's positions) are unchanged.

    With ``recheck=False`` (the loop's budget path, which reads nothing back to the host) a
    sample found non-finite is flagged but not evaluated again: its step is still rejected and
    frozen, and it is evaluated at ``safe`` from the next step on, but the evaluation that came
    out non-finite stays in that step's graph (a NaN there can reach the parameters' gradients,
    and a problem whose samples interact sees it in that step's values).

    Args:
        safe: ``[B, *S]`` detached iterates with a finite evaluation.
        skip: ``[B]`` bool, or None when no sample was rejected.
        recheck: evaluate flagged samples again at ``safe`` (one host read per evaluation).
    """

    def __init__(self, safe: Tensor, skip: Tensor | None, *, recheck: bool = True) -> None:
        self.safe, self.skip, self.recheck = safe, skip, recheck
        self.flagged: Tensor | None = None
        """``[B]`` bool: samples evaluated at ``safe`` because their own evaluation was not
        finite (None: none so far)."""

    def evaluate(self, problem: Problem, z: Tensor) -> Evaluation:
        """``problem.evaluate(z)``, with the samples in ``skip`` or `flagged` at ``safe``."""
        if z.shape != self.safe.shape:  # not an iterate of the working batch
            return problem.evaluate(z)
        swap = _union(self.skip, self.flagged)
        evaluation = problem.evaluate(self._swapped(z, swap))
        bad = ~_finite_rows(z, evaluation)
        if swap is not None:
            bad = bad & ~swap
        if not self.recheck:
            self.flagged = _union(self.flagged, bad)
        elif bool(bad.any()):  # evaluate again, the new bad samples at their safe iterate
            self.flagged = _union(self.flagged, bad)
            evaluation = problem.evaluate(self._swapped(z, _union(swap, bad)))
        return evaluation

    def _swapped(self, z: Tensor, rows: Tensor | None) -> Tensor:
        """``z`` with the samples ``rows`` (``[B]`` bool; None: none) at their safe iterate."""
        if rows is None:
            return z
        return torch.where(row_view(rows, z), self.safe, z)


def _union(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a | b`` of ``[B]`` bool masks, where None is the empty mask."""
    if a is None or b is None:
        return b if a is None else a
    return a | b


def _finite_rows(z: Tensor, evaluation: Evaluation) -> Tensor:
    """``[B]``: ``z``, ``G`` and the energy (if any) are finite (their norms are below inf)."""
    ok = (batch_norm(z.detach()) < math.inf) & (
        batch_norm(evaluation.optimality.detach()) < math.inf
    )
    if evaluation.energy is not None:
        ok = ok & (evaluation.energy.detach().abs() < math.inf)
    return ok


class Problem:
    """Common interface. `create_graph`: whether evaluations record a graph; a backward mode
    or the loop asks for a copy that does (`recording`), the problem itself never changes."""

    kind: ProblemKind
    default_step_size: float
    create_graph: bool = False
    guard: Guard | None = None
    """Set on the copy (`guarded`) that a step recording a graph evaluates;
    `eqtheory.solvers.observe` evaluates through it."""
    restrictable: bool = False
    """Whether `restrict` can evaluate a subset of samples (the loop then compacts)."""

    def evaluate(self, z: Tensor) -> Evaluation:
        raise NotImplementedError

    def recording(self, create_graph: bool) -> Problem:
        """This problem with `create_graph` set: itself when it already is, else a shallow
        copy (the same energy or map, context and arguments)."""
        if self.create_graph == create_graph:
            return self
        copy = _copy.copy(self)
        copy.create_graph = create_graph
        return copy

    def guarded(self, guard: Guard) -> Problem:
        """A shallow copy that evaluates through `guard` (`eqtheory.solvers.observe` reads it)."""
        copy = _copy.copy(self)
        copy.guard = guard
        return copy

    def has_trainable(self) -> bool:
        """Whether anything the problem reads (parameters, context) may need a gradient;
        plain callables are assumed to (their closures cannot be inspected)."""
        raise NotImplementedError

    def needs_graph(self, z0: Tensor) -> bool:
        """Whether a solve from ``z0`` must record an autograd graph: grad mode is on and ``z0``
        or something the problem reads requires a gradient (or, inside a `torch.func`
        transform, where that cannot be seen, always). Otherwise the loop keeps no graph
        across steps (memory flat in the step count) and returns a plain tensor."""
        return torch.is_grad_enabled() and (
            in_transform() or z0.requires_grad or self.has_trainable()
        )

    def value(self, z: Tensor) -> Tensor:
        """``[B]`` energy without the gradient (line searches); fixed points have none."""
        raise NotImplementedError(f"a {self.kind} problem has no energy value")

    def restrict(self, rows: Tensor) -> Problem:
        """The same problem on the samples ``rows`` (int64 ``[W]``) of its batch only."""
        raise NotImplementedError(f"this {self.kind} problem cannot be restricted to a subset")


class MinimizeProblem(Problem):
    """Minimise ``energy(z, context)``: ``G(z) = grad_z E``, computed by reverse-mode autograd."""

    kind: ProblemKind = "minimize"
    default_step_size = 0.1

    def __init__(self, energy: Energy, context: Context | None = None) -> None:
        self.energy = energy
        self.context = context

    def has_trainable(self) -> bool:
        if isinstance(self.energy, FunctionEnergy):
            return True
        tensors = [*self.energy.parameters(), *(self.context or {}).values()]
        return any(isinstance(t, Tensor) and t.requires_grad for t in tensors)

    def needs_graph(self, z0: Tensor) -> bool:
        """As `Problem.needs_graph`; a plain callable's closure cannot be inspected, so it is
        probed once: its value at ``z0.detach()`` requires a gradient exactly when it reads a
        tensor that does (a closure over a parameter). One extra evaluation, only for plain
        callables, only with grad mode on and ``z0`` not requiring a gradient."""
        if not torch.is_grad_enabled():
            return False
        if z0.requires_grad or in_transform():
            return True
        if not isinstance(self.energy, FunctionEnergy):
            return self.has_trainable()
        with torch.enable_grad():
            return self.value(z0.detach()).requires_grad

    def value(self, z: Tensor) -> Tensor:
        return check_per_sample(self.energy(z, self.context), z, what="the energy")

    def per_term(self, z: Tensor) -> dict[str, Tensor]:
        """Each term's ``[B]`` contribution to the value at ``z`` (`Energy.per_term`)."""
        return self.energy.per_term(z, self.context)

    def _total(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(scalar, [B] values)``: the scalar whose gradient is ``G`` (``sum_i E_i(z)``:
        samples are independent) and each sample's energy."""
        energy = self.value(z)
        return energy.sum(), energy

    def evaluate(self, z: Tensor) -> Evaluation:
        """``grad_z E`` and ``E`` at ``z``; by `torch.autograd.grad`, or inside a `torch.func`
        transform (``vmap`` over a stack of problems), where a tensor cannot be made to require
        a gradient, by `torch.func.grad_and_value` (the same backward formulas)."""
        with torch.enable_grad():
            if in_transform():
                grad, (_, energy) = torch.func.grad_and_value(self._total, has_aux=True)(z)
            else:
                z_in = z if (self.create_graph and z.requires_grad) else (
                    z.detach().requires_grad_()
                )
                total, energy = self._total(z_in)
                (grad,) = torch.autograd.grad(total, z_in, create_graph=self.create_graph)
        if not self.create_graph:
            return Evaluation(optimality=grad.detach(), energy=energy.detach())
        return Evaluation(optimality=grad, energy=energy)


class PerPositionProblem(MinimizeProblem):
    """Minimise a sequence energy ``E: [B, T, d] -> [B]`` position by position: the ``B * T``
    latents ``z_{b,t}: [d]`` are the samples (rows ``b * T + t`` of ``z: [B*T, d]``).

    Sample ``(b, t)``'s optimality residual is the per-token gradient
    ``G_{b,t} = grad_{z_{b,t}} E(z_b)`` and its energy value is its sequence's total ``E(z_b)``
    (value-based rules such as ``energy<tau`` and Armijo line searches decide on the total).
    So every solver's per-sample arithmetic, every stopping decision and the NaN/divergence
    freeze act on one position at a time, and position ``t`` never reads positions ``> t``
    when ``E``'s gradient at ``z_t`` reads only ``z_t`` and the causal context (no term that
    ``couples_positions``). `eqtheory.Solution.unflatten` gives results back as ``[B, T]``.

    Args:
        energy: the sequence energy; context: what it reads (may be `Prepared`).
        length: ``T``.
    """

    def __init__(self, energy: Energy, context: Context | None, length: int) -> None:
        super().__init__(energy, context)
        self.length = length

    def _sequences(self, z: Tensor) -> Tensor:
        """``[B*T, d] -> [B]``: each sequence's total energy."""
        sequences = z.reshape(-1, self.length, z.shape[-1])  # (B, T, d)
        return check_per_sample(
            self.energy(sequences, self.context), sequences, what="the energy"
        )

    def value(self, z: Tensor) -> Tensor:
        return self._sequences(z).repeat_interleave(self.length)  # (B*T,)

    def per_term(self, z: Tensor) -> dict[str, Tensor]:
        sequences = z.reshape(-1, self.length, z.shape[-1])
        return {name: value.repeat_interleave(self.length)
                for name, value in self.energy.per_term(sequences, self.context).items()}

    def _total(self, z: Tensor) -> tuple[Tensor, Tensor]:
        totals = self._sequences(z)  # (B,)
        return totals.sum(), totals.repeat_interleave(self.length)


class FixedPointProblem(Problem):
    """Solve ``z = f(z)``: ``G(z) = z - f(z)``.

    With ``args`` (per-sample tensors ``[B, ...]``) the map is ``f(z, *args)`` and must act row
    by row (sample ``i`` of the output reads only row ``i`` of ``z`` and of each arg); the loop
    then evaluates only the samples still running (`restrict`). Without ``args``, ``f(z)`` may
    close over full-batch tensors, so it is always called on the whole batch.
    """

    kind: ProblemKind = "fixed_point"
    default_step_size = 1.0

    def __init__(
        self, f: Callable[..., Tensor], args: tuple[Tensor, ...] | None = None
    ) -> None:
        self.f = f
        self.args = args
        self.restrictable = args is not None

    def has_trainable(self) -> bool:
        if any(arg.requires_grad for arg in self.args or ()):
            return True
        if isinstance(self.f, torch.nn.Module):
            return any(p.requires_grad for p in self.f.parameters())
        return True

    def needs_graph(self, z0: Tensor) -> bool:
        """As `Problem.needs_graph`; a plain callable ``f`` (not an `nn.Module`, no ``args``
        that require a gradient) is probed once: ``f(z0.detach(), *args)`` requires a gradient
        exactly when ``f`` reads a tensor that does (a closure over a parameter)."""
        if not torch.is_grad_enabled():
            return False
        if z0.requires_grad or in_transform():
            return True
        if not self.has_trainable():
            return False
        if isinstance(self.f, torch.nn.Module) or any(a.requires_grad for a in self.args or ()):
            return True
        with torch.enable_grad():
            fz = self._map(z0.detach())
        return bool(getattr(fz, "requires_grad", True))  # not a tensor: `evaluate` says so

    def restrict(self, rows: Tensor) -> FixedPointProblem:
        if self.args is None:
            return super().restrict(rows)
        restricted = FixedPointProblem(self.f, tuple(a.index_select(0, rows) for a in self.args))
        restricted.create_graph = self.create_graph
        return restricted

    def evaluate(self, z: Tensor) -> Evaluation:
        if self.create_graph or not torch.is_grad_enabled():  # grad mode is as it should be
            fz = self._map(z)
        else:
            with torch.no_grad():
                fz = self._map(z)
        if not isinstance(fz, Tensor) or not fz.is_floating_point():
            got = f"a {fz.dtype} tensor" if isinstance(fz, Tensor) else type(fz).__name__
            raise TypeError(f"the map f must return a floating-point tensor like z, got {got}")
        if fz.shape != z.shape:
            raise ValueError(
                f"the map f must return the shape of z {list(z.shape)}, got {list(fz.shape)}"
            )
        return Evaluation(optimality=z - fz, energy=None)

    def _map(self, z: Tensor) -> Tensor:
        """``f(z)``, or ``f(z, *args)``."""
        return self.f(z) if self.args is None else self.f(z, *self.args)
