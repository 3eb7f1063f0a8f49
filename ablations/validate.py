"""Checks of the runner's flags that reach past one value: paths, the device, and what a sweep
will cost, so that ``python -m ablations.run`` refuses (exit code 2, one line) before it runs or
writes anything.

Caps (documented in ``--help``; ``--force`` lifts the three estimates and the run count, never
the hard limits on value length and seed count):

- ``MAX_VALUE_CHARS``: a flag value is at most 1,000 characters;
- ``MAX_SEEDS``: a sweep has at most 10,000 seeds (checked before a range is expanded);
- ``MAX_RUNS``: at most 10,000 runs in one sweep;
- ``MAX_PASSES``: at most 1e8 sequential passes (a transformer block or a solver step, forward
  or backward) summed over the sweep: about a day at ~1 ms each on a CPU;
- ``MAX_FLOPS``: at most 1e19 FLOPs summed over the sweep (about a day of a large GPU);
- ``MAX_RUN_BYTES``: at most 64 GiB of memory for one run (parameters with their gradients and
  AdamW moments, training activations, the data, evaluation activations).

The estimates are deliberately simple: a block of width ``d`` has ``12 d^2`` parameters; the
energy's parameters and buffers are counted on the meta device (`energy_numel`) and an
evaluation costs ``4 M + d`` FLOPs per token as in `ablations.flops`; a stopping rule without a
step cap runs to the loop's ``DEFAULT_MAX_STEPS``; a solver's ``memory`` option (Anderson,
Broyden) keeps that many past iterates; a block stores ``24 d`` activations per token (2 bytes
each under ``amp``, else 4: Korthikanti et al.'s ``34 d`` bytes in 16 bits, raised to cover
the peaks per run and per ensemble member that `benchmarks.gpu_check` measured on an H200) and
no attention scores (the backbone's ``scaled_dot_product_attention`` is fused), plus
``WORKSPACE_BYTES`` for the libraries' workspaces. The estimates of the presets: smoke 4.5e11
FLOPs, 2.5e4 passes; cpu 2.8e13, 1.3e5; paper 4.3e17, 1.3e7, 8.0 GiB for its largest run;
recurrence 4.3e12, 3e4. Long values echo once in messages,
cut to ``ECHO_CHARS`` characters.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ablations.config import RunConfig
from eqtheory import stopping
from eqtheory.backward.registry import BACKWARD
from eqtheory.loop import DEFAULT_MAX_STEPS
from eqtheory.solvers.registry import SOLVERS
from eqtheory.variants import component

ECHO_CHARS = 200
MAX_VALUE_CHARS = 1_000
MAX_SEEDS = 10_000
MAX_RUNS = 10_000
MAX_PASSES = 1e8
MAX_FLOPS = 1e19
MAX_RUN_BYTES = 64 * 2**30
WORKSPACE_BYTES = 2**28
"""Bytes a run holds beside its tensors (cuBLAS / cuDNN workspaces, allocator slack): 256 MiB."""
MAX_THREADS = 256
SECONDS_PER_PASS = 1e-3  # a rough CPU figure, only for the message
FLOP_RATE = 1e14  # a rough large-GPU figure, only for the message


CUT = re.compile(r"\.\.\.\([\d,]+ characters\)['\"]?$")


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text):,} characters)"


def one_line(message: str, values: Iterable[str] = ()) -> str:
    """`message` on one line, every long value (of `values`, or quoted in it) echoed once and
    cut to ``ECHO_CHARS`` characters; later mentions read "(the same value)"."""
    for value in sorted({v for v in values if len(v) > ECHO_CHARS}, key=len, reverse=True):
        for form, cut in ((repr(value), repr(shorten(value))), (value, shorten(value))):
            first = message.find(form)
            if first >= 0:
                rest = message[first + len(form):].replace(form, "(the same value)")
                message = message[:first] + cut + rest
    seen: set[str] = set()

    def cut_quoted(match: re.Match[str]) -> str:
        quoted = match.group(0)
        if quoted in seen:
            return "(the same value)"
        seen.add(quoted)
        if CUT.search(quoted):  # already cut
            return quoted
        return quoted[0] + shorten(quoted[1:-1]) + quoted[0]

    long = ECHO_CHARS + 1
    message = re.sub(rf"'[^']{{{long},}}'|\"[^\"]{{{long},}}\"", cut_quoted, message)
    message = " ".join(message.split())
    return shorten(message, 4 * ECHO_CHARS)


def check_value_length(flag: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_VALUE_CHARS:
        raise ValueError(
            f"{flag}: {shorten(value)!r} is longer than {MAX_VALUE_CHARS:,} characters"
        )


def seed_count(first: int, last: int) -> int:
    """Seeds in the inclusive range ``first-last``; an empty or oversized range raises."""
    if last < first:
        raise ValueError(f"'{first}-{last}' is an empty range ({first} > {last}); "
                         f"write '{last}-{first}'")
    count = last - first + 1
    if count > MAX_SEEDS:
        raise ValueError(f"'{first}-{last}' has {count:,} seeds; at most {MAX_SEEDS:,} per sweep")
    return count


def check_out(text: str, *, writing: bool) -> Path:
    """The output directory: not empty, not a file, and (when `writing`) creatable: its nearest
    existing parent accepts a new directory (tried with a temporary one, removed at once)."""
    if not text.strip():
        raise ValueError("--out: empty path; give a directory, e.g. runs/smoke")
    if "\x00" in text:
        raise ValueError(f"--out: {shorten(text)!r} contains a NUL character")
    path = Path(text)
    try:
        existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    except StopIteration:  # a relative path whose parents are all missing: the cwd
        existing = Path(".")
    except OSError as error:
        raise ValueError(f"--out: cannot inspect {shorten(text)!r}: {error.strerror}") from None
    if not existing.is_dir():
        what = "is a file," if existing == path else f"is under {str(existing)!r}, a file,"
        raise ValueError(f"--out: {shorten(text)!r} {what} not a directory")
    if writing:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".eqt-write-check-", dir=existing))
        except OSError as error:
            raise ValueError(
                f"--out: cannot create {shorten(text)!r}: {str(existing)!r} is not writable "
                f"({error.strerror})"
            ) from None
    return path


def check_device(name: str) -> None:
    """``cuda`` needs a GPU here (for ``--executor local``)."""
    if name != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            f"--device cuda: CUDA is not available here (torch {torch.__version__}); "
            "use --device cpu or auto"
        )


@dataclass(frozen=True)
class Cost:
    """The estimated cost of one run (or a sum of runs)."""

    flops: float = 0.0
    passes: float = 0.0  # sequential block / solver-step passes, forward and backward
    peak_bytes: float = 0.0  # the largest run's memory

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.passes + other.passes,
                    max(self.peak_bytes, other.peak_bytes))


@functools.lru_cache(maxsize=256)
def energy_numel(text: str, width: int, vocab: int = 2) -> int:
    """Parameters and buffers of the energy `text` at `width`, built on the meta device (its
    constructors run their checks; nothing is allocated, so ``bidir(window=100000000)`` is a
    number here, not an out-of-memory error)."""
    import torch

    from eqtheory.model.build import build_energy

    with torch.device("meta"):
        energy = build_energy(text, width=width, vocab=vocab)
    return sum(t.numel() for t in (*energy.parameters(), *energy.buffers()))


def _budget(rule: str) -> int:
    budget = stopping.parse(rule).budget()
    return DEFAULT_MAX_STEPS if budget is None else int(budget)


def estimate(config: RunConfig) -> Cost:
    """Compute and memory of training and evaluating `config` (see the module docstring)."""
    spec = config.variant
    d, layers, length, heads = config.width, config.layers, config.length, config.heads
    refines = spec.kind == "eqt" and not spec.aux_losses_only
    erms = 0 if spec.kind != "eqt" else (1 if spec.placement == "last" else layers)
    block_params = 12 * d * d
    if spec.kind == "rnn":  # one GRU layer: 3 gates of two d x d matrices, no attention
        layers, block_params, heads = 1, 6 * d * d, 0
    energy = energy_numel(spec.energy, d) if erms else 0
    per_eval = 4 * energy + d  # one energy value-and-gradient, per token (`ablations.flops`)
    solver_options = component(spec.solver, SOLVERS)[1] if refines else {}
    history = int(solver_options.get("memory", 0))  # anderson / broyden: past iterates kept

    def forward(length: int) -> int:  # backbone FLOPs per token
        return 2 * layers * block_params + 2 * layers * length * d * (heads > 0)
    k_train = _budget(spec.stop_train) if refines else 0
    backward_cls, backward_options = component(spec.backward, BACKWARD)
    extra = int(backward_options.get("k", 1)) if backward_cls.__name__ == "Phantom" else 0
    train_evals = erms * (k_train + 1 + extra)
    tokens = config.train_steps * config.batch_size * length
    flops = 3 * tokens * (forward(length) + train_evals * per_eval)
    passes = 3 * config.train_steps * (layers + train_evals)
    batches = math.ceil(config.test_size / config.eval_batch_size)
    eval_batch = min(config.test_size, config.eval_batch_size)
    test_lengths = sorted({length, *config.eval_lengths})
    worst_k = 0
    for rule in config.eval_stops if refines else ("steps=0",):
        k = _budget(rule) if refines else 0
        worst_k = max(worst_k, k)
        evals = erms * (k + 1)
        for test_length in test_lengths:
            flops += config.test_size * test_length * (forward(test_length) + evals * per_eval)
            passes += batches * (layers + evals)
    longest = test_lengths[-1]
    params = layers * block_params + (longest + 4) * d + erms * energy
    half = 2 if config.amp else 4  # bytes per activation: bf16 autocast, else float32
    train_bytes = config.batch_size * length * (
        layers * 24 * d * half + 4 * (train_evals + 2 * erms * history) * 16 * d
    )
    eval_bytes = eval_batch * longest * (
        16 * d * half + 4 * (worst_k > 0) * (1 + 2 * erms * history) * 16 * d
    )
    train_rows = 0 if config.fresh_sampling else config.train_size
    data_bytes = 16 * (train_rows * length + config.test_size * sum(test_lengths))
    peak = 16 * params + max(train_bytes, eval_bytes) + data_bytes + WORKSPACE_BYTES
    return Cost(flops=float(flops), passes=float(passes), peak_bytes=float(peak))


def _gib(count: float) -> str:
    return f"{count / 2**30:,.3g} GiB"


def check_run_memory(name: str, cost: Cost) -> None:
    if cost.peak_bytes > MAX_RUN_BYTES:
        raise ValueError(
            f"run '{name}' would need about {_gib(cost.peak_bytes)} of memory (cap "
            f"{_gib(MAX_RUN_BYTES)} per run; set by the lengths, batch sizes, width, layers, "
            "data sizes and, under unrolled gradients, the training step cap): make it "
            "smaller, or pass --force"
        )


def check_sweep(runs: int, total: Cost) -> None:
    """Refuse a sweep above the caps, with the estimates in the message."""
    if runs > MAX_RUNS:
        raise ValueError(f"the sweep has {runs:,} runs; at most {MAX_RUNS:,} (or pass --force)")
    if total.passes > MAX_PASSES or total.flops > MAX_FLOPS:
        hours = max(total.passes * SECONDS_PER_PASS, total.flops / FLOP_RATE) / 3600
        raise ValueError(
            f"the sweep is too long: about {total.passes:.2g} sequential block/solver passes "
            f"(cap {MAX_PASSES:.0e}) and {total.flops:.2g} FLOPs (cap {MAX_FLOPS:.0e}) in "
            f"{runs:,} runs, roughly {hours:,.0f} hours; lower the step caps (--stop, "
            "--stop-train, --k-*), train_steps, sizes or the grid, or pass --force"
        )
