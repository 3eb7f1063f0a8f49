"""Contract checks that every registered component must pass, as plain callable functions.

Each family (energy terms, solvers, stopping rules, backward modes) has a list of laws; a law
takes a registered name and raises `AssertionError` (with what failed) when the component
breaks it. `cases` pairs every law with every name registered *now*, so the contract tests
(``tests/test_contracts.py``) check a component the moment its file registers it, a plugin's
included (``tests/test_extending.py`` registers a term, a solver and a rule from temporary
modules and runs these same laws on them).

>>> from eqtheory.testing import contracts
>>> ("stopping", "steps", "rule_runs_in_a_solve") in [
...     (f, n, law.__name__) for f, n, law in contracts.cases()]
True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import grad, vmap

import eqtheory as eqt
from eqtheory.context import CONTEXT_KEYS
from eqtheory.energies import Energy
from eqtheory.registry import Registry
from eqtheory.status import Status
from eqtheory.stopping.base import StepInfo

Law = Callable[[str], None]
B, T, DIM, VOCAB = 4, 5, 8, 5
PROBLEM_KINDS = frozenset({"minimize", "fixed_point", "chain"})


# ---------------------------------------------------------------------------- energy terms


def energy_example(name: str, dtype: torch.dtype = torch.float64) -> tuple[Energy, Tensor, dict]:
    """The term built from its registered defaults (``dim``/``vocab`` where it takes them),
    latents of its layout (``[B, T, DIM]`` or ``[B, DIM]``) and a context with ``z0`` (like
    ``z``) and every registered context key's example (`eqtheory.context`)."""
    torch.manual_seed(0)
    term = eqt.energies.parse(name, dim=DIM, vocab=VOCAB).to(dtype)
    shape = (B, T, DIM) if term.latent_layout == "sequence" else (B, DIM)
    z = torch.randn(shape, dtype=dtype)
    context = {"z0": torch.randn(shape, dtype=dtype)}
    context.update({name: key.example(B, T, VOCAB) for name, key in CONTEXT_KEYS.items()})
    return term, z, context


def energy_values_are_per_sample_and_finite(name: str) -> None:
    term, z, context = energy_example(name)
    value = term(z, context)
    assert value.shape == (B,), f"{name}: value shape {tuple(value.shape)}, expected ({B},)"
    assert torch.isfinite(value).all(), f"{name}: non-finite value {value}"


def energy_of_a_sample_ignores_the_rest_of_the_batch(name: str) -> None:
    term, z, context = energy_example(name)
    full = term(z, context)
    for i in range(B):
        alone = term(z[i : i + 1], {k: v[i : i + 1] for k, v in context.items()})
        assert torch.allclose(alone, full[i : i + 1], rtol=1e-12, atol=1e-12), f"{name}: {i}"
    perturbed = z.clone()
    perturbed[0] += 1.0
    assert torch.equal(term(perturbed, context)[1:], full[1:]), f"{name}: samples interact"


def energy_gradient_matches_finite_differences(name: str) -> None:
    """The gradient solvers see is the value's (central differences), or, for a term that
    declares ``exact_gradient = False`` (the causal chain), the ``field`` it declares."""
    term, z, context = energy_example(name)
    g = grad(lambda x: term(x, context).sum())(z)
    assert g.shape == z.shape and torch.isfinite(g).all(), f"{name}: bad gradient"
    if not term.exact_gradient:
        assert torch.allclose(g, term.field(z, context), rtol=1e-12, atol=1e-12), name
        return
    direction = torch.randn_like(z)
    h = 1e-6
    numeric = (term(z + h * direction, context) - term(z - h * direction, context)).sum() / (2 * h)
    assert torch.allclose((g * direction).sum(), numeric, rtol=1e-5, atol=1e-7), name


def energy_works_under_vmap(name: str) -> None:
    term, z, context = energy_example(name)
    stacked = torch.stack([z, 2 * z, -z])  # (3, B, ...)
    mapped = vmap(lambda x: term(x, context))(stacked)
    looped = torch.stack([term(x, context) for x in stacked])
    assert mapped.shape == (3, B), f"{name}: vmap shape {tuple(mapped.shape)}"
    assert torch.allclose(mapped, looped, rtol=1e-12, atol=1e-12), f"{name}: vmap != loop"


