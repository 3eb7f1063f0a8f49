"""Bad names, options and specs give errors that say what would have worked."""

from __future__ import annotations

import pytest
import torch

import eqtheory as eqt

Z0 = torch.zeros(2, 3)


def quadratic(z):
    return (z**2).sum(1)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (
            lambda: eqt.minimize(quadratic, Z0, solver="andersen"),
            r"unknown solver 'andersen'.*did you mean 'anderson'\?.*valid: anderson, broyden, deq",
        ),
        (
            lambda: eqt.minimize(quadratic, Z0, stop="residul<1e-4|steps=50"),
            r"unknown stopping rule 'residul' in 'residul<1e-4\|steps=50'; "
            r"did you mean 'residual'\?"
            r".*valid: .*energy.*grad.*halt.*residual.*stable.*steps",
        ),
        (
            lambda: eqt.minimize(quadratic, Z0, backward="implict"),
            r"unknown backward mode 'implict'.*did you mean 'implicit'\?"
            r".*valid: implicit, phantom, unrolled",
        ),
        (
            lambda: eqt.energies.parse("bidir+0.1*memroy", dim=4, vocab=2),
            r"unknown energy term 'memroy'.*did you mean 'memory'\?.*valid:.*anchor",
        ),
        (
            lambda: eqt.minimize(quadratic, Z0, solver="gd", stepsize=0.1),
            r"unknown option 'stepsize' for solver 'gd'; did you mean 'step_size'\?"
            r".*valid:.*momentum",
        ),
        (
            lambda: eqt.stopping.parse("residual(tol=1e-4,relatve=true)"),
            r"unknown option 'relatve' for stopping rule 'residual'; did you mean 'relative'\?",
        ),
        (
            lambda: eqt.energies.parse("anchor(gama=2)"),
            r"unknown option 'gama' for energy term 'anchor'; did you mean 'gamma'\?",
        ),
        (
            lambda: eqt.energies.parse("quadratic", dimm=3),
            r"unknown shared energy option 'dimm'; did you mean 'dim'\? valid: .*\bvocab\b.*window",
        ),
        (lambda: eqt.stopping.parse("steps<5"), r"'steps' is written steps=VALUE"),
        (lambda: eqt.stopping.parse("residual<1e-4|"), r"expected 'name' at the end"),
        (lambda: eqt.stopping.parse("residual<1e-4 steps=3"), r"unexpected 'steps' at position 14"),
        (lambda: eqt.stopping.parse(""), r"empty stopping rule"),
        (lambda: eqt.stopping.parse("steps=2.5"), r"whole number"),
        (
            lambda: eqt.minimize(quadratic, Z0, solver=eqt.solvers.Picard(), damping=0.5),
            r"given with a solver object",
        ),
        (
            lambda: eqt.fixed_point(lambda z: z, Z0, solver="gd"),
            r"solver 'gd' solves \['minimize'\] problems, not 'fixed_point'",
        ),
        (lambda: eqt.minimize(lambda z: z, Z0), r"one value per sample, shape \[2\]"),
        (lambda: eqt.fixed_point(lambda z: z[:, :2], Z0), r"must return the shape of z"),
        (lambda: eqt.minimize(quadratic, Z0, solver="gd", step_size=-1.0), r"step_size > 0"),
        (
            lambda: eqt.variants.VariantSpec(placement="everywhere"),
            r"unknown placement 'everywhere'.*valid: every, last",
        ),
        (
            lambda: eqt.variants.VariantSpec.from_dict({"solvr": "gd"}),
            r"unknown variant field 'solvr'; did you mean 'solver'\?",
        ),
    ],
)
def test_errors_name_what_is_wrong_and_what_is_valid(call, pattern):
    with pytest.raises((ValueError, TypeError, KeyError)) as info:
        call()
    assert __import__("re").search(pattern, str(info.value)), str(info.value)


def test_unknown_names_are_key_and_value_errors():
    with pytest.raises(KeyError):
        eqt.solvers.get("nope")
    with pytest.raises(ValueError):
        eqt.solvers.get("nope")
