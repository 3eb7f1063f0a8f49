"""``python -m benchmarks.gpu_check --out DIR``: the GPU check in one command (under 8 minutes).

Sections, in this order (each writes ``DIR/gpu_check.md`` and ``DIR/gpu_check.json`` again when
it ends, so a kill leaves what was measured; their own files go under ``DIR/scratch``):

1. ``steps``: for each label (baseline, EqT, aux-only, compute-matched; the configs that
   ``python -m ablations.run --preset paper`` plans, seed 0) at T = 8, 64 and 256, paper size
   with the preset's bf16 autocast: the setup (data, model), the training step
   (`ablations.train.training_step`: the mean over ``REPEATS`` steps timed together after
   ``WARMUP`` steps, synchronised before and after) and one evaluation
   (`ablations.evaluate.evaluate_all` on the paper's 4,096 test sequences under every rule of
   the run), with peak memory.
2. ``ensembles``: the same training step for a seed ensemble of the preset's 5 seeds
   (`eqtheory.model.ensemble.stack`) as wide as ``--ensemble auto`` makes it (fewer members
   where they would not fit), per label and T.
3. ``concurrency``: `PROCESSES` processes training seed ensembles of each label and T at the
   same moment, each as wide as ``--ensemble auto --workers 4`` makes it
   (`benchmarks.concurrent_steps`): the gain of running several ensembles at once.
4. ``graphs``: each label's training step at each T captured as one CUDA graph
   (`benchmarks.graphed_step`) against the same step run eagerly: the speed-up, and the two
   copies' parameters after the same steps; in a subprocess (a failed capture can leave its
   process's CUDA state unusable).
5. ``sweep``: a 4-run sweep end to end (``python -m ablations.run --preset smoke``: baseline +
   EqT at L = 8 and 16, bf16 on CUDA), one run after another, checked in its database.
6. ``packing``: the same sweep with ``--workers 4`` (four runs at once on the one device, each
   in its own process), checked alike; its wall time against ``sweep``'s is the packing gain.
7. ``tests``: the CUDA tests (``pytest -k cuda``); on a GPU a skip for want of CUDA fails.
8. ``compile``: EqT's training step at T = 64 eager vs ``--compile`` (`ablations.compile`),
   compile time included, in a subprocess that the time guard can stop.
9. ``scan``: `benchmarks.scan` on the device (loop vs doubling scan up to long T), in a
   subprocess that the time guard can stop.

Then ``extrapolation``: the paper grid (9 lengths x 4 labels x 5 seeds, 3,200 steps) from the
measured steps, linear in T between (and beyond) the measured lengths: per run
``setup + steps x step + eval``, one run after another; with seed ensembles (one ensemble step
for the 5 seeds, each seed evaluated alone); with `PROCESSES` ensembles at once (the
ensemble figure times the measured slowdown, divided by `PROCESSES`); and one run at a time
with its training step captured (the sequential figure's steps divided by the measured
speed-up: what the runner would gain if it captured steps, which it does not).

It fails loudly: ``--device cuda`` (the default) without a visible GPU exits 2 before anything
runs. A global time guard (``--budget-s``) starts no section (or no step of one) that would
not fit, and stops subprocesses at the deadline; what was measured is written either way.
Exit codes: 0 every section ran and passed; 1 a section failed; 2 bad usage or no CUDA;
3 the time guard left sections out. ``--device cpu --quick`` runs the same pipeline with a
tiny model (lengths 8, 16, 32; compile with the ``aot_eager`` backend) to check the script.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine, pin_threads
from benchmarks.gpu_check_report import markdown
from benchmarks.grid_extrapolation import extrapolate
from benchmarks.training_setup import (
    autocast_for,
    planned_runs,
    release,
    synchronize,
    training_setup,
)

SECTIONS = ("steps", "ensembles", "concurrency", "graphs", "sweep", "packing", "tests",
            "compile", "scan")
LENGTHS, QUICK_LENGTHS = (8, 64, 256), (8, 16, 32)
QUICK_SIZE = dict(layers=1, width=16, heads=2, batch_size=8, train_size=64, test_size=32,
                  eval_batch_size=32)
WARMUP, REPEATS = 2, 5
DEFAULT_BUDGET_S = 450.0  # 7.5 minutes: the check must end within 8
NEED_S = {"steps": 20, "ensembles": 20, "concurrency": 60, "graphs": 45, "sweep": 60,
          "packing": 45, "tests": 40, "compile": 90, "scan": 40}
"""Seconds a section needs at least; it is left out when less than this remains."""
ROOT = Path(__file__).resolve().parent.parent
OUT = "DIR"
"""How the reports write the ``--out`` folder (and every path under it)."""


class Guard:
    """The global time budget: `left` seconds until the deadline."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Check:
    """What the check measured so far, and where it goes."""

    out: Path
    device: str
    quick: bool
    command: str
    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def scratch(self) -> Path:
        """Where the sections keep their files (the sweep's database and runs, probes'
        results), apart from the two reports."""
        return self.out / "scratch"

    def write(self, guard: Guard) -> None:
        """The two reports, with every path under `out` written from ``DIR`` (`out` is often
        a scratch folder of a lent machine; the reports are read where they are copied)."""
        self.results["wall_s"] = guard.elapsed()
        payload = {"device": self.device, "quick": self.quick, "command": self.command,
                   "machine": machine(), "failures": self.failures, "left_out": self.left_out,
                   **self.results}
        text = json.dumps(payload, indent=2, default=str).replace(str(self.out.resolve()), OUT)
        (self.out / "gpu_check.json").write_text(text)
        (self.out / "gpu_check.md").write_text(markdown(json.loads(text)))


