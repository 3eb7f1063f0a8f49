"""The loop's own cost, counted rather than timed: what a solve resolves once and reuses (the
parsed stopping rule, the solver and backward instances, option signatures) and how many tensor
operations one step dispatches beyond the map's."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import eqtheory as eqt
from eqtheory import registry, stopping
from eqtheory.stopping.tolerance import ToleranceRule


class CountOps(TorchDispatchMode):
    """Counts every aten operation dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(stop: str, solver: str = "picard") -> float:
    """Dispatched operations per step of a solve in which no sample stops early (a slow
    contraction, ``z -> 0.999 z + shift``: two operations of its own per step)."""
    counts = []
    for k in (5, 15):
        z0, shift = torch.zeros(3, 4), torch.ones(3, 4)
        with torch.no_grad(), CountOps() as ops:
            solution = eqt.fixed_point(
                lambda z, s: 0.999 * z + s, z0, args=(shift,), solver=solver,
                stop=stop.format(k=k),
            )
        assert solution.steps.tolist() == [k] * 3
        counts.append(ops.count)
    return (counts[1] - counts[0]) / 10


def test_a_tolerance_step_that_stops_no_sample_dispatches_few_operations():
    """Picard with a tolerance rule: the map (2), the step and ``G`` (2), three norms, the
    acceptance test, the rule, the running count and its one host read; while no sample stops
    no status algebra and no per-step counter update, while every sample runs no selects and no
    all-accepted read, and no fresh NaN energy per step (41 operations before the loop was cut,
    21 before the last cut)."""
    assert _ops_per_step("grad<1e-30|steps={k}") <= 16


def test_a_budget_step_dispatches_few_operations():
    """The budget path reads nothing back, so it always freezes and updates statuses on the
    device; still no trace work beyond keeping references (44 operations before, 34 before the
    last cut)."""
    assert _ops_per_step("steps={k}") <= 32


def test_a_stop_spec_is_parsed_once_and_its_rule_shared(monkeypatch):
    parsed = []
    parse = stopping.parse

    def counting_parse(text):
        parsed.append(text)
        return parse(text)

    monkeypatch.setattr(importlib.import_module("eqtheory.stopping.parse"), "parse", counting_parse)
    z0 = torch.zeros(2, 3)
    for _ in range(3):
        eqt.fixed_point(lambda z: 0.5 * z + 1, z0, stop="residual<1e-3|steps=7")
    assert parsed.count("residual<1e-3|steps=7") <= 1
    spec = "grad<1e-3|steps=9"
    assert stopping.shared(spec) is stopping.shared(spec)
    assert stopping.shared(spec) is not stopping.parse(spec)  # parse itself builds anew


def test_a_rule_with_parameters_is_never_shared():
    """``halt`` has a learned head: two solves must not train one head."""
    assert stopping.shared("halt=0.5") is not stopping.shared("halt=0.5")


def test_a_shared_rule_follows_the_registry():
    """A name registered again after a spec was parsed resolves to the new class."""

    class Small(ToleranceRule):
        name = "overhead_probe"

        def __init__(self, tol: float = 1.0) -> None:
            super().__init__(tol)

        def quantity(self, info):
            return info.grad_norm

    class Other(Small):
        pass

    stopping.REGISTRY.register("overhead_probe")(Small)
    try:
        assert type(stopping.shared("overhead_probe<1")) is Small
        stopping.REGISTRY.unregister("overhead_probe")
        stopping.REGISTRY.register("overhead_probe")(Other)
        assert type(stopping.shared("overhead_probe<1")) is Other
    finally:
        stopping.REGISTRY.unregister("overhead_probe")


def test_registry_shares_stateless_instances_per_name_and_options():
    solvers = eqt.solvers.REGISTRY
    assert solvers.shared("picard") is solvers.shared("picard")
    assert solvers.shared("picard", damping=0.5) is solvers.shared("picard", damping=0.5)
    assert solvers.shared("picard", damping=0.5) is not solvers.shared("picard")
    assert solvers.shared("anderson", memory=3) is not solvers.shared("anderson", memory=3.0)
    assert solvers.shared("gd") is not solvers.shared("gd")  # holds a buffer (its log step)
    assert solvers.shared("gd", learn_step=True) is not solvers.shared("gd", learn_step=True)
    with pytest.raises(registry.UnknownOptionError, match="dampnig"):
        solvers.shared("picard", dampnig=0.5)
    modes = eqt.backward.REGISTRY
    assert modes.shared("implicit") is modes.shared("implicit")


def test_option_names_are_read_from_a_signature_once(monkeypatch):
    calls = []
    signature = inspect.signature

    def counting_signature(target, *args, **kwargs):
        calls.append(target)
        return signature(target, *args, **kwargs)

    class Component:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    monkeypatch.setattr(inspect, "signature", counting_signature)
    for _ in range(3):
        registry.check_options(Component, {"size": 2}, kind="probe", name="component")
    with pytest.raises(registry.UnknownOptionError, match="did you mean 'size'"):
        registry.check_options(Component, {"sise": 2}, kind="probe", name="component")
    assert calls.count(Component) == 1
