"""The one loop: iterate a solver, freeze finished samples, apply the stopping rule, record.

Per iteration ``k`` and per sample ``i`` still active:

1. ``state' = solver.step(problem, state)`` (for the whole batch: one batched evaluation);
2. samples whose new iterate (its norm), energy or gradient norm is not finite are marked
   ``NONFINITE`` and keep their last finite state; samples whose iterate norm exceeds
   ``divergence * (||z_0|| + 1)`` are marked ``DIVERGED``;
3. the others accept ``state'``; the stopping rule sees the new `StepInfo`; samples it stops get
   its status; stopped samples are frozen bitwise from then on (``torch.where`` on the `FROZEN`
   entries ``z, G, energy, grad_norm``; a solver's other per-sample entries, e.g. Anderson's
   history, are scratch once a sample stops: it never resumes and no result reads them).

The loop ends when no sample is active or after ``max_steps`` iterations (``MAX_STEPS``).

**Gradients** (unrolled: the loop records a graph, `Problem.create_graph`). A rejected sample's
step is discarded by ``torch.where``, but a NaN in its branch would still poison every
parameter's gradient (``0 * NaN``). So each recording step evaluates through a `Guard`: a sample
whose evaluation comes out non-finite is evaluated again at its last accepted iterate, detached,
and rejected (``NONFINITE``); rejected samples are evaluated there from then on. A masked loss
then gets the gradients it would get without the sample. Without a graph nothing changes.

**Compaction.** When the problem can be restricted to a subset of its samples
(`Problem.restrict`, e.g. a fixed point given as ``f(z, *args)`` with per-sample ``args``), the
loop evaluates only the samples still running: once at most `COMPACT_BELOW` of the working batch
is active, the working batch (state, rule state, statuses, counters) is cut down to the active
samples, and the finished ones are written back to the full-size result. Results are those of the
full-batch loop (batch-independent problems), up to floating-point rounding of the batched
kernels; the trace is rebuilt to ``[K+1, B]`` (stopped samples keep their last record).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from eqtheory.energies.base import Energy
from eqtheory.problem import Guard, MinimizeProblem, Problem, batch_norm
from eqtheory.solution import Solution
from eqtheory.solvers.base import Solver, State
from eqtheory.status import Status
from eqtheory.stopping.base import StepInfo, StopRule

DEFAULT_MAX_STEPS = 1000
COMPACT_BELOW = 0.5
"""Compact the working batch once at most this fraction of it is still active (halving it at
least, so at most ``log2 B`` compactions, each a gather of the state)."""


FROZEN = ("z", "G", "energy", "grad_norm")
"""State entries the loop freezes per sample; the rest of a stopped sample's state is scratch
(stopped samples never resume, and no result reads it), so it is not copied."""


def _freeze(accept: Tensor, new: State, old: State) -> State:
    """``new`` with the `FROZEN` entries of samples not in ``accept`` ``[B]`` taken from ``old``."""
    return {**new, **_merge(accept, {key: new[key] for key in FROZEN}, old)}


def _per_sample(value: object, batch: int) -> bool:
    """Whether a state entry is per-sample: a tensor whose first dimension is ``batch``."""
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch


def _merge(keep_new: Tensor, new: State, old: State) -> State:
    """Per-sample select: ``new`` where ``keep_new`` ``[B]`` else ``old`` (shared values, and
    entries that are the same tensor in both: new)."""
    batch = keep_new.shape[0]
    merged: State = {}
    for key, value in new.items():
        previous = old.get(key)
        if _per_sample(value, batch) and (
            isinstance(previous, Tensor) and previous is not value
            and previous.shape == value.shape
        ):
            mask = keep_new.view((batch,) + (1,) * (value.dim() - 1))
            merged[key] = torch.where(mask, value, previous)
        else:
            merged[key] = value
    return merged


def _take(values: dict, rows: Tensor, batch: int) -> dict:
    """The per-sample entries of ``values`` (tensors with leading dimension ``batch``) at
    ``rows``; shared entries unchanged."""
    return {
        key: value.index_select(0, rows) if _per_sample(value, batch) else value
        for key, value in values.items()
    }


def iterate(
    problem: Problem,
    solver: Solver,
    stop: StopRule,
    z0: Tensor,
    *,
    readout: Callable[[Tensor], Tensor] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    divergence: float = 1e6,
    record_terms: bool = False,
) -> Solution:
    """Run `solver` on `problem` from ``z0: [B, *S]`` until `stop` (or ``max_steps``).

    Returns:
        A `Solution`; see its docstring for the fields and their shapes.
    """
    if problem.kind not in solver.solves:
        raise ValueError(
            f"solver {solver.name!r} solves {sorted(solver.solves)} problems, not {problem.kind!r}"
        )
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must have shape [B, ...] with B >= 1, got {list(z0.shape)}")
    if not problem.create_graph and torch.is_grad_enabled() and any(
        p.requires_grad for p in solver.parameters()
    ):  # a learned solver parameter (gd's learn_step) is differentiated through every step
        problem.create_graph = True
    graph = problem.create_graph and torch.is_grad_enabled()
    has_energy = isinstance(problem, MinimizeProblem)
    batch, device = z0.shape[0], z0.device
    readout = readout or (lambda z: z)
    budget = stop.budget()
    limit = max_steps if budget is None else budget
    bound = divergence * (batch_norm(z0.detach()) + 1)

    diverged_code = torch.tensor(int(Status.DIVERGED), device=device)
    nonfinite_code = torch.tensor(int(Status.NONFINITE), device=device)
    # On the CPU reading a flag back is free, so the loop asks whether every sample was accepted
    # and then skips the per-sample freeze; on an accelerator that would add a host sync a step.
    host_checks = device.type == "cpu"
    state, init_evals = solver.init(problem, z0)
    nan = torch.full((batch,), float("nan"), dtype=z0.dtype, device=device)
    z_norm = batch_norm(state["z"].detach())
    finite = _finite(state, z_norm, has_energy)
    status = torch.where(finite, int(Status.RUNNING), int(Status.NONFINITE)).to(torch.int64)
    active = finite
    steps = torch.zeros(batch, dtype=torch.int64, device=device)
    fevals = torch.full((batch,), init_evals, dtype=torch.int64, device=device)
    batch_fevals = init_evals * batch

    info = StepInfo(0, state["z"], z0, nan, nan, state["energy"], nan, state["grad_norm"], readout)
    rule_state = stop.init(info)
    done, codes, rule_state = stop.check(info, rule_state)
    status = torch.where(active & done, codes, status)
    active = active & ~done
    trace = _Trace(problem, record_terms)
    trace.record(state, nan, active, stop.trace_values(rule_state))

    # Working batch: `rows` (None: all) of the full batch; per-sample tensors below are in its
    # coordinates. `result` holds the full-size outputs of samples that left it.
    work, rows, start = problem, None, z0
    result = {"z": state["z"], "status": status, "steps": steps, "fevals": fevals}
    can_compact = problem.restrictable
    quarantine: Tensor | None = None  # graph mode: [W] samples rejected so far (None: none)
    for k in range(1, limit + 1):
        running = int(active.sum())
        if running == 0:
            break
        if can_compact and running <= COMPACT_BELOW * active.shape[0]:
            result = _write_back(result, rows, state["z"], status, steps, fevals)
            keep = active.nonzero().squeeze(1)
            rows = keep if rows is None else rows.index_select(0, keep)
            width = active.shape[0]
            state, rule_state = _take(state, keep, width), _take(rule_state, keep, width)
            z_norm, bound, start, status, steps, fevals, nan, active = (
                t.index_select(0, keep)
                for t in (z_norm, bound, start, status, steps, fevals, nan, active)
            )
            work = problem.restrict(rows)
            trace.compact(keep)
            quarantine = None  # only running samples are kept, and none of them was rejected
        width = active.shape[0]
        guard = None
        if graph:  # keep samples with a non-finite evaluation out of the graph (double where)
            guard = Guard(_plain(state["z"]), quarantine)
        work.guard = guard
        try:
            new, spent = solver.step(work, state)
        finally:
            work.guard = None
        if isinstance(spent, int):
            batch_fevals += spent * width
            fevals = fevals + (active if spent == 1 else spent * active)
        else:
            spent = spent.expand(width)
            batch_fevals += int(spent.sum())
            fevals = fevals + spent * active
        running_before = active
        new_norm = batch_norm(_plain(new["z"]))
        ok = _finite(new, new_norm, has_energy)
        if guard is not None and guard.flagged is not None:
            ok = ok & ~guard.flagged
            quarantine = guard.flagged if quarantine is None else quarantine | guard.flagged
        accept = active & ok & (new_norm <= bound)
        residual = batch_norm(_plain(new["z"] - state["z"]))
        relative = residual / (z_norm + 1e-12)
        previous_energy = state["energy"]
        if host_checks and bool(accept.all()):  # nothing to freeze: skip the selects
            state, z_norm = new, new_norm
        else:
            state = _freeze(accept, new, state)
            z_norm = torch.where(accept, new_norm, z_norm)
        steps = steps + accept
        active = accept
        info = StepInfo(
            k, state["z"], start, residual, relative, state["energy"], previous_energy,
            state["grad_norm"], readout,
        )
        done, codes, new_rule_state = stop.check(info, rule_state)
        if new_rule_state:
            rule_state = _merge(active, new_rule_state, rule_state)
        # samples that stop now: the rule's code if their step was accepted, else why it was not
        rejected = torch.where(ok, diverged_code, nonfinite_code)
        stopped = torch.where(accept, done, running_before)
        if graph:  # rejected samples are evaluated at their last accepted iterate from now on
            rejected_now = running_before & ~accept
            if bool(rejected_now.any()):  # else no where enters the graph (bitwise gradients)
                quarantine = rejected_now if quarantine is None else quarantine | rejected_now
        status = torch.where(stopped, torch.where(accept, codes, rejected), status)
        active = accept & ~done
        trace.record(
            state, torch.where(accept, residual, nan), accept, stop.trace_values(rule_state)
        )
    status = torch.where(active, int(Status.MAX_STEPS), status)
    result = _write_back(result, rows, state["z"], status, steps, fevals)
    return Solution(
        z=result["z"], status=result["status"], steps=result["steps"], fevals=result["fevals"],
        batch_fevals=int(batch_fevals), trace=trace.stacked(),
    )


def _write_back(
    result: dict[str, Tensor], rows: Tensor | None, z: Tensor, status: Tensor, steps: Tensor,
    fevals: Tensor,
) -> dict[str, Tensor]:
    """The full-size outputs with the working batch's ``rows`` (None: all of them) replaced."""
    working = {"z": z, "status": status, "steps": steps, "fevals": fevals}
    if rows is None:
        return working
    return {key: result[key].index_copy(0, rows, value) for key, value in working.items()}