def plan_configs(device: str, quick: bool, lengths: tuple[int, ...]
                 ) -> list[tuple[str, Any]]:
    """``[(label, RunConfig)]`` that ``ablations.run --preset paper`` plans for seed 0 (quick:
    at `QUICK_SIZE`)."""
    return planned_runs(device, lengths, QUICK_SIZE if quick else None)


def time_run(config, device: torch.device, *, members: int = 1, evaluate: bool = True,
             compile_backend: str | None = None, repeats: int = REPEATS,
             before_timing: Callable[[], None] | None = None) -> dict[str, Any]:
    """Setup, training step and (``evaluate``) one evaluation of `config` on `device`, as
    `ablations.train` runs them; ``members > 1``: a stacked seed ensemble's step, timed over
    `repeats` steps; `before_timing` runs between the warm-up and the timed steps."""
    from ablations import tasks
    from ablations.evaluate import evaluate_all

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    task = tasks.get(config.task)
    _, test_set = tasks.datasets(task, length=config.length, seed=0, train_size=0,
                                 test_size=config.test_size)
    setup = training_setup(config, device, members=members, compile_backend=compile_backend)
    autocast = autocast_for(config, device)
    step = setup.stepper(autocast)
    synchronize(device)
    setup_s = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(WARMUP):
        step()
    synchronize(device)
    first_s = time.perf_counter() - started
    if before_timing is not None:
        before_timing()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    result = {"setup_s": setup_s, "warmup_s": first_s,
              "step_s": (time.perf_counter() - started) / repeats,
              "params": sum(p.numel() for p in setup.models[0].parameters())}
    if evaluate:
        started = time.perf_counter()
        evals = evaluate_all(setup.model, test_set, task, config, device=device,
                             autocast=autocast())
        synchronize(device)
        result["eval_s"] = time.perf_counter() - started
        result["acc"] = {stop: ev["acc"] for stop, ev in evals.items()}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def section_steps(check: Check, guard: Guard, *, ensembles: bool) -> dict[str, Any]:
    """`time_run` of every planned (label, T); stops early (marked) near the deadline.

    ``ensembles``: the step of a seed ensemble as wide as ``--ensemble auto`` makes it for the
    paper's seeds (`ablations.executors.ensemble_width`: half the free memory), halved on an
    out-of-memory error down to 2 members."""
    from ablations import presets
    from ablations.executors import ensemble_width

    device, name = torch.device(check.device), "ensembles" if ensembles else "steps"
    lengths = QUICK_LENGTHS if check.quick else LENGTHS
    seeds = len(presets.get("paper").seeds)
    rows, cut = [], []
    for label, config in plan_configs(check.device, check.quick, lengths):
        if guard.left() < NEED_S[name] / 2:
            cut.append(f"{label} T={config.length}")
            continue
        release(device)  # the last cell's blocks: free for the driver (and auto)
        members = ensemble_width("auto", config, seeds) if ensembles else 1
        while True:
            try:
                timed = time_run(config, device, members=members, evaluate=not ensembles)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                if members > 2:
                    members //= 2
                    continue
                check.failures.append(f"{name}: {label} T={config.length}: out of memory "
                                      f"with {members} member(s)")
            except Exception as error:  # noqa: BLE001  (one cell's failure is reported)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                check.failures.append(f"{name}: {label} T={config.length}: "
                                      f"{type(error).__name__}: {error}"[:400])
            else:
                rows.append({"label": label, "T": config.length, "layers": config.layers,
                             "members": members, **timed})
            break
    if cut:
        check.left_out.append(f"{name} (time guard): " + ", ".join(cut))
    return {"rows": rows, "batch": config.batch_size, "width": config.width,
            "amp": config.amp, "warmup": WARMUP, "repeats": REPEATS}


