"""Every registered component passes its family's contract (`eqtheory.testing.contracts`).

The cases are read from the registries at collection time, so a component is checked the
moment its file registers it; nothing here names a component.
"""

from __future__ import annotations

import pytest

import eqtheory as eqt
from eqtheory.status import Status
from eqtheory.stopping.base import StopRule, status_like
from eqtheory.testing import contracts

CASES = contracts.cases()


@pytest.mark.parametrize(
    ("family", "name", "law"), CASES, ids=[f"{f}-{n}-{law.__name__}" for f, n, law in CASES]
)
def test_component_obeys_its_contract(family, name, law):
    law(name)


def test_every_family_and_every_registered_name_is_covered():
    covered = {(family, name) for family, name, _ in CASES}
    for family, registry in contracts.registries().items():
        assert {(family, name) for name in registry.names()} <= covered
        assert contracts.LAWS[family]


def test_a_broken_component_fails_its_contract():
    """The laws can fail: a rule whose decision depends on the rest of the batch is caught."""

    class BatchMean(StopRule):
        name = "batch_mean"

        def check(self, info, state):
            done = info.grad_norm < info.grad_norm.mean()
            return done, status_like(done, Status.CONVERGED), state

    eqt.stopping.REGISTRY.register("batch_mean")(BatchMean)
    try:
        with pytest.raises(AssertionError, match="depends on the batch"):
            contracts.rule_decides_per_sample("batch_mean")
    finally:
        eqt.stopping.REGISTRY.unregister("batch_mean")
    assert "batch_mean" not in eqt.stopping.names()
