r"""Hypothesis strategies for eqtheory (in the spirit of ``xarray.testing.strategies``).

Every instance carries the constants its laws need, *certified* (proved from the construction,
not estimated):

* `spd_quadratics`: ``E(z) = 1/2 z^T A z - b^T z`` with ``spec(A)`` log-spaced in
  ``[mu, condition * mu]`` (both ends attained): ``mu``, ``L``, closed-form minimiser ``A^{-1} b``.
* `strongly_convex_energies`: `eqtheory.energies.LogCosh`,
  ``1/2 z^T A z - b^T z + lambda sum log cosh(z - c)``; ``(log cosh)'' = sech^2 in (0, 1]`` gives
  ``mu = lambda_min(A)``, ``L = lambda_max(A) + lambda``.
* `convex_energies`: the log-cosh family with ``A = 0``: convex, ``mu = 0``, ``L = lambda``.
* `analytic_eqt_energies`: a random non-empty weighted subset of {quadratic, logcosh,
  double_well} plus the anchor, with ``gamma`` drawn so that ``Phi`` is strongly convex; see its
  docstring for the certified ``mu_Phi`` and the smoothness constant on the sublevel set.
* `contractive_maps`: ``f(z) = c tanh(W z + b)`` with ``||W||_2 = 1``, so ``Lip(f) <= c < 1``.
* `energy_specs`, `stop_specs`, `variant_specs`: random valid spec strings / `VariantSpec` s,
  drawn over every registered term, rule, solver and backward mode.

Size arguments take a value or a strategy (``dim=4`` or ``dim=st.integers(1, 6)``).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from torch import Tensor, nn

from eqtheory import stopping
from eqtheory.backward.registry import BACKWARD
from eqtheory.energies import Anchor, DoubleWell, Energy, LogCosh, Quadratic, random_spd
from eqtheory.energies.registry import ENERGIES
from eqtheory.solvers.registry import SOLVERS
from eqtheory.stopping.registry import STOPPING
from eqtheory.variants import KINDS, PLACEMENTS, VariantSpec

DTYPE = torch.float64
ANALYTIC_TERMS = ("quadratic", "logcosh", "double_well")
WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)


def _strategy(value: object) -> SearchStrategy:
    return value if isinstance(value, SearchStrategy) else st.just(value)


@dataclass(frozen=True)
class EnergyInstance:
    """An energy on flat latents ``z: [B, dim]`` with certified constants.

    Attributes:
        energy: the `Energy`.
        dim: feature size ``n``.
        mu: global strong-convexity constant (``0``: only convex).
        L: global smoothness constant.
        minimiser: ``[n]`` closed-form minimiser, or None (then use
            `eqtheory.theory.reference_minimiser`).
        seed: the seed the instance was built from (for starts).
    """

    energy: Energy
    dim: int
    mu: float
    L: float  # noqa: N815
    minimiser: Tensor | None
    seed: int

    def start(self, batch: int, *, scale: float = 1.0, seed: int | None = None) -> Tensor:
        """``[batch, dim]`` float64 Gaussian starts."""
        generator = torch.Generator().manual_seed(self.seed + 7 if seed is None else seed)
        return scale * torch.randn(batch, self.dim, generator=generator, dtype=DTYPE)


@st.composite
def spd_quadratics(
    draw, dim=st.integers(1, 8), condition=st.floats(1.0, 100.0), mu=st.floats(0.05, 2.0)
):
    """SPD quadratics with ``L / mu = condition`` exactly."""
    n, kappa, m = draw(_strategy(dim)), draw(_strategy(condition)), draw(_strategy(mu))
    seed = draw(st.integers(0, 2**16))
    kappa = 1.0 if n == 1 else kappa
    matrix = random_spd(n, m, m * kappa, seed=seed)
    energy = Quadratic(matrix, _normal(n, seed + 1))
    return EnergyInstance(energy, n, m, m * kappa, energy.minimiser(1)[0], seed)


@st.composite
def strongly_convex_energies(
    draw,
    dim=st.integers(1, 8),
    condition=st.floats(1.0, 50.0),
    mu=st.floats(0.05, 2.0),
    weight=st.floats(0.0, 2.0),
):
    """Log-cosh energies: ``mu = lambda_min(A)``, ``L = lambda_max(A) + lambda`` (certified)."""
    n, kappa, m, w = (draw(_strategy(x)) for x in (dim, condition, mu, weight))
    seed = draw(st.integers(0, 2**16))
    kappa = 1.0 if n == 1 else kappa
    matrix = random_spd(n, m, m * kappa, seed=seed)
    energy = LogCosh(matrix, _normal(n, seed + 1), _normal(n, seed + 2), weight=w)
    return EnergyInstance(energy, n, m, m * kappa + w, None, seed)


@st.composite
def convex_energies(draw, dim=st.integers(1, 8), weight=st.floats(0.1, 2.0)):
    """``lambda sum log cosh(z - c) - b^T z`` with ``|b_i| < lambda``: convex, not strongly
    (``mu = 0``), ``L = lambda``; bounded below so it has minimisers."""
    n, w = draw(_strategy(dim)), draw(_strategy(weight))
    seed = draw(st.integers(0, 2**16))
    shift = 0.9 * w * torch.tanh(_normal(n, seed + 1))
    energy = LogCosh(torch.zeros(n, n, dtype=DTYPE), shift, _normal(n, seed + 2), weight=w)
    return EnergyInstance(energy, n, 0.0, w, None, seed)


@dataclass(frozen=True)
class EqTInstance:
    r"""``Phi(z) = sum_i w_i E_i(z) + ||z - z0||^2 / (2 gamma)`` over analytic terms.

    Certified constants (``z in R^n``):

    * ``mu_phi = sum_i w_i m_i + 1/gamma > 0`` with ``m_i`` the global lower curvature bound:
      quadratic / logcosh ``lambda_min(A)``, double_well ``tilt - scale`` (its Hessian is
      ``diag(scale (3 z_i^2 - 1) + tilt)``).
    * `smoothness_on_box`: on the box ``|z_i| <= R`` the Hessian is at most
      ``sum_i w_i M_i(R) + 1/gamma`` with ``M_i = lambda_max(A)`` (quadratic),
      ``lambda_max(A) + lambda`` (logcosh), ``scale (3 R^2 - 1) + tilt`` (double_well).

    Gradient descent with ``alpha = 1 / L_box``, where the box contains the sublevel set
    ``{Phi <= Phi(z_start)} ⊂ B(z*, r)``, ``r = sqrt(2 (Phi(z_start) - Phi*) / mu_phi)``, never
    leaves that (convex) set (descent lemma on the box), and by the mean-value theorem
    ``z_{k+1} - z* = (I - alpha Hbar)(z_k - z*)`` with ``Hbar`` the Hessian averaged over the
    segment ``[z*, z_k]`` (inside the set), spectrum in ``[mu_phi, L_box]``; so
    ``||z_{k+1} - z*||^2 <= (1 - mu_phi / L_box)^2 ||z_k - z*||^2``, which is at most Thm. 2's
    factor ``1 - 2 alpha mu_phi L_box / (mu_phi + L_box)``.
    """

    phi: Energy
    terms: tuple[tuple[float, Energy], ...]
    gamma: float
    mu_phi: float
    dim: int
    spec: str
    seed: int
    z0: Tensor = field(repr=False)

    def smoothness_on_box(self, radius: float) -> float:
        total = 1 / self.gamma
        for weight, term in self.terms:
            if isinstance(term, DoubleWell):
                total += weight * max(term.scale * (3 * radius**2 - 1) + term.tilt, 0.0)
            else:  # Quadratic and LogCosh expose their certified L
                total += weight * term.L
        return total


@st.composite
def analytic_eqt_energies(draw, dim=st.integers(1, 6), batch=st.integers(1, 3)):
    """Random weighted subsets of the analytic terms plus the anchor, ``Phi`` strongly convex."""
    n, b = draw(_strategy(dim)), draw(_strategy(batch))
    seed = draw(st.integers(0, 2**16))
    names = draw(st.lists(st.sampled_from(ANALYTIC_TERMS), min_size=1, max_size=3, unique=True))
    terms: list[tuple[float, Energy]] = []
    lower = 0.0
    for i, name in enumerate(names):
        weight = draw(st.sampled_from(WEIGHTS))
        if name == "double_well":
            scale = draw(st.floats(0.1, 2.0))
            tilt = draw(st.floats(0.0, 0.9)) * scale
            term: Energy = DoubleWell(scale=scale, tilt=tilt)
            lower += weight * (tilt - scale)
        else:
            m = draw(st.floats(0.01, 1.0))
            matrix = random_spd(n, m, m * draw(st.floats(1.0, 20.0)), seed=seed + 10 * i)
            if name == "quadratic":
                term = Quadratic(matrix, _normal(n, seed + 10 * i + 1))
            else:
                term = LogCosh(
                    matrix,
                    _normal(n, seed + 10 * i + 1),
                    _normal(n, seed + 10 * i + 2),
                    weight=draw(st.floats(0.0, 1.0)),
                )
            lower += weight * float(torch.linalg.eigvalsh(matrix)[0])
        terms.append((weight, term))
    margin = draw(st.floats(0.05, 2.0))
    gamma = 1 / (max(-lower, 0.0) + margin)  # mu_phi = lower + 1/gamma >= margin
    anchor = Anchor(gamma=gamma)
    phi = _weighted_sum(terms) + anchor
    spec = "+".join(f"{w:g}*{t.name}" for w, t in terms) + f"+anchor={gamma:g}"
    z0 = torch.randn(b, n, generator=torch.Generator().manual_seed(seed + 99), dtype=DTYPE)
    return EqTInstance(phi, tuple(terms), gamma, lower + 1 / gamma, n, spec, seed, z0)


def _weighted_sum(terms: list[tuple[float, Energy]]) -> Energy:
    total = terms[0][0] * terms[0][1]
    for weight, term in terms[1:]:
        total = total + weight * term
    return total


class ContractiveMap(nn.Module):
    """``f(z) = c tanh(W z + b)`` on ``z: [B, n]``, ``||W||_2 = 1``: ``Lip(f) <= c``."""

    def __init__(self, weight: Tensor, bias: Tensor, lipschitz: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight / torch.linalg.matrix_norm(weight, ord=2))
        self.register_buffer("bias", bias)
        self.lipschitz = float(lipschitz)

    def forward(self, z: Tensor) -> Tensor:
        return self.lipschitz * torch.tanh(z @ self.weight.T.to(z.dtype) + self.bias.to(z.dtype))


@st.composite
def contractive_maps(draw, dim=st.integers(1, 8), lipschitz=st.floats(0.05, 0.95)):
    """`ContractiveMap` s with known Lipschitz bound ``c`` (its attribute ``lipschitz``)."""
    n, c = draw(_strategy(dim)), draw(_strategy(lipschitz))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, n, generator=generator, dtype=DTYPE)
    return ContractiveMap(weight, torch.randn(n, generator=generator, dtype=DTYPE), c)


def sequence_terms() -> list[str]:
    """Registered terms built for model latents ``[B, T, dim]`` (the learned and sequence
    terms: ``bidir``, ``mask``, ``confidence``, ...), anchor excluded."""
    return [
        name
        for name in ENERGIES.names()
        if name != "anchor"
        and ENERGIES.get(name).latent_layout == "sequence"
    ]


def variational_terms() -> list[str]:
    """`sequence_terms` whose solver-facing gradient is the gradient of their value (laws about
    gradient descent on an energy, e.g. its curvature, hold for them; the causal ``chain`` field
    is not a gradient)."""
    return [name for name in sequence_terms()
            if ENERGIES.get(name).exact_gradient]


@st.composite
def energy_specs(draw, terms=None, anchor=st.booleans()):
    """Spec strings of a random non-empty subset of ``terms`` (default: `sequence_terms`),
    each with a weight from `WEIGHTS` (or none), optionally ``+anchor=gamma``."""
    names = draw(st.lists(st.sampled_from(terms or sequence_terms()), min_size=1, unique=True))
    parts = []
    for name in names:
        weight = draw(st.sampled_from((1.0, *WEIGHTS)))
        parts.append(name if weight == 1.0 else f"{weight:g}*{name}")
    if draw(_strategy(anchor)):
        parts.append(f"anchor={draw(st.sampled_from((0.1, 0.5, 1, 2, 10))):g}")
    return "+".join(parts)


def _tolerance() -> SearchStrategy:
    return st.builds(lambda m, e: float(f"{m}e-{e}"), st.integers(1, 99), st.integers(1, 9))


def _option_values(default: object) -> SearchStrategy | None:
    """Values for a rule option, by its default's type: booleans, counts up to ``2 default``
    (at least 5), tolerances ``m e-e`` for a positive float, small integers for a float whose
    default is 0 (a threshold that may be negative); None for an option of another type."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(0, max(2 * default, 5))
    if isinstance(default, float):
        return _tolerance() if default > 0 else st.integers(-5, 5).map(float)
    return None


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _rule_atoms(name: str) -> SearchStrategy:
    """Spec strings of one registered rule: its short form (``residual<1e-3``) when it declares
    one, else ``name(key=value,...)`` over a drawn subset of its options; only strings the
    rule's constructor accepts (``adaptive`` needs ``low <= high``)."""
    cls = STOPPING.get(name)
    params = {
        key: values
        for key, param in inspect.signature(cls).parameters.items()
        if (values := _option_values(param.default)) is not None
    }

    @st.composite
    def atom(draw) -> str:
        if cls.primary is not None and cls.primary in params and draw(st.booleans()):
            return f"{name}{cls.comparator}{_text(draw(params[cls.primary]))}"
        keys = draw(st.lists(st.sampled_from(sorted(params)), unique=True)) if params else []
        options = ",".join(f"{key}={_text(draw(params[key]))}" for key in sorted(keys))
        return f"{name}({options})" if options else name

    return atom().filter(_builds)


