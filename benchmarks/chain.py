"""Chain solvers on trained chain EqT models: iterations and wall time against the length.

Two chain EqT models are trained here with the ``recurrence`` preset's configuration (seed 0),
one at L = 64 and one at L = 192, with training steps scaled with the length (the preset's
per 64 positions) (``--quick``: a few steps, tiny lengths). For each model and
each length ``L`` in 64, 256, 1,024, a batch of 8 random bit sequences goes through the
backbone, and the ERM's chain ``z = F(z)`` over those proposals is solved in float64 by every
chain solver (and Picard, and Newton's variants) from the centre of the cell's range (the
default start, `eqtheory.chain.solve_chain`; one Newton row starts from the proposal ``h``
instead) until the fixed-point residual ``||z - F(z)|| < 1e-5`` per sequence (cap: ``L + 1``
steps for the solvers whose steps cost ``O(T d^2)``, `NEWTON_CAP` for those that build ``d x d``
Jacobians; the `SAFEGUARD_STUDY` rows only up to `STUDY_MAX_LENGTH`). Reported per solver:
sequences converged, iterations (max and mean over sequences), wall time (one timed solve after
none untimed, one thread: read ratios of large differences only) and the error against the exact
recurrence.

A second table is gradient descent on the chain energy at L = 64 from the proposal: the causal
field (``gradient="causal"``, step 1: Picard) against the full gradient (``gradient="full"``,
the best of three step sizes), 2,000 steps at most: how far each gets.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

import eqtheory as eqt
from ablations import presets, tasks
from ablations.config import RunConfig
from ablations.train import CHECKPOINT, train_run
from benchmarks.common import Report, interleaved_medians, pin_threads
from eqtheory.chain.problem import ChainProblem, solve_chain
from eqtheory.variants import VariantSpec, build

SOLVERS = {
    "sequential": ("sequential", {}),
    "picard": ("picard", {}),
    "newton (scan)": ("newton", {}),
    "newton (loop)": ("newton", {"scan": "sequential"}),
    "newton, plain": ("newton", {"clip": False, "backtrack": False}),
    "newton, damped 0.5": ("newton", {"clip": False, "backtrack": False, "step_size": 0.5}),
    "newton, clip only": ("newton", {"backtrack": False}),
    "newton from the proposal": ("newton", {"scan": "sequential"}),
    "quasi_newton": ("quasi_newton", {}),
}
FROM_PROPOSAL = ("newton from the proposal",)
"""Rows that start from the proposal ``h`` (saturated states) instead of the centre."""
SAFEGUARD_STUDY = ("newton, plain", "newton, damped 0.5", "newton, clip only", *FROM_PROPOSAL)
"""Which safeguard (or start) matters: solved at L <= `STUDY_MAX_LENGTH` only (each of their
steps at L = 1,024 builds 8 x 1,024 dense Jacobians, and they may use every one of their
`NEWTON_CAP` steps)."""
STUDY_MAX_LENGTH = 256
TOL = 1e-5
NEWTON_CAP = 40
"""Step cap of the dense-Jacobian solvers (a step at L = 1,024 builds 268 MB of Jacobians)."""


def trained(length: int, *, quick: bool) -> tuple[torch.nn.Module, RunConfig]:
    """A chain EqT trained at ``length`` with the recurrence preset's settings (seed 0)."""
    preset = presets.get("recurrence")
    variant = VariantSpec(stop_train=preset.stop_train, stop_eval=preset.stops[0],
                          **preset.variant)
    steps = preset.config["train_steps"] * length // preset.lengths[0]
    config = RunConfig(variant=variant, length=length, seed=0, eval_stops=("steps=0", "steps=1"),
                       **{**preset.config, "test_size": 256, "train_steps": steps})
    if quick:
        config = dataclasses.replace(config, train_steps=3, warmup_steps=1, train_size=128)
    with tempfile.TemporaryDirectory() as workdir:
        result = train_run(config, workdir=Path(workdir))
        state = torch.load(Path(workdir) / CHECKPOINT, weights_only=True)["model"]
    model = build(variant, vocab=2, width=config.width, layers=config.layers,
                  heads=config.heads, max_len=1024)
    model.load_state_dict(state)
    model.eval().double()
    accuracy = {rule: round(100 * ev["acc"], 2) for rule, ev in result.metrics["evals"].items()}
    print(f"chain EqT trained at L={length}: test accuracy % {accuracy}", flush=True)
    return model, config


def proposals(model: torch.nn.Module, length: int, batch: int) -> torch.Tensor:
    """``h: [batch, length, d]``: the backbone's output on random bits."""
    bits = tasks.random_bits(batch, length, tasks.generator(0, "chain-bench", length))
    with torch.no_grad():
        h = model.backbone.embed_tokens(bits)
        for block in model.backbone.blocks:
            h = block(h)
    return h


