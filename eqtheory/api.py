"""The two entry points: `minimize` an energy and solve a `fixed_point`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from eqtheory import backward as backward_modes
from eqtheory import checks, solvers, stopping
from eqtheory.backward.base import BackwardMode
from eqtheory.energies.base import Context, EnergyLike, Prepared, as_energy
from eqtheory.loop import DEFAULT_MAX_STEPS, iterate
from eqtheory.problem import FixedPointProblem, MinimizeProblem, Problem
from eqtheory.solution import Solution
from eqtheory.solvers.base import Solver
from eqtheory.stopping.base import StopRule

DEFAULT_STOP = "residual<1e-6|steps=100"


def check_z0(z0: object) -> None:
    """Raise a one-sentence `TypeError` unless ``z0`` is a floating-point tensor."""
    if not isinstance(z0, Tensor):
        raise TypeError(
            f"z0 must be a torch.Tensor of shape [B, ...], got {type(z0).__name__}; "
            "convert it with torch.as_tensor(z0, dtype=torch.float32)"
        )
    if not z0.is_floating_point():
        raise TypeError(
            f"z0 must be a floating-point tensor (float32 or float64), got {z0.dtype}; "
            "convert it with z0.float() or z0.double()"
        )


def check_budget(max_steps: object, divergence: object) -> None:
    """Raise a one-sentence `TypeError`/`ValueError` unless ``max_steps`` is a whole number
    ``>= 0`` and ``divergence`` a finite number ``> 0``."""
    checks.number(max_steps, "max_steps", owner="the solve", at_least=0, whole=True)
    checks.number(divergence, "divergence", owner="the solve", above=0)


def solve(
    problem: Problem,
    z0: Tensor,
    *,
    solver: str | Solver,
    stop: str | StopRule,
    backward: str | BackwardMode = "unrolled",
    readout: Callable[[Tensor], Tensor] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    divergence: float = 1e6,
    record_terms: bool = False,
    solver_options: dict[str, Any] | None = None,
) -> Solution:
    """Solve a `Problem` built by the caller (`minimize` and `fixed_point` build theirs; a
    causal chain, `eqtheory.chain.ChainProblem`, or a per-position solve,
    `eqtheory.problem.PerPositionProblem`, come here directly). Arguments as in `minimize`."""
    check_z0(z0)
    check_budget(max_steps, divergence)
    solver_obj = solvers.shared(solver, **(solver_options or {}))
    rule = stopping.shared(stop)
    mode = backward_modes.shared(backward)

    def run(p: Problem, start: Tensor) -> Solution:
        return iterate(
            p, solver_obj, rule, start, readout=readout, max_steps=max_steps,
            divergence=divergence, record_terms=record_terms,
        )

    return mode.solve(problem, z0, run)


def minimize(
    energy: EnergyLike,
    z0: Tensor,
    *,
    solver: str | Solver = "gd",
    stop: str | StopRule = DEFAULT_STOP,
    backward: str | BackwardMode = "unrolled",
    context: Context | None = None,
    readout: Callable[[Tensor], Tensor] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    divergence: float = 1e6,
    record_terms: bool = False,
    **solver_options: Any,
) -> Solution:
    """Refine latents by minimising an energy: ``z* = argmin_z E(z; x)`` from ``z0``.

    Args:
        energy: an `Energy` or any callable ``z: [B, *S] -> [B]``.
        z0: ``[B, *S]`` start (the one-shot proposal); a floating-point tensor (float32 or
            float64), any device; anything else is a `TypeError`.
        solver: a registered name (``solvers.names()``) or a `Solver` object.
        stop: a stopping-rule spec (``"residual<1e-4|steps=50"``) or a `StopRule`.
        backward: ``"unrolled"``, ``"implicit"``, ``"phantom"`` or a `BackwardMode`. When
            nothing the result depends on requires a gradient (``z0``, the energy's parameters,
            the context; a plain callable is probed once at ``z0``) or grad mode is off, no
            graph is kept across steps and ``z`` is a plain tensor.
        context: conditioning tensors the energy terms read; ``context["z0"]`` defaults to
            ``z0`` (the anchor term's proposal), keeping its gradient path. A `Prepared`
            context (``energy.prepare(z0, context)``) keeps its invariants.
        readout: ``z -> logits`` for rules that look at predictions (``stable``, ``adaptive``).
        max_steps: a hard cap on iterations when the rule has no budget of its own (a whole
            number ``>= 0``).
        divergence: a sample diverges once ``||z|| > divergence * (||z0|| + 1)`` (finite,
            ``> 0``).
        record_terms: also trace every energy term (extra evaluations, not counted).
        **solver_options: keyword options of the named solver; unknown ones raise.

    Returns:
        A `Solution` (``z [B, *S]``, per-sample ``status``, ``steps``, ``fevals``, ``trace``).

    Example:
        >>> import torch, eqtheory as eqt
        >>> sol = eqt.minimize(lambda z: 0.5 * (z ** 2).sum(1), torch.ones(3, 2), step_size=0.5)
        >>> sol.counts()
        {'converged': 3}
    """
    check_z0(z0)
    energy_obj = as_energy(energy)
    full_context: Context = {"z0": z0, **(context or {})}
    if isinstance(context, Prepared):  # keep its invariants
        full_context = context.with_context(full_context)
    return solve(
        MinimizeProblem(energy_obj, full_context), z0, solver=solver, stop=stop,
        backward=backward, readout=readout, max_steps=max_steps, divergence=divergence,
        record_terms=record_terms, solver_options=solver_options,
    )


def fixed_point(
    f: Callable[..., Tensor],
    z0: Tensor,
    *,
    args: tuple[Tensor, ...] | None = None,
    solver: str | Solver = "deq",
    stop: str | StopRule = DEFAULT_STOP,
    backward: str | BackwardMode = "unrolled",
    readout: Callable[[Tensor], Tensor] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    divergence: float = 1e6,
    **solver_options: Any,
) -> Solution:
    """Solve ``z* = f(z*)`` from ``z0: [B, *S]`` (``f`` must be batch-independent).

    Args are those of `minimize`, plus ``args``: per-sample tensors ``[B, ...]`` the map reads,
    ``f(z, *args)``. Give them (rather than closing over them) so that the loop can evaluate
    ``f`` only on the samples still running once others have stopped (``f`` must then act row
    by row, and so must ``readout``). The optimality residual is ``G(z) = z - f(z)``.

    Example:
        >>> import torch, eqtheory as eqt
        >>> sol = eqt.fixed_point(lambda z: 0.5 * z + 1, torch.zeros(2, 3))
        >>> torch.allclose(sol.z, torch.full((2, 3), 2.0))
        True
        >>> scale = torch.tensor([[0.1], [0.9]])  # an easy and a hard sample
        >>> sol = eqt.fixed_point(lambda z, s: s * z + 1, torch.zeros(2, 3), args=(scale,),
        ...                       solver="picard")
        >>> sol.steps.tolist()  # the easy one stopped early and was no longer evaluated
        [8, 100]
    """
    check_z0(z0)
    if args is not None:
        args = tuple(args)
        bad = [i for i, a in enumerate(args)
               if not isinstance(a, Tensor) or a.dim() == 0 or a.shape[0] != z0.shape[0]
               or a.device != z0.device]
        if bad:
            raise ValueError(
                f"args must be tensors on z0's device ({z0.device}) with the batch size "
                f"{z0.shape[0]} as their first dimension; args {bad} are not"
            )
    return solve(
        FixedPointProblem(f, args), z0, solver=solver, stop=stop, backward=backward,
        readout=readout,
        max_steps=max_steps, divergence=divergence, record_terms=False,
        solver_options=solver_options,
    )
