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
               k = 0..K},
     "diagnostics": models that refine only (EqT, not baselines or aux-only); see below}

``diagnostics`` (`eqtheory.diagnostics`), per rule, against the ``steps=0`` pass of the same
weights. Displacement and flips use the whole test set; the energy's per-token values and the
gradient norms use its first ``diagnostic_size`` sequences (default 256, ``diagnostic_sequences``
says how many), to keep the cost to a few energy evaluations per sequence::

    {"displacement": {"mean", "q50", "q90", "q99", "max"}: ||z* - z0|| / ||z0|| per position,
                     over (ERM, sequence, position), z0 each ERM's own proposal in this pass,
     "displacement_by_erm": [mean per ERM],
     "flips": `flip_rates` of the scored tokens, K = 0 -> this rule: {"wrong_to_right",
              "right_to_wrong" (fractions of all scored tokens), "fixed" (of the wrong ones),
              "broken" (of the right ones), "changed", "n"},
     "grad_norm": {"z0": {term: mean}, "z_star": {term: mean}}: ||grad_{z_t} w_i E_i|| per leaf
                  term of each ERM's objective L + anchor (labels as `leaf_terms`; "total": the
                  whole objective's gradient), mean over positions and ERMs, at the proposal and
                  at the refined state,
     "energy_auroc": AUROC of the per-token learned energy L (no prior; causal increments,
                     `per_token_energy`, summed over ERMs) at z* for predicting a wrong scored
                     token (0.5: no signal; None: one class empty),
     "confidence_auroc": the same for 1 - max_v p(v) (the model's own confidence: a reference),
     "energy_mean": {"right", "wrong"}: mean per-token energy of right and wrong tokens,
     "energy_tokens": tokens in the AUROC, "energy_nonfinite": tokens dropped as non-finite,
     "diagnostic_sequences": n,
     "acc_by_k": {"0": acc, "1": ..., "2", "4", ..., cap}: accuracy under ``steps=k`` for
                 k = 0, 1, 2, 4, ..., cap, cap the largest ``steps=N`` in the run's rules
                 (passes of the run's own rules are reused; a property of the run, repeated in
                 every rule's block)}
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ablations import tasks
from ablations.config import RunConfig
from ablations.flops import flops_per_token
from eqtheory import stopping
from eqtheory.diagnostics import (
    auroc,
    flip_rates,
    k_grid,
    per_token_energy,
    relative_displacement,
    term_grad_norms,
)
from eqtheory.model import EqT
from eqtheory.model.eqt import ModelOutput
from eqtheory.solution import Solution
from eqtheory.status import Status

K0 = "steps=0"
DIAGNOSTIC_SIZE = 256  # sequences for the per-token energy and the per-term gradient norms


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or as it is when its precision is higher (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class Diagnosis:
    """What one pass collects for the ``diagnostics`` block, on the CPU.

    Attributes:
        displacement: per batch, ``[R, b, T]`` relative displacement per ERM, sequence and
            position (concatenated: ``[R, N, T]``).
        energy: per batch, ``[b', T]`` per-token learned energy (summed over ERMs) of the
            batch's sequences among the first ``n`` (concatenated: ``[n, T]``).
        grad_norm: ``{"z0" | "z_star": {term: [sum, count]}}`` per-position gradient norms.
    """

    displacement: list[Tensor] = field(default_factory=list)
    energy: list[Tensor] = field(default_factory=list)
    grad_norm: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {"z0": {}, "z_star": {}}
    )

    def add(self, model: EqT, out: ModelOutput, inputs: Tensor, sequences: int) -> None:
        """Add one batch: displacement of every sequence; energy and gradient norms of its
        first ``sequences`` (at least float32, outside autocast)."""
        pairs = [(at_least_float32(z), at_least_float32(z0))
                 for z, z0 in zip(out.latents, out.proposals)]
        self.displacement.append(
            torch.stack([relative_displacement(z, z0) for z, z0 in pairs]).cpu()  # (R, b, T)
        )
        if sequences <= 0:
            return
        per_erm = []
        for erm, (z, z0) in zip(model.erms, pairs):
            z, z0 = z[:sequences], z0[:sequences]  # (n, T, d)
            context = {"tokens": inputs[:sequences], "z0": z0}
            per_erm.append(per_token_energy(erm.energy, z, context))  # (n, T)
            for where, point in (("z0", z0), ("z_star", z)):
                rows = self.grad_norm[where]
                for label, norms in term_grad_norms(erm.objective, point, context).items():
                    total = rows.setdefault(label, [0.0, 0])
                    total[0] += float(norms.sum())
                    total[1] += norms.numel()
        self.energy.append(torch.stack(per_erm).sum(dim=0).cpu())  # (n, T)


@dataclass
class Pass:
    """One pass over the test set, on the CPU.

    Attributes:
        correct, confidence: ``[N, T]`` prediction correct; max softmax probability.
        steps, status, fevals: ``[R, N]`` per ERM (R = 0 when the model does not refine).
        residual, energy: per solver step, ``[sum, count]`` accumulated over batches and ERMs.
        diagnosis: what the ``diagnostics`` block reads (None unless asked for).
    """

    correct: Tensor
    confidence: Tensor
    steps: Tensor
    status: Tensor
    fevals: Tensor
    residual: list[list[float]] = field(default_factory=list)
    energy: list[list[float]] = field(default_factory=list)
    diagnosis: Diagnosis | None = None


def _accumulate(rows: list[list[float]], trace: Tensor) -> None:
    """Add a ``[K+1, B]`` (per position: ``[K+1, B, T]``) trace's finite values to per-step
    ``[sum, count]``."""
    trace = trace.flatten(1)
    finite = torch.isfinite(trace)
    sums = torch.where(finite, trace, 0).sum(dim=1).tolist()
    counts = finite.sum(dim=1).tolist()
    for k, (total, count) in enumerate(zip(sums, counts)):
        if k == len(rows):
            rows.append([0.0, 0])
        rows[k][0] += total
        rows[k][1] += count


def split_output(out: ModelOutput, members: int) -> list[ModelOutput]:
    """A stacked model's output on a member-major batch (`eqtheory.model.ensemble`) -> each
    member's own: every per-sample tensor cut into ``members`` equal row blocks (traces
    ``[K+1, N]`` along their sample axis); ``members == 1``: ``[out]``."""
    if members == 1:
        return [out]
    solutions: list[list[Solution]] = [[] for _ in range(members)]
    for solution in out.solutions:
        parts = [t.chunk(members) for t in (solution.z, solution.status, solution.steps,
                                            solution.fevals)]
        traces = {key: value.chunk(members, dim=1) for key, value in solution.trace.items()}
        for index in range(members):
            z, status, steps, fevals = (part[index] for part in parts)
            solutions[index].append(Solution(
                z=z, status=status, steps=steps, fevals=fevals,
                batch_fevals=solution.batch_fevals,
                trace={key: value[index] for key, value in traces.items()},
            ))
    logits = out.logits.chunk(members)
    energy = None if out.energy is None else out.energy.chunk(members)
    latents = [z.chunk(members) for z in out.latents]
    proposals = [z.chunk(members) for z in out.proposals]
    return [ModelOutput(
        logits=logits[index], energy=None if energy is None else energy[index],
        latents=[z[index] for z in latents], solutions=solutions[index],
        proposals=[z[index] for z in proposals],
    ) for index in range(members)]


@torch.no_grad()
def run_passes(
    model: EqT, tests: list[tasks.Batch], config: RunConfig, *, stop: str,
    device: torch.device, autocast: AbstractContextManager, diagnose: int | None = None,
    members: list[EqT] | None = None,
) -> list[Pass]:
    """Predict each member's test set in batches of ``config.eval_batch_size`` under rule
    ``stop``, all members in one forward pass of ``model`` (stacked members, batches
    concatenated member-major; one member: ``model`` itself); with ``diagnose`` (a number of
    sequences) and a model that refines, also collect each member's `Diagnosis` with its own
    model (``members``, weights equal to its slice of ``model``; default ``[model]``).
    The test sets must have one size. Returns one `Pass` per member."""
    members = members or [model]
    count = len(tests)
    correct, confidence, steps, status, fevals = ([[] for _ in range(count)] for _ in range(5))
    diagnoses = [Diagnosis() if diagnose is not None and model.refines else None
                 for _ in range(count)]
    residual: list[list[list[float]]] = [[] for _ in range(count)]
    energy: list[list[list[float]]] = [[] for _ in range(count)]
    size = tests[0].inputs.shape[0]
    for start in range(0, size, config.eval_batch_size):
        rows = slice(start, start + config.eval_batch_size)
        inputs = torch.cat([test.inputs[rows] for test in tests]).to(device)  # (M*b, T)
        targets = torch.cat([test.targets[rows] for test in tests]).to(device)
        with autocast:
            joint = model(inputs, stop=stop, with_energy=False)
        for n, (out, x, y) in enumerate(zip(
            split_output(joint, count), inputs.chunk(count), targets.chunk(count)
        )):
            probs = torch.softmax(at_least_float32(out.logits), dim=-1)  # (b, T, V)
            top, prediction = probs.max(dim=-1)  # (b, T) each
            correct[n].append((prediction == y).cpu())
            confidence[n].append(top.cpu())
            if out.solutions:
                steps[n].append(torch.stack([s.steps for s in out.solutions]).cpu())  # (R, b)
                status[n].append(torch.stack([s.status for s in out.solutions]).cpu())
                fevals[n].append(torch.stack([s.fevals for s in out.solutions]).cpu())
                for solution in out.solutions:
                    _accumulate(residual[n], solution.trace["residual"].float().cpu())
                    _accumulate(energy[n], solution.trace["energy"].float().cpu())
            if diagnoses[n] is not None:
                diagnoses[n].add(members[n], out, x, min(x.shape[0], diagnose - start))
    empty = torch.zeros(0, size, dtype=torch.int64)
    return [Pass(
        correct=torch.cat(correct[n]), confidence=torch.cat(confidence[n]),
        steps=torch.cat(steps[n], dim=1) if steps[n] else empty,
        status=torch.cat(status[n], dim=1) if status[n] else empty,
        fevals=torch.cat(fevals[n], dim=1) if fevals[n] else empty,
        residual=residual[n], energy=energy[n], diagnosis=diagnoses[n],
    ) for n in range(count)]


def run_pass(
    model: EqT, test: tasks.Batch, config: RunConfig, *, stop: str, device: torch.device,
    autocast: AbstractContextManager, diagnose: int | None = None,
) -> Pass:
    """One model's `run_passes` on one test set."""
    return run_passes(model, [test], config, stop=stop, device=device, autocast=autocast,
                      diagnose=diagnose)[0]


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


def _quantiles(values: Tensor) -> dict[str, float | None]:
    if not values.numel():
        return {"mean": None, "q50": None, "q90": None, "q99": None, "max": None}
    values = values.double()
    q50, q90, q99 = torch.quantile(values, torch.tensor([0.5, 0.9, 0.99], dtype=values.dtype))
    return {"mean": float(values.mean()), "q50": float(q50), "q90": float(q90),
            "q99": float(q99), "max": float(values.max())}


def summarize_diagnostics(
    result: Pass, reference: Pass, scored: Tensor, acc_by_k: dict[str, float | None]
) -> dict[str, Any]:
    """The ``diagnostics`` block of one pass against the ``steps=0`` pass (schema in the module
    docstring); ``scored: [T]`` bool, the task's scored positions."""
    diagnosis = result.diagnosis
    if diagnosis is None:
        raise ValueError("summarize_diagnostics needs a pass run with diagnose=")
    displacement = torch.cat(diagnosis.displacement, dim=1)  # (R, N, T)
    energy = torch.cat(diagnosis.energy)[:, scored]  # (n, S)
    sequences = energy.shape[0]
    wrong = ~result.correct[:sequences, scored]  # (n, S)
    finite = torch.isfinite(energy)
    right_energy, wrong_energy = energy[finite & ~wrong], energy[finite & wrong]
    return {
        "displacement": _quantiles(displacement.reshape(-1)),
        "displacement_by_erm": [float(d.double().mean()) for d in displacement],
        "flips": flip_rates(reference.correct[:, scored], result.correct[:, scored]),
        "grad_norm": {
            where: {label: total / count for label, (total, count) in rows.items()}
            for where, rows in diagnosis.grad_norm.items()
        },
        "energy_auroc": auroc(energy[finite], wrong[finite]),
        "confidence_auroc": auroc(-result.confidence[:sequences, scored], wrong),
        "energy_mean": {"right": _mean(right_energy), "wrong": _mean(wrong_energy)},
        "energy_tokens": int(finite.sum()),
        "energy_nonfinite": int((~finite).sum()),
        "diagnostic_sequences": sequences,
        "acc_by_k": acc_by_k,
    }


def step_cap(rules: list[str]) -> int:
    """The largest ``steps=N`` in the rules' specs (0 when none has one)."""
    found = [int(n) for rule in rules
             for n in re.findall(r"(?<![A-Za-z_])steps=(\d+)", stopping.parse(rule).spec())]
    return max(found, default=0)


def evaluate_all(
    model: EqT, test: tasks.Batch, task: tasks.Task, config: RunConfig, *,
    device: torch.device, autocast: AbstractContextManager, diagnostics: bool = True,
    diagnostic_size: int = DIAGNOSTIC_SIZE,
) -> dict[str, dict[str, Any]]:
    """Evaluate under every rule of ``config.eval_stops`` (models that refine) or once under
    ``steps=0``; difficulty thirds come from the ``steps=0`` pass of the same model.

    Models that refine also get each rule's ``diagnostics`` block (unless ``diagnostics`` is
    False): per-token energy and gradient norms on the first ``diagnostic_size`` test
    sequences, and accuracy under ``steps=k`` for the `k_grid` up to the rules' largest step
    cap (one extra pass per budget that is not one of the rules).
    """
    return evaluate_members(
        model, [model], [test], task, [config], device=device, autocast=autocast,
        diagnostics=diagnostics, diagnostic_size=diagnostic_size,
    )[0]


def evaluate_members(
    model: EqT, members: list[EqT], tests: list[tasks.Batch], task: tasks.Task,
    configs: list[RunConfig], *, device: torch.device, autocast: AbstractContextManager,
    diagnostics: bool = True, diagnostic_size: int = DIAGNOSTIC_SIZE,
) -> list[dict[str, dict[str, Any]]]:
    """`evaluate_all` of every member of a seed ensemble at once: each pass runs the stacked
    ``model`` on the members' test sets together (`run_passes`); each member's metrics come
    from its own rows, its own model (``members[n]``, for diagnostics and FLOPs) and its own
    seed (difficulty thirds), as `evaluate_all` of that member alone would give them.

    Args:
        model: the members' stacked model (one member: its model).
        members, tests, configs: per member, its own model, test set and config (the configs
            differ only in their seed).
    """
    for each in (model, *members):
        each.eval()
    config = configs[0]
    keys = list(config.eval_stops) if model.refines else [K0]
    diagnose = diagnostic_size if diagnostics and model.refines else None

    def run(stop: str, diagnose: int | None = None) -> list[Pass]:
        return run_passes(model, tests, config, stop=stop, device=device, autocast=autocast,
                          diagnose=diagnose, members=members)

    passes = {K0: run(K0, diagnose)}  # spec -> a pass per member
    for key in keys:
        spec = stopping.parse(key).spec()
        if spec not in passes:
            passes[spec] = run(key, diagnose)
    budgets = [f"steps={k}" for k in k_grid(step_cap(keys))] if diagnose is not None else []
    extra = {budget: run(budget) for budget in budgets if budget not in passes}
    results = []
    for n, member in enumerate(members):
        reference = passes[K0][n]
        length = reference.correct.shape[1]
        scored = task.scored(length)
        thirds = difficulty_thirds(reference.confidence[:, scored].reshape(-1), configs[n].seed)
        evals = {key: summarize(passes[stopping.parse(key).spec()][n], member, task, thirds)
                 for key in keys}
        if diagnose is not None:
            acc_by_k = {
                budget.removeprefix("steps="): _mean(
                    (passes.get(budget) or extra[budget])[n].correct[:, scored].reshape(-1)
                ) for budget in budgets
            }
            for key in keys:
                evals[key]["diagnostics"] = summarize_diagnostics(
                    passes[stopping.parse(key).spec()][n], reference, scored, acc_by_k
                )
        results.append(evals)
    return results