def energy_works_in_float32(name: str) -> None:
    term, z, context = energy_example(name, dtype=torch.float32)
    value = term(z, context)
    assert value.dtype == torch.float32 and torch.isfinite(value).all(), name


def energy_requires_names_every_context_key_it_cannot_do_without(name: str) -> None:
    term, z, context = energy_example(name)
    minimal = {k: context[k] for k in term.requires}
    assert torch.isfinite(term(z, minimal)).all(), f"{name}: needs more than {term.requires}"
    for key in term.requires:
        try:
            term(z, {k: v for k, v in minimal.items() if k != key})
        except KeyError as error:
            assert key in str(error), f"{name}: missing {key!r} raised {error!r}"
        else:
            raise AssertionError(f"{name}: declares {key!r} required but runs without it")


# ---------------------------------------------------------------------------------- solvers


def _solver(name: str, step_size: float) -> eqt.solvers.Solver:
    return eqt.solvers.REGISTRY.build(name, step_size=step_size)


def solver_declares_its_problems_and_takes_a_step_size(name: str) -> None:
    cls = eqt.solvers.get(name)
    assert cls.solves and cls.solves <= PROBLEM_KINDS, f"{name}: solves {set(cls.solves)}"
    assert "step_size" in inspect.signature(cls).parameters, f"{name}: no step_size option"


def solver_zero_steps_return_the_start_exactly(name: str) -> None:
    """The K = 0 control: no solver may change z0 before its first step (noise included)."""
    if "minimize" not in eqt.solvers.get(name).solves:
        return
    z0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sol = eqt.minimize(
            eqt.energies.Quadratic(dim=4), z0, solver=_solver(name, 0.1), stop="steps=0"
        )
    assert torch.equal(sol.z, z0), f"{name}: steps=0 changed z0"


def solver_float32_converges_and_keeps_dtype(name: str) -> None:
    if "minimize" not in eqt.solvers.get(name).solves:
        return
    energy = eqt.energies.Quadratic(dim=4, mu=1.0, L=4.0).float()
    with torch.no_grad():
        sol = eqt.minimize(
            energy, torch.zeros(2, 4), solver=_solver(name, 0.2), stop="grad<1e-4|steps=3000"
        )
    assert sol.z.dtype == torch.float32, f"{name}: returned {sol.z.dtype}"
    assert sol.counts() == {"converged": 2}, f"{name}: {sol.messages()}"
    assert torch.allclose(sol.z, energy.minimiser(2).float(), atol=1e-3), name


def solver_solution_fields_have_the_documented_shapes(name: str) -> None:
    """For each problem kind the solver declares but ``chain`` (whose problems are causal
    chains over ``[B, T, d]``, checked in ``tests/test_chain.py``)."""
    z0 = torch.zeros(3, 2, 4, dtype=torch.float64)
    for kind in sorted(eqt.solvers.get(name).solves - {"chain"}):
        if kind == "minimize":
            sol = eqt.minimize(
                lambda z: 0.5 * (z**2).flatten(1).sum(1), z0 + 1, solver=_solver(name, 0.5),
                stop="steps=5",
            )
        else:
            sol = eqt.fixed_point(
                lambda z: 0.5 * z + 1, z0, solver=_solver(name, 1.0), stop="steps=5"
            )
        assert sol.z.shape == z0.shape, f"{name}/{kind}: z {tuple(sol.z.shape)}"
        assert sol.status.shape == sol.steps.shape == sol.fevals.shape == (3,), name
        assert (sol.status == Status.MAX_STEPS).all(), f"{name}/{kind}: {sol.messages()}"
        assert (sol.steps == 5).all() and (sol.fevals >= 6).all(), f"{name}/{kind}"
        assert sol.batch_fevals >= int(sol.fevals.sum()), f"{name}/{kind}"
        for key, rows in sol.trace.items():
            assert rows.shape == (6, 3), f"{name}/{kind}: trace {key} {tuple(rows.shape)}"


