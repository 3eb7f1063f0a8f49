"""Stopping rules: per-sample predicates on the solver's progress, composable with ``|``/``&``.

A rule is evaluated once per loop iteration on a `StepInfo` and returns ``(done [B] bool,
status [B] int64, state)``; rules keep what they remember (previous argmax, halting mass, ...)
in an explicit ``state`` dict, so one rule object can serve many solves. As for a solver's
state, a tensor in it whose first dimension is the working batch size is per-sample (the loop
freezes it per sample and, when it compacts the batch, gathers it); anything else is shared.
``a | b`` stops a sample when either rule fires (status of the first that fired, left first);
``a & b`` stops it when both have fired (``CONVERGED`` if either part reports convergence, else
the left's status).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from eqtheory.status import Status

RuleState = dict[str, Tensor]


def _identity(z: Tensor) -> Tensor:
    return z


class StepInfo:
    """What a stopping rule may read after ``step`` iterations (``step = 0`` is the start).

    Attributes:
        step: loop iterations done so far.
        z: ``[B, *S]`` current iterate; ``z0``: ``[B, *S]`` the start.
        residual: ``[B]`` ``||z_k - z_{k-1}||`` (NaN at step 0).
        relative_residual: ``[B]`` ``residual / (||z_{k-1}|| + 1e-12)``: as given, or (given
            None and ``previous_norm`` ``||z_{k-1}||``, as the loop does) computed on first
            read, so that a solve whose rule does not read it does not compute it.
        energy: ``[B]`` energy at ``z`` (NaN for fixed-point problems); ``energy_prev`` the
            last one.
        grad_norm: ``[B]`` ``||G(z)||``, the optimality residual (gradient norm for energies).
        readout: maps ``z`` to logits ``[B, ..., V]``; identity when the caller gave none.
    """

    def __init__(
        self,
        step: int,
        z: Tensor,
        z0: Tensor,
        residual: Tensor,
        relative_residual: Tensor | None,
        energy: Tensor,
        energy_prev: Tensor,
        grad_norm: Tensor,
        readout: Callable[[Tensor], Tensor] = _identity,
        *,
        previous_norm: Tensor | None = None,
    ) -> None:
        if relative_residual is None and previous_norm is None:
            raise ValueError("StepInfo needs relative_residual or previous_norm")
        self.step, self.z, self.z0, self.residual = step, z, z0, residual
        self.energy, self.energy_prev, self.grad_norm = energy, energy_prev, grad_norm
        self.readout = readout
        self._relative, self._previous_norm = relative_residual, previous_norm
        self._logits: Tensor | None = None

    @property
    def relative_residual(self) -> Tensor:
        if self._relative is None:
            self._relative = self.residual / (self._previous_norm + 1e-12)
        return self._relative

    def logits(self) -> Tensor:
        """``readout(z)``, computed once per step."""
        if self._logits is None:
            self._logits = self.readout(self.z)
        return self._logits


def status_like(done: Tensor, status: Status) -> Tensor:
    """``[B]`` int64 tensor filled with `status`."""
    return torch.full(done.shape, int(status), dtype=torch.int64, device=done.device)


class StopRule(nn.Module):
    """Base class. Subclasses set `name` and implement `check` (and `init` if they keep state).

    A rule with a short form declares it: ``primary`` names the constructor option the short
    form sets and ``comparator`` (``"<"`` or ``"="``) how it is written, so ``residual<1e-4``
    is ``residual(tol=1e-4)``; a rule without one (``primary = None``) is written
    ``name(key=value,...)`` only.
    """

    name: str = "rule"
    primary: str | None = None
    comparator: str | None = None
    stops_early: bool = True
    """Whether the rule may stop a sample before its `budget` (tolerances, learned halting,
    per-sample budgets). A rule with a budget that never stops early (``steps=K``) lets the
    loop run exactly that many steps without reading anything back to the host."""

    def init(self, info: StepInfo) -> RuleState:
        """State before the first step (``info.step == 0``)."""
        del info
        return {}

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        raise NotImplementedError

    def budget(self) -> int | None:
        """An upper bound on the steps this rule allows, or ``None`` if it has none."""
        return None

    def idle(self, info: StepInfo) -> bool:
        """True when the rule certainly fires for no sample at ``info.step`` (decided without
        tensor work); ``a | b`` then skips its `check` and keeps its state as it was."""
        del info
        return False

    def trace_values(self, state: RuleState) -> dict[str, Tensor]:
        """Per-sample ``[B]`` values to record in the solution's trace at each step."""
        del state
        return {}

    def spec(self) -> str:
        return self.name

    def __or__(self, other: StopRule) -> AnyRule:
        return AnyRule([*_parts(self, AnyRule), *_parts(other, AnyRule)])

    def __and__(self, other: StopRule) -> AllRule:
        return AllRule([*_parts(self, AllRule), *_parts(other, AllRule)])

    def extra_repr(self) -> str:
        return self.spec()


