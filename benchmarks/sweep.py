"""Seed ensembles: one training step of N seeds as N models, as one stacked model, and as vmap.

Three ways to train ``N`` runs that differ only in their seed, timed per optimizer step of all
``N`` (forward, masked loss, backward, per-member clipping, fused AdamW) at the ``smoke`` and
``cpu`` presets' model sizes (2 layers; width 32 / 64, batch 64, length 16 / 32):

* ``sequential``: ``N`` separate models, one `ablations.train.training_step` each (what the
  runner does without ``--ensemble``);
* ``stacked``: `eqtheory.model.ensemble.stack` (batched-weight leaves, the batch member-major),
  one `training_step` (what ``--ensemble`` does);
* ``vmap``: ``torch.func.stack_module_state`` + ``functional_call`` under ``torch.vmap`` over
  the member axis (plain mean cross-entropy plus the energy, no rejected-sequence masking),
  then the same backward, clipping and AdamW. It works for step budgets only (a rule that
  decides on values reads ``.item()``, which ``vmap`` refuses); a failure is shown in the
  table instead of a time.

Columns: milliseconds per step of all ``N`` members (median over interleaved rounds, so load
from other processes falls on every contender alike), and the speed-up of each over
``sequential``. ``python -m benchmarks.sweep --grid`` times the whole ``cpu`` preset instead
(`grid`); see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from ablations.config import RunConfig
from ablations.train import clip_per_member, make_optimizer, training_step
from benchmarks.common import Report, interleaved_medians, machine, pin_threads
from eqtheory.context import MASK_RATE
from eqtheory.energies.mask import random_mask
from eqtheory.model.ensemble import stack
from eqtheory.variants import VariantSpec, build

LABELS = {
    "baseline": (VariantSpec(kind="baseline"), 2),
    "eqt": (VariantSpec(stop_train="steps=2"), 2),
    "aux-only": (VariantSpec(aux_losses_only=True), 2),
    "compute-matched": (VariantSpec(kind="baseline"), 6),
}
SIZES = {  # the presets' model sizes, at their longest (smoke) or middle (cpu) length
    "smoke": RunConfig(layers=2, width=32, heads=2, batch_size=64, length=16, lr=3e-3),
    "cpu": RunConfig(layers=2, width=64, heads=4, batch_size=64, length=32, lr=3e-3),
}
QUICK = RunConfig(layers=1, width=16, heads=2, batch_size=8, length=8)


def _models(spec: VariantSpec, layers: int, members: int, config: RunConfig) -> list[Any]:
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(build(spec, vocab=2, width=config.width, layers=layers,
                            heads=config.heads, max_len=config.length).train())
    return models


def _stepper(model: Any, members: int, config: RunConfig, spec: VariantSpec,
             data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> Callable[[], Any]:
    """One `training_step` of ``model`` (``members`` stacked ones, or one) on ``data``."""
    optimizer = make_optimizer(model, config, device=torch.device("cpu"), members=members)
    inputs, targets, mask = data
    scored = torch.ones(config.length, dtype=torch.bool)

    context = {} if mask is None else {"mask": mask}

    def step() -> Any:
        return training_step(model, optimizer, inputs, targets, context, scored=scored,
                             beta=spec.beta, grad_clip=config.grad_clip,
                             with_energy=spec.kind == "eqt")
    return step


def _vmap_stepper(models: list[Any], config: RunConfig, spec: VariantSpec,
                  data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
                  ) -> Callable[[], Any]:
    """The same step with ``stack_module_state`` + ``functional_call`` under ``vmap``."""
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    leaves = list(params.values())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in leaves if p.dim() >= 3], "weight_decay": config.weight_decay},
         {"params": [p for p in leaves if p.dim() < 3], "weight_decay": 0.0}],
        lr=config.lr, fused=True,
    )
    inputs, targets, mask = data
    masks = None if mask is None else mask.view(*inputs.shape)
    with_energy = spec.kind == "eqt"

    def member_loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor,
                    m: torch.Tensor | None) -> torch.Tensor:
        context = None if m is None else {"mask": m}
        out = torch.func.functional_call(base, (p, b), (x,), {"context": context,
                                                             "with_energy": with_energy})
        nll = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
        return nll if out.energy is None else nll + spec.beta * out.energy.mean() / x.shape[1]

    def step() -> Any:
        in_dims = (0, 0, 0, 0, None if masks is None else 0)
        losses = torch.vmap(member_loss, in_dims=in_dims)(params, buffers, inputs, targets, masks)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_per_member(leaves, config.grad_clip, len(models))
        optimizer.step()
        return losses.detach()
    return step


def compare(label: str, members: int, config: RunConfig, *, repeats: int) -> dict[str, Any]:
    """Milliseconds per step of ``members`` seeds of ``label``, three ways; speed-ups."""
    spec, layers = LABELS[label]
    layers = layers * config.layers // 2  # compute-matched: 3x the others' depth
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 2, (members, config.batch_size, config.length), generator=gen)
    targets = inputs.cumsum(dim=2) % 2
    mask = random_mask(inputs.flatten(0, 1), MASK_RATE, generator=gen) \
        if spec.kind == "eqt" else None
    models = _models(spec, layers, members, config)
    singles = [_stepper(m, 1, config, spec, (inputs[i : i + 1], targets[i : i + 1],
                                             None if mask is None else mask.view(
                                                 members, -1, config.length)[i]))
               for i, m in enumerate(_models(spec, layers, members, config))]
    contenders: dict[str, Callable[[], Any]] = {
        "sequential": lambda: [step() for step in singles],
        "stacked": _stepper(stack(models), members, config, spec, (inputs, targets, mask)),
    }
    error = None
    try:
        vmapped = _vmap_stepper(_models(spec, layers, members, config), config, spec,
                                (inputs, targets, mask))
        vmapped()
        contenders["vmap"] = vmapped
    except Exception as failure:  # noqa: BLE001  (reported in the table)
        error = f"{type(failure).__name__}: {str(failure).splitlines()[0][:90]}"
    times = interleaved_medians(contenders, repeats=repeats)
    row: dict[str, Any] = {"label": label, "members": members, "width": config.width,
                           "length": config.length}
    for name in ("sequential", "stacked", "vmap"):
        row[f"{name} ms"] = 1e3 * times[name][0] if name in times else None
    base = times["sequential"][0]
    row["stacked speed-up"] = base / times["stacked"][0]
    row["vmap speed-up"] = base / times["vmap"][0] if "vmap" in times else None
    row["vmap"] = "ok" if error is None else error
    return row


def run(*, quick: bool = False) -> Report:
    pin_threads()
    sizes = {"quick": QUICK} if quick else SIZES
    columns = ["size", "label", "members", "width", "length", "sequential ms", "stacked ms",
               "vmap ms", "stacked speed-up", "vmap speed-up", "vmap"]
    report = Report("sweep", columns)
    repeats = 2 if quick else 10
    for size, config in sizes.items():
        for label in LABELS:
            report.rows.append({"size": size, **compare(label, 3, config, repeats=repeats)})
    report.notes += [
        "one optimizer step of 3 seeds (batch 64 each; quick: 8) at the presets' model sizes "
        "(layers 2, compute-matched 6); median of "
        f"{repeats} interleaved rounds, {torch.get_num_threads()} thread(s).",
        f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.",
    ]
    return report


def _accuracy(out: Path) -> dict[str, dict[str, float]]:
    """``{series: {length: mean acc}}`` of a sweep's database (`ablations.report` rows)."""
    from ablations.store import Store

    table: dict[str, dict[str, list[float]]] = {}
    with Store(out / "results.sqlite") as store:
        for row in store.rows(status="done"):
            for rule, record in row.metrics["evals"].items():
                series = f"{row.label} {rule}"
                table.setdefault(series, {}).setdefault(str(row.length), []).append(record["acc"])
    return {series: {length: sum(v) / len(v) for length, v in by.items()}
            for series, by in table.items()}


