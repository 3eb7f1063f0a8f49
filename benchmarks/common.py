"""Shared pieces: the `Report` every benchmark returns, timing, machine facts, Markdown output."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

THREADS = 1
"""Intra-op threads every benchmark pins torch to (``--threads``). One by default: on a shared
2-core machine, two OpenMP threads spin-wait for each other whenever another process holds a
core, which made small kernels 2-3x slower and timings erratic in our runs."""


@dataclass
class Report:
    """One benchmark's result: a table (``columns`` x ``rows``) plus free-form notes and checks.

    Attributes:
        name: the benchmark (``solvers``, ``memory``, ...).
        columns: column names; every row is a dict with these keys.
        rows: the measurements (numbers, strings, ``None`` for "not applicable").
        notes: lines printed under the table (method, tolerance, what a column means).
        targets: ``{target: {"met": bool | None, "detail": str}}`` (``None``: not measurable).
    """

    name: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "columns": self.columns, "rows": self.rows, "notes": self.notes,
            "targets": self.targets,
        }

    def markdown(self) -> str:
        lines = [f"## {self.name}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c)) for c in self.columns) + " |")
        lines.append("")
        lines += [f"- {note}" for note in self.notes]
        if self.targets:
            lines += ["", "Targets:", ""]
            for target, result in self.targets.items():
                met = {True: "met", False: "NOT met", None: "not measurable here"}[result["met"]]
                lines.append(f"- {target}: **{met}** ({result['detail']})")
        return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.3g}"
    return str(value)


def pin_threads(threads: int | None = None) -> None:
    """Pin torch's intra-op threads (and remember the choice for later `pin_threads()` calls)."""
    global THREADS
    if threads is not None:
        THREADS = int(threads)
    torch.set_num_threads(THREADS)


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 1
) -> dict[str, tuple[float, Any]]:
    """Median wall time and last result of each ``fns[name]()``, timed round-robin (one call of
    each per round, `warmup` untimed rounds first), so that load from other processes on a
    shared machine falls on every contender alike."""
    results: dict[str, Any] = {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, the vector instructions torch's CPU kernels
    use (``torch.backends.cpu.get_cpu_capability()``: AVX2, AVX512, ...), torch version,
    threads, device."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
