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

**Host path.** With a rule that may stop early, the loop reads after each step how many samples
still run (one read per step). A step after which as many run as before stopped and rejected
no sample, so it leaves the statuses as they were and only tallies the step and evaluation
counters, which are added to the active samples when a sample next stops (`_Carry.settle`); a
quiet step while every sample of the working batch runs freezes nothing. Per step the loop's
own work is then three norms (the iterate, the step, ``||G||`` in `eqtheory.solvers.observe`),
the acceptance test, the rule and the one read.

**Budget path.** When the rule is a pure step budget (`StopRule.budget` set and
`StopRule.stops_early` False: ``steps=K``, the setting of every training step), the loop takes
exactly ``K`` steps and reads nothing back to the host: it does not ask whether any sample still
runs (stopped samples are frozen by ``where`` anyway), statuses and counters stay on the device,
and the graph guard flags non-finite samples without evaluating them again (`Guard`). This is
also what lets `torch.func.vmap` run a solve over a stack of problems.

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
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from eqtheory.energies.base import Energy
from eqtheory.problem import Guard, MinimizeProblem, Problem, batch_norm, row_view
from eqtheory.solution import Solution
from eqtheory.solvers.base import Solver, State
from eqtheory.status import Status
from eqtheory.stopping.base import RuleState, StepInfo, StopRule

DEFAULT_MAX_STEPS = 1000
COMPACT_BELOW = 0.5
"""Compact the working batch once at most this fraction of it is still active (halving it at
least, so at most ``log2 B`` compactions, each a gather of the state)."""


FROZEN = ("z", "G", "energy", "grad_norm")
"""State entries the loop freezes per sample (``energy`` only for a problem that has one: else
it is NaN); the rest of a stopped sample's state is scratch (stopped samples never resume, and
no result reads it), so it is not copied."""


def _freeze(accept: Tensor, new: State, old: State, frozen: tuple[str, ...]) -> State:
    """``new`` with the ``frozen`` entries of samples not in ``accept`` ``[B]`` from ``old``."""
    return {**new, **_merge(accept, {key: new[key] for key in frozen}, old)}


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
            merged[key] = torch.where(row_view(keep_new, value), value, previous)
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


@dataclass
class _Setup:
    """What every step of one solve reads and no step changes."""

    solver: Solver
    stop: StopRule
    readout: Callable[[Tensor], Tensor]
    has_energy: bool
    graph: bool
    host_checks: bool
    """False on the budget path: no step reads a tensor back to the host."""
    trace: _Trace

    @property
    def frozen(self) -> tuple[str, ...]:
        """The state entries frozen per sample."""
        return FROZEN if self.has_energy else tuple(k for k in FROZEN if k != "energy")