# --------------------------------------------------------------------------- stopping rules


def _step_infos(batch: int = B) -> tuple[StepInfo, StepInfo]:
    """A start (step 0) and a later ``StepInfo`` on ``z: [batch, T, DIM]`` float64."""
    generator = torch.Generator().manual_seed(1)
    z0 = torch.randn(batch, T, DIM, generator=generator, dtype=torch.float64)
    z = z0 + 0.01 * torch.randn(batch, T, DIM, generator=generator, dtype=torch.float64)
    small = torch.rand(batch, generator=generator, dtype=torch.float64) ** 4
    nan = torch.full((batch,), float("nan"), dtype=torch.float64)
    energy0 = 10 * torch.randn(batch, generator=generator, dtype=torch.float64)
    start = StepInfo(0, z0, z0, nan, nan, energy0, nan, small)
    later = StepInfo(3, z, z0, 0.1 * small, 0.01 * small, energy0 - small, energy0, small)
    return start, later


def _sample(info: StepInfo, i: int) -> StepInfo:
    pick = slice(i, i + 1)
    return StepInfo(
        info.step, info.z[pick], info.z0[pick], info.residual[pick],
        info.relative_residual[pick], info.energy[pick], info.energy_prev[pick],
        info.grad_norm[pick],
    )


def rule_builds_from_defaults_and_its_spec_round_trips(name: str) -> None:
    """Defaults build; ``parse(rule.spec())`` prints the same spec; a declared short form
    (``primary``/``comparator``) names an option and parses back to the same rule."""
    cls = eqt.stopping.get(name)
    rule = cls()
    spec = rule.spec()
    assert eqt.stopping.parse(spec).spec() == spec, f"{name}: {spec!r} does not round-trip"
    if cls.primary is not None:
        params = inspect.signature(cls).parameters
        assert cls.primary in params, f"{name}: primary {cls.primary!r} is not an option"
        assert cls.comparator in ("<", "="), f"{name}: comparator {cls.comparator!r}"
        default = params[cls.primary].default
        short = eqt.stopping.parse(f"{name}{cls.comparator}{default}")
        assert short.spec() == spec, f"{name}: short form gives {short.spec()!r}, not {spec!r}"


def rule_decides_per_sample(name: str) -> None:
    """``check`` returns ``[B]`` bool and ``[B]`` int64 statuses, and a sample's decision is
    the one it gets alone (rules with parameters are shared between both calls)."""
    rule = eqt.stopping.get(name)().double()
    start, later = _step_infos()
    done, code, state = rule.check(later, rule.init(start))
    assert done.shape == code.shape == (B,), f"{name}: shapes {done.shape}, {code.shape}"
    assert done.dtype == torch.bool and code.dtype == torch.int64, f"{name}: dtypes"
    assert all(isinstance(v, Tensor) for v in state.values()), f"{name}: state not tensors"
    valid = {int(s) for s in Status}
    assert set(code[done].tolist()) <= valid, f"{name}: unknown status in {code}"
    for i in range(B):
        one_start, one_later = _sample(start, i), _sample(later, i)
        done_i, code_i, _ = rule.check(one_later, rule.init(one_start))
        assert bool(done_i[0]) == bool(done[i]), f"{name}: sample {i} depends on the batch"
        if bool(done[i]):
            assert int(code_i[0]) == int(code[i]), f"{name}: sample {i} status"


def rule_runs_in_a_solve(name: str) -> None:
    """Within ``rule | steps=60`` on a quadratic every sample finishes with a final status,
    and a rule with a ``budget()`` stops every sample by then."""
    rule = eqt.stopping.get(name)()
    budget = rule.budget()
    assert budget is None or (isinstance(budget, int) and budget >= 0), f"{name}: {budget!r}"
    energy = eqt.energies.Quadratic(dim=4, mu=1.0, L=4.0)
    z0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    stop = rule | eqt.stopping.Steps(60)
    with torch.no_grad():
        sol = eqt.minimize(energy, z0, solver="gd", step_size=0.2, stop=stop)
    assert not (sol.status == Status.RUNNING).any(), f"{name}: {sol.messages()}"
    if budget is not None:
        assert int(sol.steps.max()) <= budget, f"{name}: ran past its budget {budget}"