def _plain(x: Tensor) -> Tensor:
    """``x`` without its autograd history (no op when it has none)."""
    return x.detach() if x.requires_grad else x


def _finite(state: State, z_norm: Tensor, has_energy: bool) -> Tensor:
    """``[B]``: the iterate (through its norm), ``||G||`` and the energy are all finite.

    A norm is NaN or inf exactly when an entry is (or it overflows), and ``x < inf`` is False for
    both, so one comparison per norm does what `torch.isfinite` does in several kernels."""
    ok = (z_norm < math.inf) & (_plain(state["grad_norm"]) < math.inf)
    if has_energy:
        ok = ok & (_plain(state["energy"]).abs() < math.inf)
    return ok


class _Trace:
    """Accumulates per-step ``[W]`` records of the working batch and stacks them to
    ``[K+1, B]``; after a compaction (`compact`), a sample that left the working batch repeats
    its last record (it had stopped: ``active`` False, ``residual`` NaN, the rest frozen)."""

    def __init__(self, problem: Problem, record_terms: bool) -> None:
        self.rows: dict[str, list[Tensor]] = {}
        self.segments: list[tuple[int, Tensor]] = []  # (first record after it, kept rows)
        self.terms = (
            problem.energy
            if record_terms and isinstance(problem, MinimizeProblem)
            and isinstance(problem.energy, Energy)
            else None
        )
        self.context = getattr(problem, "context", None)

    def record(
        self, state: State, residual: Tensor, active: Tensor, extra: dict[str, Tensor]
    ) -> None:
        values = {
            "energy": state["energy"], "grad_norm": state["grad_norm"], "residual": residual,
            "active": active, **extra,
        }
        if self.terms is not None:
            with torch.no_grad():
                terms = self.terms.per_term(state["z"].detach(), self.context)
            values.update({f"term:{name}": value for name, value in terms.items()})
        for name, value in values.items():
            self.rows.setdefault(name, []).append(value.detach())

    def compact(self, keep: Tensor) -> None:
        """The working batch is cut to its rows ``keep`` from the next record on."""
        self.segments.append((len(self.rows["active"]), keep))

    def stacked(self) -> dict[str, Tensor]:
        if not self.segments:
            return {name: torch.stack(rows) for name, rows in self.rows.items()}
        stopped = {"residual": float("nan"), "active": False}
        return {name: self._rebuild(rows, stopped.get(name)) for name, rows in self.rows.items()}

    def _rebuild(self, records: list[Tensor], stopped: float | bool | None) -> Tensor:
        """``[K+1, B]`` from records whose width shrinks at each segment boundary; a sample
        that left repeats its last record, with ``stopped`` (if given) in place of its value."""
        full = torch.stack(records[: self.segments[0][0]])  # (k1, B)
        out = [full]
        columns = torch.arange(full.shape[1], device=full.device)  # full index of working rows
        last = full[-1]
        for index, (begin, keep) in enumerate(self.segments):
            end = self.segments[index + 1][0] if index + 1 < len(self.segments) else len(records)
            if stopped is not None:
                last = torch.full_like(last, stopped)
            columns = columns.index_select(0, keep)
            part = torch.stack(records[begin:end])  # (n, W)
            block = last.expand(part.shape[0], -1).clone().index_copy(1, columns, part)
            out.append(block)
            last = block[-1]
        return torch.cat(out)
