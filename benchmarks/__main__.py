"""``python -m benchmarks [--out DIR] [--only solvers|memory|...] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path

from benchmarks.common import machine, pin_threads
from eqtheory.registry import did_you_mean

BENCHMARKS = ("solvers", "memory", "overhead", "throughput", "chain", "scan", "sweep",
              "compile", "dispatch", "step_time")


def available() -> list[str]:
    """Benchmarks whose module exists (overhead/throughput need the model layer)."""
    return [name for name in BENCHMARKS if importlib.util.find_spec(f"benchmarks.{name}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", type=Path, default=None,
                        help="write results.md and results.json here")
    parser.add_argument("--only", action="append", default=None,
                        help="run only these benchmarks (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny configurations (seconds)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: benchmarks.common.THREADS = 1)")
    args = parser.parse_args(argv)
    names = available()
    selected = args.only or names
    for name in selected:
        if name not in names:
            parser.error(did_you_mean(name, names, kind="benchmark"))
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    pin_threads(args.threads)
    info = machine()
    reports = []
    for name in selected:
        report = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        reports.append(report)
        print(report.markdown(), flush=True)
    header = (f"Machine: {info['cpu']} ({info['cpu_capability']}), {info['cores']} cores, "
              f"torch {info['torch']}, "
              f"{info['threads']} threads, CUDA: {info['cuda']}\n\n"
              f"Command: python -m benchmarks {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        tables = "\n".join(r.markdown() for r in reports)
        (args.out / "results.md").write_text(header + "\n" + tables)
        (args.out / "results.json").write_text(json.dumps(
            {"machine": info, "quick": args.quick, "benchmarks": [r.as_dict() for r in reports]},
            indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