def _builds(text: str) -> bool:
    try:
        stopping.parse(text)
    except ValueError:
        return False
    return True


def _stop_atoms() -> SearchStrategy:
    """One atom of every registered stopping rule (a new rule is drawn once registered)."""
    return st.one_of([_rule_atoms(name) for name in STOPPING.names()])


def stop_specs(max_leaves: int = 5) -> SearchStrategy:
    """Stopping-rule spec strings: atoms joined by ``|`` and ``&`` with parentheses."""
    return st.recursive(
        _stop_atoms(),
        lambda inner: st.tuples(inner, st.sampled_from("|&"), inner).map(
            lambda t: f"({t[0]}){t[1]}({t[2]})"
        ),
        max_leaves=max_leaves,
    )


@st.composite
def variant_specs(draw):
    """Valid `VariantSpec` s with every field drawn (finite floats that JSON round-trips)."""
    gamma = draw(st.one_of(st.just(math.inf), st.floats(0.01, 100.0)))
    kind = draw(st.sampled_from(KINDS))
    return VariantSpec(
        kind=kind,
        energy=draw(energy_specs(anchor=False)),
        solver=draw(st.sampled_from([n for n in SOLVERS.names()])),
        alpha=draw(st.floats(1e-4, 1.0)),
        stop_train=draw(stop_specs(3)),
        stop_eval=draw(stop_specs(3)),
        backward=draw(st.sampled_from(BACKWARD.names())),
        placement=draw(st.sampled_from(PLACEMENTS)),
        gamma=gamma,
        gamma_start=None if math.isinf(gamma) else draw(st.none() | st.floats(0.01, 100.0)),
        anneal_fraction=draw(st.floats(0.01, 1.0)),
        beta=draw(st.floats(0.0, 1.0)),
        layernorm=draw(st.booleans()),
        aux_losses_only=kind == "eqt" and draw(st.booleans()),
    )


def _normal(n: int, seed: int) -> Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


__all__ = [
    "ANALYTIC_TERMS",
    "ContractiveMap",
    "EnergyInstance",
    "EqTInstance",
    "analytic_eqt_energies",
    "contractive_maps",
    "convex_energies",
    "energy_specs",
    "sequence_terms",
    "spd_quadratics",
    "stop_specs",
    "strongly_convex_energies",
    "variant_specs",
]
