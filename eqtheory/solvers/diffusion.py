r"""Diffusion-style annealed Langevin denoising towards the MAP.

Start from a noised proposal ``z_0' = z_0 + sigma_0 xi`` and iterate

.. math:: z_{k+1} = z_k - \alpha \nabla E(z_k) + \sqrt{2 \alpha}\, \sigma_k\, \xi_k

i.e. Langevin dynamics at temperature ``sigma_k^2`` on ``exp(-E)``. The noise level follows a
schedule from ``sigma_max`` to ``sigma_min`` over ``anneal_steps`` steps (``s = min(k / K, 1)``):
linear ``sigma_max (1 - s) + sigma_min s``; cosine
``sigma_min + (sigma_max - sigma_min)(1 + cos(pi s)) / 2``; geometric
``sigma_max r^s`` with ``r = max(sigma_min, 1e-3 sigma_max) / sigma_max`` (then ``sigma_min``);
constant ``sigma_max`` (a sampler at temperature ``sigma_max^2``). With ``sigma_min = 0`` the
iteration becomes gradient descent after ``K`` steps and converges to the MAP ``argmin E``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from eqtheory.checks import flag, number
from eqtheory.problem import Problem, row_view
from eqtheory.solvers.base import Solver, State, observe
from eqtheory.solvers.registry import SOLVERS

Schedule = Literal["linear", "cosine", "geometric", "constant"]
SCHEDULES = ("linear", "cosine", "geometric", "constant")


def noise_level(
    k: Tensor, *, schedule: Schedule, sigma_max: float, sigma_min: float, anneal_steps: int
) -> Tensor:
    """``sigma_k`` for step indices ``k: [B]`` (see the module docstring)."""
    if schedule == "constant":
        return torch.full_like(k, sigma_max, dtype=torch.get_default_dtype())
    s = (k.to(torch.get_default_dtype()) / max(anneal_steps, 1)).clamp(max=1.0)
    if schedule == "linear":
        sigma = sigma_max * (1 - s) + sigma_min * s
    elif schedule == "cosine":
        sigma = sigma_min + (sigma_max - sigma_min) * 0.5 * (1 + torch.cos(math.pi * s))
    else:
        ratio = max(sigma_min, 1e-3 * sigma_max) / sigma_max if sigma_max > 0 else 1.0
        sigma = torch.where(s < 1, sigma_max * ratio**s, torch.full_like(s, sigma_min))
    return sigma


@SOLVERS.register("diffusion")
class Diffusion(Solver):
    """Annealed Langevin denoising.

    Args:
        step_size: ``alpha > 0``.
        sigma_max, sigma_min: noise levels at the start and end of the schedule.
        anneal_steps: ``K``, steps over which the noise is annealed.
        schedule: ``linear``, ``cosine``, ``geometric`` or ``constant``.
        noise_start: add ``sigma_max`` noise to ``z0`` at the start of the first step (so a
            solve stopped at step 0 returns ``z0`` itself; the first step costs 2 evaluations).
        seed: seed of the noise generator.
    """

    name = "diffusion"
    solves = frozenset({"minimize"})

    def __init__(
        self,
        step_size: float = 0.1,
        sigma_max: float = 0.5,
        sigma_min: float = 0.0,
        anneal_steps: int = 50,
        schedule: Schedule = "cosine",
        noise_start: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        owner = "diffusion"
        self.step_size = number(step_size, "step_size", owner=owner, above=0)
        self.sigma_max = number(sigma_max, "sigma_max", owner=owner, at_least=0)
        self.sigma_min = number(sigma_min, "sigma_min", owner=owner, at_least=0)
        self.anneal_steps = number(anneal_steps, "anneal_steps", owner=owner, at_least=0,
                                   whole=True)
        self.schedule = schedule
        self.noise_start = flag(noise_start, "noise_start", owner=owner)
        self.seed = number(seed, "seed", owner=owner, whole=True)

    @property
    def deterministic(self) -> bool:
        return self.sigma_max == 0

    def init(self, problem: Problem, z0: Tensor) -> tuple[State, int]:
        generator = torch.Generator(device=z0.device).manual_seed(self.seed)
        state = observe(problem, z0)
        state["k"] = torch.zeros(z0.shape[0], dtype=torch.int64, device=z0.device)
        state["generator"] = generator
        return state, 1

    def step(self, problem: Problem, state: State) -> tuple[State, Tensor | int]:
        z, k, grad, evals = state["z"], state["k"], state["G"], 1
        if self.noise_start and self.sigma_max > 0 and "noised" not in state:
            # the start noise enters with the first step, so K = 0 returns z0 exactly
            start = observe(problem, z + self.sigma_max * _normal(z, state["generator"]))
            z, grad, evals = start["z"], start["G"], 2
        sigma = noise_level(
            k, schedule=self.schedule, sigma_max=self.sigma_max, sigma_min=self.sigma_min,
            anneal_steps=self.anneal_steps,
        ).to(z.dtype)
        noise = _normal(z, state["generator"]) * row_view(sigma, z)
        z_new = z - self.step_size * grad + math.sqrt(2 * self.step_size) * noise
        new = observe(problem, z_new)
        new["k"], new["generator"], new["noised"] = k + 1, state["generator"], True
        return new, evals


def _normal(like: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
