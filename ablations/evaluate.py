"""Evaluate a trained model on the test set under each stopping rule: the run's ``evals`` metrics.

Per rule (key: the rule's spec string as given in ``config.eval_stops``; baselines and
aux-only models are evaluated once, under ``"steps=0"``)::

    {"acc": per-token accuracy over the task's scored positions (parity_final: the final bit),
     "acc_final": accuracy at the final position,
     "acc_by_position": {"q1".."q4": accuracy over the scored positions of each quarter of
                         0..T-1 (None where a quarter has no scored position)},
     "acc_by_difficulty": {"hard", "medium", "easy": accuracy over thirds of the scored tokens
                           ranked by the SAME model's K = 0 confidence max_v p(v) (ties broken
                           by a seeded permutation), so gains by difficulty are paired},
     "steps_mean", "steps_hist" {"k": count}, "status_counts" {"converged": count, ...}:
         over (position, ERM) pairs: the ERM solves each position separately (empty for
         models that do not refine),
     "fevals_per_token": energy evaluations per token, summed over ERMs (`Solution.fevals`),
     "flops_per_token": `ablations.flops.flops_per_token` with those evaluations,
     "trace": {"residual": K values, batch mean of ||z_k - z_{k-1}|| over active sequences for
               k = 1..K; "energy": K + 1 values, mean objective Phi = L + prior per token for
               k = 0..K}}
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ablations import tasks
from ablations.config import RunConfig
from ablations.flops import flops_per_token
from eqtheory import stopping
from eqtheory.model import EqT
from eqtheory.status import Status

K0 = "steps=0"


@dataclass
class Pass:
    """One pass over the test set, on the CPU.

    Attributes:
        correct, confidence: ``[N, T]`` prediction correct; max softmax probability.
        steps, status, fevals: ``[R, N]`` per ERM (R = 0 when the model does not refine).
        residual, energy: per solver step, ``[sum, count]`` accumulated over batches and ERMs.
    """

    correct: Tensor
    confidence: Tensor
    steps: Tensor
    status: Tensor
    fevals: Tensor
    residual: list[list[float]] = field(default_factory=list)
    energy: list[list[float]] = field(default_factory=list)


def _accumulate(rows: list[list[float]], trace: Tensor) -> None:
    """Add a ``[K+1, B]`` trace's finite values to per-step ``[sum, count]``."""
    finite = torch.isfinite(trace)
    sums = torch.where(finite, trace, 0).sum(dim=1).tolist()
    counts = finite.sum(dim=1).tolist()
    for k, (total, count) in enumerate(zip(sums, counts)):
        if k == len(rows):
            rows.append([0.0, 0])
        rows[k][0] += total
        rows[k][1] += count


@torch.no_grad()
def run_pass(
    model: EqT, test: tasks.Batch, config: RunConfig, *, stop: str, device: torch.device,
    autocast: AbstractContextManager,
) -> Pass:
    """Predict the test set in batches of ``config.eval_batch_size`` under rule ``stop``."""
    correct, confidence, steps, status, fevals = [], [], [], [], []
    residual: list[list[float]] = []
    energy: list[list[float]] = []
    for start in range(0, test.inputs.shape[0], config.eval_batch_size):
        inputs = test.inputs[start : start + config.eval_batch_size].to(device)  # (b, T)
        targets = test.targets[start : start + config.eval_batch_size].to(device)
        with autocast:
            out = model(inputs, stop=stop, with_energy=False)
        probs = torch.softmax(out.logits.float(), dim=-1)  # (b, T, V)
        top, prediction = probs.max(dim=-1)  # (b, T) each
        correct.append((prediction == targets).cpu())
        confidence.append(top.cpu())
        if out.solutions:
            steps.append(torch.stack([s.steps for s in out.solutions]).cpu())  # (R, b)
            status.append(torch.stack([s.status for s in out.solutions]).cpu())
            fevals.append(torch.stack([s.fevals for s in out.solutions]).cpu())
            for solution in out.solutions:
                _accumulate(residual, solution.trace["residual"].float().cpu())
                _accumulate(energy, solution.trace["energy"].float().cpu())
    empty = torch.zeros(0, test.inputs.shape[0], dtype=torch.int64)
    return Pass(
        correct=torch.cat(correct), confidence=torch.cat(confidence),
        steps=torch.cat(steps, dim=1) if steps else empty,
        status=torch.cat(status, dim=1) if status else empty,
        fevals=torch.cat(fevals, dim=1) if fevals else empty,
        residual=residual, energy=energy,
    )