PROCESSES = 4
"""Processes of the ``concurrency`` section: what ``--ensemble auto --workers 4`` runs at once."""
CONCURRENT_REPEATS = 10


def section_concurrency(check: Check, guard: Guard, *, timer: Callable[..., dict[str, Any]]
                        | None = None) -> dict[str, Any]:
    """`PROCESSES` processes training seed ensembles of each planned (label, T) at the same
    moment (`benchmarks.concurrent_steps`), each as wide as ``--ensemble auto --workers 4``
    makes it now (`ablations.executors.ensemble_width` with ``share=PROCESSES``): how much the
    device gains from running several ensembles side by side when one cannot fill it.

    Per cell: ``slowdown`` = packed step per member / the ``ensembles`` section's step per
    member (alone, at its own width), ``gain`` = processes / slowdown (the processes'
    throughput together over one ensemble's alone). `timer`: `time_run` (tests pass a fake)."""
    from ablations import presets
    from ablations.executors import ensemble_width
    from benchmarks.concurrent_steps import time_together

    alone = {(r["label"], r["T"]): r for r in check.results.get("ensembles", {}).get("rows", [])}
    if not alone:
        raise RuntimeError("needs the ensembles section's rows (run it first)")
    release(check.device)  # what this process holds is not the workers' to use
    seeds = len(presets.get("paper").seeds)
    lengths = QUICK_LENGTHS if check.quick else LENGTHS
    cells = [(label, config, ensemble_width("auto", config, seeds, share=PROCESSES))
             for label, config in plan_configs(check.device, check.quick, lengths)
             if (label, config.length) in alone]
    started = time.perf_counter()
    timings, errors = time_together(
        [(config, members) for _, config, members in cells], check.device,
        processes=PROCESSES, timer=timer or time_run, repeats=CONCURRENT_REPEATS,
        time_left=guard.left)
    rows = []
    for index, (label, config, members) in enumerate(cells):
        steps = timings.get(index, [])
        if index in errors or len(steps) < PROCESSES:
            check.failures.append(f"concurrency: {label} T={config.length}: "
                                  f"{errors.get(index, 'not measured (time guard)')}")
            continue
        single = alone[(label, config.length)]
        step_s = sum(steps) / len(steps)
        slowdown = (step_s / members) / (single["step_s"] / single["members"])
        rows.append({"label": label, "T": config.length, "members": members,
                     "alone_members": single["members"], "processes": PROCESSES,
                     "step_s": step_s, "alone_step_s": single["step_s"], "slowdown": slowdown,
                     "gain": PROCESSES / slowdown})
    return {"rows": rows, "processes": PROCESSES, "repeats": CONCURRENT_REPEATS,
            "wall_s": time.perf_counter() - started}


def _subprocess(argv: list[str], guard: Guard, cap_s: float) -> dict[str, Any]:
    """Run `argv` from the repository root, stopped at ``min(cap_s, time left - 10 s)``."""
    timeout = max(1.0, min(cap_s, guard.left() - 10))
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stdout or b"")[-2000:]
        return {"rc": None, "timed_out": True, "wall_s": time.perf_counter() - started,
                "tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    return {"rc": done.returncode, "timed_out": False, "wall_s": time.perf_counter() - started,
            "tail": (done.stdout + done.stderr)[-3000:]}


SWEEP_LENGTHS = (8, 16)
PACKED_WORKERS = 4


def section_sweep(check: Check, guard: Guard, *, workers: int = 1) -> dict[str, Any]:
    """The smoke preset's sweep (baseline + EqT at `SWEEP_LENGTHS`) end to end, in its own
    process; ``workers > 1``: that many runs at once on the one device (``--workers``)."""
    name = "sweep" if workers == 1 else "packing"
    out = check.scratch / name
    argv = [sys.executable, "-m", "ablations.run", "--preset", "smoke", "--lengths",
            ",".join(map(str, SWEEP_LENGTHS)), "--seeds", "0", "--device", check.device,
            "--out", str(out), "--workers", str(workers)]
    argv += ["--set", "train_steps=20"] if check.quick else ["--set", "amp=true"]
    result = _subprocess(argv, guard, cap_s=300)
    rows = []
    if (out / "results.sqlite").exists():
        db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
        try:
            rows = [dict(zip(("label", "status", "device", "timings"), r)) for r in db.execute(
                "SELECT label, status, device, timings FROM runs ORDER BY label")]
        finally:
            db.close()
    result.update(runs=rows, workers=workers, lengths=list(SWEEP_LENGTHS))
    expected = 2 * len(SWEEP_LENGTHS)
    if result["rc"] != 0 or len(rows) != expected or {r["status"] for r in rows} != {"done"}:
        check.failures.append(f"{name}: rc {result['rc']}, runs {[r['status'] for r in rows]}"
                              f" (expected {expected} done)")
    if not (out / "report.md").exists():
        check.failures.append(f"{name}: no report.md")
    sequential = check.results.get("sweep", {}).get("wall_s")
    if workers > 1 and sequential:
        result["speedup_vs_sweep"] = sequential / result["wall_s"]
    return result