# --------------------------------------------------------------------------- backward modes


def backward_gradient_is_finite_and_a_descent_direction(name: str) -> None:
    """``d sum(z*) / d b`` for ``z* = argmin 1/2 z^T A z - b^T z = A^{-1} b`` has the shape of
    ``b``, is finite, and has a positive inner product with the exact ``A^{-1} 1`` (truncated
    modes approximate it; every mode must point the same way)."""
    energy = eqt.energies.Quadratic(dim=4, mu=1.0, L=4.0)
    shift = energy.shift.clone().requires_grad_(True)
    matrix = energy.matrix

    def value(z: Tensor) -> Tensor:
        return 0.5 * ((z @ matrix) * z).sum(1) - (z * shift).sum(1)

    z0 = torch.zeros(2, 4, dtype=torch.float64)
    sol = eqt.minimize(
        value, z0, solver="gd", step_size=0.2, stop="grad<1e-10|steps=2000",
        backward=eqt.backward.REGISTRY.build(name),
    )
    (gradient,) = torch.autograd.grad(sol.z.sum(), shift)
    exact = 2 * torch.linalg.solve(matrix, torch.ones(4, dtype=torch.float64))
    assert gradient.shape == shift.shape and torch.isfinite(gradient).all(), name
    assert float(gradient @ exact) > 0, f"{name}: gradient {gradient} against {exact}"


# ------------------------------------------------------------------------------- every family


def _documented(family: str) -> Law:
    def component_has_its_own_docstring_summary(name: str) -> None:
        """The class's own docstring (not one inherited) opens with a summary line: the docs
        table and ``help()`` read it."""
        component = registries()[family].get(name)
        doc = inspect.cleandoc(vars(component).get("__doc__") or "")
        assert doc and doc.splitlines()[0].strip(), f"{family} {name!r}: no docstring of its own"

    return component_has_its_own_docstring_summary


LAWS: dict[str, list[Law]] = {
    "energies": [
        _documented("energies"),
        energy_values_are_per_sample_and_finite,
        energy_of_a_sample_ignores_the_rest_of_the_batch,
        energy_gradient_matches_finite_differences,
        energy_works_under_vmap,
        energy_works_in_float32,
        energy_requires_names_every_context_key_it_cannot_do_without,
    ],
    "solvers": [
        _documented("solvers"),
        solver_declares_its_problems_and_takes_a_step_size,
        solver_zero_steps_return_the_start_exactly,
        solver_float32_converges_and_keeps_dtype,
        solver_solution_fields_have_the_documented_shapes,
    ],
    "stopping": [
        _documented("stopping"),
        rule_builds_from_defaults_and_its_spec_round_trips,
        rule_decides_per_sample,
        rule_runs_in_a_solve,
    ],
    "backward": [
        _documented("backward"),
        backward_gradient_is_finite_and_a_descent_direction,
    ],
}


def registries() -> dict[str, Registry]:
    """The family registries the laws cover."""
    return {
        "energies": eqt.energies.REGISTRY,
        "solvers": eqt.solvers.REGISTRY,
        "stopping": eqt.stopping.REGISTRY,
        "backward": eqt.backward.REGISTRY,
    }


def cases(names: dict[str, list[str]] | None = None) -> list[tuple[str, str, Law]]:
    """``(family, name, law)`` for every law of every component registered now (or, with
    `names`, of those names per family)."""
    chosen = names or {family: reg.names() for family, reg in registries().items()}
    return [
        (family, name, law)
        for family, family_names in chosen.items()
        for name in family_names
        for law in LAWS[family]
    ]


def check(family: str, name: str) -> list[str]:
    """Run every law of `family` on `name`; returns the laws' names (all passed)."""
    registries()[family].get(name)  # an unknown name lists the valid ones
    for law in LAWS[family]:
        law(name)
    return [law.__name__ for law in LAWS[family]]