def _mean(values: Tensor) -> float | None:
    return float(values.float().mean()) if values.numel() else None


def difficulty_thirds(confidence: Tensor, seed: int) -> dict[str, Tensor]:
    """Split flat token indices into thirds by ``confidence [n]`` (low = hard); ties are broken
    by a permutation seeded from ``seed``."""
    shuffle = torch.randperm(confidence.numel(), generator=tasks.generator(seed, "difficulty"))
    order = shuffle[torch.argsort(confidence[shuffle], stable=True)]
    hard, medium, easy = torch.tensor_split(order, 3)
    return {"hard": hard, "medium": medium, "easy": easy}


def summarize(
    result: Pass, model: EqT, task: tasks.Task, thirds: dict[str, Tensor]
) -> dict[str, Any]:
    """The metrics of one pass (schema in the module docstring)."""
    length = result.correct.shape[1]
    scored = task.scored(length)  # (T,)
    correct_scored = result.correct[:, scored].reshape(-1)  # (N * S,)
    quarters = torch.tensor_split(torch.arange(length), 4)
    by_position = {
        f"q{i + 1}": _mean(result.correct[:, positions[scored[positions]]])
        for i, positions in enumerate(quarters)
    }
    steps = result.steps.reshape(-1)
    values, counts = torch.unique(steps, return_counts=True)
    codes, code_counts = torch.unique(result.status.reshape(-1), return_counts=True)
    fevals = float(result.fevals.sum(dim=0).float().mean()) if result.fevals.numel() else 0.0
    return {
        "acc": _mean(correct_scored),
        "acc_final": _mean(result.correct[:, -1]),
        "acc_by_position": by_position,
        "acc_by_difficulty": {name: _mean(correct_scored[index]) for name, index in thirds.items()},
        "steps_mean": float(steps.float().mean()) if steps.numel() else 0.0,
        "steps_hist": {str(int(v)): int(c) for v, c in zip(values, counts)},
        "status_counts": {
            Status(int(v)).name.lower(): int(c) for v, c in zip(codes, code_counts)
        },
        "fevals_per_token": fevals,
        "flops_per_token": float(flops_per_token(model, length, fevals)),
        "trace": {
            "residual": [total / count if count else None for total, count in result.residual[1:]],
            "energy": [total / count / length if count else None for total, count in result.energy],
        },
    }


def evaluate_all(
    model: EqT, test: tasks.Batch, task: tasks.Task, config: RunConfig, *,
    device: torch.device, autocast: AbstractContextManager,
) -> dict[str, dict[str, Any]]:
    """Evaluate under every rule of ``config.eval_stops`` (models that refine) or once under
    ``steps=0``; difficulty thirds come from the ``steps=0`` pass of the same model."""
    model.eval()
    keys = list(config.eval_stops) if model.refines else [K0]
    reference = run_pass(model, test, config, stop=K0, device=device, autocast=autocast)
    length = reference.correct.shape[1]
    thirds = difficulty_thirds(
        reference.confidence[:, task.scored(length)].reshape(-1), config.seed
    )
    evals = {}
    for key in keys:
        same = stopping.parse(key).spec() == K0
        result = reference if same else run_pass(
            model, test, config, stop=key, device=device, autocast=autocast
        )
        evals[key] = summarize(result, model, task, thirds)
    return evals
