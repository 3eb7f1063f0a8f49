r"""The Equilibrium Refinement Module (ERM): refine a proposal by minimising an energy.

.. math:: z^* = \arg\min_z \Phi(z), \qquad
          \Phi(z) = L_\theta(z; x) + \frac{\|z - z_0\|^2}{2\gamma}

from ``z_0`` (the block output, the paper's proposal ``f``), with the variant's learned energy
``L`` (any `Energy` over ``z: [B, T, d]``), the `anchor` prior (``gamma``, annealable with
`set_gamma`), a solver (step size ``alpha``), a stopping rule (one for training, one for
evaluation, or one given per call: ``stop="steps=0"`` returns ``z_0`` unchanged, the K = 0
control) and a backward mode, all through `eqtheory.minimize`. The paper's Eq. 8 is
``solver="gd"`` with ``K`` steps. An optional LayerNorm follows refinement (as in the paper),
so the output is not exactly the minimiser of ``Phi``.

Refinement is per position for energies whose terms read one position at a time (the paper's
math is per token), and per sequence for energies with a term that couples positions
(``couples_positions``, e.g. `eqtheory.energies.Chain`):

* **per sequence, fixed point**: the ``chain`` energy alone with no prior (``gamma = inf``) and a
  solver of chains (``sequential``, ``newton``, ``quasi_newton``) or of fixed points (``picard``,
  ``anderson``, ...) solves ``z = F(z)``, ``F(z)_t = g(z_{t-1}, z0_t)``, starting from the
  centre of the cell's range (`eqtheory.chain.solve_chain` says why; a zero-step budget still
  returns ``z0``, the K = 0 control), where
  ``grad E = z - F(z)`` (the causal field); the solver's step size is its damping;
* **per sequence, minimise**: any other energy with a coupling term is minimised over whole
  sequences ``z: [B, T, d]``;
* **per position**: otherwise; the ``B * T`` latents ``z_t: [d]`` are solved as separate
  samples (`eqtheory.problem.PerPositionProblem`, which states the semantics): every solver's
  per-sample arithmetic (Anderson's mixing weights, Broyden's inverse Jacobian, TTT's fast
  weights), every stopping decision and the NaN/divergence freeze act on one position at a
  time, and position ``t`` never reads positions ``> t``; a position's energy value is its
  sequence's total ``Phi``, its gradient the per-token ``grad_{z_t} Phi``. Results come back
  as ``[B, T]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from eqtheory import stopping
from eqtheory.api import minimize, solve
from eqtheory.backward.base import BackwardMode
from eqtheory.chain.problem import solve_chain
from eqtheory.energies.anchor import Anchor
from eqtheory.energies.base import Context, Energy, SumEnergy
from eqtheory.energies.chain import Chain
from eqtheory.problem import PerPositionProblem
from eqtheory.solution import Solution
from eqtheory.solvers.base import Solver
from eqtheory.stopping.base import StopRule


class ERM(nn.Module):
    """Refine ``z0: [B, T, d]`` by minimising ``energy + anchor(gamma)``.

    Args:
        energy: the learned energy ``L`` (``[B, T, d] -> [B]``, summed over positions).
        gamma: the prior's ``gamma > 0`` (``inf``: no prior).
        solver: the solver object (its step size is the variant's ``alpha``).
        stop_train, stop_eval: stopping rules (spec strings or objects) used in ``train()`` and
            ``eval()`` mode.
        backward: the backward mode (``unrolled``, ``implicit``, ``phantom``).
        width: ``d``, for the LayerNorm; ``layernorm``: apply it after refinement.

    Example:
        >>> import torch
        >>> from eqtheory.solvers import GradientDescent
        >>> from eqtheory.backward import Unrolled
        >>> from eqtheory.energies import LogCosh
        >>> erm = ERM(LogCosh(dim=12), gamma=1.0, solver=GradientDescent(), stop_train="steps=2",
        ...           stop_eval="steps=8", backward=Unrolled(), width=4, layernorm=False)
        >>> z0 = torch.randn(2, 3, 4)
        >>> z, solution = erm(z0, {}, stop="steps=0")
        >>> bool(torch.equal(z, z0)), solution.steps.tolist()
        (True, [0, 0])
    """

    def __init__(
        self,
        energy: Energy,
        *,
        gamma: float,
        solver: Solver,
        stop_train: str | StopRule,
        stop_eval: str | StopRule,
        backward: BackwardMode,
        width: int,
        layernorm: bool,
    ) -> None:
        super().__init__()
        # Phi = L + anchor; `energy` is registered once, inside `objective`.
        self.objective = SumEnergy([(1.0, energy), (1.0, Anchor(gamma=gamma))])
        self.gamma = float(gamma)
        self.solver = solver
        self.stop_train = stopping.resolve(stop_train)
        self.stop_eval = stopping.resolve(stop_eval)
        self.backward = backward
        self.norm = nn.LayerNorm(width) if layernorm else None
        self.chain_fixed_point()  # a chain solver without a chain alone fails here, not later

    @property
    def energy(self) -> Energy:
        """The learned energy ``L`` (without the prior)."""
        return self.objective.terms[0]

    @property
    def anchor(self) -> Anchor:
        return self.objective.terms[1]

    def set_gamma(self, gamma: float) -> None:
        """Set the prior's ``gamma`` (annealing); no host sync."""
        self.anchor.set_gamma(gamma)
        self.gamma = float(gamma)

    @property
    def per_sequence(self) -> bool:
        """Whether a term of the energy couples positions (then whole sequences are solved)."""
        from eqtheory.model.eqt import flatten_terms  # eqt imports this module

        return any(t.couples_positions for t in flatten_terms(self.energy))

    def chain_fixed_point(self) -> Chain | None:
        """The `Chain` term when the objective is that chain's fixed point (the chain alone,
        weight 1, ``gamma = inf``) and the solver solves chains or fixed points; else None."""
        energy = self.energy
        if isinstance(energy, SumEnergy) and len(energy.terms) == 1 and energy.weights == [1.0]:
            energy = energy.terms[0]
        solves = self.solver.solves
        if isinstance(energy, Chain) and math.isinf(self.gamma) and (
            "chain" in solves or "fixed_point" in solves
        ):
            return energy
        if "chain" in solves:
            raise ValueError(
                f"solver {self.solver.name!r} solves causal chains: it needs energy='chain' "
                f"alone and gamma=inf, got energy={energy.spec()!r}, gamma={self.gamma:g}"
            )
        return None

    def forward(
        self,
        z0: Tensor,
        context: Context,
        *,
        stop: str | StopRule | None = None,
        readout: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Solution]:
        """Refine the proposal.

        Args:
            z0: ``[B, T, d]`` proposal.
            context: ``tokens [B, T]``, optionally ``mask [B, T]``; ``z0`` is added.
            stop: overrides the train/eval rule for this call (``"steps=0"``: no refinement).
            readout: ``z -> logits`` for rules that read predictions (``stable``, ``adaptive``).

        Returns:
            ``z [B, T, d]`` (refined, then LayerNorm if enabled) and the `Solution`
            (``solution.z [B, T, d]`` is the refined state before the LayerNorm; its
            ``status``, ``steps``, ``fevals`` are per position, ``[B, T]``, and its trace
            ``[K+1, B, T]``, or per sequence, ``[B]`` and ``[K+1, B]``, see `per_sequence`).
        """
        if stop is None:
            rule = self.stop_train if self.training else self.stop_eval
        else:
            rule = stopping.resolve(stop)
        chain = self.chain_fixed_point()
        if chain is not None:
            # the K = 0 control returns the proposal; every other solve starts at the centre
            start = z0 if rule.budget() == 0 else None
            solution = solve_chain(
                chain.cell, z0, chain.s0.to(z0.dtype), z0=start, solver=self.solver, stop=rule,
                backward=self.backward, readout=readout,
            )
        else:
            solution = self._minimize(z0, context, rule, readout)
        return (solution.z if self.norm is None else self.norm(solution.z)), solution

    def _minimize(
        self,
        z0: Tensor,
        context: Context,
        rule: StopRule,
        readout: Callable[[Tensor], Tensor] | None,
    ) -> Solution:
        """Minimise ``Phi`` from ``z0 [B, T, d]``, per sequence or per position
        (`eqtheory.problem.PerPositionProblem`, results ``[B, T]``)."""
        # what the energy reads that does not change with z: computed once, not once per step
        prepared = self.objective.prepare(z0, {**context, "z0": z0})
        if self.per_sequence:
            return minimize(
                self.objective, z0, context=prepared, solver=self.solver, stop=rule,
                backward=self.backward, readout=readout,
            )
        batch, length, width = z0.shape
        solution = solve(
            PerPositionProblem(self.objective, prepared, length),
            z0.reshape(batch * length, width), solver=self.solver, stop=rule,
            backward=self.backward, readout=readout,
        )
        return solution.unflatten(batch, length)