@dataclass
class _Carry:
    """The loop's per-sample state over the working batch (``[W]`` tensors unless said)."""

    state: State
    rule_state: RuleState
    z_norm: Tensor
    limit: Tensor  # the divergence bound, at most the dtype's largest finite value
    start: Tensor  # [W, *S] the rule's z0
    status: Tensor
    active: Tensor
    running: int | None  # with host checks: how many samples are active (else None)
    steps: Tensor
    fevals: Tensor
    quarantine: Tensor | None  # graph mode: samples rejected so far (None: none)
    batch_fevals: int | Tensor  # over the working batch, all of it (a 0-d tensor once a
    # solver reports per-sample counts: summed on the device, read once at the end)
    pending_steps: int = 0  # quiet steps not yet in `steps` and `fevals` (`settle`)
    pending_fevals: int = 0  # the evaluations per active sample they spent

    PER_SAMPLE = ("z_norm", "limit", "start", "status", "active", "steps", "fevals")

    def settle(self) -> None:
        """Add the pending steps and evaluations to the counters of the active samples: they
        were taken while no sample stopped or was rejected, so every active sample took them."""
        if self.pending_steps:
            self.steps = self.steps.add(self.active, alpha=self.pending_steps)
            self.fevals = self.fevals.add(self.active, alpha=self.pending_fevals)
            self.pending_steps = self.pending_fevals = 0

    def take(self, keep: Tensor) -> _Carry:
        """The samples ``keep`` (int64 ``[W']``) only; none of them was rejected."""
        width = self.active.shape[0]
        return replace(
            self, state=_take(self.state, keep, width),
            rule_state=_take(self.rule_state, keep, width), quarantine=None,
            **{name: getattr(self, name).index_select(0, keep) for name in self.PER_SAMPLE},
        )


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

    With a pure step budget (``stop.budget()`` set and ``stop.stops_early`` False, e.g.
    ``steps=K``) it runs exactly that many steps and reads nothing back to the host; otherwise
    it reads how many samples still run after each step, ends when none does, and compacts a
    restrictable problem (`_compacting`).

    Returns:
        A `Solution`; see its docstring for the fields and their shapes.
    """
    _check(problem, solver, z0)
    if not problem.create_graph and torch.is_grad_enabled() and any(
        p.requires_grad for p in solver.parameters()
    ):  # a learned solver parameter (gd's learn_step) is differentiated through every step
        problem = problem.recording(True)
    budget = stop.budget()
    budget_only = budget is not None and not stop.stops_early
    setup = _Setup(
        solver=solver, stop=stop, readout=readout or (lambda z: z),
        has_energy=isinstance(problem, MinimizeProblem),
        graph=problem.create_graph and torch.is_grad_enabled(), host_checks=not budget_only,
        trace=_Trace(problem, record_terms),
    )
    carry = _start(setup, problem, z0, divergence)
    steps = range(1, (max_steps if budget is None else budget) + 1)
    result, rows = None, None
    if problem.restrictable and setup.host_checks:
        carry, result, rows = _compacting(setup, problem, carry, steps)
    else:
        carry, _ = _drive(setup, problem, carry, steps)
    carry.status = torch.where(carry.active, int(Status.MAX_STEPS), carry.status)
    result = _write_back(result, rows, carry)
    return Solution(
        z=result["z"], status=result["status"], steps=result["steps"], fevals=result["fevals"],
        batch_fevals=int(carry.batch_fevals), trace=setup.trace.stacked(),
    )


def _check(problem: Problem, solver: Solver, z0: Tensor) -> None:
    """Raise a `ValueError` unless `solver` solves `problem`'s kind and ``z0`` is ``[B, ...]``
    with ``B >= 1``."""
    if problem.kind not in solver.solves:
        raise ValueError(
            f"solver {solver.name!r} solves {sorted(solver.solves)} problems, not {problem.kind!r}"
        )
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must have shape [B, ...] with B >= 1, got {list(z0.shape)}")


def _start(setup: _Setup, problem: Problem, z0: Tensor, divergence: float) -> _Carry:
    """The solver's initial state, the rule's verdict at step 0 and the first trace row."""
    batch, device = z0.shape[0], z0.device
    z0_norm = batch_norm(z0.detach())
    bound = divergence * (z0_norm + 1)
    state, init_evals = setup.solver.init(problem, z0)
    nan = torch.full((batch,), float("nan"), dtype=z0.dtype, device=device)
    z_norm = z0_norm if state["z"] is z0 else batch_norm(state["z"].detach())
    finite = (z_norm < math.inf) & _valid(state, setup.has_energy)
    status = torch.where(finite, int(Status.RUNNING), int(Status.NONFINITE))
    info = StepInfo(
        0, state["z"], z0, nan, nan, state["energy"], nan, state["grad_norm"], setup.readout
    )
    rule_state = setup.stop.init(info)
    done, codes, rule_state = setup.stop.check(info, rule_state)
    status = torch.where(finite & done, codes, status)
    active = finite & ~done
    setup.trace.record(state, nan, active, setup.stop.trace_values(rule_state))
    return _Carry(
        state=state, rule_state=rule_state, z_norm=z_norm,
        limit=bound.clamp(max=torch.finfo(bound.dtype).max), start=z0, status=status,
        active=active, running=int(active.count_nonzero()) if setup.host_checks else None,
        steps=torch.zeros(batch, dtype=torch.int64, device=device),
        fevals=torch.full((batch,), init_evals, dtype=torch.int64, device=device),
        quarantine=None, batch_fevals=init_evals * batch,
    )


def _drive(
    setup: _Setup,
    work: Problem,
    carry: _Carry,
    steps: range,
    pause: Callable[[int, int], bool] | None = None,
) -> tuple[_Carry, int | None]:
    """Take the steps ``k`` in `steps` on the working problem `work`.

    With host checks, before each step it looks how many samples still run (`_Carry.running`,
    read at the end of the step before): it ends when none does, and when
    ``pause(running, width)`` holds it returns ``(carry, k)``, ``k`` the step not yet taken.
    Otherwise (the budget path) it takes every step. Returns ``(carry, None)`` when it did not
    pause."""
    for k in steps:
        if setup.host_checks:
            if carry.running == 0:
                break
            if pause is not None and pause(carry.running, carry.active.shape[0]):
                carry.settle()
                return carry, k
        setup.trace.record(*_step(setup, work, carry, k))
    carry.settle()
    return carry, None


def _compacting(
    setup: _Setup, problem: Problem, carry: _Carry, steps: range
) -> tuple[_Carry, dict[str, Tensor] | None, Tensor | None]:
    """`_drive` that cuts the working batch down to the running samples (`Problem.restrict`)
    once at most `COMPACT_BELOW` of it runs. Returns the last working batch's carry, the
    full-size outputs of the samples that left it (None: none left) and its ``rows`` in the
    full batch (None: all)."""
    work, result, rows = problem, None, None
    first = steps.start
    while True:
        carry, paused_at = _drive(
            setup, work, carry, range(first, steps.stop),
            pause=lambda running, width: running <= COMPACT_BELOW * width,
        )
        if paused_at is None:
            return carry, result, rows
        result = _write_back(result, rows, carry)
        keep = carry.active.nonzero().squeeze(1)
        rows = keep if rows is None else rows.index_select(0, keep)
        carry = carry.take(keep)
        work = problem.restrict(rows)
        setup.trace.compact(keep)
        first = paused_at


def _step(
    setup: _Setup, work: Problem, carry: _Carry, k: int
) -> tuple[State, Tensor, Tensor, dict[str, Tensor]]:
    """Step ``k``: the solver's step, acceptance (finite, within the divergence bound), the
    rule's verdict, the freeze of samples not accepted and the statuses. Updates `carry` to
    after the step (in place: nothing else holds it) and returns the trace row
    ``(state, residual, accepted, rule values)``.

    The rule's verdict and new state count only for accepted samples (a rejected one stops with
    the reason and keeps its last state). It sees the state after the freeze, except while every
    sample of the working batch runs: then no sample is frozen yet and it judges the new state
    as it comes (a sample rejected at this step included, whose verdict is discarded), and the
    freeze is done only when the step was not quiet. With host checks the step reads how many
    samples still run after it; when that is as many as before (a quiet step), no sample
    stopped or was rejected, so the statuses and the quarantine stay as they were without
    tensor work and the counters only tally the step (`_add_counts`)."""
    state, active = carry.state, carry.active
    new, spent, flagged = _solver_step(setup, work, carry)
    new_norm = batch_norm(_plain(new["z"]))
    valid, quarantine = _valid(new, setup.has_energy), carry.quarantine
    if flagged is not None:
        valid = valid & ~flagged
        quarantine = flagged if quarantine is None else quarantine | flagged
    full = setup.host_checks and carry.running == active.shape[0]  # every sample runs
    # new_norm <= limit: within the bound and finite (the limit is finite)
    accept = valid & (new_norm <= carry.limit)
    if not full:
        accept = accept & active
    # the step actually taken (0 once rounding stalls the iterate), not the one intended
    residual = batch_norm(_plain(new["z"] - state["z"]))
    kept, z_norm = (new, new_norm) if full else _frozen(setup, carry, accept, new, new_norm)
    info = StepInfo(
        k, kept["z"], carry.start, residual, None, kept["energy"], state["energy"],
        kept["grad_norm"], setup.readout, previous_norm=carry.z_norm,
    )
    done, codes, new_rule_state = setup.stop.check(info, carry.rule_state)
    active_after = accept > done  # accept & ~done for booleans, in one kernel
    running = int(active_after.count_nonzero()) if setup.host_checks else None
    quiet = running is not None and running == carry.running
    if full and quiet:  # every sample was accepted and goes on: nothing to freeze or merge
        rule_state = new_rule_state or carry.rule_state
    else:
        if full:  # some sample stopped or was rejected: freeze the rejected ones now
            kept, z_norm = _frozen(setup, carry, accept, new, new_norm)
        rule_state = _merge(accept, new_rule_state, carry.rule_state) if new_rule_state else (
            carry.rule_state
        )
    _add_counts(carry, spent, accept, quiet)
    if not quiet:
        # samples that stop now: the rule's code if their step was accepted, else why it was not
        rejected = torch.where(
            valid & (new_norm < math.inf), int(Status.DIVERGED), int(Status.NONFINITE)
        )
        stopped = torch.where(accept, done, active)
        carry.status = torch.where(stopped, torch.where(accept, codes, rejected), carry.status)
        if setup.graph:  # rejected samples are evaluated at their last accepted iterate from now
            quarantine = _quarantine(setup, quarantine, active & ~accept)
    carry.state, carry.rule_state, carry.z_norm = kept, rule_state, z_norm
    carry.active, carry.running, carry.quarantine = active_after, running, quarantine
    return kept, residual, accept, setup.stop.trace_values(rule_state)


def _frozen(
    setup: _Setup, carry: _Carry, accept: Tensor, new: State, new_norm: Tensor
) -> tuple[State, Tensor]:
    """The state after a step that samples not in ``accept`` do not take, and its ``||z||``."""
    return (_freeze(accept, new, carry.state, setup.frozen),
            torch.where(accept, new_norm, carry.z_norm))


def _solver_step(
    setup: _Setup, work: Problem, carry: _Carry
) -> tuple[State, Tensor | int, Tensor | None]:
    """The solver's step on the working batch (through a `Guard` when it records a graph):
    the new state, the evaluations spent and the samples the guard flagged (None: none)."""
    if not setup.graph:
        return (*setup.solver.step(work, carry.state), None)
    # keep samples with a non-finite evaluation out of the graph (double where)
    guard = Guard(carry.state["z"].detach(), carry.quarantine, recheck=setup.host_checks)
    new, spent = setup.solver.step(work.guarded(guard), carry.state)
    return new, spent, guard.flagged


def _add_counts(carry: _Carry, spent: Tensor | int, accept: Tensor, quiet: bool) -> None:
    """Count a step that spent `spent` evaluations: a step for each accepted sample, the
    evaluations for each sample active before it (``carry.active``). A quiet step that spent a
    whole number is only tallied (`_Carry.pending_steps`, added in one go by `_Carry.settle`)."""
    if quiet and isinstance(spent, int):
        carry.pending_steps += 1
        carry.pending_fevals += spent
        carry.batch_fevals = carry.batch_fevals + spent * accept.shape[0]
        return
    carry.settle()
    carry.fevals, carry.batch_fevals = _count(
        spent, carry.active, carry.fevals, carry.batch_fevals
    )
    carry.steps = carry.steps + accept


def _count(
    spent: Tensor | int, active: Tensor, fevals: Tensor, batch_fevals: int | Tensor
) -> tuple[Tensor, int | Tensor]:
    """Per-sample evaluations ``[W]`` (counted for active samples) and the working batch's
    total after a step that spent `spent` (an int, or ``[W]``/``[1]`` per sample)."""
    width = active.shape[0]
    if isinstance(spent, int):
        return fevals + (active if spent == 1 else spent * active), batch_fevals + spent * width
    spent = spent.expand(width)
    return fevals + spent * active, batch_fevals + spent.sum()


def _quarantine(setup: _Setup, quarantine: Tensor | None, rejected_now: Tensor) -> Tensor | None:
    """The samples rejected so far. With host checks a step that rejected none leaves it as it
    was (None stays None: no ``where`` enters the graph); on the budget path it is always a
    tensor (a ``where`` on an all-False mask: the same values and gradients)."""
    if setup.host_checks and not bool(rejected_now.any()):
        return quarantine
    return rejected_now if quarantine is None else quarantine | rejected_now


def _write_back(
    result: dict[str, Tensor] | None, rows: Tensor | None, carry: _Carry
) -> dict[str, Tensor]:
    """The full-size outputs with the working batch's ``rows`` (None: all of them) replaced."""
    working = {
        "z": carry.state["z"], "status": carry.status, "steps": carry.steps,
        "fevals": carry.fevals,
    }
    if rows is None or result is None:
        return working
    return {key: result[key].index_copy(0, rows, value) for key, value in working.items()}