def section_tests(check: Check, guard: Guard) -> dict[str, Any]:
    """``pytest -k cuda`` (quick: only the solver tests' CUDA case, to check the plumbing)."""
    paths = ["tests/test_core_solvers.py"] if check.quick else ["tests"]
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-k", "cuda",
            *paths]
    result = _subprocess(argv, guard, cap_s=240)
    lines = result["tail"].strip().splitlines()
    result["summary"] = lines[-1] if lines else ""
    result["skips"] = [line for line in lines if line.startswith("SKIPPED")]
    no_cuda = [s for s in result["skips"] if re.search(r"no CUDA|CUDA is not available", s)]
    if result["rc"] != 0:
        check.failures.append(f"tests: rc {result['rc']}: {result['summary']}")
    elif check.device == "cuda" and no_cuda:
        check.failures.append(f"tests: skipped for want of CUDA on a GPU: {no_cuda}")
    return result


COMPILE_PROBE = """
import json, sys, torch
from benchmarks.gpu_check import plan_configs, time_run
from pathlib import Path
device, quick, backend = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
length, out = int(sys.argv[4]), Path(sys.argv[5])
if device == "cpu":
    torch.set_num_threads(1)
config = next(c for l, c in plan_configs(device, quick, (length,)) if l == "eqt")
rows = {name: time_run(config, torch.device(device), evaluate=False, compile_backend=b)
        for name, b in (("eager", None), ("compiled", backend))}
(out / "compile.json").write_text(json.dumps(rows))
"""


def section_compile(check: Check, guard: Guard) -> dict[str, Any]:
    """EqT's training step at T = 64 (quick: 16), eager and compiled, in a subprocess."""
    backend, length = ("aot_eager", 16) if check.quick else ("inductor", 64)
    argv = [sys.executable, "-c", COMPILE_PROBE, check.device, "1" if check.quick else "0",
            backend, str(length), str(check.scratch)]
    result = _subprocess(argv, guard, cap_s=400)
    result.update(backend=backend, T=length)
    path = check.scratch / "compile.json"
    if result["rc"] == 0 and path.exists():
        result["timings"] = json.loads(path.read_text())
    else:
        check.failures.append(f"compile: rc {result['rc']}, timed out {result['timed_out']}")
    return result


GRAPHS_PROBE = """
import json, sys, torch
from pathlib import Path
from benchmarks.gpu_check import plan_configs, LENGTHS, QUICK_LENGTHS
from benchmarks.graphed_step import measure
device, quick, out = sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3])
if device == "cpu":
    torch.set_num_threads(1)
rows, failed = [], None
for label, config in plan_configs(device, quick, QUICK_LENGTHS if quick else LENGTHS):
    row = {"label": label, "T": config.length}
    if failed is not None:  # a failed capture can leave this process's CUDA state unusable
        rows.append({**row, "error": f"not run after the failed capture of {failed}"})
        continue
    try:
        rows.append({**row, **measure(config, torch.device(device))})
    except Exception as error:
        rows.append({**row, "error": f"{type(error).__name__}: {error}"[:300]})
        failed = f"{label} T={config.length}"
    (out / "graphs.json").write_text(json.dumps(rows))
(out / "graphs.json").write_text(json.dumps(rows))
"""
GRAPH_TOLERANCE = 0.05
"""Largest median drift (`benchmarks.graphed_step.drift`: the two copies' distance over each
parameter's own change) that counts as the same training (bf16 rounding; a capture that
replays nothing gives about 0.85 with `benchmarks.graphed_step`'s step counts; on CPU the
copies must agree exactly)."""