def solver_rows(model, train_length: int, lengths: list[int], batch: int) -> list[dict]:
    chain = model.erms[0].energy
    rows = []
    for length in lengths:
        h = proposals(model, length, batch)
        s0 = chain.s0.detach()
        with torch.no_grad():
            exact = solve_chain(chain.cell, h, s0, solver="sequential", stop="steps=1").z

        def solve(label, h=h, s0=s0, length=length):
            name, options = SOLVERS[label]
            cap = NEWTON_CAP if name == "newton" else length + 1
            stop = f"grad<{TOL}|steps={cap}"
            z0 = h.clone() if label in FROM_PROPOSAL else None
            return lambda: solve_chain(chain.cell, h, s0, z0=z0, solver=name, stop=stop,
                                       **options)

        with torch.no_grad():
            timed = interleaved_medians(
                {label: solve(label) for label in SOLVERS
                 if length <= STUDY_MAX_LENGTH or label not in SAFEGUARD_STUDY},
                repeats=1, warmup=0,
            )
        print(f"chain: trained at {train_length}, L={length}: "
              + ", ".join(f"{label} {1000 * s:.0f} ms" for label, (s, _) in timed.items()),
              flush=True)
        for label, (seconds, sol) in timed.items():
            rows.append({
                "trained at": train_length, "L": length, "solver": label,
                "converged": f"{sol.counts().get('converged', 0)}/{batch}",
                "iterations max": int(sol.steps.max()),
                "iterations mean": float(sol.steps.double().mean()),
                "ms": 1000 * seconds,
                "max error": float((sol.z - exact).abs().max()),
            })
    return rows


def gradient_rows(model, length: int, batch: int, cap: int) -> list[dict]:
    """GD on the chain energy: causal field (step 1) vs full gradient (best of 3 steps)."""
    causal = model.erms[0].energy
    full = eqt.energies.parse("chain(gradient=full)", dim=causal.cell.dim).double()
    full.load_state_dict(causal.state_dict())
    h = proposals(model, length, batch)
    problem = ChainProblem(causal.cell, h, causal.s0.detach())
    rows = []
    for label, term, steps in (("causal", causal, (1.0,)), ("full", full, (0.1, 0.3, 1.0))):
        for step in steps:
            with torch.no_grad():
                sol = eqt.minimize(term, h.clone(), context={"z0": h}, solver="gd",
                                   step_size=step, stop=f"grad<{TOL}|steps={cap}")
                residual = (sol.z - problem.map(sol.z)).flatten(1).norm(dim=1)
            rows.append({
                "gradient": label, "step": step,
                "converged": f"{sol.counts().get('converged', 0)}/{batch}",
                "iterations max": int(sol.steps.max()),
                "fixed-point residual max": float(residual.max()),
            })
    return rows


def run(*, quick: bool = False) -> Report:
    pin_threads()
    lengths = [16, 32] if quick else [64, 256, 1024]
    train_lengths = [16] if quick else [64, 192]
    batch = 4 if quick else 8
    report = Report("chain", ["trained at", "L", "solver", "converged", "iterations max",
                              "iterations mean", "ms", "max error"])
    models = {length: trained(length, quick=quick)[0] for length in train_lengths}
    for train_length, model in models.items():
        report.rows += solver_rows(model, train_length, lengths, batch)
    gd = gradient_rows(models[train_lengths[0]], lengths[0], batch, 50 if quick else 2000)
    report.notes += [
        f"float64, batch {batch}, residual ||z - F(z)|| < {TOL} per sequence, cap L + 1 steps "
        f"({NEWTON_CAP} for newton); every solve starts at the centre of the cell's range (0) "
        f"except {', '.join(FROM_PROPOSAL)} (from h); "
        f"{', '.join(SAFEGUARD_STUDY)}: L <= {STUDY_MAX_LENGTH} only; "
        "'ms' is one timed solve on one thread; 'max error' is against "
        "the exact recurrence (one sequential sweep).",
        "Gradient descent on the chain energy at L = "
        f"{lengths[0]} (model trained at {train_lengths[0]}), from the proposal: "
        + "; ".join(f"{r['gradient']} step {r['step']}: {r['converged']} converged, "
                    f"{r['iterations max']} steps max, final fixed-point residual max "
                    f"{r['fixed-point residual max']:.2e}" for r in gd),
    ]
    newton = [r for r in report.rows if r["solver"] == "newton (scan)"]
    worst = max(r["iterations max"] for r in newton)
    report.targets[f"newton reaches {TOL} on every sequence in <= 20 iterations, any L"] = {
        "met": worst <= 20 and all(r["converged"].split("/")[0] == str(batch) for r in newton),
        "detail": f"worst {worst} iterations over L in {lengths} for models trained at "
                  f"{train_lengths}",
    }
    return report