def _plain(x: Tensor) -> Tensor:
    """``x`` without its autograd history (no op when it has none)."""
    return x.detach() if x.requires_grad else x


def _valid(state: State, has_energy: bool) -> Tensor:
    """``[B]``: ``||G||`` and the energy are finite (the iterate is checked through its norm).

    A norm is NaN or inf exactly when an entry is (or it overflows), and ``x < inf`` is False for
    both, so one comparison per norm does what `torch.isfinite` does in several kernels."""
    ok = _plain(state["grad_norm"]) < math.inf
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
            problem if record_terms and isinstance(problem, MinimizeProblem)
            and isinstance(problem.energy, Energy) else None
        )

    def record(
        self, state: State, residual: Tensor, active: Tensor, extra: dict[str, Tensor]
    ) -> None:
        """One row: ``residual`` as computed (`stacked` puts NaN where ``active`` is False)."""
        values = {
            "energy": state["energy"], "grad_norm": state["grad_norm"], "residual": residual,
            "active": active, **extra,
        }
        if self.terms is not None:
            with torch.no_grad():
                terms = self.terms.per_term(state["z"].detach())
            values.update({f"term:{name}": value for name, value in terms.items()})
        for name, value in values.items():
            self.rows.setdefault(name, []).append(_plain(value))

    def compact(self, keep: Tensor) -> None:
        """The working batch is cut to its rows ``keep`` from the next record on."""
        self.segments.append((len(self.rows["active"]), keep))

    def stacked(self) -> dict[str, Tensor]:
        """``{name: [K+1, B]}``; ``residual`` is NaN where ``active`` is False (row 0, samples
        whose step was rejected and samples that had stopped)."""
        if not self.segments:
            out = {name: torch.stack(rows) for name, rows in self.rows.items()}
        else:  # a sample that left is inactive from then on (so its residual is NaN below)
            out = {name: self._rebuild(rows, False if name == "active" else None)
                   for name, rows in self.rows.items()}
        out["residual"] = torch.where(out["active"], out["residual"], float("nan"))
        return out

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