def run_seconds(target: Path) -> dict[str, float]:
    """The seconds the done runs of the sweep in `target` report, summed: ``train``, ``eval``
    and ``total`` (an ensemble member counts its share of the ensemble's training), and
    ``runs``, how many. Each run held one core (the runner's ``--threads 1``), so ``total`` is
    the job's core-seconds of work."""
    from ablations.store import Store

    with Store(target / "results.sqlite") as store:
        done = [row.timings or {} for row in store.rows(status="done")]
    sums = {key: sum(t.get(f"{key}_s", 0.0) for t in done) for key in ("train", "eval", "total")}
    return {**sums, "runs": float(len(done))}


def packing_floor(job: dict[str, Any], processes: int) -> dict[str, Any]:
    """What `job`'s wall time (its ``grid.json`` entry, ``run_seconds`` in it) is made of: the
    floor no schedule of its runs on ``processes`` processes gets below (their core-seconds
    over ``processes``) and the wall time beyond it (process start-up, uneven ends, runs
    slowed by sharing the machine)."""
    floor = job["run_seconds"]["total"] / processes
    return {"processes": processes, "floor_s": floor,
            "wall_over_floor": job["seconds"] / floor if floor > 0 else None}


def _add_work(job: dict[str, Any], target: Path) -> None:
    """Put `run_seconds` and `packing_floor` into `job` (a ``grid.json`` entry whose runner
    ``command`` worked in `target`); the processes it ran at once are its ``--workers``."""
    words = job["command"].split()
    processes = int(words[words.index("--workers") + 1]) if "--workers" in words else 1
    job["run_seconds"] = run_seconds(target)
    job["packing"] = packing_floor(job, processes)


