"""``python -m ablations.run``: expand a grid of parity runs, execute it, summarise, report.

    python -m ablations.run                                   # the smoke preset, ~1 min on CPU
    python -m ablations.run --preset cpu                      # 3 lengths x 3 seeds, all controls
    python -m ablations.run --energy bidir+memory,mask --solver gd,anderson --lengths 16,64

Every variant flag takes comma-separated values (commas inside parentheses belong to the value:
``--solver "gd(momentum=0.9),anderson"``); the grid is the product of variants x tasks x lengths
x seeds, plus the control runs of every EqT run. Evaluation rules (``--stop``/``--k-eval``) are
not a grid axis: every trained EqT model is evaluated with each of them and with ``steps=0``
(the K = 0 control). Re-running the same command resumes: finished runs are skipped.

Everything is checked before anything runs or is written: a bad value exits with code 2 and
one line on stderr (a did-you-mean where there is a name to guess; a long value echoed once,
cut to 200 characters). Checked up front: names and options of every component (the solver and
backward mode are constructed, the energy built with small dims, the stopping rules parsed),
numbers (finite, in range), the run config (`RunConfig` checks its fields), ``--out`` (not a
file, creatable), ``--device cuda`` (a GPU is there), and the caps of `ablations.validate`:
flag values of at most 1,000 characters, at most 10,000 seeds and 10,000 runs, about 1e8
sequential block/solver passes and 1e19 FLOPs per sweep, 64 GiB per run (the estimate is in
the message; ``--force`` lifts the runs, passes, FLOPs and memory caps).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ablations import presets, validate
from ablations.config import TASKS, RunConfig
from ablations.executors import EXECUTORS, check_gpus_per_run
from ablations.store import DEFAULT_LEASE_S, Store, UnreadableStore, check_lease, unreadable
from eqtheory import plugins, stopping
from eqtheory.registry import did_you_mean
from eqtheory.variants import PLACEMENTS, VariantSpec, energy_terms

BASELINE, EQT, AUX_ONLY, MATCHED, RNN = "baseline", "eqt", "aux-only", "compute-matched", "rnn"
# RunConfig fields with a flag of their own (not settable through --set)
FLAG_FIELDS = {
    "variant": "--energy/--solver/...", "task": "--task", "length": "--lengths",
    "seed": "--seeds", "device": "--device", "eval_stops": "--stop/--k-eval",
    "plugins": "--plugin",
}
DEFAULT = VariantSpec()
VARIANT_FLAGS = ("energy", "solver", "alpha", "backward", "placement", "gamma", "beta")
"""Variant flags whose default is the preset's `Preset.variant` entry, else `VariantSpec`'s."""


class CliError(ValueError):
    """A bad flag value; reported through ``parser.error`` (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (exit code 2): ``prog: error: message``,
    long values of the command line echoed once and cut (`validate.one_line`)."""

    echo: list[str] = []

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        self.echo = [part for item in argv for part in (item, *re.split(r"[,=]", item))]
        return super().parse_args(argv, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        line = validate.one_line(message, self.echo)
        self.exit(2, f"{self.prog}: error: {line} (see --help)\n")


def split_values(text: str, flag: str | None = None) -> list[str]:
    """Split on commas outside parentheses: ``"gd(a=1,b=2),anderson"`` -> two values; an empty
    value raises `CliError` (naming `flag`)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if any(not value for value in values):
        raise CliError(f"{flag + ': ' if flag else ''}empty value in {text!r}")
    return values


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; ``0-4`` -> [0, 1, 2, 3, 4] (inclusive); ``7`` -> [7]."""
    seeds: list[int] = []
    for part in split_values(text, "--seeds"):
        first, dash, last = part.partition("-")
        try:
            bounds = (int(first), int(last)) if dash else (int(part), int(part))
        except ValueError:
            raise CliError(f"--seeds: {part!r} is not a seed or a range like 0-4") from None
        try:
            validate.seed_count(*bounds)
        except ValueError as error:
            raise CliError(f"--seeds: {error}") from None
        seeds += range(bounds[0], bounds[1] + 1)
        if len(seeds) > validate.MAX_SEEDS:
            raise CliError(f"--seeds: more than {validate.MAX_SEEDS:,} seeds in {text!r}")
    return list(dict.fromkeys(seeds))


def numbers(flag: str, text: str, kind: Callable[[str], Any]) -> list[Any]:
    try:
        return [kind(value) for value in split_values(text)]
    except ValueError as error:
        raise CliError(f"{flag}: {error}") from None


def checked(flag: str, values: list[str], check: Callable[[str], Any]) -> list[str]:
    """Run `check` on every value; its error becomes a `CliError` naming the flag."""
    for value in values:
        try:
            check(value)
        except (ValueError, TypeError, KeyError, OverflowError) as error:
            raise CliError(f"{flag}: {error}") from None
    return values


def check_energy(text: str) -> None:
    """Names, options and weights, then a real `energies.parse` with a small model's dims, on
    the meta device (the constructors check their options; nothing is allocated)."""
    energy_terms(text)
    validate.energy_numel(text, width=8)


def check_buildable(variant: VariantSpec) -> None:
    """Build the variant at a tiny size: combinations that no field check sees (e.g. a chain
    solver with an energy that is not a chain alone) fail here, before anything runs. On the
    meta device: the constructors run their checks, nothing is allocated (an energy option such
    as ``bidir(window=100000000)`` would otherwise allocate at plan time)."""
    import torch

    from eqtheory.variants import build

    with torch.device("meta"):
        build(variant, width=8, layers=1, heads=2, max_len=4)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` -> RunConfig fields; unknown or flag-owned keys are rejected."""
    valid = [f.name for f in dataclasses.fields(RunConfig) if f.name not in FLAG_FIELDS]
    defaults = RunConfig().as_dict()
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise CliError(f"--set: {item!r} is not key=value")
        if key in FLAG_FIELDS:
            raise CliError(f"--set: {key!r} has its own flag, {FLAG_FIELDS[key]}")
        if key not in valid:
            raise CliError("--set: " + did_you_mean(key, valid, kind="run config field"))
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        default = defaults[key]
        wanted = (int, float) if type(default) is float else type(default)
        if isinstance(default, (bool, int, float, str)) and (
            not isinstance(value, wanted) or isinstance(value, bool) != isinstance(default, bool)
        ):
            raise CliError(
                f"--set: {key} takes {'an' if type(default) is int else 'a'} "
                f"{type(default).__name__} (default {default!r}), got {raw!r}"
            )
        overrides[key] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m ablations.run",
        description=(
            "Train a grid of parity runs (variants x tasks x lengths x seeds, plus controls), "
            "store every run in <out>/results.sqlite, print a summary and write <out>/report.md. "
            "Comma-separated values of a variant flag make a grid. Re-running the same command "
            "resumes (done runs are skipped; interrupted ones restart from their checkpoint)."
        ),
        epilog="presets: "
        + "; ".join(f"{p.name}: {p.description}" for p in presets.PRESETS.values())
        + ". Caps, checked before anything runs: flag values of at most "
        f"{validate.MAX_VALUE_CHARS:,} characters, at most {validate.MAX_SEEDS:,} seeds and "
        f"{validate.MAX_RUNS:,} runs, about {validate.MAX_PASSES:.0e} sequential block/solver "
        f"passes and {validate.MAX_FLOPS:.0e} FLOPs per sweep, "
        f"{validate.MAX_RUN_BYTES // 2**30} GiB of memory per run (estimates; --force lifts "
        "all but the first two).",
    )
    add = parser.add_argument
    add("--preset", default="smoke",
        help="grid, model and variant defaults: smoke, cpu, paper or recurrence (default: "
             "smoke; the recurrence preset's variant: energy chain, solver sequential, "
             "alpha 1, gamma inf, backward implicit)")
    add("--energy", default=None,
        help="energy spec(s) of the EqT variant, e.g. 'bidir+0.1*memory' "
             f"(default: {DEFAULT.energy})")
    add("--solver", default=None,
        help=f"solver name(s), with options as 'gd(momentum=0.9)' (default: {DEFAULT.solver})")
    add("--alpha", default=None,
        help=f"solver step size(s) (default: {DEFAULT.alpha})")
    add("--stop", default=None,
        help="evaluation stopping rule(s), e.g. 'residual<1e-3|steps=32'; every EqT model is "
             "evaluated with each, and with steps=0 (the K = 0 control); not a grid axis "
             "(default: the preset's, smoke: steps=8; cpu and paper: steps=8,steps=32)")
    add("--k-eval", default=None,
        help="shortcut: --k-eval 8,32 adds --stop steps=8,steps=32 (default: none)")
    add("--stop-train", default=None,
        help="training stopping rule(s) of EqT; a grid axis (default: the preset's, steps=2)")
    add("--k-train", default=None,
        help="shortcut: --k-train 2,4 adds --stop-train steps=2,steps=4 (default: none)")
    add("--backward", default=None,
        help=f"backward mode(s): unrolled, implicit, phantom (default: {DEFAULT.backward})")
    add("--placement", default=None,
        help=f"ERM placement(s): last or every (default: {DEFAULT.placement})")
    add("--gamma", default=None,
        help=f"proximal prior gamma(s), inf = no prior (default: {DEFAULT.gamma})")
    add("--beta", default=None,
        help=f"energy weight(s) in the loss NLL + beta*E (default: {DEFAULT.beta})")
    add("--task", default="parity", help="task(s): parity or parity_final (default: parity)")
    add("--lengths", default=None,
        help="sequence lengths, e.g. 16,64,192 (default: the preset's; smoke: 8,16)")
    add("--eval-lengths", default=None,
        help="also evaluate every trained model at these lengths (length generalisation), "
             "e.g. 64,128,256,512; stored per length and tabled in the report (default: the "
             "preset's; recurrence: 64,128,256,512; others: none)")
    add("--seeds", default=None,
        help="seeds: a list '0,1,2', an inclusive range '0-4', or one seed '7' "
             "(default: the preset's; smoke: 0, cpu: 0-2, paper: 0-4)")
    add("--controls", action=argparse.BooleanOptionalAction, default=None,
        help="--controls: add all controls beside every EqT run: baseline, aux-only (the same "
             "energy as an auxiliary loss, no refinement) and compute-matched baseline (more "
             "layers, same FLOPs per token) and rnn (a one-layer GRU of the same width, "
             "outside the EqT family); --no-controls: EqT runs only. EqT's steps=0 "
             "evaluation (the K = 0 control) is always on (default: the preset's; smoke: "
             "baseline only; cpu, paper: all but rnn; recurrence: all)")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where runs train: auto = cuda if available; cuda is refused up front when no "
             "GPU is visible (with --executor local) (default: auto)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a run config field (repeatable), e.g. --set train_steps=100 --set "
             "width=32; values are JSON (default: none)")
    add("--plugin", action="append", default=[], metavar="FILE",
        help="a Python file whose components (energy terms, solvers, stopping rules, backward "
             "modes) register themselves on import, loaded before the flags are checked "
             "(repeatable); installed packages' entry points in the group 'eqtheory.plugins' "
             "load too. Each run records the files' sha256 (part of its hash) (default: none)")
    add("--out", default=None,
        help="output directory; refused if it is a file or cannot be created (default: "
             "runs/<preset>)")
    add("--executor", default="local", choices=EXECUTORS,
        help="local: sequential in this process; ray: runs as Ray tasks (pip install ray), "
             "one GPU per run where there are GPUs (default: local)")
    add("--threads", type=int, default=1,
        help="torch CPU threads per run, at most 256; 0 = torch's default (one per core). "
             "Small models gain little from more, and a busy machine makes torch's spinning "
             "threads up to 20x slower (default: 1)")
    add("--ensemble", default="1", metavar="N|auto",
        help="train runs that differ only in their seed as one seed ensemble of up to N "
             "members (stacked weights, one model; every member is still its own row, with "
             "its own data, initialisation, masks, clipping and checkpoint). auto: all the "
             "seeds of a run, capped so that their estimated peak memory fits in half the "
             "free memory (GPU: free device memory; CPU: available RAM), shared among the "
             "--workers ensembles that run at once. Models that cannot "
             "be stacked (rnn, a memory energy, a learned step size) train one by one. "
             "Local executor only (default: 1, no ensembles)")
    add("--compile", action="store_true",
        help="torch.compile each run's backbone blocks and refinement step (energy value and "
             "gradient; ablations.compile), on CPU or CUDA: an execution choice, so the runs "
             "keep their hashes; it pays on GPUs, hardly on CPUs, and compiling takes minutes "
             "(same as --set compile=true; default: off)")
    add("--workers", type=int, default=1,
        help="--executor local: run this many runs at once, each in its own process on this "
             "machine (several runs per device when one run cannot fill it; each with "
             "--threads torch threads); this process still writes every row (default: 1, "
             "runs one after another in this process)")
    add("--gpus-per-run", type=float, default=1.0,
        help="--executor ray on GPUs: the GPU share of each run, a fraction in (0, 1] packs "
             "1/x runs per GPU (e.g. 0.25: four), or a whole number of GPUs (default: 1)")
    add("--ray-address", default=None,
        help="Ray cluster address for --executor ray (default: start a local instance)")
    add("--retries", type=int, default=1,
        help="re-run a failed run up to this many times, across invocations (default: 1)")
    add("--lease", type=float, default=DEFAULT_LEASE_S,
        help="seconds without a heartbeat after which another runner's running row is "
             f"taken as dead and re-run (default: {DEFAULT_LEASE_S:.0f})")
    add("--dry-run", action="store_true",
        help="print the grid (marking runs already done) and exit; writes nothing (default: off)")
    add("--no-report", action="store_true",
        help="skip writing the report at the end (default: the report is written)")
    add("--force", action="store_true",
        help="run a sweep above the caps on runs, compute and memory per run (listed below); "
             "the estimate is in the refusal's message (default: off)")
    return parser


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated sweep: where it goes and which runs it has."""

    preset: presets.Preset
    out: Path
    runs: list[tuple[str, RunConfig]]  # (label, config), unique by hash


def plan(args: argparse.Namespace) -> Plan:
    """Turn parsed flags into the run grid, checking every value (raises `CliError`).

    Checks, in order: value lengths and empty values, the preset, counts, ``--set`` (a whole
    `RunConfig`), every value of every variant flag (each alone, then every combination), the
    device, ``--out``, and what the sweep would cost (`ablations.validate`)."""
    for dest, value in vars(args).items():
        flag = "--set" if dest == "overrides" else "--" + dest.replace("_", "-")
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    validate.check_value_length(flag, text)
                except ValueError as error:
                    raise CliError(str(error)) from None
                if not text.strip() and dest != "out":
                    raise CliError(f"{flag}: empty value")
    try:
        preset = presets.get(args.preset)
    except ValueError as error:
        raise CliError(f"--preset: {error}") from None
    try:
        records = tuple(p.record() for p in [
            *plugins.load_entry_points(), *(plugins.load_file(path) for path in args.plugin)
        ])
    except Exception as error:  # noqa: BLE001  (a plugin is user code: any failure is reported)
        raise CliError(f"--plugin: {type(error).__name__}: {error}") from None
    if args.retries < 0:
        raise CliError("--retries must be >= 0")
    if not 1 <= args.workers <= validate.MAX_THREADS:
        raise CliError(f"--workers must be in 1..{validate.MAX_THREADS}, got {args.workers}")
    if args.workers > 1 and args.executor != "local":
        raise CliError("--workers is for --executor local (Ray schedules its own workers)")
    try:
        check_gpus_per_run(args.gpus_per_run)
    except ValueError as error:
        raise CliError(f"--gpus-per-run: {error}") from None
    if args.ensemble != "auto" and not (args.ensemble.isdigit() and int(args.ensemble) >= 1):
        raise CliError(f"--ensemble must be a whole number >= 1 or 'auto', got {args.ensemble!r}")
    if args.ensemble != "1" and args.executor != "local":
        raise CliError(f"--ensemble {args.ensemble} needs --executor local")
    if not 0 <= args.threads <= validate.MAX_THREADS:
        raise CliError(f"--threads must be in 0..{validate.MAX_THREADS}, got {args.threads}")
    for name in VARIANT_FLAGS:  # flags not given take the preset's variant, else the default
        if getattr(args, name) is None:
            setattr(args, name, str(preset.variant.get(name, getattr(DEFAULT, name))))
    overrides = {**preset.config, **parse_overrides(args.overrides)}
    if args.compile:
        overrides["compile"] = True
    try:
        RunConfig(**{**overrides, "device": args.device})
    except (ValueError, TypeError) as error:
        raise CliError(f"--set: {error}") from None

    def rules(flag: str, text: str | None, k_flag: str, k_text: str | None) -> list[str] | None:
        values = checked(flag, split_values(text, flag), stopping.parse) if text else []
        if k_text:
            ks = numbers(k_flag, k_text, int)
            if any(k < 0 for k in ks):
                raise CliError(f"{k_flag}: K must be >= 0")
            values += [f"steps={k}" for k in ks]
        return list(dict.fromkeys(values)) or None

    def field(name: str) -> Callable[[Any], Any]:
        """Check one value of a variant field alone (the other fields at their defaults)."""
        return lambda value: VariantSpec(**{name: value})

    stops = rules("--stop", args.stop, "--k-eval", args.k_eval) or list(preset.stops)
    stop_trains = rules("--stop-train", args.stop_train, "--k-train", args.k_train) or [
        preset.stop_train
    ]
    checked("--stop", stops, field("stop_eval"))
    checked("--stop-train", stop_trains, field("stop_train"))
    axes = {
        "energy": checked(
            "--energy", split_values(args.energy, "--energy"), check_energy
        ),
        "solver": checked(
            "--solver", split_values(args.solver, "--solver"), field("solver")
        ),
        "alpha": checked("--alpha", numbers("--alpha", args.alpha, float), field("alpha")),
        "stop_train": stop_trains,
        "backward": checked(
            "--backward", split_values(args.backward, "--backward"), field("backward")
        ),
        "placement": checked(
            "--placement", split_values(args.placement, "--placement"), _placement
        ),
        "gamma": checked("--gamma", numbers("--gamma", args.gamma, float), field("gamma")),
        "beta": checked("--beta", numbers("--beta", args.beta, float), field("beta")),
    }
    axes = {name: list(dict.fromkeys(values)) for name, values in axes.items()}
    tasks = list(dict.fromkeys(checked("--task", split_values(args.task, "--task"), _task)))
    lengths = numbers("--lengths", args.lengths, int) if args.lengths else list(preset.lengths)
    lengths = list(dict.fromkeys(lengths))
    if any(length < 1 for length in lengths):
        raise CliError("--lengths: lengths must be >= 1")
    seeds = parse_seeds(args.seeds) if args.seeds else list(preset.seeds)
    eval_lengths = (
        numbers("--eval-lengths", args.eval_lengths, int) if args.eval_lengths
        else list(preset.eval_lengths)
    )
    if any(length < 1 for length in eval_lengths):
        raise CliError("--eval-lengths: lengths must be >= 1")
    if args.controls is None:
        controls = preset.controls
    else:
        controls = presets.ALL_CONTROLS if args.controls else ()
    eqt_runs = len(tasks) * len(lengths) * len(seeds) * math.prod(map(len, axes.values()))
    if eqt_runs > validate.MAX_RUNS and not args.force:
        raise CliError(f"the grid has {eqt_runs:,} EqT runs before controls; at most "
                       f"{validate.MAX_RUNS:,} (or pass --force)")
    if args.device == "cuda" and args.executor == "local":
        try:
            validate.check_device(args.device)
        except ValueError as error:
            raise CliError(str(error)) from None
    try:
        out = validate.check_out(
            str(Path("runs") / preset.name) if args.out is None else args.out,
            writing=not args.dry_run,
        )
    except ValueError as error:
        raise CliError(str(error)) from None

    variants = []
    for values in itertools.product(*axes.values()):
        fields = dict(zip(axes, values, strict=True))
        try:
            variant = VariantSpec(kind="eqt", stop_eval=stops[0], **fields)
            check_buildable(variant)
            variants.append(variant)
        except (ValueError, TypeError, KeyError, OverflowError) as error:
            raise CliError(f"variant {fields}: {error}") from None
    eval_stops = tuple(dict.fromkeys(["steps=0", *stops]))

    runs: dict[str, tuple[str, RunConfig]] = {}
    total = validate.Cost()

    def add(label: str, **fields: Any) -> RunConfig:
        nonlocal total
        try:
            config = RunConfig(**{**overrides, "device": args.device, "plugins": records, **fields})
        except (ValueError, TypeError) as error:
            raise CliError(f"run config: {error}") from None
        if config.hash() not in runs:
            cost = validate.estimate(config)
            if not args.force:
                try:
                    validate.check_run_memory(describe(label, config), cost)
                except ValueError as error:
                    raise CliError(str(error)) from None
            total += cost
            runs[config.hash()] = (label, config)
        return config

    for task, length, seed, variant in itertools.product(tasks, lengths, seeds, variants):
        common = dict(
            task=task, length=length, seed=seed, eval_lengths=tuple(dict.fromkeys(eval_lengths))
        )
        eqt = add(EQT, variant=variant, eval_stops=eval_stops, **common)
        if BASELINE in controls:
            add(BASELINE, variant=VariantSpec(kind="baseline"), eval_stops=("steps=0",), **common)
        if AUX_ONLY in controls:
            aux = VariantSpec(
                kind="eqt", aux_losses_only=True, energy=variant.energy, beta=variant.beta,
                placement=variant.placement,
            )
            add(AUX_ONLY, variant=aux, eval_stops=("steps=0",), **common)
        if MATCHED in controls:
            add(MATCHED, variant=VariantSpec(kind="baseline"), eval_stops=("steps=0",),
                layers=_matched_layers(eqt), **common)
        if RNN in controls:
            add(RNN, variant=VariantSpec(kind="rnn"), eval_stops=("steps=0",), **common)
    if not args.force:
        try:
            validate.check_sweep(len(runs), total)
        except ValueError as error:
            raise CliError(str(error)) from None
    return Plan(preset=preset, out=out, runs=list(runs.values()))


def _placement(text: str) -> None:
    if text not in PLACEMENTS:
        raise ValueError(did_you_mean(text, list(PLACEMENTS), kind="placement"))


def _task(text: str) -> None:
    if text not in TASKS:
        raise ValueError(did_you_mean(text, list(TASKS), kind="task"))


def _matched_layers(config: RunConfig) -> int:
    """Baseline depth with the FLOPs per token of EqT `config` at its step cap: the budget
    of ``stop_eval`` (``steps=8|steps=32`` stops at 8; ``(a)&(b)`` at the larger cap)."""
    from ablations.flops import matched_layers

    cap = stopping.parse(config.variant.stop_eval).budget()
    if cap is None:
        raise CliError(
            f"the compute-matched control needs a step cap in the first --stop rule "
            f"(e.g. 'residual<1e-3|steps=32'), got {config.variant.stop_eval!r}; "
            "or use --no-controls"
        )
    return matched_layers(config, cap)


def describe(label: str, config: RunConfig) -> str:
    variant = "" if label != EQT else f" [{config.variant.to_string()}]"
    return (
        f"{label} {config.task} L={config.length} seed={config.seed} "
        f"layers={config.layers}{variant}"
    )


def done_hashes(database: Path) -> set[str]:
    """Hashes of done runs in an existing database, read-only (for --dry-run)."""
    if not database.exists():
        return set()
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT hash FROM runs WHERE status = 'done'")}
    finally:
        db.close()


class _Interrupts:
    """SIGINT and SIGTERM handlers, installed explicitly (a runner started in the background
    inherits SIGINT ignored). The first signal raises (KeyboardInterrupt, or SystemExit(143)
    for SIGTERM) so that the executors give their running rows back; a second one exits at once
    with 128 + signum: every database write is one transaction, so the file stays consistent,
    and rows still ``running`` belong to a dead process that the next start takes back."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, signum: int, frame: object) -> None:
        del frame
        self.received += 1
        if self.received > 1:
            os.write(2, f"\nsignal {signum} again: exiting now\n".encode())
            os._exit(128 + signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None, *, train_fn: Callable[..., Any] | None = None) -> int:
    """Run the CLI; `train_fn` replaces `ablations.train.train_run` (tests inject fast ones)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sweep = plan(args)
    except CliError as error:
        parser.error(str(error))
    try:
        check_lease(args.lease)
    except ValueError as error:
        parser.error(f"--lease: {error}")
    if args.dry_run:
        database = sweep.out / "results.sqlite"
        try:
            done = done_hashes(database)
        except sqlite3.DatabaseError as error:
            print(f"error: {unreadable(database, error)}", file=sys.stderr)
            return 2
        for label, config in sweep.runs:
            mark = "done" if config.hash() in done else "todo"
            print(f"{config.hash()}  {mark}  {describe(label, config)}")
        print(f"{len(sweep.runs)} runs, {len(done & {c.hash() for _, c in sweep.runs})} "
              f"already done in {database}")
        return 0
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            parser.error("--executor ray needs Ray: pip install 'eqtheory[ray]'")
    if train_fn is None:
        from ablations.train import train_run as train_fn

    from ablations import report

    started = time.time()
    with _Interrupts().installed():  # until main returns: a second signal always exits at once
        try:
            rows, counts = sweep_runs(args, sweep, train_fn)
        except KeyboardInterrupt:
            print("interrupted: the database is consistent; run the same command to resume")
            return 130
        except UnreadableStore as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(report.summary_table(rows))
        print(
            f"{counts['done']}/{len(sweep.runs)} runs done, {counts['failed']} failed, "
            f"{counts['running'] + counts['pending']} unfinished; this invocation took "
            f"{time.time() - started:.1f} s"
        )
        if not args.no_report:
            try:
                path = report.write_report(sweep.out)
            except KeyboardInterrupt:
                print("interrupted while writing the report: every run is stored; "
                      f"python -m ablations.report --out {sweep.out} writes it")
                return 130
            print(f"report: {path}")
    return 0 if counts["failed"] == 0 else 1


def longest_first(runs: list[tuple[str, RunConfig]]) -> list[str]:
    """The runs' hashes, the largest estimated compute first (`ablations.validate.estimate`;
    ties keep the plan's order, so a configuration's seeds stay together): parallel workers that
    claim in this order do not end the sweep with one long run alone on the machine."""
    cost = {config.hash(): validate.estimate(config).flops for _, config in runs}
    return sorted(cost, key=lambda run_hash: -cost[run_hash])


def sweep_runs(
    args: argparse.Namespace, sweep: Plan, train_fn: Callable[..., Any]
) -> tuple[list[Any], dict[str, int]]:
    """Add the plan's runs to the database, run the unfinished ones; (rows, status counts)."""
    from tqdm import tqdm

    from ablations import executors

    database = sweep.out / "results.sqlite"
    hashes = [config.hash() for _, config in sweep.runs]
    if args.executor == "ray" or args.workers > 1:
        hashes = longest_first(sweep.runs)
    labels = {config.hash(): label for label, config in sweep.runs}
    with Store(database) as store:
        for label, config in sweep.runs:
            store.add(config, label=label)
        reset = store.reset_stale(lease_s=args.lease)
        requeued = store.requeue_failed(hashes, max_attempts=1 + args.retries)
        counts = store.counts(hashes)
        print(
            f"{len(hashes)} runs in {database}: {counts['done']} done, "
            f"{counts['pending']} to run ({len(reset)} reset from a dead runner, "
            f"{len(requeued)} failed ones retried), {counts['running']} running elsewhere, "
            f"{counts['failed']} failed"
        )
        # bars only on a terminal: in a log file their redraws would split the result lines
        interactive = sys.stdout.isatty() and sys.stderr.isatty()
        bar = tqdm(total=counts["pending"], unit="run", desc=sweep.preset.name,
                   disable=not interactive)

        def on_finished(run_hash: str, status: str) -> None:
            row = store.get(run_hash)
            if row is None:
                return
            line = f"[{status}] {describe(labels[run_hash], row.config)}"
            if status == executors.LOST:
                line += (f": taken over by {row.host}:{row.pid} after this runner was silent "
                         f"past the lease; this result dropped")
            elif row.metrics is not None and status == "done":
                accs = ", ".join(
                    f"{stop}: {100 * ev['acc']:.2f}%" for stop, ev in row.metrics["evals"].items()
                )
                line += f" acc {accs} ({row.timings['total_s']:.1f} s)"
            elif row.error:
                line += f" error: {row.error.strip().splitlines()[-1]}"
            tqdm.write(line)
            if status != "pending":
                bar.update(1)

        from ablations import train

        # seed ensembles need the real trainer; an injected one (tests) runs members one by one
        train_ensemble_fn = train.train_runs if train_fn is train.train_run else None
        try:
            if args.executor == "ray":
                executors.run_ray(
                    store, hashes, out=sweep.out, train_fn=train_fn, retries=args.retries,
                    on_finished=on_finished, address=args.ray_address, threads=args.threads,
                    gpus_per_run=args.gpus_per_run,
                )
            elif args.workers > 1:
                executors.run_pool(
                    store, hashes, out=sweep.out, train_fn=train_fn, retries=args.retries,
                    on_finished=on_finished, workers=args.workers, threads=args.threads,
                    ensemble=args.ensemble, train_ensemble_fn=train_ensemble_fn,
                )
            else:
                executors.run_local(
                    store, hashes, out=sweep.out, train_fn=train_fn, retries=args.retries,
                    progress=interactive, on_finished=on_finished, threads=args.threads,
                    ensemble=args.ensemble, train_ensemble_fn=train_ensemble_fn,
                )
        finally:
            bar.close()
        wanted = set(hashes)
        return [row for row in store.rows() if row.hash in wanted], store.counts(hashes)


if __name__ == "__main__":
    sys.exit(main())