def _parts(rule: StopRule, kind: type) -> list[StopRule]:
    if not isinstance(rule, StopRule):
        raise TypeError(f"can only combine stopping rules, got {type(rule).__name__}")
    return list(rule.rules) if isinstance(rule, kind) else [rule]


class _Combined(StopRule):
    symbol = "?"

    def __init__(self, rules: list[StopRule]) -> None:
        super().__init__()
        self.rules = nn.ModuleList(rules)

    def init(self, info: StepInfo) -> RuleState:
        return {f"{i}.{k}": v for i, r in enumerate(self.rules) for k, v in r.init(info).items()}

    def _split(self, state: RuleState, i: int) -> RuleState:
        """Part ``i``'s entries of the combined ``state``, without their prefix."""
        if not state:  # no part keeps state (the common case: tolerances and budgets)
            return {}
        prefix = f"{i}."
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def _check_all(self, info: StepInfo, state: RuleState, skip_idle: bool = False):
        """Each part's ``(done, code)`` in order (idle parts left out if ``skip_idle``) and the
        merged new state."""
        results, new_state = [], {}
        for i, rule in enumerate(self.rules):
            if skip_idle and rule.idle(info):  # it cannot fire; its state carries over
                sub = self._split(state, i)
            else:
                done, code, sub = rule.check(info, self._split(state, i))
                results.append((done, code))
            if sub:
                new_state.update({f"{i}.{k}": v for k, v in sub.items()})
        return results, new_state

    @property
    def stops_early(self) -> bool:  # type: ignore[override]
        """``a | b`` and ``a & b`` may stop a sample before their budget when a part may."""
        return any(rule.stops_early for rule in self.rules)

    def trace_values(self, state: RuleState) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, rule in enumerate(self.rules):
            out.update(rule.trace_values(self._split(state, i)))
        return out

    def spec(self) -> str:
        parts = []
        for rule in self.rules:
            text = rule.spec()
            parts.append(f"({text})" if isinstance(rule, _Combined) else text)
        return self.symbol.join(parts)


class AnyRule(_Combined):
    """Stop a sample when any part fires; its status is that of the first part that fired."""

    symbol = "|"

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        results, new_state = self._check_all(info, state, skip_idle=True)
        if not results:
            done = torch.zeros(info.grad_norm.shape, dtype=torch.bool, device=info.z.device)
            return done, status_like(done, Status.RUNNING), new_state
        done, code = results[-1]
        for part_done, part_code in reversed(results[:-1]):
            code = torch.where(part_done, part_code, code)
            done = done | part_done
        return done, code, new_state

    def idle(self, info: StepInfo) -> bool:
        return all(rule.idle(info) for rule in self.rules)

    def budget(self) -> int | None:
        budgets = [b for b in (r.budget() for r in self.rules) if b is not None]
        return min(budgets) if budgets else None


class AllRule(_Combined):
    """Stop a sample when every part has fired at the same step."""

    symbol = "&"

    def check(self, info: StepInfo, state: RuleState) -> tuple[Tensor, Tensor, RuleState]:
        results, new_state = self._check_all(info, state)
        done = torch.stack([d for d, _ in results]).all(dim=0)
        converged = torch.stack([c == Status.CONVERGED for _, c in results]).any(dim=0)
        code = torch.where(converged, status_like(done, Status.CONVERGED), results[0][1])
        return done, code, new_state

    def budget(self) -> int | None:
        budgets = [r.budget() for r in self.rules]
        return None if any(b is None for b in budgets) else max(budgets)  # type: ignore[type-var]