def summarise(out: Path) -> dict[str, Any]:
    """Add every job's `run_seconds` and `packing_floor` to ``out/grid.json`` (written by
    `grid`, its jobs' databases beside it; a grid from before `grid` wrote them) and write it
    back."""
    result = json.loads((out / "grid.json").read_text())
    for name, job in result["runs"].items():
        target = out / name.replace("@", "-at-")
        if (target / "results.sqlite").exists():  # else a job that never started: nothing
            _add_work(job, target)
    (out / "grid.json").write_text(json.dumps(result, indent=2))
    return result


GRID_JOBS = ("ensemble", "sequential", "pool")
"""The grid's jobs at this commit: ``--ensemble auto`` (with ``--workers N`` when N > 1), one run
after another, and ``--workers N`` without ensembles."""
DEFAULT_JOBS = ("ensemble", "sequential")


def grid(out: Path, *, baseline_commit: str | None, preset: str = "cpu",
         seeds: str | None = None, workers: int = 1,
         jobs_here: tuple[str, ...] = DEFAULT_JOBS) -> dict[str, Any]:
    """Time ``python -m ablations.run --preset <preset> [--seeds <seeds>]`` at this commit as
    the `GRID_JOBS` named in ``jobs_here``, and, with ``baseline_commit``, sequentially at that
    commit (extracted with ``git archive`` under ``out``), one after another in this sitting;
    write ``out/grid.json`` with the wall times, load averages and accuracy tables (after every
    job). Speed-ups are against the first job."""
    root = Path(__file__).resolve().parent.parent
    out = out.resolve()  # the baseline commit's runner works in another directory
    parallel = ["--workers", str(workers)] if workers > 1 else []
    known = {"ensemble": ["--ensemble", "auto", *parallel], "sequential": [],
             "pool": ["--workers", str(workers)]}
    jobs = [(name, root, known[name]) for name in jobs_here]
    if baseline_commit is not None:
        source = out / f"src-{baseline_commit}"
        source.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", baseline_commit], cwd=root, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        jobs.append((f"sequential@{baseline_commit}", source, []))
    result: dict[str, Any] = {"machine": machine(), "preset": preset, "seeds": seeds,
                              "runs": {}}
    for name, cwd, extra in jobs:
        target = out / name.replace("@", "-at-")
        command = [sys.executable, "-m", "ablations.run", "--preset", preset, "--out",
                   str(target), "--no-report", *extra]
        if seeds is not None:
            command += ["--seeds", seeds]
        before = os.getloadavg()
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(cwd)})
        seconds = time.perf_counter() - start
        result["runs"][name] = {
            "command": " ".join(command[1:]), "cwd": str(cwd), "seconds": seconds,
            "load_before": before, "load_after": os.getloadavg(),
            "accuracy": _accuracy(target),
        }
        _add_work(result["runs"][name], target)
        print(f"{name}: {seconds / 60:.1f} min (load {os.getloadavg()[0]:.2f})", flush=True)
        runs = result["runs"]
        first = jobs[0][0]
        for other in runs:
            runs[other][f"speed-up of {first}"] = runs[other]["seconds"] / runs[first]["seconds"]
        for other in set(runs) - {first}:
            theirs = runs[other]["accuracy"]
            gaps = [abs(a - theirs[series][length])
                    for series, by in runs[first]["accuracy"].items()
                    for length, a in by.items()
                    if length in theirs.get(series, {}) and not math.isnan(a)]
            result[f"largest accuracy gap, {first} vs {other}"] = max(gaps, default=None)
        (out / "grid.json").write_text(json.dumps(result, indent=2))  # after every job
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=None, metavar="OUT",
                        help="time the whole preset grid three ways into OUT (tens of minutes)")
    parser.add_argument("--baseline-commit", default=None,
                        help="with --grid: also time the grid sequentially at this commit")
    parser.add_argument("--preset", default="cpu", help="with --grid: the preset (default: cpu)")
    parser.add_argument("--seeds", default=None,
                        help="with --grid: the runner's --seeds (default: the preset's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --grid: the ensemble job's runner --workers (default: 1)")
    parser.add_argument("--jobs", default=",".join(DEFAULT_JOBS),
                        help="with --grid: which jobs at this commit, comma-separated, from "
                             f"{', '.join(GRID_JOBS)} (default: {','.join(DEFAULT_JOBS)}; '' "
                             "with --baseline-commit: only the baseline commit's)")
    parser.add_argument("--summarise", type=Path, default=None, metavar="OUT",
                        help="add each job's core-seconds and packing floor (core-seconds "
                             "over its processes) to OUT/grid.json of an earlier --grid")
    parser.add_argument("--quick", action="store_true", help="tiny step benchmark (seconds)")
    args = parser.parse_args(argv)
    jobs_here = tuple(name for name in args.jobs.split(",") if name)
    unknown = sorted(set(jobs_here) - set(GRID_JOBS))
    if unknown or not (jobs_here or args.baseline_commit):
        parser.error(f"--jobs takes names from {', '.join(GRID_JOBS)} (none only with "
                     f"--baseline-commit), got {args.jobs!r}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.summarise is not None:
        for name, job in summarise(args.summarise)["runs"].items():
            if "packing" not in job:
                print(f"{name}: no results database")
                continue
            packing, work = job["packing"], job["run_seconds"]
            ratio = packing["wall_over_floor"] or math.nan
            print(f"{name}: wall {job['seconds']:.0f} s; {work['runs']:.0f} runs, "
                  f"{work['total']:.0f} core-s (train {work['train']:.0f}, eval "
                  f"{work['eval']:.0f}); floor on {packing['processes']} process(es) "
                  f"{packing['floor_s']:.0f} s, wall / floor {ratio:.2f}")
        return 0
    if args.grid is None:
        print(run(quick=args.quick).markdown())
        return 0
    args.grid.mkdir(parents=True, exist_ok=True)
    grid(args.grid, baseline_commit=args.baseline_commit, preset=args.preset, seeds=args.seeds,
         workers=args.workers, jobs_here=jobs_here)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