def section_graphs(check: Check, guard: Guard) -> dict[str, Any]:
    """`benchmarks.graphed_step.measure` for every planned (label, T), in a subprocess."""
    path = check.scratch / "graphs.json"
    path.unlink(missing_ok=True)
    result = _subprocess([sys.executable, "-c", GRAPHS_PROBE, check.device,
                          "1" if check.quick else "0", str(check.scratch)], guard, cap_s=240)
    rows = json.loads(path.read_text()) if path.exists() else []
    tolerance = GRAPH_TOLERANCE if check.device == "cuda" else 0.0
    result["rows"], result["rejected"] = [], []  # only faithful captures feed the grid
    for row in rows:
        if "error" in row:
            check.failures.append(f"graphs: {row['label']} T={row['T']}: {row['error']}")
        elif row["drift_median"] > tolerance:
            result["rejected"].append(row)
            check.failures.append(f"graphs: {row['label']} T={row['T']}: the graphed copy "
                                  f"trained differently (median drift "
                                  f"{row['drift_median']:.2g})")
        else:
            result["rows"].append(row)
    if result["rc"] != 0 or not rows:
        check.failures.append(f"graphs: rc {result['rc']}, timed out {result['timed_out']}")
    return result


SCAN_PROBE = """
import json, sys
from benchmarks import scan
report = scan.run(quick=sys.argv[1] == "1", device=sys.argv[2])
with open(sys.argv[3], "w") as handle:
    json.dump({"markdown": report.markdown(), "report": report.as_dict()}, handle, default=str)
"""


def section_scan(check: Check, guard: Guard) -> dict[str, Any]:
    """`benchmarks.scan` on the device, in a subprocess that the time guard can stop."""
    path = check.scratch / "scan.json"
    result = _subprocess([sys.executable, "-c", SCAN_PROBE, "1" if check.quick else "0",
                          check.device, str(path)], guard, cap_s=240)
    if result["rc"] == 0 and path.exists():
        result.update(json.loads(path.read_text()))
    else:
        check.failures.append(f"scan: rc {result['rc']}, timed out {result['timed_out']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="writes gpu_check.md/.json")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda (default; exits 2 when no GPU is visible) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model: checks the script")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"global time guard in seconds (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    for name in sections:
        if name not in SECTIONS:
            from eqtheory.registry import did_you_mean

            parser.error(did_you_mean(name, list(SECTIONS), kind="section"))
    if not args.budget_s > 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but torch sees no CUDA device "
              f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); nothing was "
              "run. Use --device cpu --quick to check the script on CPU.", file=sys.stderr)
        return 2
    if args.device == "cpu":
        pin_threads(1)  # see benchmarks.common.THREADS: spinning threads on a busy machine
    guard = Guard(args.budget_s)
    (args.out / "scratch").mkdir(parents=True, exist_ok=True)
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [OUT if i and given[i - 1] == "--out" else a for i, a in enumerate(given)]
    check = Check(out=args.out, device=args.device, quick=args.quick,
                  command="python -m benchmarks.gpu_check " + " ".join(shown))
    return run_sections(check, guard, sections)


def run_sections(check: Check, guard: Guard, sections: list[str]) -> int:
    """Run `sections` in `SECTIONS` order under the guard; write after each; the exit code."""
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "steps": lambda: section_steps(check, guard, ensembles=False),
        "ensembles": lambda: section_steps(check, guard, ensembles=True),
        "concurrency": lambda: section_concurrency(check, guard),
        "graphs": lambda: section_graphs(check, guard),
        "sweep": lambda: section_sweep(check, guard),
        "packing": lambda: section_sweep(check, guard, workers=PACKED_WORKERS),
        "tests": lambda: section_tests(check, guard),
        "compile": lambda: section_compile(check, guard),
        "scan": lambda: section_scan(check, guard),
    }
    check.write(guard)
    for name in SECTIONS:
        if name not in sections:
            continue
        if guard.left() < NEED_S[name]:
            check.left_out.append(f"{name} (time guard: {guard.left():.0f} s left)")
            continue
        print(f"[gpu_check] {name} ({guard.left():.0f} s left)", flush=True)
        try:
            check.results[name] = runners[name]()
        except Exception as error:  # noqa: BLE001  (a section's failure is reported, not fatal)
            check.failures.append(f"{name}: {type(error).__name__}: {error}"[:400])
            check.results[name] = {"error": "".join(traceback.format_exception(error)[-8:])}
        if name in ("steps", "ensembles", "concurrency", "graphs") and "rows" in \
                check.results.get("steps", {}):
            check.results["extrapolation"] = extrapolate(
                check.results["steps"], check.results.get("ensembles"),
                check.results.get("concurrency"), check.results.get("graphs"))
        check.write(guard)
    check.write(guard)
    print(markdown(json.loads((check.out / "gpu_check.json").read_text())), flush=True)
    return 1 if check.failures else 3 if check.left_out else 0


if __name__ == "__main__":
    raise SystemExit(main())
