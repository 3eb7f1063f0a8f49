r"""Gradient descent in latent space (the paper's Eq. 8 solver).

.. math::
    v_{k+1} = \mu v_k - \alpha \nabla E(z_k), \qquad
    z_{k+1} = z_k + v_{k+1} \; [+\, \mu v_{k+1} - \alpha \nabla E(z_k) \text{ if Nesterov}]
    \; + \sqrt{2 \alpha T}\, \xi_k

with ``mu = 0`` plain GD, ``T = 0`` no Langevin noise. ``line_search="armijo"`` instead
backtracks per sample, ``t <- shrink * t`` from ``t = alpha`` until
``E(z - t g) <= E(z) - c t ||g||^2``. ``learn_step=True`` makes ``log alpha`` an
``nn.Parameter`` (the paper's "learned schedule", one scalar).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from eqtheory.checks import choice, flag, number
from eqtheory.problem import Problem, row_view
from eqtheory.solvers.base import Solver, State, bdot, flat, observe
from eqtheory.solvers.registry import SOLVERS


@SOLVERS.register("gd")
class GradientDescent(Solver):
    """Gradient descent on an energy.

    Args:
        step_size: ``alpha > 0`` (paper: 0.1).
        learn_step: learn ``alpha`` as ``exp(nn.Parameter)``.
        line_search: ``"none"`` or ``"armijo"`` (backtracking; no momentum or noise with it).
        armijo_c, shrink, max_backtracks: the Armijo constant, the factor and the trial cap.
        momentum: ``mu`` in ``[0, 1)``; ``nesterov`` uses the look-ahead form.
        noise: Langevin temperature ``T >= 0``; ``seed`` seeds its generator.
    """

    name = "gd"
    solves = frozenset({"minimize"})

    def __init__(
        self,
        step_size: float = 0.1,
        learn_step: bool = False,
        line_search: Literal["none", "armijo"] = "none",
        armijo_c: float = 1e-4,
        shrink: float = 0.5,
        max_backtracks: int = 30,
        momentum: float = 0.0,
        nesterov: bool = False,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        owner = "gd"
        step_size = number(step_size, "step_size", owner=owner, above=0)
        learn_step = flag(learn_step, "learn_step", owner=owner)
        nesterov = flag(nesterov, "nesterov", owner=owner)
        line_search = choice(line_search, "line_search", owner=owner, valid=("none", "armijo"))
        armijo_c = number(armijo_c, "armijo_c", owner=owner, above=0, below=1)
        shrink = number(shrink, "shrink", owner=owner, above=0, below=1)
        max_backtracks = number(max_backtracks, "max_backtracks", owner=owner, at_least=1,
                                whole=True)
        momentum = number(momentum, "momentum", owner=owner, at_least=0, below=1)
        noise = number(noise, "noise", owner=owner, at_least=0)
        seed = number(seed, "seed", owner=owner, whole=True)
        if line_search == "armijo" and (momentum or noise):
            raise ValueError("line_search='armijo' cannot be combined with momentum or noise")
        log_step = torch.tensor(math.log(step_size))
        if learn_step:
            self.log_step = nn.Parameter(log_step)
        else:
            # float64 so that float64 solves take exactly the step asked for
            self.register_buffer("log_step", torch.tensor(math.log(step_size), dtype=torch.float64))
        self.line_search, self.armijo_c, self.shrink = line_search, armijo_c, shrink
        self.max_backtracks = int(max_backtracks)
        self.momentum, self.nesterov, self.noise, self.seed = momentum, nesterov, noise, seed

    @property
    def deterministic(self) -> bool:
        return self.noise == 0

    @property
    def step_size(self) -> Tensor:
        return self.log_step.exp()

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        state = observe(problem, z0)
        if self.momentum:
            state["velocity"] = torch.zeros_like(z0)
        if self.noise:
            state["generator"] = torch.Generator(device=z0.device).manual_seed(self.seed)
        return state, 1

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        if self.line_search == "armijo":
            return self._armijo_step(problem, state)
        z, grad = state["z"], state["G"]
        alpha = self.step_size.to(z.dtype)
        update = -alpha * grad
        new: State = {}
        if self.momentum:
            velocity = self.momentum * state["velocity"] + update
            update = self.momentum * velocity + update if self.nesterov else velocity
            new["velocity"] = velocity
        if self.noise:
            xi = torch.randn(z.shape, generator=state["generator"], dtype=z.dtype, device=z.device)
            update = update + torch.sqrt(2 * alpha * self.noise) * xi
            new["generator"] = state["generator"]
        return {**observe(problem, z + update), **new}, 1

    def _armijo_step(self, problem: Problem, state: State) -> tuple[State, Tensor]:
        """Backtracking from the last accepted step (``alpha`` at first), so ``t`` never grows;
        energies are compared with a rounding allowance ``8 eps (|E| + 1)`` so the search still
        moves once energy differences fall below float resolution near the optimum."""
        z, grad, energy = state["z"], state["G"], state["energy"]
        batch = z.shape[0]
        alpha = self.step_size.to(z.dtype)
        t = state["t"] if "t" in state else alpha.expand(batch).clone()
        grad_sq = bdot(flat(grad), flat(grad))
        allowance = 8 * torch.finfo(z.dtype).eps * (energy.abs() + 1)
        accepted = torch.zeros(batch, dtype=torch.bool, device=z.device)
        trials = torch.zeros(batch, dtype=torch.int64, device=z.device)
        for _ in range(self.max_backtracks):
            candidate = z - row_view(t, z) * grad
            decrease = self.armijo_c * t * grad_sq
            sufficient = problem.value(candidate) <= energy - decrease + allowance
            trials = trials + (~accepted).long()
            accepted = accepted | sufficient
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t * self.shrink)
        new = observe(problem, z - row_view(t, z) * grad)
        new["t"] = t
        return new, trials + 1
