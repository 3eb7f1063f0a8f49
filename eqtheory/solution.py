"""The result of a solve: latents, per-sample statuses, step and evaluation counts, trace."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from eqtheory.status import Status


@dataclass
class Solution:
    """What `minimize` and `fixed_point` return (per sample ``B``; a per-position solve,
    `eqtheory.problem.PerPositionProblem`, gives ``[B, T]`` where this says ``[B]``).

    Attributes:
        z: ``[B, *S]`` refined latents (the last finite iterate of each sample).
        status: ``[B]`` int64, values of `Status`.
        steps: ``[B]`` int64, steps each sample took before it stopped.
        fevals: ``[B]`` int64, problem evaluations (energy+gradient or map calls) spent on each
            sample while it was active.
        batch_fevals: evaluations computed over the working batch, frozen samples included
            (what the hardware actually spent): ``loop iterations x B`` plus line-search trials,
            or fewer when the loop compacted the batch (`fixed_point` with ``args``).
        trace: ``{name: [K+1, B]}`` per-step records (row 0 is the start): ``energy``,
            ``grad_norm`` (``||G(z)||``), ``residual`` (``||z_k - z_{k-1}||``, NaN in row 0),
            ``active``, and per-term energies when asked for.
    """

    z: Tensor
    status: Tensor
    steps: Tensor
    fevals: Tensor
    batch_fevals: int
    trace: dict[str, Tensor] = field(default_factory=dict)

    def unflatten(self, *shape: int) -> Solution:
        """This solution with its sample axis ``N = prod(shape)`` viewed as ``shape`` (e.g. a
        per-position solve's ``B * T`` as ``[B, T]``): ``z [*shape, *S]``, ``status``,
        ``steps``, ``fevals`` ``[*shape]``, trace ``[K+1, *shape]``."""
        return replace(
            self, z=self.z.unflatten(0, shape), status=self.status.unflatten(0, shape),
            steps=self.steps.unflatten(0, shape), fevals=self.fevals.unflatten(0, shape),
            trace={name: value.unflatten(1, shape) for name, value in self.trace.items()},
        )

    @property
    def converged(self) -> Tensor:
        """``[B]`` bool: samples that met a tolerance (or halted)."""
        return (self.status == Status.CONVERGED) | (self.status == Status.HALTED)

    def messages(self) -> list[str]:
        """One human-readable message per sample (in row-major order)."""
        return [
            f"{Status(int(s)).name.lower()} after {int(k)} steps: {Status(int(s)).message}"
            for s, k in zip(self.status.flatten().tolist(), self.steps.flatten().tolist())
        ]

    def counts(self) -> dict[str, int]:
        """How many samples ended with each status, e.g. ``{"converged": 7, "max_steps": 1}``."""
        values, counts = torch.unique(self.status, return_counts=True)
        return {Status(int(v)).name.lower(): int(c) for v, c in zip(values, counts)}

    def table(self, every: int = 1) -> str:
        """A plain-text convergence table: per step, the batch mean of each trace record."""
        names = [n for n in ("energy", "grad_norm", "residual") if n in self.trace]
        rows = [f"{'step':>5} {'active':>7} " + " ".join(f"{n:>12}" for n in names)]
        n_rows = self.trace["active"].shape[0]
        for k in range(0, n_rows, every):
            active = int(self.trace["active"][k].sum())
            cols = [_nanmean(self.trace[n][k]) for n in names]
            rows.append(f"{k:>5} {active:>7} " + " ".join(f"{c:>12.4e}" for c in cols))
        return "\n".join(rows)


def _nanmean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")
